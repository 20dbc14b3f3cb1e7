"""The aiohttp server: a thin shell from HTTP requests to the executor and back.

A request's path: read the body (within limits) -> frame it (`jsonrpc`) -> answer each item
(`execute`) -> encode, with diagnostics headers saying who answered and after how many
attempts.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from time import perf_counter
from typing import Any

import orjson
import structlog
from aiohttp import HttpVersion11, web

from rpcgate import __version__
from rpcgate.chain.runtime import ChainRuntime
from rpcgate.config.settings import Config
from rpcgate.consensus.heads import State
from rpcgate.edge.answers import (
    HEADER_ATTEMPTS,
    HEADER_CACHE_CONTROL,
    HEADER_UPSTREAM,
    answer_in_hand,
    answer_request,
    batch_in_hand,
)
from rpcgate.edge.clients import UNAUTHORIZED, Caller, Refusal
from rpcgate.edge.connections import BodyRefused, body_too_large, read_body
from rpcgate.edge.gateway import Gateway
from rpcgate.edge.ingress import Ingress
from rpcgate.edge.rate_limits import LIMIT_EXCEEDED, Verdict, retry_after_header
from rpcgate.edge.responses import JsonAnswer
from rpcgate.edge.siblings import FORWARDED, SiblingFanout, Siblings
from rpcgate.edge.websocket import close_websockets, is_websocket, serve_websocket
from rpcgate.ops.admin import EventsFanout, Fanout, add_admin_routes, apply_event
from rpcgate.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from rpcgate.ops.metrics import merged_exposition
from rpcgate.ops.status import gateway_status, handle_status_page
from rpcgate.rpc.context import CallContext
from rpcgate.rpc.jsonrpc import (
    INVALID_REQUEST,
    UNKNOWN_CHAIN,
    Call,
    dumps,
    parse_single,
    request_of,
    response_object,
    rpc_error,
)
from rpcgate.rpc.masking import MASKER
from rpcgate.rpc.trace import HEADER_TRACE, wants_trace

log = structlog.get_logger("rpcgate.server")

GATEWAY = web.AppKey("gateway", Gateway)
SIBLINGS = web.AppKey("siblings", Siblings)  # the other workers (`serve --workers N`)
INGRESS = web.AppKey("ingress", Ingress)  # keys, rate limits, CORS, sockets


def _json_response(
    request: web.Request,
    payload: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Off the hot path: with CORS headers for a browser (it may read errors and status)."""
    cors = request.app[INGRESS].cors.headers(request.headers.get("Origin"))
    return web.Response(
        body=dumps(payload),
        status=status,
        content_type="application/json",
        headers={**cors, **(headers or {})},
    )


