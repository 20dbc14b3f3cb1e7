"""The last fifteen minutes of each upstream, for the status page's charts: a bounded ring.

Per upstream, `SLOTS` intervals of `SLOT_S` seconds each: the client-call attempts it got,
how many failed in a way that counts against it (`health.counts_against_health`, the rule
of its error rate), the latencies of its answers in a small log-scale histogram (from which
p50 and p99 are read), and the worst lag sampled in the interval. Recording an attempt is
O(1) and allocates nothing once a slot's histogram exists: an interval that comes round
again is reset in place. Nothing here reads a clock: the caller passes `now` (monotonic
seconds), so the ring and its figures are plain data and pure functions over it.

Head polls are not attempts (`upstream.attempt`), so an upstream no client call reached
shows no calls; its lag is sampled whenever `/status.json` is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rpcgate.consensus.health import counts_against_health
from rpcgate.rpc.errors import ErrorClass

SLOT_S = 10.0
SLOTS = 90  # 15 minutes of 10 s

# Latency buckets: bucket i holds latencies in [BASE * GROWTH**i, BASE * GROWTH**(i+1)),
# the first also everything faster, the last everything slower (from about 83 s). A
# bucket spans a factor 2**(1/3), so a percentile read at its geometric middle is within
# about 12 % of the truth: plenty for a sparkline, and 60 counters per interval.
LATENCY_BASE_S = 0.0001
LATENCY_GROWTH = 2 ** (1 / 3)
LATENCY_BUCKETS = 60
_PER_LOG_GROWTH = 1 / math.log(LATENCY_GROWTH)


def latency_bucket(latency_s: float) -> int:
    if latency_s <= LATENCY_BASE_S:
        return 0
    return min(LATENCY_BUCKETS - 1, int(math.log(latency_s / LATENCY_BASE_S) * _PER_LOG_GROWTH))


def bucket_middle_s(bucket: int) -> float:
    """The geometric middle of a bucket: what a percentile falling in it reads as."""
    return LATENCY_BASE_S * math.exp((bucket + 0.5) / _PER_LOG_GROWTH)


def percentile_s(counts: list[int], fraction: float) -> float | None:
    """The latency below which `fraction` of the counted ones fall (nearest rank), read at
    its bucket's middle; None when nothing was counted."""
    total = sum(counts)
    if total == 0:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for bucket, count in enumerate(counts):
        seen += count
        if seen >= rank:
            return bucket_middle_s(bucket)
    raise AssertionError("unreachable: the ranks add up to the total")


@dataclass(slots=True)
class Slot:
    """One interval of one upstream."""

    number: int = -1  # which interval: int(now // slot_s); -1: never used
    calls: int = 0
    errors: int = 0
    latency_counts: list[int] | None = None  # made at the first answer, reused after
    lag: int | None = None  # the worst lag sampled in the interval; None: none sampled

    def reset(self, number: int) -> None:
        self.number = number
        self.calls = self.errors = 0
        self.lag = None
        if self.latency_counts is not None:
            for bucket in range(LATENCY_BUCKETS):
                self.latency_counts[bucket] = 0


@dataclass(slots=True)
class UpstreamHistory:
    """The ring of one upstream: `slots` intervals of `slot_s` seconds, the current one
    last; an interval's slot is reused for the one `slots` intervals later."""

    slot_s: float = SLOT_S
    slots: list[Slot] = field(default_factory=lambda: [Slot() for _ in range(SLOTS)])

    def current(self, now: float) -> Slot:
        number = int(now // self.slot_s)
        slot = self.slots[number % len(self.slots)]
        if slot.number != number:
            slot.reset(number)
        return slot

    def record_attempt(
        self, error_class: ErrorClass | None, latency_s: float, now: float, times: int = 1
    ) -> None:
        """An attempt (`times` calls' attempts answered in one upstream batch, alike)."""
        slot = self.current(now)
        slot.calls += times
        if error_class is None:
            counts = slot.latency_counts
            if counts is None:
                counts = slot.latency_counts = [0] * LATENCY_BUCKETS
            counts[latency_bucket(latency_s)] += times
        elif counts_against_health(error_class):
            slot.errors += times

    def note_lag(self, lag: int | None, now: float) -> None:
        if lag is None:
            return
        slot = self.current(now)
        if slot.lag is None or lag > slot.lag:
            slot.lag = lag


@dataclass(frozen=True, slots=True)
class Figures:
    """An upstream's history as the status page draws it: one entry per interval, oldest
    first, the current (still filling) interval last."""

    slot_s: float
    calls: tuple[int, ...]
    errors: tuple[int, ...]
    p50_ms: tuple[float | None, ...]  # None: no answer in the interval
    p99_ms: tuple[float | None, ...]
    lag: tuple[int | None, ...]  # None: not sampled in the interval

    def as_dict(self) -> dict[str, Any]:
        return {
            "slot_s": self.slot_s,
            "calls": list(self.calls),
            "errors": list(self.errors),
            "p50_ms": list(self.p50_ms),
            "p99_ms": list(self.p99_ms),
            "lag": list(self.lag),
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def figures(history: UpstreamHistory, now: float) -> Figures:
    """The last `len(history.slots)` intervals up to the one holding `now`; an interval
    nothing was recorded in is empty (0 calls, no latency, no lag)."""
    newest = int(now // history.slot_s)
    size = len(history.slots)
    kept = []
    for number in range(newest - size + 1, newest + 1):
        slot = history.slots[number % size]
        kept.append(slot if slot.number == number else None)
    return Figures(
        slot_s=history.slot_s,
        calls=tuple(0 if s is None else s.calls for s in kept),
        errors=tuple(0 if s is None else s.errors for s in kept),
        p50_ms=tuple(_ms(_percentile(s, 0.5)) for s in kept),
        p99_ms=tuple(_ms(_percentile(s, 0.99)) for s in kept),
        lag=tuple(None if s is None else s.lag for s in kept),
    )


def _percentile(slot: Slot | None, fraction: float) -> float | None:
    if slot is None or slot.latency_counts is None:
        return None
    return percentile_s(slot.latency_counts, fraction)


class Histories:
    """Every upstream's ring, by (chain, upstream) name: as many as configured upstreams."""

    __slots__ = ("_rings",)

    def __init__(self) -> None:
        self._rings: dict[tuple[str, str], UpstreamHistory] = {}

    def of(self, chain: str, upstream: str) -> UpstreamHistory:
        ring = self._rings.get((chain, upstream))
        if ring is None:
            ring = self._rings[(chain, upstream)] = UpstreamHistory()
        return ring

    def keep_only(self, kept: set[tuple[str, str]]) -> None:
        """Forgets upstreams no longer configured (a reload renamed or removed them)."""
        for key in [key for key in self._rings if key not in kept]:
            del self._rings[key]
