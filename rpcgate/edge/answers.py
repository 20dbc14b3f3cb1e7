"""A parsed request answered: each item through its chain, then one body and the
diagnostics headers that say who answered, after how many attempts, from the cache or not,
and about which block. No HTTP here, so every ingress answers alike.

For a batch, every diagnostics header holds one value per answer, in the body's order (a
notification has no answer, so no value; `-` where an answer has none), so that value i of
each header is about answer i.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import orjson
import structlog
from orjson import Fragment, loads

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
    held: bytes | None = None  # the result's JSON, when answered from what the gateway holds


async def answer_many(
    chain: ChainRuntime, items: list[Call | Invalid], context: CallContext, metrics: CallRecorder
) -> list[Answer]:
    """Several items of a batch, their calls answered together (`execute_many`)."""
    calls = [item for item in items if isinstance(item, Call)]
    name = chain.config.name
    metrics.in_flight[name] += len(calls)
    try:
        outcomes = iter(await chain.execute_many(calls, context))
    finally:
        metrics.in_flight[name] -= len(calls)
    answers = []
    answered = []
    for item in items:
        if isinstance(item, Invalid):
            answers.append(await answer_item(chain, item, context, metrics))
            continue
        outcome = next(outcomes)
        answered.append((item.method, outcome))
        answers.append(_answer_of(chain, item, outcome, context.trace))
    metrics.calls_answered(name, answered, perf_counter() - context.started)
    return answers


def _answer_of(chain: ChainRuntime, item: Call, outcome: Outcome, trace: bool) -> Answer:
    body: dict[str, Any] | None = None
    if item.is_notification:
        pass
    elif outcome.error is not None:
        body = {"jsonrpc": "2.0", "id": item.id, "error": outcome.error}
    else:  # `response_object`, spelt out: once per answer of a batch
        result = outcome.result if outcome.result_json is None else Fragment(outcome.result_json)
        body = {"jsonrpc": "2.0", "id": item.id, "result": result}
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
    return _answer_of(chain, item, outcome, trace)


async def answer_request(
    chain: ChainRuntime, parsed: Request, context: CallContext, metrics: CallRecorder
) -> tuple[bytes | None, dict[str, str]]:
    """The body to send (None: only notifications) and the diagnostics headers."""
    if len(parsed.items) == 1:
        answers = [await answer_item(chain, parsed.items[0], context, metrics)]
    else:
        in_batch = CLIENT_BATCH.set(ClientBatch())
        try:
            # What the gateway holds (cache hits, the head) is answered here and now, with
            # no task and no await; the rest takes the full path.
            held = answers_held(chain, parsed.items, context, metrics)
            rest = [item for item, answer in zip(parsed.items, held, strict=True) if answer is None]
            fetched: list[Answer] = []
            if rest:
                # The items' upstream calls travel as upstream batches (upstream.py): plain
                # reads together, on one upstream (`execute_many`); the others each with its
                # own failover, in tasks that copy the context as it is here.
                calls = [i for i in rest if isinstance(i, Call)]
                if len(calls) > 1 and not context.trace:
                    fetched = await answer_many(chain, rest, context, metrics)
                else:
                    fetched = await asyncio.gather(
                        *(answer_item(chain, i, context.for_item(), metrics) for i in rest)
                    )
        finally:
            CLIENT_BATCH.reset(in_batch)
        others = iter(fetched)
        answers = [answer if answer is not None else next(others) for answer in held]
        if not rest and parsed.is_batch and context.read_cache and not context.trace:
            remember_held_batch(chain, parsed, answers)
    payload = encode_response([a.body for a in answers if a.body is not None], parsed.is_batch)
    return payload, diagnostics(answers, parsed.is_batch)


@dataclass(slots=True)
class HeldBatch:
    """A batch every item of which the gateway answered from what it holds, as sent: the
    same calls (whatever their ids) get the same answers while the consensus is the same."""

    view: object  # the chain's consensus view it was answered in (ChainRuntime.view_token)
    until: float  # monotonic: remembered this long at most
    results: list[bytes]
    headers: dict[str, str]
    methods: list[tuple[str, int]]  # each method, and how many of its calls
    cache_hits: int  # items answered from the cache (the others: the consensus head)


HELD_BATCH_S = 1.0
_HELD_BATCHES = 256  # per chain
_ITEM_MEMBERS = frozenset({"jsonrpc", "id", "method", "params"})


def _batch_calls(items: list[Any]) -> bytes | None:
    """What a batch asks, ids aside, as one key; None for params orjson will not encode
    (deeper than it goes, integers beyond 64 bits): such a batch is never one remembered."""
    try:
        return orjson.dumps([[method, params] for method, params in items])
    except orjson.JSONEncodeError:
        return None


def remember_held_batch(chain: ChainRuntime, parsed: Request, answers: list[Answer]) -> None:
    calls: list[tuple[Any, Any]] = []
    results: list[bytes] = []
    for item, answer in zip(parsed.items, answers, strict=True):
        if not isinstance(item, Call) or answer.body is None:
            return
        if answer.held is None:
            return
        calls.append((item.method, item.params))
        results.append(answer.held)
    held = chain.held_batches
    key = _batch_calls(calls)
    if key is None:
        return
    if len(held) >= _HELD_BATCHES:
        held.clear()
    held[key] = HeldBatch(
        chain.view_token(),
        perf_counter() + HELD_BATCH_S,
        results,
        diagnostics(answers, True),
        list(Counter(str(c[0]) for c in calls).items()),
        sum(answer.cache == "hit" for answer in answers),
    )


def batch_in_hand(chain: ChainRuntime, body: bytes) -> tuple[bytes, HeldBatch] | None:
    """A batch answered as the same calls were a moment ago (`HeldBatch`), with this
    request's ids: the body and what was remembered; None when it is not one (the full
    parse and path then answer it)."""
    held = chain.held_batches
    if not held or body.lstrip()[:1] != b"[" or chain.tracker.behind_shared:
        return None  # behind another replica's head: the head is asked anew
    try:
        items = loads(body)
    except ValueError:
        return None
    if type(items) is not list:
        return None
    calls: list[tuple[Any, Any]] = []
    ids: list[Any] = []
    for item in items:
        if type(item) is not dict or item.get("jsonrpc") != "2.0":
            return None
        if not item.keys() <= _ITEM_MEMBERS:
            return None
        ident = item.get("id", _NO_ID)
        if ident is not None and type(ident) not in (str, int):
            return None  # a notification, or an id the full parse must judge
        ids.append(ident)
        calls.append((item.get("method"), item.get("params")))
    key = _batch_calls(calls)
    found = held.get(key) if key is not None else None
    if found is None or found.view is not chain.view_token() or found.until < perf_counter():
        return None
    payload = b"[%s]" % b",".join(
        b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (dumps(ident), result)
        for ident, result in zip(ids, found.results, strict=True)
    )
    chain.cache_counters.hits += found.cache_hits
    return payload, found


_NO_ID = object()


def answers_held(
    chain: ChainRuntime, items: list[Call | Invalid], context: CallContext, metrics: CallRecorder
) -> list[Answer | None]:
    """A batch's items' answers where the gateway has them in hand (as `answer_in_hand`);
    None for each that needs the full path (all of them when the client asked for a
    trace)."""
    held: list[Answer | None] = [None] * len(items)
    if context.trace:
        return held
    asked = [i if type(i) is Call and not i.is_notification else None for i in items]
    try:
        found = chain.answer_locally_many(asked, context.read_cache)
    except Exception:  # a bug: the items take the full path, whose errors are answered
        log.exception("answer_locally_failed", calls=len(items))
        return held
    elapsed = perf_counter() - context.started
    name = chain.config.name
    for index, (item, local) in enumerate(zip(asked, found, strict=True)):
        if item is None or local is None or local.result_json is None:
            continue
        metrics.call_answered_locally(name, item.method, elapsed)
        held[index] = Answer(
            {"jsonrpc": "2.0", "id": item.id, "result": Fragment(local.result_json)},
            local.upstream,
            0,
            local.cache,
            local.block,
            chain.verified_level(item, local),
            local.result_json,
        )
    return held


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
    if single is None and read_cache:
        held = batch_in_hand(chain, body)
        if held is not None:
            answered, batch = held
            elapsed = perf_counter() - started
            for method, calls in batch.methods:
                metrics.call_answered_locally(chain.config.name, method, elapsed, calls)
            return answered
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
    upstreams: list[str] = []
    attempts: list[str] = []
    caches: list[str] = []
    verified: list[str] = []
    blocks: list[str] = []
    for a in answers:  # one pass: a batch of hundreds is answered here
        if a.body is None:
            continue
        upstreams.append(a.upstream.replace(",", "+") or NO_VALUE)  # `_answered_by`
        attempts.append(str(a.attempts))
        caches.append(a.cache or NO_VALUE)
        verified.append(a.verified or NO_VALUE)
        blocks.append(NO_VALUE if a.block is None else str(a.block))
    if not upstreams:
        return {}
    return {
        HEADER_UPSTREAM: ",".join(upstreams),
        HEADER_ATTEMPTS: ",".join(attempts),
        HEADER_CACHE: ",".join(caches),
        HEADER_VERIFIED: ",".join(verified),
        HEADER_BLOCK: ",".join(blocks),
    }


def _answered_by(answer: Answer) -> str:
    """One value, whoever answered: a quorum's upstreams come comma-joined."""
    return answer.upstream.replace(",", "+") or NO_VALUE
