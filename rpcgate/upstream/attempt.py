"""The one way a client's call reaches an upstream: `attempt`.

Every upstream call made for a client — failover's attempts and hedges, quorum's asks, a
broadcast's sends and their look-ups, the calls a pending-transaction filter makes on its
node, and (through failover) the verifier's fetches — goes through `attempt`, so each is
recorded alike: timed, counted in flight while under way, its answer checked (a caller's
`check`: verification, a null that means a missing block), classified (`errors`), weighed
against the upstream's standing (`health`: latency, errors, cooldowns), logged for the
metrics and the call log (`Attempt`), and listed in the trace when one was asked for
(`trace`). The caller gets a plain `Tried` and decides what it means for its call.

Not client calls, so not here: the head tracker's polls (`tracker`) and `rpcgate check`
(`check`) are probes with health rules of their own and call `Upstream.call` directly.
Nothing else does; tests/upstream/test_attempts.py holds the package to that.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from rpcgate.consensus.health import record_failure, record_latency, record_success
from rpcgate.rpc.errors import Classification, ErrorClass, classify
from rpcgate.rpc.trace import CallTrace
from rpcgate.upstream.client import Reply, Upstream

log = structlog.get_logger("rpcgate.attempt")

# What a caller makes of an answer before it counts (verification; a null that means the
# node lacks the block): the reply as it stands, or a failure in its place.
Check = Callable[[Reply], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a call on an upstream, as the metrics and the call log read it."""

    upstream: str
    error_class: ErrorClass | None  # None: the upstream answered
    latency_s: float


@dataclass(slots=True)  # not frozen: built per call, and a frozen __init__ costs
class Tried:
    """What one attempt came to: the reply (after the caller's check) and, for a failure,
    its classification."""

    upstream: str
    reply: Reply
    classification: Classification | None = None  # None: the upstream answered

    @property
    def error_class(self) -> ErrorClass | None:
        return None if self.classification is None else self.classification.error_class


async def attempt(
    upstream: Upstream,
    method: str,
    params: Any,
    timeout_s: float,
    attempts: list[Attempt],
    *,
    trace: CallTrace | None = None,
    hedge: bool = False,
    check: Check | None = None,
) -> Tried:
    """One call of `method` on `upstream` for a client's call, recorded: in flight while it
    is under way, its latency and outcome in the upstream's health, an `Attempt` appended
    to `attempts`, and an entry in `trace` (if any). Never raises for upstream trouble.
    Cancelled (a hedge's loser), it records nothing but the in-flight count: see
    `cut_short`."""
    health = upstream.health
    health.in_flight += 1
    try:
        reply = await upstream.call(method, params, timeout_s)
    finally:
        health.in_flight -= 1
    if check is not None:
        reply = await check(reply)
    tried = _recorded(upstream, reply, attempts)
    error_class = tried.error_class
    if trace is not None:
        entry: dict[str, Any] = {
            "upstream": upstream.name,
            "ms": round(reply.latency_s * 1000, 1),
            "result": "ok" if error_class is None else str(error_class),
        }
        if hedge:
            entry["hedge"] = True
        trace.attempts.append(entry)
    return tried


async def attempt_many(
    upstream: Upstream,
    calls: list[tuple[str, Any]],
    timeout_s: float,
    attempts: list[Attempt],
) -> list[Tried]:
    """Several calls of a client batch on one upstream, in upstream batches: each recorded
    as `attempt` records one (in flight, its latency and outcome in health, an `Attempt`);
    no check (the callers send only calls that need none)."""
    health = upstream.health
    health.in_flight += len(calls)
    try:
        replies = await upstream.call_many(calls, timeout_s)
    finally:
        health.in_flight -= len(calls)
    # Every reply has the request's time as its latency (`call_many`): the answers'
    # successes are weighed once (one request, one latency), one Attempt stands for each.
    if not replies:
        return []
    name = upstream.name
    answered = Attempt(name, None, replies[0].latency_s)
    count = 0
    tried = []
    for reply in replies:
        if reply.failure is None:
            count += 1
            attempts.append(answered)
            tried.append(Tried(name, reply))
        else:
            tried.append(_recorded(upstream, reply, attempts))
    if count:
        record_success(health, answered.latency_s, count)
    return tried


def _recorded(upstream: Upstream, reply: Reply, attempts: list[Attempt]) -> Tried:
    """An attempt's reply classified, weighed in the upstream's health and logged."""
    classification = None if reply.failure is None else classify(reply.failure)
    if classification is None:
        record_success(upstream.health, reply.latency_s)
    else:
        _record_failure(upstream, classification)
    error_class = None if classification is None else classification.error_class
    attempts.append(Attempt(upstream.name, error_class, reply.latency_s))
    return Tried(upstream.name, reply, classification)


def cut_short(upstream: Upstream, elapsed_s: float, trace: CallTrace | None, why: str) -> None:
    """An attempt abandoned before it answered (a hedge's loser): it took at least
    `elapsed_s`, which its latency estimate learns, so it loses its place; the trace says
    why it has no answer."""
    record_latency(upstream.health, elapsed_s)
    if trace is not None:
        trace.attempts.append({"upstream": upstream.name, "result": why})


def _record_failure(upstream: Upstream, classification: Classification) -> None:
    now = time.monotonic()
    health = upstream.health
    was_available = health.is_available(now)
    record_failure(health, classification, now)
    if was_available and not health.is_available(now):
        log.warning(
            "upstream_cooldown",
            upstream=upstream.name,
            error_class=str(classification.error_class),
            reason=classification.reason,
            seconds=round(health.cooldown_until - now, 3),
        )
