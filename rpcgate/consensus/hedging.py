"""When a slow attempt gets a second one beside it, and how many such hedges are allowed.
Pure decisions over plain data; `failover` runs the attempts.

A provider behind a degraded cloud region accepts connections and then answers in seconds
or never. Waiting for the attempt timeout costs the client all of it; so when the first
attempt of an idempotent read has not answered within about that upstream's p95 latency
(between a floor and a ceiling), the same call goes to the best upstream in another
failure domain, the first good answer wins, and the other attempt is cancelled. A budget
(a token bucket refilled by every call) keeps hedges from ever more than doubling the load
on the upstreams.
"""

from __future__ import annotations

from dataclasses import dataclass

from rpcgate.rpc.methods import Kind, method_info

# Hedges that may be sent in a burst before the budget's refill rate applies.
HEDGE_BURST = 10.0


def is_hedgeable(method: str) -> bool:
    """Idempotent reads only: a write or a filter call must not be sent twice."""
    return method_info(method).kind is Kind.READ


def hedge_delay(p95_s: float | None, floor_s: float, ceiling_s: float) -> float:
    """How long the first attempt gets before a hedge: about its upstream's p95 latency;
    the ceiling while that is unknown."""
    if p95_s is None:
        return ceiling_s
    return min(max(p95_s, floor_s), ceiling_s)


@dataclass
class HedgeBudget:
    """Each call earns `ratio` of a hedge (at most HEDGE_BURST saved up); a hedge spends
    one. With ratio r, hedges never exceed r per call over any long stretch."""

    ratio: float
    tokens: float = HEDGE_BURST
    sent: int = 0  # hedges sent
    won: int = 0  # hedges whose answer was the one returned
    refused: int = 0  # hedges the budget did not allow

    def earn(self) -> None:
        self.tokens = min(HEDGE_BURST, self.tokens + self.ratio)

    def spend(self) -> bool:
        if self.tokens < 1.0:
            self.refused += 1
            return False
        self.tokens -= 1.0
        self.sent += 1
        return True