def _gateway_error(
    request: web.Request,
    status: int,
    code: int,
    message: str,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    return _json_response(
        request,
        response_object(None, error=rpc_error(code, message, data)),
        status,
        {HEADER_UPSTREAM: "gateway", HEADER_ATTEMPTS: "0", **(headers or {})},
    )


def _skips_cache(headers: Mapping[str, str]) -> bool:
    for name in (HEADER_CACHE_CONTROL, "Cache-Control"):
        value = headers.get(name)
        if value is not None and "no-cache" in value.lower():
            return True
    return False


def _answer_in_hand(
    request: web.Request, chain: ChainRuntime, call: Call, read_cache: bool
) -> web.StreamResponse | None:
    """The hot path (`answers.answer_in_hand`), as an HTTP answer."""
    in_hand = answer_in_hand(chain, call, read_cache)
    if in_hand is None:
        return None
    payload, headers = in_hand
    origin = request.headers.get("Origin")
    if origin is not None:
        headers.update(request.app[INGRESS].cors.headers(origin))
    return JsonAnswer(payload, headers)


def _refused(request: web.Request, verdict: Verdict) -> web.Response:
    data = {"retry_after_s": round(verdict.retry_after_s, 3)} if verdict.retry_after_s else None
    return _gateway_error(
        request,
        429,
        LIMIT_EXCEEDED,
        verdict.message,
        data,
        retry_after_header(verdict.retry_after_s),
    )


# Who calls, where nothing needs to know (no keys, no limits): the hot path skips working
# out the client's address.
_UNIDENTIFIED = Caller("unidentified")


def _chain_and_caller(
    request: web.Request, identify: bool = True
) -> tuple[ChainRuntime, Caller] | web.Response:
    """The chain the path names and who calls it (when `identify`), or the error answer."""
    gateway = request.app[GATEWAY]
    chain = gateway.chain_for(request.match_info.get("chain"))
    if chain is None:
        name = request.match_info.get("chain")
        return _gateway_error(
            request,
            404,
            UNKNOWN_CHAIN,
            f"unknown chain {name!r}; served: " + ", ".join(gateway.served_paths()),
        )
    if not identify:
        return chain, _UNIDENTIFIED
    caller = request.app[INGRESS].admission.caller(
        path_key=request.match_info.get("key"),
        headers=request.headers,
        query=request.rel_url.query,
        peer=request.remote,
        chain_name=chain.config.name,
        chain_id=chain.config.chain_id,
    )
    if isinstance(caller, Refusal):
        return _gateway_error(request, caller.status, UNAUTHORIZED, caller.message)
    return chain, caller


async def handle_rpc(request: web.Request) -> web.StreamResponse:
    started = perf_counter()
    gateway = request.app[GATEWAY]
    ingress = request.app[INGRESS]
    admission = ingress.admission
    found = _chain_and_caller(request, admission.identifies)
    if isinstance(found, web.Response):
        return found
    chain, caller = found
    limits = gateway.config.limits
    body = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
    if isinstance(body, BodyRefused):
        refusal = _gateway_error(request, body.status, body.code, body.message, body.data)
        refusal.force_close()  # the rest of the body stays unread: this connection ends here
        return refusal
    read_cache = not _skips_cache(request.headers)
    trace = wants_trace(request.headers.get(HEADER_TRACE))
    single = parse_single(body, max_depth=limits.max_json_depth)
    asked_locally = single is not None and not single.is_notification and not trace
    if single is not None and asked_locally:
        in_hand = _answer_in_hand(request, chain, single, read_cache)
        if in_hand is not None:
            if admission.enforces:
                verdict = await admission.admit(caller, 1, in_flight=False)
                if not verdict.allowed:
                    return _refused(request, verdict)
            gateway.metrics.call_answered_locally(
                chain.config.name, single.method, perf_counter() - started
            )
            return in_hand
    if single is None and read_cache and not trace:
        held = batch_in_hand(chain, body)  # the same calls answered a moment ago
        if held is not None:
            answered, batch = held
            if admission.enforces:
                verdict = await admission.admit(caller, len(batch.results), in_flight=False)
                if not verdict.allowed:
                    return _refused(request, verdict)
            elapsed = perf_counter() - started
            for method, calls in batch.methods:
                gateway.metrics.call_answered_locally(chain.config.name, method, elapsed, calls)
            headers = dict(batch.headers)
            origin = request.headers.get("Origin")
            if origin is not None:
                headers.update(ingress.cors.headers(origin))
            return JsonAnswer(answered, headers)
    parsed = request_of(body, single, limits.max_batch_items, max_depth=limits.max_json_depth)
    cost = len(parsed.items)
    context = CallContext.arriving(
        gateway.config.failover.deadline_s,
        started=started,
        read_cache=read_cache,
        asked_locally=asked_locally,
        trace=trace,
    )
    if not admission.enforces:
        payload, headers = await answer_request(chain, parsed, context, gateway.metrics)
    else:
        verdict = await admission.admit(caller, cost)
        if not verdict.allowed:
            return _refused(request, verdict)
        try:
            payload, headers = await answer_request(chain, parsed, context, gateway.metrics)
        finally:
            admission.leave(caller, cost)
    origin = request.headers.get("Origin")
    if origin is not None:  # only browsers send it; others are spared the headers
        headers.update(ingress.cors.headers(origin))
    if payload is None:  # only notifications: nothing to answer
        return web.Response(status=204, headers=headers)
    return JsonAnswer(payload, headers)


async def handle_get(request: web.Request) -> web.StreamResponse:
    """A chain's path answers GET with a WebSocket (an Upgrade), else it is POST only."""
    if not is_websocket(request):
        return await handle_not_post(request)
    found = _chain_and_caller(request)
    if isinstance(found, web.Response):
        return found
    chain, caller = found
    return await serve_websocket(request, request.app[INGRESS], chain, caller)


async def handle_not_post(request: web.Request) -> web.StreamResponse:
    return _gateway_error(request, 405, INVALID_REQUEST, "JSON-RPC is served over POST")


async def handle_metrics(request: web.Request) -> web.StreamResponse:
    """Prometheus scrapes this (text exposition format); under `--workers N`, every
    worker's series, labelled `worker`."""
    body = request.app[GATEWAY].metrics.exposition()
    siblings = _siblings_of(request)
    if siblings is not None:
        replies = await siblings.ask("GET", "/metrics")
        texts = [(siblings.own, body), *((r.worker, r.body) for r in replies if r.status == 200)]
        body = merged_exposition(texts)
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})


