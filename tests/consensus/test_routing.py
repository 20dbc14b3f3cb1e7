"""Attempt order, failure-domain preference and upstream health: pure decisions, as tables."""

from __future__ import annotations

import pytest

from rpcgate.consensus.heads import State
from rpcgate.consensus.health import (
    UpstreamHealth,
    record_failure,
    record_latency,
    record_socket_failure,
    record_success,
)
from rpcgate.consensus.routing import (
    EXPLORE_EVERY,
    NEAR_EQUAL_RATIO,
    NEAR_EQUAL_SLACK_S,
    Candidate,
    attempt_order,
    block_fit,
    first_choices,
    next_candidate,
    why_unfit,
)
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


def test_the_near_equal_best_are_rotated_and_the_slower_follow_fastest_first() -> None:
    limit = 0.1 * NEAR_EQUAL_RATIO + NEAR_EQUAL_SLACK_S
    fast, near = (Candidate(n, n, True, score=s) for n, s in (("a", 0.1), ("b", 0.15)))
    edge = Candidate("c", "c", True, score=limit)  # exactly at the limit: still near
    slow, slower = Candidate("e", "e", True, score=0.3), Candidate("d", "d", True, score=0.5)
    order = attempt_order([fast, near, edge, slower, slow], rotation=1)
    assert names(order) == ["b", "c", "a", "e", "d"]


def test_upstreams_the_polls_call_down_come_after_those_cooling_down() -> None:
    down = Candidate("down", "x", True, last_resort=True)
    assert names(attempt_order([down, A, D_COOLING], 0)) == ["a", "d", "down"]


def test_a_single_upstream_gets_a_second_try() -> None:
    candidate = next_candidate([A], ["a"], {"aws"})
    assert candidate is not None and candidate.name == "a"


V = State.OK


@pytest.mark.parametrize(
    ("state", "verified", "head", "agreed", "block", "consistent", "fit"),
    [
        (V, True, 100, 100, None, 100, True),  # about the head: any in good standing
        (V, False, 100, 100, None, 100, False),  # chain id not verified
        (State.WRONG_CHAIN, True, 100, 100, None, 100, False),
        (State.SYNCING, True, 100, 100, None, 100, False),
        (State.STARTING, True, 100, 100, None, 100, False),
        (V, True, 100, 100, 100, 100, True),
        (V, True, 99, 99, 100, 99, False),  # not there yet
        (V, True, None, None, 100, None, False),
        (V, True, 100, 99, 100, 100, False),  # not known to agree that high
        (V, True, 100, None, 50, 100, False),
        (State.FORKED, True, 100, 60, 60, 100, True),  # below its fork
        (State.DOWN, True, 100, 100, 90, 100, None),  # the polls say down: a last resort
        (V, True, 100, 100, 100, 98, None),  # a replica behind it is lower: asked last
        (V, True, 100, 100, 98, 98, True),
    ],
)
def test_block_fit(
    state: State,
    verified: bool,
    head: int | None,
    agreed: int | None,
    block: int | None,
    consistent: int | None,
    fit: bool | None,
) -> None:
    assert block_fit(state, verified, head, agreed, block, consistent) is fit


@pytest.mark.parametrize(
    ("state", "verified", "head", "agreed", "block", "why"),
    [
        (V, False, 100, 100, 100, "chain id not verified yet"),
        (State.STARTING, True, 100, 100, 100, "chain id not verified yet"),
        (State.SYNCING, True, 100, 100, 100, "state syncing"),
        (State.WRONG_CHAIN, True, 100, 100, 100, "state wrong-chain"),
        (V, True, None, None, 100, "block 100 not available (its head is None)"),
        (V, True, 99, 99, 100, "block 100 not available (its head is 99)"),
        (
            V,
            True,
            100,
            99,
            100,
            "not known to share the canonical chain at block 100 (agreed up to 99)",
        ),
    ],
)
def test_why_an_upstream_may_not_serve_a_block(
    state: State, verified: bool, head: int | None, agreed: int | None, block: int, why: str
) -> None:
    assert why_unfit(state, verified, head, agreed, block) == why


