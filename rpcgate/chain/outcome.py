"""What a call came to, as every layer above the upstreams reads it: the result or the
error, who answered after how many attempts, what the cache did, the block it is about,
the attempts themselves and, when asked for, the trace. Plain data: the edge encodes it,
the metrics count it, failover, quorum and broadcast make it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rpcgate.rpc.trace import CallTrace
from rpcgate.upstream.attempt import Attempt


@dataclass(slots=True)
class Outcome:
    result: Any = None
    error: dict[str, Any] | None = None
    upstream: str = "gateway"
    attempts: int = 0
    cache: str = "bypass"  # hit | miss | bypass
    result_json: bytes | None = None  # a cached result, already encoded
    block: int | None = None  # the block the answer is about, where there is one
    attempt_log: tuple[Attempt, ...] = ()  # the upstream attempts, in order
    # Set once the metrics counted `attempt_log`: callers coalesced onto one upstream call
    # share this Outcome, and its attempts happened once.
    attempts_counted: bool = False
    trace: CallTrace | None = None  # what routing did, when the caller asked


def answered_once(result: Any, upstream: str, attempt: Attempt, block: int | None) -> Outcome:
    """An upstream's answer at its first attempt, not cached: `Outcome(result=...,
    upstream=..., attempts=1, attempt_log=(attempt,), block=...)` built by position, half
    the cost of by keyword (once per call of a client batch)."""
    return Outcome(result, None, upstream, 1, "bypass", None, block, (attempt,))
