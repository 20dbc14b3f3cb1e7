"""The aiohttp server: a thin shell from HTTP requests to the executor and back.

A request's path: read the body (within limits) -> frame it (`jsonrpc`) -> answer each item
(`execute`) -> encode, with diagnostics headers saying who answered and after how many
attempts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import structlog
from aiohttp import web
from orjson import Fragment

from rpcgate import __version__
from rpcgate.admin import add_admin_routes
from rpcgate.config import ChainConfig, Config
from rpcgate.drills import Drills
from rpcgate.execute import ChainRuntime
from rpcgate.failover import Outcome
from rpcgate.filters import FilterStore
from rpcgate.heads import State
from rpcgate.jsonrpc import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    UNKNOWN_CHAIN,
    Call,
    Invalid,
    Request,
    dumps,
    encode_response,
    parse_request,
    parse_single,
    response_object,
    rpc_error,
)
from rpcgate.masking import MASKER
from rpcgate.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from rpcgate.metrics import GatewayMetrics
from rpcgate.shared_head import SharedHeads
from rpcgate.shared_state import SharedState
from rpcgate.status import gateway_status, handle_status_page
from rpcgate.store import ResponseCache
from rpcgate.trace import HEADER_TRACE, wants_trace

log = structlog.get_logger("rpcgate.server")

HEADER_UPSTREAM = "X-Rpcgate-Upstream"
HEADER_ATTEMPTS = "X-Rpcgate-Attempts"
HEADER_CACHE = "X-Rpcgate-Cache"  # hit | miss | bypass, one per item of a batch
# The block number (decimal) an answer is about: the pinned block, or the block a by-hash
# answer is in; absent when none. For a batch, one per answer in order, "-" for none.
HEADER_BLOCK = "X-Rpcgate-Block"
# `Cache-Control: no-cache` (or this header set to `no-cache`) skips the cache read for the
# request; the fresh answer is still stored.
HEADER_CACHE_CONTROL = "X-Rpcgate-Cache-Control"
_CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
    "Access-Control-Allow-Headers": (
        f"Content-Type, Authorization, {HEADER_CACHE_CONTROL}, {HEADER_TRACE}"
    ),
    "Access-Control-Expose-Headers": (
        f"{HEADER_UPSTREAM}, {HEADER_ATTEMPTS}, {HEADER_CACHE}, {HEADER_BLOCK}"
    ),
    "Access-Control-Max-Age": "86400",
}


class Gateway:
    """The running chains, addressable by name, by chain id, and (the first) by '/'."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.cache = ResponseCache(config.cache)
        self.draining = False  # SIGTERM: /readyz says 503 while calls in flight finish
        self.drills = Drills()  # outage drills (admin.py): drained upstreams go last
        # Filters live in the gateway; with Redis, every replica serves every filter.
        cache = config.cache
        self.shared_state = (
            SharedState(cache.redis_url, cache.redis_prefix, cache.redis_timeout_s)
            if cache.redis_url
            else None
        )
        self.filter_store = FilterStore(self.shared_state)
        # With Redis, replicas share the highest head served (see shared_head.py).
        self.shared_heads = (
            SharedHeads(
                config.cache.redis_url, config.cache.redis_prefix, config.cache.redis_timeout_s
            )
            if config.cache.redis_url
            else None
        )
        self._retiring: set[asyncio.Task[None]] = set()  # chains replaced by a reload
        self.chains: list[ChainRuntime] = []
        self._by_path: dict[str, ChainRuntime] = {}
        self.set_chains([self.runtime_for(chain, config) for chain in config.chains])
        self.metrics = GatewayMetrics(self)

    def runtime_for(self, chain: ChainConfig, config: Config) -> ChainRuntime:
        return ChainRuntime(
            chain,
            config.failover,
            cache=self.cache,
            max_response_bytes=config.limits.max_response_bytes,
            max_concurrent_upstream_calls=config.limits.max_concurrent_upstream_calls,
            shared_heads=self.shared_heads,
            filter_store=self.filter_store,
            drills=self.drills,
            shared_state=self.shared_state,
        )

    def set_chains(self, chains: list[ChainRuntime]) -> None:
        """Serve these chains from now on (a reload swaps them in one step)."""
        by_path = {}
        for runtime in chains:
            by_path[runtime.config.name] = runtime
            by_path[str(runtime.config.chain_id)] = runtime
        self.chains, self._by_path = chains, by_path

    def chain_for(self, path: str | None) -> ChainRuntime | None:
        if not path:
            return self.chains[0]
        return self._by_path.get(path)

    def served_paths(self) -> list[str]:
        return [f"/{c.config.name} (/{c.config.chain_id})" for c in self.chains]

    async def start(self) -> None:
        # Chains start together: each waits for one head-poll round before serving.
        await asyncio.gather(self.cache.start(), self._start_chains())

    async def _start_chains(self) -> None:
        if self.shared_heads is not None:  # the head other replicas serve, before the first poll
            await self.shared_heads.start()
        await asyncio.gather(*(runtime.start() for runtime in self.chains))

    def retire(self, runtimes: list[ChainRuntime], after_s: float) -> None:
        """Close runtimes no longer served once the calls they carry are over."""

        async def close_later() -> None:
            try:
                for runtime in runtimes:
                    await runtime.tracker.stop()  # nothing routes by its heads any more
                await asyncio.sleep(after_s)
            finally:
                for runtime in runtimes:
                    await runtime.close()

        task = asyncio.create_task(close_later(), name="retire-chains")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for runtime in self.chains:
            await runtime.close()
        if self.shared_heads is not None:
            await self.shared_heads.close()
        if self.shared_state is not None:
            await self.shared_state.close()
        await self.cache.close()


