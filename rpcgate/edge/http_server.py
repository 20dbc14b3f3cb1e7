"""The aiohttp server: the routes, and a thin shell from HTTP requests to the gateway.

A JSON-RPC POST is answered by `rpc_post` (chain and caller, body within limits, admission,
the answer with its diagnostics headers); on the RPC listener most of them never reach
aiohttp (`fast_http` answers them), and everything else is served here: WebSockets, the
probes, the status page, metrics, admin, CORS preflights, `Expect: 100-continue`.
"""

from __future__ import annotations

import functools
from typing import Any

import orjson
import structlog
from aiohttp import HttpVersion11, web

from rpcgate import __version__
from rpcgate.config.settings import Config
from rpcgate.consensus.heads import State
from rpcgate.edge.connections import BodyRefused, body_too_large, read_body
from rpcgate.edge.gateway import Gateway
from rpcgate.edge.ingress import Ingress
from rpcgate.edge.responses import JsonAnswer
from rpcgate.edge.rpc_post import Reply, RpcPost, chain_and_caller, gateway_error
from rpcgate.edge.siblings import FORWARDED, SiblingFanout, Siblings
from rpcgate.edge.websocket import close_websockets, is_websocket, serve_websocket
from rpcgate.ops.admin import EventsFanout, Fanout, add_admin_routes, apply_event
from rpcgate.ops.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from rpcgate.ops.metrics import merged_exposition
from rpcgate.ops.status import gateway_status, handle_status_page
from rpcgate.rpc.jsonrpc import INVALID_REQUEST, dumps
from rpcgate.rpc.masking import MASKER

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
    reply = gateway_error(
        request.app[INGRESS], request.headers.get("Origin"), status, code, message, data, headers
    )
    response = _response(reply)
    assert isinstance(response, web.Response)
    return response


def _response(reply: Reply) -> web.StreamResponse:
    """A reply as aiohttp sends it: a 200 in one piece (`JsonAnswer`), others as usual."""
    if reply.status == 200 and reply.body is not None and not reply.close:
        return JsonAnswer(reply.body, reply.fields)
    response = web.Response(
        body=reply.body,
        status=reply.status,
        content_type="application/json" if reply.body is not None else None,
        headers=reply.fields,
    )
    if reply.close:
        response.force_close()
    return response


async def handle_rpc(request: web.Request) -> web.StreamResponse:
    """A JSON-RPC POST, answered by `rpc_post` (the fast path serves most of them without
    aiohttp: `fast_http`)."""
    post = RpcPost(
        request.app[INGRESS],
        request.match_info.get("chain"),
        request.match_info.get("key"),
        request.headers,
        request.query,
        request.remote,
    )
    reply = post.route()
    if reply is None:
        limits = request.app[GATEWAY].config.limits
        body = await read_body(request, limits.max_body_bytes, limits.body_timeout_s)
        if isinstance(body, BodyRefused):  # the rest of the body stays unread
            reply = post.body_refused(body)
        else:
            reply = await post.answer(body)
    return _response(reply)


async def handle_get(request: web.Request) -> web.StreamResponse:
    """A chain's path answers GET with a WebSocket (an Upgrade), else it is POST only."""
    if not is_websocket(request):
        return await handle_not_post(request)
    ingress = request.app[INGRESS]
    found = chain_and_caller(
        ingress,
        request.match_info.get("chain"),
        request.match_info.get("key"),
        request.headers,
        request.query,
        request.remote,
    )
    if isinstance(found, Reply):
        return _response(found)
    chain, caller = found
    return await serve_websocket(request, ingress, chain, caller)


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
