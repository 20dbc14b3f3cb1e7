"""An `eth_getLogs` range the upstreams refuse as too large, fetched in parts.

Providers cap the blocks (or the logs) one `eth_getLogs` may cover, each at its own limit,
and often say which range would work. When every upstream has turned a range down for its
size, the range is cut into contiguous parts (of the size the refusal suggests, else in
halves), the parts go through the usual failover a few at a time, a part refused again is
cut again, and the answer is the parts' logs concatenated in part order: ordered by
(blockNumber, logIndex), as a node would give them. The answer is whole or an error: a part
that fails fails the call.

Planning (`log_range`, `plan_parts`, `refused_as_too_large`) is pure; `split_get_logs`
does the fetching.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field
from typing import Any

from rpcgate.chain.failover import Failover
from rpcgate.chain.outcome import Outcome
from rpcgate.rpc.context import CallContext
from rpcgate.rpc.errors import RETRY_ELSEWHERE, ErrorClass, suggested_block_range
from rpcgate.rpc.jsonrpc import ALL_UPSTREAMS_FAILED, DEADLINE_EXCEEDED, Call, quantity, rpc_error
from rpcgate.upstream.attempt import Attempt

# Parts in flight at once, per call: enough to hide one part's latency behind the others',
# few enough that a wide range does not crowd a provider's per-second budget.
PARTS_IN_FLIGHT = 4
# Most part calls (failover runs) one split may spend, re-splits included. It also bounds
# the depth (every level spends at least two); a range that needs more is answered with
# the upstream's refusal, which tells the caller to ask for less.
MAX_PART_CALLS = 64


@dataclass(frozen=True, slots=True)
class BlockRange:
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1


def log_range(log_filter: Any) -> BlockRange | None:
    """The blocks a pinned `eth_getLogs` filter covers; None when it cannot be split: a
    `blockHash` filter, a bound that is not a number (`pending`, a tag the consensus could
    not pin), or an empty range."""
    if not isinstance(log_filter, dict) or "blockHash" in log_filter:
        return None
    bounds = [log_filter.get("fromBlock"), log_filter.get("toBlock")]
    first, last = (0 if bound == "earliest" else quantity(bound) for bound in bounds)
    if first is None or last is None or first > last:
        return None
    return BlockRange(first, last)


def plan_parts(whole: BlockRange, suggested: tuple[int, int] | None) -> list[BlockRange] | None:
    """Contiguous parts covering `whole` in order: each the size of the suggested range when
    it is smaller than `whole` (providers suggest a prefix of the range asked; the rest is
    cut to the same size), else two halves. None for a single block: the upstream's refusal
    of one block is its final word."""
    if whole.size <= 1:
        return None
    part_size = (whole.size + 1) // 2
    if suggested is not None and 1 <= suggested[1] - suggested[0] + 1 < whole.size:
        part_size = suggested[1] - suggested[0] + 1
    return [
        BlockRange(first, min(first + part_size - 1, whole.last))
        for first in range(whole.first, whole.last + 1, part_size)
    ]


def refused_as_too_large(outcome: Outcome) -> bool:
    """Whether the upstreams turned the call down for its size: it failed, some upstream
    said too large, none said the call itself is wrong (that answer goes back as it is),
    and the call's time is not spent."""
    if outcome.error is None or outcome.error.get("code") == DEADLINE_EXCEEDED:
        return False
    classes = [attempt.error_class for attempt in outcome.attempt_log]
    return ErrorClass.TOO_LARGE in classes and all(c in RETRY_ELSEWHERE for c in classes)


def suggested_range(error: dict[str, Any]) -> tuple[int, int] | None:
    """The range a refusal suggests: in the upstream's own error, or, when the upstreams
    failed in different ways, in one of the attempts the gateway's error lists."""
    texts = [error.get("message")]
    data = error.get("data")
    if isinstance(data, dict) and isinstance(data.get("attempts"), list):
        texts += [a.get("detail") for a in data["attempts"] if isinstance(a, dict)]
    for text in texts:
        found = suggested_block_range(text) if isinstance(text, str) else None
        if found is not None:
            return found
    return None


