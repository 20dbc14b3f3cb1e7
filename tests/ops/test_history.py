"""The status page's fifteen minutes per upstream: a bounded ring of 10 s intervals, its
percentiles read from a small log-scale histogram, and the rotation shown beside the head
state. Pure: plain data, a clock passed in."""

from __future__ import annotations

import time

import pytest

from rpcgate.chain.outcome import Outcome
from rpcgate.ops.call_metrics import CallRecorder
from rpcgate.ops.history import (
    LATENCY_BUCKETS,
    SLOT_S,
    SLOTS,
    Histories,
    UpstreamHistory,
    bucket_middle_s,
    figures,
    latency_bucket,
    percentile_s,
)
from rpcgate.ops.status import rotation
from rpcgate.rpc.errors import ErrorClass
from rpcgate.upstream.attempt import Attempt

pytestmark = pytest.mark.unit

START = 1_000_000.0  # monotonic seconds, at the start of an interval


def test_fifteen_minutes_of_ten_second_intervals_and_no_more() -> None:
    ring = UpstreamHistory()
    assert (SLOT_S * SLOTS, len(ring.slots)) == (900.0, 90)
    for second in range(3 * 900):  # three rounds of the ring, a call a second
        ring.record_attempt(None, 0.01, START + second)
    shown = figures(ring, START + 3 * 900 - 1)
    assert len(ring.slots) == 90
    assert all(len(series) == 90 for series in shown.as_dict().values() if isinstance(series, list))
    assert list(shown.calls) == [10] * 90
    assert shown.slot_s == 10.0


def test_an_interval_coming_round_again_starts_from_nothing() -> None:
    ring = UpstreamHistory()
    ring.record_attempt(None, 0.5, START)
    ring.record_attempt(ErrorClass.TRANSIENT, 0.5, START + 1)
    ring.note_lag(4, START + 2)
    later = START + SLOT_S * SLOTS  # the same slot, fifteen minutes on
    ring.record_attempt(None, 0.002, later)
    shown = figures(ring, later)
    assert (shown.calls[-1], shown.errors[-1], shown.lag[-1]) == (1, 0, None)
    assert shown.p99_ms[-1] == pytest.approx(2.0, rel=0.13)  # not the 500 ms of before
    assert sum(shown.calls) == 1  # what was recorded fifteen minutes ago is gone


def test_intervals_without_calls_are_empty_not_missing() -> None:
    ring = UpstreamHistory()
    ring.record_attempt(None, 0.01, START)
    ring.record_attempt(None, 0.01, START + 30)  # two intervals later nothing, then one
    shown = figures(ring, START + 35)
    assert shown.calls[-4:] == (1, 0, 0, 1)
    assert shown.p50_ms[-4:-1] == (pytest.approx(10, rel=0.13), None, None)
    assert shown.lag[-4:] == (None, None, None, None)
    assert shown.calls[:-4] == (0,) * 86


def test_a_ring_read_long_after_its_last_call_shows_nothing_stale() -> None:
    ring = UpstreamHistory()
    ring.record_attempt(None, 0.01, START)
    shown = figures(ring, START + 3600)
    assert sum(shown.calls) == 0 and set(shown.p50_ms) == {None}


def test_p50_and_p99_come_from_the_answers_of_the_interval() -> None:
    ring = UpstreamHistory()
    for _ in range(98):
        ring.record_attempt(None, 0.004, START)
    ring.record_attempt(None, 0.250, START)
    ring.record_attempt(None, 0.900, START)
    shown = figures(ring, START)
    assert shown.p50_ms[-1] == pytest.approx(4.0, rel=0.13)
    assert shown.p99_ms[-1] == pytest.approx(250.0, rel=0.13)
    assert shown.calls[-1] == 100


@pytest.mark.parametrize(
    ("error_class", "counted"),
    [
        (ErrorClass.TRANSIENT, True),
        (ErrorClass.RATE_LIMITED, True),
        (ErrorClass.AUTH, True),
        (ErrorClass.INTEGRITY, True),
        (ErrorClass.REVERT, False),  # a verdict on the call, as every honest node says
        (ErrorClass.CLIENT, False),
        (ErrorClass.MISSING_DATA, False),
    ],
)
def test_errors_are_the_failures_that_count_against_the_upstream(
    error_class: ErrorClass, counted: bool
) -> None:
    ring = UpstreamHistory()
    ring.record_attempt(error_class, 2.0, START)
    shown = figures(ring, START)
    assert (shown.calls[-1], shown.errors[-1]) == (1, int(counted))
    assert shown.p99_ms[-1] is None  # a failure's latency is not an answer's


def test_the_lag_of_an_interval_is_the_worst_sampled() -> None:
    ring = UpstreamHistory()
    for lag in (0, 3, 1, None):
        ring.note_lag(lag, START + 1)
    ring.note_lag(-1, START + 11)  # ahead of the consensus
    assert figures(ring, START + 11).lag[-2:] == (3, -1)


