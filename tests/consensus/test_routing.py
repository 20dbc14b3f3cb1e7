"""Attempt order, failure-domain preference and upstream health: pure decisions, as tables."""

from __future__ import annotations

import pytest

from rpcgate.consensus.health import UpstreamHealth, record_failure, record_success
from rpcgate.consensus.routing import Candidate, attempt_order, next_candidate
from rpcgate.rpc.errors import Classification, ErrorClass

pytestmark = pytest.mark.unit

A = Candidate("a", "aws", True)
B = Candidate("b", "aws", True)
C = Candidate("c", "gcp", True)
D_COOLING = Candidate("d", "own", False)


def names(candidates: list[Candidate] | tuple[Candidate, ...]) -> list[str]:
    return [c.name for c in candidates]


@pytest.mark.parametrize(
    ("rotation", "expected"),
    [
        (0, ["a", "b", "c", "d"]),
        (1, ["b", "c", "a", "d"]),
        (2, ["c", "a", "b", "d"]),
        (3, ["a", "b", "c", "d"]),
    ],
)
def test_rotation_spreads_load_and_cooling_upstreams_go_last(
    rotation: int, expected: list[str]
) -> None:
    assert names(attempt_order([A, B, C, D_COOLING], rotation)) == expected


def test_sticky_calls_keep_the_configured_order() -> None:
    assert names(attempt_order([A, B, C], rotation=2, sticky=True)) == ["a", "b", "c"]


def test_everything_cooling_still_gives_an_order() -> None:
    cooling = [Candidate("x", "d1", False), Candidate("y", "d2", False)]
    assert names(attempt_order(cooling, 5)) == ["x", "y"]


@pytest.mark.parametrize(
    ("tried", "failed_domains", "expected"),
    [
        ([], set(), "a"),
        (["a"], {"aws"}, "c"),  # b shares a's failed domain: skip to another domain
        (["a"], set(), "b"),
        (["a", "c"], {"aws", "gcp"}, "b"),  # every domain failed: any untried one
        (["a", "b", "c"], {"aws", "gcp"}, "a"),  # all tried once: a second round begins
        (["a", "b", "c", "a"], {"aws"}, "c"),  # second round, still domain-aware
        (["a", "b", "c", "a"], {"aws", "gcp"}, "b"),
    ],
)
def test_next_candidate(tried: list[str], failed_domains: set[str], expected: str) -> None:
    candidate = next_candidate([A, B, C], tried, failed_domains)
    assert candidate is not None and candidate.name == expected


def test_no_candidate_when_nothing_is_eligible() -> None:
    assert next_candidate([], [], set()) is None


def _failure(error_class: ErrorClass, cooldown: float | None = None) -> Classification:
    return Classification(error_class, True, cooldown, "test")


def test_rate_limit_cools_down_for_the_time_the_upstream_asked() -> None:
    health = UpstreamHealth()
    record_failure(health, _failure(ErrorClass.RATE_LIMITED, 7.0), now=100.0)
    assert not health.is_available(106.9)
    assert health.is_available(107.0)


def test_repeated_transient_failures_open_a_growing_breaker_and_success_closes_it() -> None:
    health = UpstreamHealth()
    for _ in range(2):
        record_failure(health, _failure(ErrorClass.TRANSIENT), now=0.0)
    assert health.is_available(0.0)  # two blips are not an outage
    record_failure(health, _failure(ErrorClass.TRANSIENT), now=0.0)
    assert not health.is_available(0.5) and health.is_available(1.0)
    record_failure(health, _failure(ErrorClass.TRANSIENT), now=1.0)
    assert not health.is_available(2.5) and health.is_available(3.0)  # 2 s now
    record_success(health, latency_s=0.01)
    assert health.is_available(1.0)
    assert health.consecutive_failures == 0


@pytest.mark.parametrize(
    "error_class",
    [
        ErrorClass.CLIENT,
        ErrorClass.REVERT,
        ErrorClass.MISSING_DATA,
        ErrorClass.UNSUPPORTED,
        ErrorClass.TOO_LARGE,
        ErrorClass.TXPOOL,
    ],
)
def test_failures_about_the_call_do_not_hurt_the_upstream(error_class: ErrorClass) -> None:
    health = UpstreamHealth()
    for _ in range(10):
        record_failure(health, _failure(error_class, 60.0), now=0.0)
    assert health.is_available(0.0)
    assert health.failures == 0


def test_latency_average_follows_recent_calls() -> None:
    health = UpstreamHealth()
    record_success(health, 1.0)
    for _ in range(20):
        record_success(health, 0.1)
    assert health.latency_ewma_s is not None and health.latency_ewma_s < 0.15