GATEWAY = web.AppKey("gateway", Gateway)


@dataclass(slots=True)
class _Answer:
    body: dict[str, Any] | None  # None for a notification
    upstream: str
    attempts: int
    cache: str
    block: int | None = None


def _json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """Off the hot path: CORS headers always (a browser may read errors and status)."""
    return web.Response(
        body=dumps(payload),
        status=status,
        content_type="application/json",
        headers={**_CORS_HEADERS, **(headers or {})},
    )


def _gateway_error(status: int, code: int, message: str, data: Any = None) -> web.Response:
    return _json_response(
        response_object(None, error=rpc_error(code, message, data)),
        status,
        {HEADER_UPSTREAM: "gateway", HEADER_ATTEMPTS: "0"},
    )


async def _read_body(request: web.Request, limit: int) -> bytes | None:
    """The body, or None when it is over the limit (checked before and while reading)."""
    if request.content_length is not None:
        if request.content_length > limit:
            return None
        return await request.read()  # declared and within the limit: the fast path
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def _answer(
    chain: ChainRuntime,
    item: Call | Invalid,
    read_cache: bool,
    asked_locally: bool = False,
    *,
    metrics: GatewayMetrics,
    started: float,  # perf_counter() when the request arrived
    trace: bool = False,  # X-Rpcgate-Trace: the answer carries what routing did
) -> _Answer:
    if isinstance(item, Invalid):
        outcome = Outcome(error=item.error)
        metrics.call_answered(chain.config.name, None, outcome, perf_counter() - started)
        return _Answer(response_object(item.id, error=item.error), "gateway", 0, "bypass")
    metrics.in_flight[chain.config.name] += 1
    try:
        outcome = await chain.execute(
            item, read_cache=read_cache, asked_locally=asked_locally, trace=trace
        )
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
    return _Answer(body, outcome.upstream, outcome.attempts, outcome.cache, outcome.block)


def _skips_cache(headers: Mapping[str, str]) -> bool:
    for name in (HEADER_CACHE_CONTROL, "Cache-Control"):
        value = headers.get(name)
        if value is not None and "no-cache" in value.lower():
            return True
    return False


def _answer_in_hand(
    request: web.Request, chain: ChainRuntime, call: Call, read_cache: bool
) -> web.Response | None:
    """The hot path: one call the gateway answers from what it holds (a cache hit, the
    consensus head), with the result bytes as they were encoded when stored."""
    local = chain.answer_locally(call, read_cache)
    if local is None or local.result_json is None:
        return None
    payload = b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (dumps(call.id), local.result_json)
    headers = {
        HEADER_UPSTREAM: local.upstream,
        HEADER_ATTEMPTS: "0",
        HEADER_CACHE: local.cache,
        "Content-Type": "application/json",
    }
    if local.block is not None:
        headers[HEADER_BLOCK] = str(local.block)
    if "Origin" in request.headers:
        headers.update(_CORS_HEADERS)
    return web.Response(body=payload, headers=headers)