def test_percentiles_read_at_their_bucket_middle_within_twelve_percent() -> None:
    assert percentile_s([0] * LATENCY_BUCKETS, 0.5) is None
    for latency_s in (0.00005, 0.0003, 0.0042, 0.037, 0.4, 3.3, 29.0):
        counts = [0] * LATENCY_BUCKETS
        counts[latency_bucket(latency_s)] += 1
        read = percentile_s(counts, 0.99)
        assert read is not None
        assert read == pytest.approx(max(latency_s, 0.0001), rel=0.13), latency_s
    counts = [0] * LATENCY_BUCKETS
    counts[3], counts[20] = 1, 1
    assert percentile_s(counts, 0.5) == bucket_middle_s(3)  # nearest rank: the first of two
    assert percentile_s(counts, 0.51) == bucket_middle_s(20)
    assert latency_bucket(0.0) == 0 and latency_bucket(10_000.0) == LATENCY_BUCKETS - 1


def test_the_recorder_fills_each_upstreams_ring_once_per_attempt() -> None:
    recorder = CallRecorder()
    outcome = Outcome(
        attempts=2,
        attempt_log=(
            Attempt("node1", ErrorClass.TRANSIENT, 0.2),
            Attempt("node0", None, 0.003),
        ),
    )
    recorder.call_answered("devnet", "eth_getBalance", outcome, 0.21)
    recorder.call_answered("devnet", "eth_getBalance", outcome, 0.21)  # coalesced: once
    now = time.monotonic()
    node0 = figures(recorder.history.of("devnet", "node0"), now)
    node1 = figures(recorder.history.of("devnet", "node1"), now)
    assert (sum(node0.calls), sum(node0.errors), sum(node1.calls), sum(node1.errors)) == (
        1,
        0,
        1,
        1,
    )


def test_upstreams_no_longer_configured_are_forgotten() -> None:
    histories = Histories()
    histories.of("devnet", "node0").record_attempt(None, 0.01, START)
    histories.of("devnet", "renamed").record_attempt(None, 0.01, START)
    histories.keep_only({("devnet", "node0")})
    assert sum(figures(histories.of("devnet", "node0"), START).calls) == 1
    assert sum(figures(histories.of("devnet", "renamed"), START).calls) == 0


@pytest.mark.parametrize(
    ("cooling_down_s", "drained_s", "shown"),
    [(0.0, 0.0, "in"), (4.2, 0.0, "cooling_down"), (0.0, 30.0, "drained"), (4.2, 30.0, "drained")],
)
def test_an_upstream_out_of_rotation_says_why(
    cooling_down_s: float, drained_s: float, shown: str
) -> None:
    assert rotation(cooling_down_s, drained_s) == shown


def test_a_batch_answered_together_is_recorded_as_its_calls_one_by_one() -> None:
    def outcomes() -> list[tuple[str, Outcome]]:
        shared = Outcome(attempts=1, attempt_log=(Attempt("node0", None, 0.004),))
        # One upstream batch: one Attempt stands for each of its calls' (attempt_many).
        upstream_batch = Attempt("node0", None, 0.006)
        return [
            ("eth_getBalance", Outcome(attempts=1, attempt_log=(upstream_batch,))),
            ("eth_getStorageAt", Outcome(attempts=1, attempt_log=(upstream_batch,))),
            ("eth_getBalance", Outcome(attempts=1, attempt_log=(upstream_batch,))),
            ("eth_getBalance", Outcome(attempts=1, attempt_log=(Attempt("node0", None, 0.003),))),
            ("eth_getBalance", shared),
            ("eth_call", shared),  # a twin: its attempts count once
            (
                "eth_getCode",
                Outcome(
                    attempts=2,
                    attempt_log=(
                        Attempt("node1", ErrorClass.TRANSIENT, 0.2),
                        Attempt("node0", None, 0.01),
                    ),
                ),
            ),
            ("eth_chainId", Outcome(error={"code": -32000, "message": "x"})),
            ("not_a_method", Outcome(attempts=1, attempt_log=(Attempt("node1", None, 0.02),))),
        ]

    one_by_one, together = CallRecorder(), CallRecorder()
    for method, outcome in outcomes():
        one_by_one.call_answered("devnet", method, outcome, 0.05)
    together.calls_answered("devnet", outcomes(), 0.05)
    assert together._calls.keys() == one_by_one._calls.keys()
    for key, series in one_by_one._calls.items():
        assert (together._calls[key].counts, together._calls[key].total_s) == (
            series.counts,
            pytest.approx(series.total_s),
        ), key
    assert {k: v.counts for k, v in together._attempts.items()} == {
        k: v.counts for k, v in one_by_one._attempts.items()
    }
    now = time.monotonic()
    for upstream in ("node0", "node1"):
        a = figures(one_by_one.history.of("devnet", upstream), now)
        b = figures(together.history.of("devnet", upstream), now)
        assert (a.calls, a.errors) == (b.calls, b.errors), upstream
