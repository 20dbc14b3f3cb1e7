"""One JSON-RPC POST to an RPC route answered, whatever HTTP server carried it.

The path's segments, the header fields, the query and the peer's address come in as plain
values, the body as bytes, and a `Reply` (status, fields, body) goes out: no transport
here. aiohttp's handler (`http_server.handle_rpc`) and the fast path (`fast_http`) both
call it, so every decision about an RPC POST is made in this one place:

1. `route`: the chain the path names and who calls it (`clients`, through the ingress's
   admission), before the body is read; a refusal (unknown chain, refused key) is the
   answer.
2. The server reads the body within `limits` (a refused body: `body_refused`).
3. `at_once`: what the gateway holds (a cache hit, the head, a batch answered a moment
   ago) is answered there and then, without awaiting anything, when the caller's rate
   limit is decided in process too (no limit, the replica's lease of the caller's tokens,
   or a bucket counted here); None otherwise.
4. `in_full`: the rest (admission, then `answers.answer_request`).

A bug in steps 3 and 4 is logged and answered 500 with a JSON-RPC error, and the
connection is closed after it, as aiohttp does with a handler's exception.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import structlog

from rpcgate.chain.runtime import ChainRuntime
from rpcgate.edge.answers import (
    HEADER_ATTEMPTS,
    HEADER_CACHE_CONTROL,
    HEADER_UPSTREAM,
    answer_in_hand,
    answer_request,
    batch_in_hand,
)
from rpcgate.edge.clients import UNAUTHORIZED, Caller, Refusal
from rpcgate.edge.connections import BodyRefused
from rpcgate.edge.ingress import Ingress
from rpcgate.edge.rate_limits import LIMIT_EXCEEDED, Verdict, retry_after_header
from rpcgate.rpc.context import CallContext
from rpcgate.rpc.jsonrpc import (
    INTERNAL_ERROR,
    UNKNOWN_CHAIN,
    Call,
    dumps,
    parse_single,
    request_of,
    response_object,
    rpc_error,
)
from rpcgate.rpc.trace import HEADER_TRACE, wants_trace

log = structlog.get_logger("rpcgate.server")


@dataclass(slots=True)
class Reply:
    """An answer as HTTP: a status, header fields and a JSON body."""

    status: int
    fields: dict[str, str]
    body: bytes | None  # None: no body (204, only notifications were sent)
    close: bool = False  # the connection ends after this answer (what is left is unread)


def gateway_error(
    ingress: Ingress,
    origin: str | None,
    status: int,
    code: int,
    message: str,
    data: Any = None,
    fields: dict[str, str] | None = None,
) -> Reply:
    """The gateway's own error (no upstream asked), readable by a browser page allowed
    to call (CORS)."""
    return Reply(
        status,
        {
            **ingress.cors.headers(origin),
            HEADER_UPSTREAM: "gateway",
            HEADER_ATTEMPTS: "0",
            **(fields or {}),
        },
        dumps(response_object(None, error=rpc_error(code, message, data))),
    )


# Who calls, where nothing needs to know (no keys, no limits): the hot path skips working
# out the client's address.
_UNIDENTIFIED = Caller("unidentified")


def chain_and_caller(
    ingress: Ingress,
    chain_segment: str | None,
    key_segment: str | None,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    peer: str | None,
    *,
    identify: bool = True,
) -> tuple[ChainRuntime, Caller] | Reply:
    """The chain the path names and who calls it (when `identify`), or the error answer."""
    gateway = ingress.gateway
    chain = gateway.chain_for(chain_segment)
    if chain is None:
        return gateway_error(
            ingress,
            headers.get("Origin"),
            404,
            UNKNOWN_CHAIN,
            f"unknown chain {chain_segment!r}; served: " + ", ".join(gateway.served_paths()),
        )
    if not identify:
        return chain, _UNIDENTIFIED
    caller = ingress.admission.caller(
        path_key=key_segment,
        headers=headers,
        query=query,
        peer=peer,
        chain_name=chain.config.name,
        chain_id=chain.config.chain_id,
    )
    if isinstance(caller, Refusal):
        return gateway_error(
            ingress, headers.get("Origin"), caller.status, UNAUTHORIZED, caller.message
        )
    return chain, caller


def _skips_cache(headers: Mapping[str, str]) -> bool:
    for name in (HEADER_CACHE_CONTROL, "Cache-Control"):
        value = headers.get(name)
        if value is not None and "no-cache" in value.lower():
            return True
    return False


class RpcPost:
    """One POST to `/`, `/{chain}` or `/{chain}/{key}`, from its head to its answer."""

    __slots__ = (
        "_body",
        "_caller",
        "_chain",
        "_cost",
        "_in_hand",
        "_read_cache",
        "_record",
        "_single",
        "_trace",
        "chain_segment",
        "headers",
        "ingress",
        "key_segment",
        "peer",
        "query",
        "started",
    )

    def __init__(
        self,
        ingress: Ingress,
        chain_segment: str | None,
        key_segment: str | None,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        peer: str | None,
        started: float | None = None,
    ) -> None:
        self.ingress = ingress
        self.chain_segment = chain_segment
        self.key_segment = key_segment
        self.headers = headers
        self.query = query
        self.peer = peer
        self.started = perf_counter() if started is None else started
        self._chain: ChainRuntime | None = None
        self._caller = _UNIDENTIFIED
        self._body = b""
        self._single: Call | None = None
        self._read_cache = True
        self._trace = False
        # An answer in hand waiting for the caller's tokens (`cost` calls), and what to
        # record once it is given.
        self._in_hand: Reply | None = None
        self._cost = 0
        self._record: Sequence[tuple[str, int]] = ()

    def route(self) -> Reply | None:
        """The refusal when the chain is unknown or the caller refused; None: read the body."""
        found = chain_and_caller(
            self.ingress,
            self.chain_segment,
            self.key_segment,
            self.headers,
            self.query,
            self.peer,
            identify=self.ingress.admission.identifies,
        )
        if isinstance(found, Reply):
            return found
        self._chain, self._caller = found
        return None

    def body_refused(self, refused: BodyRefused) -> Reply:
        """The answer to a body not read (too large, too slow); the connection ends after."""
        reply = self._error(refused.status, refused.code, refused.message, refused.data)
        reply.close = True
        return reply

    def at_once(self, body: bytes) -> Reply | None:
        """The answer when the gateway holds it and the caller's rate limit (if any) is
        decided without a wait (`Admission.admit_now`); None: await `in_full`."""
        try:
            return self._at_once(body)
        except Exception:
            return self._failed()

    async def in_full(self) -> Reply:
        """The answer, after `at_once` said None."""
        try:
            return await self._in_full()
        except Exception:
            return self._failed()

    async def answer(self, body: bytes) -> Reply:
        """`at_once`, else `in_full`: for a server that awaits anyway."""
        reply = self.at_once(body)
        return reply if reply is not None else await self.in_full()

    def _at_once(self, body: bytes) -> Reply | None:
        chain = self._chain
        assert chain is not None, "route() comes first"
        self._body = body
        headers = self.headers
        admission = self.ingress.admission
        limits = self.ingress.gateway.config.limits
        read_cache = self._read_cache = not _skips_cache(headers)
        trace = self._trace = wants_trace(headers.get(HEADER_TRACE))
        single = self._single = parse_single(body, max_depth=limits.max_json_depth)
        if single is not None and not single.is_notification and not trace:
            in_hand = answer_in_hand(chain, single, read_cache)
            if in_hand is not None:
                payload, fields = in_hand
                self._add_cors(fields)
                reply = Reply(200, fields, payload)
                if admission.enforces:
                    verdict = admission.admit_now(self._caller, 1)
                    if verdict is None:  # the caller's tokens are to be had from Redis
                        self._in_hand, self._cost = reply, 1
                        self._record = [(single.method, 1)]
                        return None
                    if not verdict.allowed:
                        return self._refused(verdict)
                self.ingress.gateway.metrics.call_answered_locally(
                    chain.config.name, single.method, perf_counter() - self.started
                )
                return reply
        if single is None and read_cache and not trace:
            held = batch_in_hand(chain, body)  # the same calls answered a moment ago
            if held is not None:
                answered, batch = held
                fields = dict(batch.headers)
                self._add_cors(fields)
                reply = Reply(200, fields, answered)
                methods = list(batch.methods)
                if admission.enforces:
                    verdict = admission.admit_now(self._caller, len(batch.results))
                    if verdict is None:  # the caller's tokens are to be had from Redis
                        self._in_hand, self._cost = reply, len(batch.results)
                        self._record = methods
                        return None
                    if not verdict.allowed:
                        return self._refused(verdict)
                self._record_local(methods)
                return reply
        return None

    async def _in_full(self) -> Reply:
        chain = self._chain
        assert chain is not None, "route() comes first"
        admission = self.ingress.admission
        held = self._in_hand
        if held is not None:  # in hand, once the caller's tokens are taken
            verdict = await admission.admit(self._caller, self._cost, in_flight=False)
            if not verdict.allowed:
                return self._refused(verdict)
            self._record_local(self._record)
            return held
        gateway = self.ingress.gateway
        limits = gateway.config.limits
        headers = self.headers
        read_cache = self._read_cache = not _skips_cache(headers)
        trace = self._trace = wants_trace(headers.get(HEADER_TRACE))
        single = self._single
        asked_locally = single is not None and not single.is_notification and not trace
        parsed = request_of(
            self._body, single, limits.max_batch_items, max_depth=limits.max_json_depth
        )
        cost = len(parsed.items)
        context = CallContext.arriving(
            gateway.config.failover.deadline_s,
            started=self.started,
            read_cache=read_cache,
            asked_locally=asked_locally,
            trace=trace,
        )
        if not admission.enforces:
            payload, fields = await answer_request(chain, parsed, context, gateway.metrics)
        else:
            verdict = await admission.admit(self._caller, cost)
            if not verdict.allowed:
                return self._refused(verdict)
            try:
                payload, fields = await answer_request(chain, parsed, context, gateway.metrics)
            finally:
                admission.leave(self._caller, cost)
        self._add_cors(fields)  # only browsers send Origin; others are spared the headers
        if payload is None:  # only notifications: nothing to answer
            return Reply(204, fields, None)
        return Reply(200, fields, payload)

    def _add_cors(self, fields: dict[str, str]) -> None:
        origin = self.headers.get("Origin")
        if origin is not None:
            fields.update(self.ingress.cors.headers(origin))

    def _record_local(self, methods: Sequence[tuple[str, int]]) -> None:
        chain = self._chain
        assert chain is not None
        elapsed = perf_counter() - self.started
        metrics = self.ingress.gateway.metrics
        for method, calls in methods:
            metrics.call_answered_locally(chain.config.name, method, elapsed, calls)

    def _refused(self, verdict: Verdict) -> Reply:
        data = {"retry_after_s": round(verdict.retry_after_s, 3)} if verdict.retry_after_s else None
        return self._error(
            429, LIMIT_EXCEEDED, verdict.message, data, retry_after_header(verdict.retry_after_s)
        )

    def _error(
        self,
        status: int,
        code: int,
        message: str,
        data: Any = None,
        fields: dict[str, str] | None = None,
    ) -> Reply:
        return gateway_error(
            self.ingress, self.headers.get("Origin"), status, code, message, data, fields
        )

    def _failed(self) -> Reply:
        chain = self._chain
        log.exception("rpc_post_failed", chain=chain.config.name if chain else None)
        reply = self._error(500, INTERNAL_ERROR, "internal gateway error")
        reply.close = True
        return reply