async def handle_rpc(request: web.Request) -> web.StreamResponse:
    started = perf_counter()
    gateway = request.app[GATEWAY]
    chain = gateway.chain_for(request.match_info.get("chain"))
    if chain is None:
        name = request.match_info.get("chain")
        return _gateway_error(
            404,
            UNKNOWN_CHAIN,
            f"unknown chain {name!r}; served: " + ", ".join(gateway.served_paths()),
        )
    limits = gateway.config.limits
    body = await _read_body(request, limits.max_body_bytes)
    if body is None:
        return _gateway_error(
            413,
            INVALID_REQUEST,
            f"request body exceeds {limits.max_body_bytes} bytes (limits.max_body_bytes)",
            {"limit": limits.max_body_bytes},
        )
    read_cache = not _skips_cache(request.headers)
    trace = wants_trace(request.headers.get(HEADER_TRACE))
    single = parse_single(body)
    asked_locally = single is not None and not single.is_notification and not trace
    if single is not None and asked_locally:
        in_hand = _answer_in_hand(request, chain, single, read_cache)
        if in_hand is not None:
            gateway.metrics.call_answered_locally(
                chain.config.name, single.method, perf_counter() - started
            )
            return in_hand
    parsed = (
        Request([single], is_batch=False)
        if single is not None
        else parse_request(body, limits.max_batch_items)
    )
    if len(parsed.items) == 1:
        answer = await _answer(
            chain,
            parsed.items[0],
            read_cache,
            asked_locally,
            metrics=gateway.metrics,
            started=started,
            trace=trace,
        )
        payload = encode_response([answer.body] if answer.body else [], parsed.is_batch)
        headers = {
            HEADER_UPSTREAM: answer.upstream,
            HEADER_ATTEMPTS: str(answer.attempts),
            HEADER_CACHE: answer.cache,
        }
        if answer.block is not None and answer.body is not None:
            headers[HEADER_BLOCK] = str(answer.block)
    else:
        answers = await asyncio.gather(
            *(
                _answer(chain, i, read_cache, metrics=gateway.metrics, started=started, trace=trace)
                for i in parsed.items
            )
        )
        payload = encode_response([a.body for a in answers if a.body is not None], True)
        headers = {
            HEADER_UPSTREAM: ",".join(dict.fromkeys(a.upstream for a in answers)),
            HEADER_ATTEMPTS: str(sum(a.attempts for a in answers)),
            HEADER_CACHE: ",".join(a.cache for a in answers),
            HEADER_BLOCK: ",".join(
                "-" if a.block is None else str(a.block) for a in answers if a.body is not None
            ),
        }
    if "Origin" in request.headers:  # only browsers send it; others are spared the headers
        headers.update(_CORS_HEADERS)
    if payload is None:  # only notifications: nothing to answer
        return web.Response(status=204, headers=headers)
    headers["Content-Type"] = "application/json"
    return web.Response(body=payload, headers=headers)


async def handle_not_post(request: web.Request) -> web.StreamResponse:
    return _gateway_error(405, INVALID_REQUEST, "JSON-RPC is served over POST")


async def handle_metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus scrapes this (text exposition format)."""
    body = request.app[GATEWAY].metrics.exposition()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


async def handle_root_get(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    return _json_response(
        {
            "name": "rpcgate",
            "version": __version__,
            "chains": [
                {
                    "name": c.config.name,
                    "chain_id": c.config.chain_id,
                    "upstreams": [u.name for u in c.upstreams.values()],
                }
                for c in gateway.chains
            ],
        }
    )


async def handle_status(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    return _json_response(gateway_status(gateway.chains, gateway.cache, gateway.drills))


async def handle_health(request: web.Request) -> web.StreamResponse:
    """Liveness: the process answers."""
    return _json_response({"status": "ok"})


async def handle_ready(request: web.Request) -> web.StreamResponse:
    """Readiness (a Kubernetes probe): every chain has a consensus head and an upstream in
    sync with it; otherwise 503, saying which chain is not ready and why."""
    gateway = request.app[GATEWAY]
    if gateway.draining:
        return _json_response({"status": "draining"}, status=503)
    not_ready = {}
    for runtime in gateway.chains:
        tracker = runtime.tracker
        in_sync = [v.name for v in tracker.views.values() if v.state is State.OK]
        if tracker.consensus.head is None or not in_sync:
            not_ready[runtime.config.name] = "; ".join(
                f"{v.name}: {v.state} ({v.reason})" for v in tracker.views.values()
            )
    if not_ready:
        return _json_response(
            {"status": "not ready", "chains": MASKER.mask_any(not_ready)}, status=503
        )
    return _json_response({"status": "ready"})


async def handle_preflight(request: web.Request) -> web.StreamResponse:
    """Browser dApps call the RPC URL directly, so the gateway answers CORS preflights."""
    return web.Response(status=204, headers=_CORS_HEADERS)


def build_app(config: Config) -> web.Application:
    # The body limit is enforced by _read_body with a JSON-RPC error; aiohttp's own limit
    # would answer with a bare 413 page.
    app = web.Application(client_max_size=config.limits.max_body_bytes + 1)
    gateway = Gateway(config)
    app[GATEWAY] = gateway

    async def lifecycle(app: web.Application) -> Any:
        await gateway.start()
        yield
        await gateway.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/readyz", handle_ready)
    app.router.add_get("/status.json", handle_status)
    app.router.add_get("/metrics", handle_metrics)  # before /{chain}, which would take it
    app.router.add_get("/status", handle_status_page)
    add_admin_routes(app, gateway)  # every /admin/... path, before /{chain}
    app.router.add_post("/", handle_rpc)
    app.router.add_get("/", handle_root_get)
    app.router.add_route("OPTIONS", "/", handle_preflight)
    app.router.add_post("/{chain}", handle_rpc)
    app.router.add_route("OPTIONS", "/{chain}", handle_preflight)
    app.router.add_route("*", "/{chain}", handle_not_post)
    return app