def _siblings_of(request: web.Request) -> Siblings | None:
    """The other workers to ask, unless this request is itself one a sibling passed on."""
    siblings = request.app.get(SIBLINGS)
    if siblings is None or FORWARDED in request.headers:
        return None
    return siblings


async def handle_root_get(request: web.Request) -> web.StreamResponse:
    if is_websocket(request):
        return await handle_get(request)
    gateway = request.app[GATEWAY]
    return _json_response(
        request,
        {
            "name": "rpcgate",
            "version": __version__,
            "chains": [
                {
                    "name": c.config.name,
                    "chain_id": c.config.chain_id,
                    "aliases": list(c.config.aliases),
                    "active": c.active,
                    "upstreams": [u.name for u in c.upstreams.values()],
                }
                for c in gateway.chains
            ],
        },
    )


async def handle_status(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    clients = request.app[INGRESS].status()
    history = gateway.metrics.history  # each upstream's last 15 minutes (the charts)
    status = gateway_status(gateway.chains, gateway.cache, gateway.drills, clients, history=history)
    siblings = _siblings_of(request)
    if siblings is not None:  # the whole process: every worker, this one's view on top
        replies = await siblings.ask("GET", "/status.json")
        others = [(r.worker, orjson.loads(r.body)) for r in replies if r.status == 200]
        status = {
            **status,
            "worker": siblings.own,
            "workers": [{"worker": siblings.own, **status}]
            + [{"worker": k, **other} for k, other in others],
        }
    return _json_response(request, status)


async def handle_health(request: web.Request) -> web.StreamResponse:
    """Liveness: the process answers."""
    return _json_response(request, {"status": "ok"})


async def handle_ready(request: web.Request) -> web.StreamResponse:
    """Readiness (a Kubernetes probe): every chain has a consensus head and an upstream in
    sync with it; otherwise 503, saying which chain is not ready and why."""
    gateway = request.app[GATEWAY]
    if gateway.draining:
        return _json_response(request, {"status": "draining"}, status=503)
    not_ready = {}
    for runtime in gateway.chains:
        if not runtime.active:
            continue  # an on-demand chain not in use: its first call starts it
        tracker = runtime.tracker
        in_sync = [v.name for v in tracker.views.values() if v.state is State.OK]
        if tracker.consensus.head is None or not in_sync:
            not_ready[runtime.config.name] = "; ".join(
                f"{v.name}: {v.state} ({v.reason})" for v in tracker.views.values()
            )
    if not_ready:
        return _json_response(
            request, {"status": "not ready", "chains": MASKER.mask_any(not_ready)}, status=503
        )
    return _json_response(request, {"status": "ready"})


async def handle_preflight(request: web.Request) -> web.StreamResponse:
    """Browser dApps call the RPC URL directly, so the gateway answers CORS preflights."""
    headers = request.app[INGRESS].cors.headers(request.headers.get("Origin"))
    return web.Response(status=204, headers=headers)


async def expect_continue(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` (curl sends it before a large body): a body announced over the
    limit is refused before the client sends it; otherwise the client is told to go on."""
    limit = request.app[GATEWAY].config.limits.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        refused = body_too_large(limit)
        response = _gateway_error(
            request, refused.status, refused.code, refused.message, refused.data
        )
        response.force_close()
        return response
    if request.version == HttpVersion11:
        if request.headers.get("Expect", "").lower() != "100-continue":
            return _gateway_error(
                request, 417, INVALID_REQUEST, "only Expect: 100-continue is known"
            )
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # the answer's own size starts after this line
    return None


def build_app(config: Config, siblings: Siblings | None = None) -> web.Application:
    # The RPC routes enforce the body limit themselves (connections.read_body, with a
    # JSON-RPC error); aiohttp's own limit still bounds the admin endpoint's bodies.
    app = web.Application(client_max_size=config.limits.max_body_bytes + 1)
    gateway = Gateway(config)
    ingress = Ingress(gateway)
    app[GATEWAY] = gateway
    app[INGRESS] = ingress
    if siblings is not None:
        app[SIBLINGS] = siblings
    if gateway.shared_events is not None:  # a drill another replica started, applied here
        gateway.shared_events.listen(functools.partial(apply_event, gateway))

    async def lifecycle(app: web.Application) -> Any:
        await gateway.start()
        yield
        await gateway.close()

    async def going_away(app: web.Application) -> None:
        await close_websockets(ingress)  # else each would hold the drain for its timeout

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(going_away)  # the listener is closed, calls in flight not over
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/readyz", handle_ready)
    if config.ops.listen is None:
        _add_operator_routes(app, gateway)  # before /{chain}, which would take them
    else:  # served on the operations listener only (build_ops_app)
        for path in OPERATOR_PATHS:
            app.router.add_route("*", path, handle_elsewhere)
    app.router.add_post("/", handle_rpc, expect_handler=expect_continue)
    app.router.add_get("/", handle_root_get)
    app.router.add_route("OPTIONS", "/", handle_preflight)
    app.router.add_post("/{chain}", handle_rpc, expect_handler=expect_continue)
    app.router.add_route("OPTIONS", "/{chain}", handle_preflight)
    app.router.add_get("/{chain}", handle_get)  # a WebSocket
    app.router.add_route("*", "/{chain}", handle_not_post)
    # a client key in the path
    app.router.add_post("/{chain}/{key}", handle_rpc, expect_handler=expect_continue)
    app.router.add_route("OPTIONS", "/{chain}/{key}", handle_preflight)
    app.router.add_get("/{chain}/{key}", handle_get)
    app.router.add_route("*", "/{chain}/{key}", handle_not_post)
    return app


# What only an operator reads; with `ops.listen` set they live on that listener alone.
OPERATOR_PATHS = ("/metrics", "/status", "/status.json", "/admin", r"/admin/{rest:.*}")


def _add_operator_routes(app: web.Application, gateway: Gateway) -> None:
    app.router.add_get("/status.json", handle_status)
    app.router.add_get("/metrics", handle_metrics)
    app.router.add_get("/status", handle_status_page)
    add_admin_routes(app, gateway, _fanout(app))  # every /admin/... path


def _fanout(app: web.Application) -> Fanout | None:
    """Where a drill started here goes too: with Redis, every process of every replica
    (a shared event); else, under `--workers N`, the sibling workers."""
    gateway, siblings = app[GATEWAY], app.get(SIBLINGS)
    if gateway.shared_events is not None:
        return EventsFanout(gateway.shared_events)
    return SiblingFanout(siblings) if siblings is not None else None


async def handle_elsewhere(request: web.Request) -> web.StreamResponse:
    """An operator's path asked on the RPC listener while `ops.listen` serves them: the same
    404 as any path that is not there, saying nothing of where they are."""
    raise web.HTTPNotFound()


def build_sibling_app(app: web.Application) -> web.Application:
    """What a worker serves its siblings on its Unix socket: its own metrics, status and
    admin endpoint (a forwarded drill), over the gateway the RPC app runs."""
    sibling = web.Application(client_max_size=app[GATEWAY].config.limits.max_body_bytes + 1)
    sibling[GATEWAY], sibling[INGRESS] = app[GATEWAY], app[INGRESS]
    sibling.router.add_get("/status.json", handle_status)
    sibling.router.add_get("/metrics", handle_metrics)
    # Requests here come from a sibling (marked so): applied, never passed on again.
    add_admin_routes(sibling, app[GATEWAY], SiblingFanout(app[SIBLINGS]))
    return sibling


def build_ops_app(ingress: Ingress, siblings: Siblings | None = None) -> web.Application:
    """The operations listener's app (`ops.listen`): metrics, status, admin and the probes,
    over the gateway (and its ingress) the RPC app runs (which starts and closes it)."""
    gateway = ingress.gateway
    app = web.Application(client_max_size=gateway.config.limits.max_body_bytes + 1)
    app[GATEWAY] = gateway
    app[INGRESS] = ingress
    if siblings is not None:
        app[SIBLINGS] = siblings
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/readyz", handle_ready)
    _add_operator_routes(app, gateway)
    return app