@dataclass
class _Split:
    """One call's split in progress: what it may still spend, and what it spent."""

    call: Call
    failover: Failover
    head: int | None
    slots: asyncio.Semaphore
    context: CallContext | None = None  # the call's, whose deadline bounds every part
    calls_left: int = MAX_PART_CALLS
    attempts: int = 0
    attempt_log: list[Attempt] = field(default_factory=list)
    failure: Outcome | None = None  # the first part that failed; the others stop

    def fail(self, outcome: Outcome) -> None:
        if self.failure is None:
            self.failure = outcome


async def split_get_logs(
    call: Call,
    refusal: Outcome,
    failover: Failover,
    head: int | None,
    context: CallContext | None = None,
) -> Outcome:
    """The logs of `call`'s range fetched in parts after `refusal` (every upstream found the
    whole range too large); `refusal` itself when the range cannot be split. The parts get
    what is left of the call's one deadline (`failover.deadline_s` from its arrival)."""
    params = call.params
    log_filter = params[0] if isinstance(params, list) and params else None
    whole = log_range(log_filter)
    if whole is None or refusal.error is None:
        return refusal
    split = _Split(call, failover, head, asyncio.Semaphore(PARTS_IN_FLIGHT), context)
    deadline_s = failover.config.deadline_s
    left_s = deadline_s if context is None else context.left_s()
    try:
        async with asyncio.timeout(left_s):
            pieces = await _fetch_range(split, whole, refusal)
    except TimeoutError:
        message = f"the parts of the eth_getLogs range did not arrive within {deadline_s} s"
        split.fail(Outcome(error=rpc_error(DEADLINE_EXCEEDED, message + " (failover.deadline_s)")))
        pieces = []
    attempts = refusal.attempts + split.attempts
    attempt_log = refusal.attempt_log + tuple(split.attempt_log)
    if split.failure is not None:
        failure = split.failure
        return dataclasses.replace(
            refusal,
            result=None,
            error=failure.error,
            upstream=failure.upstream,
            attempts=attempts,
            attempt_log=attempt_log,
        )
    upstreams = dict.fromkeys(upstream for _, upstream in pieces)
    return dataclasses.replace(
        refusal,
        result=[log for logs, _ in pieces for log in logs],
        error=None,
        upstream=",".join(upstreams),
        attempts=attempts,
        attempt_log=attempt_log,
    )


async def _fetch_range(
    split: _Split, whole: BlockRange, refusal: Outcome
) -> list[tuple[list[Any], str]]:
    """The logs of `whole` in parts, as (logs, upstream) in part order; on a failure, what
    came so far (the caller answers with `split.failure`)."""
    assert refusal.error is not None
    parts = plan_parts(whole, suggested_range(refusal.error))
    if parts is None or len(parts) > split.calls_left:
        split.fail(refusal)
        return []
    split.calls_left -= len(parts)
    fetched = await asyncio.gather(*(_fetch_part(split, part) for part in parts))
    return [piece for pieces in fetched for piece in pieces]


async def _fetch_part(split: _Split, part: BlockRange) -> list[tuple[list[Any], str]]:
    async with split.slots:
        if split.failure is not None:
            return []  # another part failed: the call has its answer
        params = split.call.params
        assert isinstance(params, list)
        part_filter = {**params[0], "fromBlock": hex(part.first), "toBlock": hex(part.last)}
        part_call = Call(
            split.call.method, [part_filter, *params[1:]], split.call.id, is_notification=False
        )
        outcome = await split.failover.run(
            part_call, part.last, split.head, context=split.context and split.context.part()
        )
    split.attempts += outcome.attempts
    split.attempt_log.extend(outcome.attempt_log)
    if outcome.error is None and isinstance(outcome.result, list):
        return [(outcome.result, outcome.upstream)]
    if outcome.error is None:
        message = f"{outcome.upstream} answered eth_getLogs with something other than a list"
        split.fail(Outcome(error=rpc_error(ALL_UPSTREAMS_FAILED, message)))
        return []
    if refused_as_too_large(outcome):
        return await _fetch_range(split, part, outcome)
    split.fail(outcome)
    return []
