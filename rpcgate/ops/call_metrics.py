"""Per-call numbers, recorded on the call path: dependency-free and cheap.

The server hands each answered call to the recorder (its chain, method, `Outcome` and
seconds). Recording one is a dict get and two increments of plain numbers: no lock (the
event loop is the only writer, and a scrape runs on it too) and no label lookup (each
(chain, method, outcome) series is resolved once). The upstream attempts a call made ride on
its `Outcome`; each also lands in its upstream's fifteen-minute ring (`history`: a dict get,
an index and a few increments), which the status page draws. `metrics` turns these numbers
into Prometheus' exposition at scrape time; no label grows without bound (a method outside
`methods.METHODS` is `other`, an attempt's class an `ErrorClass` or `none`, an outcome one
of `OUTCOMES`).
"""

from __future__ import annotations

import collections
import time
from bisect import bisect_left
from typing import Any

from rpcgate.chain.outcome import Outcome
from rpcgate.ops.history import Histories, UpstreamHistory
from rpcgate.rpc.methods import METHODS
from rpcgate.upstream.attempt import Attempt

# The outcome of a client call: the closed set of the `outcome` label.
LOCAL = "local"  # answered from what the gateway holds: a cache hit, the consensus head
UPSTREAM = "upstream"  # a result an upstream gave (or another caller's, coalesced)
ERROR = "error"  # a JSON-RPC error answer, whoever gave it
OUTCOMES = (LOCAL, UPSTREAM, ERROR)
OTHER_METHOD = "other"  # a method outside the method table; a request that is not a call
NO_ERROR = "none"  # the error class of an attempt the upstream answered

# Seconds, from a cache hit (tens of microseconds) to the default deadline (30 s).
LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class Latencies:
    """One histogram series: counts per bucket (not cumulative; a scrape adds them up), the
    last bucket for what is beyond every bound."""

    __slots__ = ("counts", "total_s")

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS_S) + 1)
        self.total_s = 0.0

    def observe(self, seconds: float, times: int = 1) -> None:
        self.counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += times
        self.total_s += seconds * times


def call_outcome(outcome: Outcome) -> str:
    if outcome.error is not None:
        return ERROR
    return LOCAL if outcome.attempts == 0 else UPSTREAM


class CallRecorder:
    """Per-call counts of one gateway, recorded by the edge as calls are answered."""

    def __init__(self) -> None:
        # (chain, method as sent, outcome) -> series; a method outside the table is looked
        # up folded each time instead of being remembered, so this dict stays bounded too.
        self._calls: dict[tuple[str, str, str], Latencies] = {}
        self._attempts: dict[tuple[str, str, str], Latencies] = {}
        self.in_flight: collections.Counter[str] = collections.Counter()  # chain -> calls
        self.history = Histories()  # per upstream, the last 15 minutes (status page charts)

    def call_answered_locally(
        self, chain: str, method: str, seconds: float, calls: int = 1
    ) -> None:
        """The cache-hit path: one dict get and two increments (`calls` of one method
        answered together, a batch's, count each with the batch's time)."""
        series = self._calls.get((chain, method, LOCAL))
        if series is None:
            series = self._series(chain, method, LOCAL)
        series.counts[bisect_left(LATENCY_BUCKETS_S, seconds)] += calls
        series.total_s += seconds * calls

    def call_answered(
        self, chain: str, method: str | None, outcome: Outcome, seconds: float
    ) -> None:
        """A call answered (`method` None: a request object that was not a valid call), and
        the upstream attempts it made."""
        label = call_outcome(outcome)
        series = self._calls.get((chain, method or OTHER_METHOD, label))
        if series is None:
            series = self._series(chain, method or OTHER_METHOD, label)
        series.observe(seconds)
        self._count_attempts(chain, outcome, time.monotonic(), {})

    def calls_answered(
        self, chain: str, answered: list[tuple[str, Outcome]], seconds: float
    ) -> None:
        """The calls of one client batch answered together, each with the batch's time:
        as `call_answered` for each, the bucket found once and each upstream's history
        slot once."""
        bucket = bisect_left(LATENCY_BUCKETS_S, seconds)
        calls: dict[tuple[str, str], int] = {}
        # An upstream batch's answers share one Attempt: counted once, with their number.
        made: dict[int, list[Any]] = {}  # id -> [the attempt, how many calls it stands for]
        for method, outcome in answered:  # `call_outcome` of each, spelt out
            label = ERROR if outcome.error is not None else UPSTREAM if outcome.attempts else LOCAL
            key = (method, label)
            calls[key] = calls.get(key, 0) + 1
            if not outcome.attempt_log or outcome.attempts_counted:
                continue
            outcome.attempts_counted = True
            for attempt in outcome.attempt_log:
                shared = made.get(id(attempt))
                if shared is None:
                    made[id(attempt)] = [attempt, 1]
                else:
                    shared[1] += 1
        for (method, label), count in calls.items():
            series = self._calls.get((chain, method, label))
            if series is None:
                series = self._series(chain, method, label)
            series.counts[bucket] += count
            series.total_s += seconds * count
        now = time.monotonic()
        histories: dict[str, UpstreamHistory] = {}
        for attempt, times in made.values():
            self._count_attempt(chain, attempt, times, now, histories)

    def _count_attempts(
        self, chain: str, outcome: Outcome, now: float, histories: dict[str, UpstreamHistory]
    ) -> None:
        """The upstream attempts a call made, once (coalesced callers share its Outcome);
        `histories`: the upstreams' rings found so far (kept across a batch's calls)."""
        if not outcome.attempt_log or outcome.attempts_counted:
            return
        outcome.attempts_counted = True
        for attempt in outcome.attempt_log:
            self._count_attempt(chain, attempt, 1, now, histories)

    def _count_attempt(
        self,
        chain: str,
        attempt: Attempt,
        times: int,
        now: float,
        histories: dict[str, UpstreamHistory],
    ) -> None:
        """One attempt (or `times` calls' attempts in one upstream batch, one latency)."""
        key = (chain, attempt.upstream, attempt.error_class or NO_ERROR)
        found = self._attempts.get(key)
        if found is None:
            found = self._attempts[key] = Latencies()
        found.observe(attempt.latency_s, times)
        history = histories.get(attempt.upstream)
        if history is None:
            history = histories[attempt.upstream] = self.history.of(chain, attempt.upstream)
        history.record_attempt(attempt.error_class, attempt.latency_s, now, times)

    def _series(self, chain: str, method: str, outcome: str) -> Latencies:
        folded = method if method in METHODS else OTHER_METHOD
        key = (chain, folded, outcome)
        series = self._calls.get(key)
        if series is None:
            series = self._calls[key] = Latencies()
        return series
