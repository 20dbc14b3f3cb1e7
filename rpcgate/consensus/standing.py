"""An upstream's standing at a moment, in one summary: what routing traces
(`X-Rpcgate-Trace`), `/status.json` and the metrics all read, so the three never disagree
about an upstream. Pure: from its health (`health`), its weight and the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

from rpcgate.consensus.heads import UpstreamView
from rpcgate.consensus.health import UpstreamHealth
from rpcgate.consensus.routing import Score, score


@dataclass(frozen=True, slots=True)
class Standing:
    latency_s: float | None  # the decaying average; None: never measured
    p95_s: float | None
    error_rate: float
    in_flight: int
    weight: float
    score: Score  # the routing score and its parts (`routing.score`)
    cooling_down_s: float  # 0: available
    cooldown_reason: str  # why it rests ("" when it does not)
    consecutive_failures: int
    integrity_failures: int
    requests: int  # answered and failed attempts

    @property
    def resting(self) -> bool:
        return self.cooling_down_s > 0


def standing(health: UpstreamHealth, weight: float, now: float) -> Standing:
    resting = max(0.0, health.cooldown_until - now)
    return Standing(
        latency_s=health.latency_ewma_s,
        p95_s=health.latency_p95_s,
        error_rate=health.error_rate,
        in_flight=health.in_flight,
        weight=weight,
        score=score(health.latency_ewma_s, health.error_rate, health.in_flight, weight),
        cooling_down_s=resting,
        cooldown_reason=health.cooldown_reason if resting > 0 else "",
        consecutive_failures=health.consecutive_failures,
        integrity_failures=health.integrity_failures,
        requests=health.successes + health.failures,
    )


def lag_blocks(view: UpstreamView, consensus_head: int | None) -> int | None:
    """How far below the consensus head an upstream is: from its consistent height (what
    every replica behind its URL has shown); None while either is unknown."""
    if consensus_head is None or view.consistent_height is None:
        return None
    return consensus_head - view.consistent_height


def ms(seconds: float | None, digits: int = 1) -> float | None:
    return None if seconds is None else round(seconds * 1000, digits)
