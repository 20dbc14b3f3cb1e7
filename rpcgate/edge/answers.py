"""A parsed request answered: each item through its chain, then one body and the
diagnostics headers that say who answered, after how many attempts, from the cache or not,
and about which block. No HTTP here, so every ingress answers alike.

For a batch, every diagnostics header holds one value per answer, in the body's order (a
notification has no answer, so no value; `-` where an answer has none), so that value i of
each header is about answer i.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import structlog
from orjson import Fragment

from rpcgate.chain.outcome import Outcome
from rpcgate.chain.runtime import ChainRuntime
from rpcgate.ops.call_metrics import CallRecorder
from rpcgate.rpc.context import CLIENT_BATCH, CallContext, ClientBatch
from rpcgate.rpc.jsonrpc import (
    INTERNAL_ERROR,
    Call,
    Invalid,
    Request,
    dumps,
    encode_response,
    parse_single,
    request_of,
    response_object,
    rpc_error,
)
from rpcgate.rpc.masking import MASKER

log = structlog.get_logger("rpcgate.server")

# Who answered: an upstream, `cache` or `gateway`; the upstreams of a quorum joined by "+".
HEADER_UPSTREAM = "X-Rpcgate-Upstream"
HEADER_ATTEMPTS = "X-Rpcgate-Attempts"  # upstream calls made for the answer
HEADER_CACHE = "X-Rpcgate-Cache"  # hit | miss | bypass
# What was verified of the answer (chains[].verify): proof | integrity | consensus | none.
HEADER_VERIFIED = "X-Rpcgate-Verified"
# The block number (decimal) an answer is about: the pinned block, or the block a by-hash
# answer is in; absent when none ("-" in a batch).
HEADER_BLOCK = "X-Rpcgate-Block"
NO_VALUE = "-"
# `Cache-Control: no-cache` (or this header set to `no-cache`) skips the cache read for the
# request; the fresh answer is still stored.
HEADER_CACHE_CONTROL = "X-Rpcgate-Cache-Control"


@dataclass(slots=True)
class Answer:
    body: dict[str, Any] | None  # None for a notification
    upstream: str
    attempts: int
    cache: str
    block: int | None = None
    verified: str = "none"


async def answer_item(
    chain: ChainRuntime, item: Call | Invalid, context: CallContext, metrics: CallRecorder
) -> Answer:
    started, trace = context.started, context.trace
    if isinstance(item, Invalid):
        outcome = Outcome(error=item.error)
        metrics.call_answered(chain.config.name, None, outcome, perf_counter() - started)
        return Answer(response_object(item.id, error=item.error), "gateway", 0, "bypass")
    metrics.in_flight[chain.config.name] += 1
    try:
        outcome = await chain.execute(item, context)
    except Exception as exc:  # a bug must cost one answer, never the whole batch
        log.exception("execute_failed", method=item.method)
        outcome = Outcome(
            error=rpc_error(
                INTERNAL_ERROR, "internal gateway error", MASKER.mask(type(exc).__name__)
            )
        )
    finally:
        metrics.in_flight[chain.config.name] -= 1
    metrics.call_answered(chain.config.name, item.method, outcome, perf_counter() - started)
    result = outcome.result if outcome.result_json is None else Fragment(outcome.result_json)
    body = (
        None
        if item.is_notification
        else response_object(item.id, result=result, error=outcome.error)
    )
    if trace and body is not None:  # an extra member, only for a caller who asked
        body["trace"] = (
            outcome.trace.as_json()
            if outcome.trace is not None
            else {"answered_by": outcome.upstream, "cache": outcome.cache}
        )
    return Answer(
        body,
        outcome.upstream,
        outcome.attempts,
        outcome.cache,
        outcome.block,
        chain.verified_level(item, outcome),
    )


async def answer_request(
    chain: ChainRuntime, parsed: Request, context: CallContext, metrics: CallRecorder
) -> tuple[bytes | None, dict[str, str]]:
    """The body to send (None: only notifications) and the diagnostics headers."""
    if len(parsed.items) == 1:
        answers = [await answer_item(chain, parsed.items[0], context, metrics)]
    else:
        # What the gateway holds (cache hits, the head) is answered here and now, with no
        # task and no await; the rest takes the full path, each item in a task of its own.
        held: list[Answer | None] = [answer_held(chain, i, context, metrics) for i in parsed.items]
        rest = [item for item, answer in zip(parsed.items, held, strict=True) if answer is None]
        fetched: list[Answer] = []
        if rest:
            # The items' upstream calls travel as upstream batches (upstream.py); each item
            # keeps its own failover. The tasks gather makes copy the context as it is here.
            in_batch = CLIENT_BATCH.set(ClientBatch())
            try:
                fetched = await asyncio.gather(
                    *(answer_item(chain, i, context.for_item(), metrics) for i in rest)
                )
            finally:
                CLIENT_BATCH.reset(in_batch)
        others = iter(fetched)
        answers = [answer if answer is not None else next(others) for answer in held]
    payload = encode_response([a.body for a in answers if a.body is not None], parsed.is_batch)
    return payload, diagnostics(answers, parsed.is_batch)


def answer_held(
    chain: ChainRuntime, item: Call | Invalid, context: CallContext, metrics: CallRecorder
) -> Answer | None:
    """A batch item's answer when the gateway has it in hand (as `answer_in_hand`); None
    when it needs the full path (or the client asked for a trace)."""
    if not isinstance(item, Call) or item.is_notification or context.trace:
        return None
    try:
        local = chain.answer_locally(item, context.read_cache)
    except Exception:  # a bug: the item takes the full path, whose errors are answered
        log.exception("answer_locally_failed", method=item.method)
        return None
    if local is None or local.result_json is None:
        return None
    metrics.call_answered_locally(chain.config.name, item.method, perf_counter() - context.started)
    return Answer(
        {"jsonrpc": "2.0", "id": item.id, "result": Fragment(local.result_json)},
        local.upstream,
        0,
        local.cache,
        local.block,
        chain.verified_level(item, local),
    )


def answer_in_hand(
    chain: ChainRuntime, call: Call, read_cache: bool = True
) -> tuple[bytes, dict[str, str]] | None:
    """The hot path: one call the gateway answers from what it holds (a cache hit, the
    consensus head), with the result bytes as they were encoded when stored; None when the
    call needs the full path (`answer_request`)."""
    try:
        local = chain.answer_locally(call, read_cache)
    except Exception:  # a bug: the call takes the full path, whose errors are answered
        log.exception("answer_locally_failed", method=call.method)
        return None
    if local is None or local.result_json is None:
        return None
    payload = b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (dumps(call.id), local.result_json)
    headers = {
        HEADER_UPSTREAM: local.upstream,
        HEADER_ATTEMPTS: "0",
        HEADER_CACHE: local.cache,
        HEADER_VERIFIED: chain.verified_level(call, local),
    }
    if local.block is not None:
        headers[HEADER_BLOCK] = str(local.block)
    return payload, headers


async def answer_body(
    chain: ChainRuntime,
    body: bytes,
    *,
    budget_s: float,
    max_batch_items: int,
    max_depth: int,
    metrics: CallRecorder,
    read_cache: bool = True,
) -> bytes | None:
    """A request body answered with no transport around it (an embedded gateway): framed
    as the HTTP server frames it, then the hot path or the full one. None: only
    notifications were sent."""
    started = perf_counter()
    single = parse_single(body, max_depth=max_depth)
    if single is not None and not single.is_notification:
        in_hand = answer_in_hand(chain, single, read_cache)
        if in_hand is not None:
            metrics.call_answered_locally(
                chain.config.name, single.method, perf_counter() - started
            )
            return in_hand[0]
    parsed = request_of(body, single, max_batch_items, max_depth=max_depth)
    context = CallContext.arriving(
        budget_s, started=started, read_cache=read_cache, asked_locally=single is not None
    )
    payload, _ = await answer_request(chain, parsed, context, metrics)
    return payload


def diagnostics(answers: list[Answer], is_batch: bool) -> dict[str, str]:
    """The diagnostics headers. For a batch, one value per answer in the body's order, `-`
    where an answer has none; none at all when only notifications were sent."""
    if not is_batch:
        (answer,) = answers
        headers = {
            HEADER_UPSTREAM: _answered_by(answer),
            HEADER_ATTEMPTS: str(answer.attempts),
            HEADER_CACHE: answer.cache,
            HEADER_VERIFIED: answer.verified,
        }
        if answer.block is not None and answer.body is not None:
            headers[HEADER_BLOCK] = str(answer.block)
        return headers
    answered = [a for a in answers if a.body is not None]
    if not answered:
        return {}
    return {
        HEADER_UPSTREAM: ",".join(_answered_by(a) for a in answered),
        HEADER_ATTEMPTS: ",".join(str(a.attempts) for a in answered),
        HEADER_CACHE: ",".join(a.cache or NO_VALUE for a in answered),
        HEADER_VERIFIED: ",".join(a.verified or NO_VALUE for a in answered),
        HEADER_BLOCK: ",".join(NO_VALUE if a.block is None else str(a.block) for a in answered),
    }


def _answered_by(answer: Answer) -> str:
    """One value, whoever answered: a quorum's upstreams come comma-joined."""
    return answer.upstream.replace(",", "+") or NO_VALUE