def test_failures_are_counted_and_the_last_one_named() -> None:
    health = UpstreamHealth()
    record_failure(health, _failure(ErrorClass.TRANSIENT), now=0.0)
    record_failure(health, Classification(ErrorClass.RATE_LIMITED, True, 5.0, "HTTP 429"), 0.0)
    assert (health.failures, health.consecutive_failures) == (2, 2)
    assert (health.last_error, health.last_error_class) == ("HTTP 429", ErrorClass.RATE_LIMITED)
    assert health.cooldown_reason == "rate_limited: HTTP 429"
    record_success(health, 0.1)
    record_success(health, 0.1)
    assert health.successes == 2 and health.error_rate == 0.5
    assert (health.cooldown_until, health.cooldown_reason) == (0.0, "")


def test_answers_that_failed_verification_are_counted_apart() -> None:
    health = UpstreamHealth()
    for _ in range(2):
        record_failure(health, _failure(ErrorClass.INTEGRITY, 10.0), now=0.0)
    record_failure(health, _failure(ErrorClass.TRANSIENT), now=0.0)
    assert (health.failures, health.integrity_failures) == (3, 2)


def test_latency_average_and_spread_give_the_p95() -> None:
    health = UpstreamHealth()
    record_latency(health, 1.0)
    record_latency(health, 2.0)
    assert health.latency_ewma_s == pytest.approx(1.2)  # 1.0 + 0.2 * (2.0 - 1.0)
    assert health.latency_dev_s == pytest.approx(0.2)  # 0.2 * |2.0 - 1.0|
    assert health.latency_p95_s == pytest.approx(1.2 + 2.5 * 0.2)
    record_latency(health, 1.2)  # right on the average: the spread decays
    assert health.latency_dev_s == pytest.approx(0.2 + 0.2 * (0.0 - 0.2))


def test_a_sender_over_its_rate_limit_never_rests_the_upstream() -> None:
    health = UpstreamHealth()
    sender = Classification(ErrorClass.RATE_LIMITED, False, None, "sender is over rate limit")
    for _ in range(5):
        record_failure(health, sender, now=0.0)
    assert health.is_available(0.0)


def test_a_socket_that_failed_is_counted_and_only_a_verdict_on_the_account_rests_it() -> None:
    health = UpstreamHealth()
    dropped = Classification(ErrorClass.TRANSIENT, True, None, "reset")
    for _ in range(5):
        record_socket_failure(health, dropped, now=0.0)
    assert (health.failures, health.consecutive_failures) == (5, 0)
    assert (health.last_error, health.last_error_class) == ("reset", ErrorClass.TRANSIENT)
    assert health.is_available(0.0)  # the HTTP path says for itself how it is
    limited = Classification(ErrorClass.RATE_LIMITED, True, 5.0, "HTTP 429")
    record_socket_failure(health, limited, now=0.0)
    assert health.failures == 6 and not health.is_available(4.9)


@pytest.mark.parametrize(
    "candidates",
    [
        [A, B, C, D_COOLING],
        [Candidate("f", "d1", True, score=0.01), Candidate("s", "d2", True, score=0.5), A],
        [Candidate("x", "d1", False), Candidate("y", "d2", True, last_resort=True)],
        [D_COOLING, Candidate("n", "d3", True, score=0.2), Candidate("m", "d1", True, score=0.02)],
    ],
)
def test_a_batchs_first_choices_are_each_calls_first_available_in_its_attempt_order(
    candidates: list[Candidate],
) -> None:
    rotations = list(range(3 * EXPLORE_EVERY + 5))
    expected = [
        next(
            (c.name for c in attempt_order(candidates, r) if c.available and not c.last_resort),
            None,
        )
        for r in rotations
    ]
    assert first_choices(candidates, rotations) == expected
