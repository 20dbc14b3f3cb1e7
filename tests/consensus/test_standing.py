"""One summary of an upstream's standing, read by routing traces, /status.json and the
metrics alike."""

from __future__ import annotations

import pytest

from rpcgate.consensus.heads import Block, UpstreamView
from rpcgate.consensus.health import UpstreamHealth
from rpcgate.consensus.routing import score
from rpcgate.consensus.standing import lag_blocks, ms, standing

pytestmark = pytest.mark.unit


def test_a_resting_upstream_says_how_long_and_why() -> None:
    health = UpstreamHealth(
        cooldown_until=12.5,
        cooldown_reason="HTTP 429",
        consecutive_failures=3,
        successes=7,
        failures=3,
        latency_ewma_s=0.04,
        in_flight=2,
        integrity_failures=1,
    )
    seen = standing(health, weight=2.0, now=10.0)
    assert seen.resting and seen.cooling_down_s == pytest.approx(2.5)
    assert seen.cooldown_reason == "HTTP 429"
    assert (seen.requests, seen.consecutive_failures, seen.integrity_failures) == (10, 3, 1)
    assert seen.score == score(0.04, health.error_rate, 2, 2.0)
    assert ms(seen.latency_s) == 40.0


def test_an_upstream_past_its_cooldown_rests_no_more_and_names_no_reason() -> None:
    health = UpstreamHealth(cooldown_until=5.0, cooldown_reason="HTTP 429")
    seen = standing(health, weight=1.0, now=10.0)
    assert not seen.resting and seen.cooling_down_s == 0.0 and seen.cooldown_reason == ""
    assert seen.latency_s is None and ms(seen.latency_s) is None


@pytest.mark.parametrize(
    ("consistent", "head", "lag"),
    [(100, 103, 3), (103, 103, 0), (None, 103, None), (100, None, None)],
)
def test_lag_counts_from_the_height_every_replica_has_shown(
    consistent: int | None, head: int | None, lag: int | None
) -> None:
    view = UpstreamView("node0")
    if consistent is not None:
        view.head = Block(consistent, "0x" + "ab" * 32, "0x" + "cd" * 32)
    assert lag_blocks(view, head) == lag


def test_the_standing_reads_every_part_of_the_health() -> None:
    health = UpstreamHealth(successes=3, failures=1, in_flight=4)
    health.latency_ewma_s, health.latency_dev_s = 0.1, 0.02
    seen = standing(health, weight=3.0, now=0.0)
    assert (seen.p95_s, seen.error_rate, seen.in_flight, seen.weight) == (
        pytest.approx(0.15),
        0.25,
        4,
        3.0,
    )


def test_a_rest_of_under_a_second_still_names_its_reason() -> None:
    health = UpstreamHealth(cooldown_until=10.5, cooldown_reason="HTTP 429")
    assert standing(health, weight=1.0, now=10.0).cooldown_reason == "HTTP 429"


@pytest.mark.parametrize(
    ("seconds", "digits", "shown"),
    [(0.0123456, 1, 12.3), (0.0123456, 3, 12.346), (1 / 3, 0, 333.0), (None, 1, None)],
)
def test_milliseconds_are_rounded_to_the_digits_asked(
    seconds: float | None, digits: int, shown: float | None
) -> None:
    assert ms(seconds, digits) == shown
    if digits == 1:
        assert ms(seconds) == shown
