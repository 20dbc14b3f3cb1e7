"""An HTTP proxy in front of one JSON-RPC upstream that fails on demand.

A test puts a `FaultProxy` between the gateway and each anvil node, then flips it between
`Fault` modes to make that upstream look dead, stuck, overloaded or broken, and reads
`request_count` / `methods` to see which upstream the gateway actually used.

The proxy lives on one event loop (whichever awaited `start()`: usually a
`BackgroundLoop` for synchronous tests, or the test's own loop for async tests).
`set_fault()` is synchronous and may be called from any thread, including that loop's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

GARBAGE_BODY = b"\x00garbage<html>"
UNAVAILABLE_BODY = "upstream unavailable"
TOO_MANY_REQUESTS_CODE = -32005
TOO_MANY_REQUESTS_MESSAGE = "Too Many Requests"
RETRY_AFTER_SECONDS = 1

_JSON = "application/json"
_SET_FAULT_TIMEOUT_SECONDS = 5.0
_SHUTDOWN_TIMEOUT_SECONDS = 0.5


class Fault(enum.Enum):
    HEALTHY = "healthy"
    """Forward every request verbatim to the upstream."""
    REFUSE = "refuse"
    """Not listening: TCP connects are refused. Open connections are dropped too."""
    HANG = "hang"
    """Accept requests and never answer; their connections are dropped when released."""
    HTTP_5XX = "http_5xx"
    """Answer with a 5xx status (503 unless told otherwise) and a plain-text body."""
    HTTP_429 = "http_429"
    """Answer 429 with `Retry-After: 1` and a JSON-RPC -32005 error body."""
    RPC_ERROR = "rpc_error"
    """Answer 200 with a JSON-RPC error object per request (-32603 unless told otherwise)."""
    LATENCY = "latency"
    """Forward, but only after a delay."""
    GARBAGE = "garbage"
    """Answer 200, claiming JSON, with a body that does not parse as JSON."""
    LOGS_RANGE_LIMIT = "logs_range_limit"
    """A provider's eth_getLogs range cap: eth_getLogs over more than `max_blocks` blocks (a
    `blockHash` filter is one) gets a JSON-RPC error (`error_code`, `error_message`, where
    `{from_block}` and `{to_block}` become the first `max_blocks` of the range asked, as
    Infura suggests a range); eth_getLogs whose range holds `failing_block` gets a 503;
    everything else is forwarded."""


@dataclass(frozen=True)
class FaultSettings:
    fault: Fault = Fault.HEALTHY
    status: int = 503
    error_code: int = -32603
    error_message: str = "internal error"
    delay: float = 0.5
    max_blocks: int = 0
    failing_block: int | None = None


class FaultProxy:
    def __init__(
        self,
        upstream_url: str,
        *,
        port: int | None = None,
        upstream_timeout: float = 30.0,
    ) -> None:
        self.upstream_url = upstream_url
        self.upstream_timeout = upstream_timeout
        self._port = port
        self._settings = FaultSettings()
        self._counts_lock = threading.Lock()
        self._request_count = 0
        self._methods: list[str] = []
        self._requests: list[str | list[str] | None] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: web.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._listen_socket: socket.socket | None = None
        self._pending_connections: set[asyncio.Task[Any]] = set()
        self._hung_connections: set[RequestHandler] = set()

    # -- observation --

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("fault proxy not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def fault(self) -> Fault:
        return self._settings.fault

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    @property
    def request_count(self) -> int:
        """HTTP requests received (in any mode) since start or the last reset_counts()."""
        with self._counts_lock:
            return self._request_count

    @property
    def methods(self) -> list[str]:
        """JSON-RPC methods received, in order, one entry per batch item."""
        with self._counts_lock:
            return list(self._methods)

    @property
    def requests(self) -> list[str | list[str] | None]:
        """What each HTTP request carried, in order: a single call's method, a batch's list
        of methods, or None for a body that is neither."""
        with self._counts_lock:
            return [list(r) if isinstance(r, list) else r for r in self._requests]

    @property
    def hung_requests(self) -> int:
        """Requests parked by HANG whose client has not hung up yet."""
        return len(self._hung_connections)

    def reset_counts(self) -> None:
        with self._counts_lock:
            self._request_count = 0
            self._methods.clear()
            self._requests.clear()

    # -- control --

    def set_fault(
        self,
        fault: Fault,
        *,
        status: int | None = None,
        error_code: int | None = None,
        error_message: str | None = None,
        delay: float | None = None,
        max_blocks: int | None = None,
        failing_block: int | None = None,
    ) -> None:
        """Switch mode; options not given fall back to their defaults.

        Blocks until the listening socket is closed or reopened (REFUSE transitions), so the
        very next connect from the calling thread already sees the new state.
        """
        defaults = FaultSettings()
        _require_option_fits(status, "status", fault, Fault.HTTP_5XX)
        limit = Fault.LOGS_RANGE_LIMIT
        _require_option_fits(error_code, "error_code", fault, Fault.RPC_ERROR, limit)
        _require_option_fits(error_message, "error_message", fault, Fault.RPC_ERROR, limit)
        _require_option_fits(delay, "delay", fault, Fault.LATENCY)
        _require_option_fits(max_blocks, "max_blocks", fault, limit)
        _require_option_fits(failing_block, "failing_block", fault, limit)
        if status is not None and not 500 <= status <= 599:
            raise ValueError(f"HTTP_5XX needs a 5xx status, got {status}")
        settings = FaultSettings(
            fault=fault,
            status=defaults.status if status is None else status,
            error_code=defaults.error_code if error_code is None else error_code,
            error_message=defaults.error_message if error_message is None else error_message,
            delay=defaults.delay if delay is None else delay,
            max_blocks=defaults.max_blocks if max_blocks is None else max_blocks,
            failing_block=failing_block,
        )
        self._call_on_loop(lambda: self._apply(settings))

    def heal(self) -> None:
        self.set_fault(Fault.HEALTHY)

    async def start(self) -> FaultProxy:
        """Start serving on the running loop (which then owns the proxy)."""
        if self._loop is not None:
            raise RuntimeError("fault proxy already started")
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.upstream_timeout)
        )
        # handler_cancellation: a client that gives up on a hung request takes its handler
        # with it instead of leaving it parked until the proxy stops.
        self._server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._start_listening()
        if self._settings.fault is Fault.REFUSE:
            self._stop_listening()
        return self

    async def stop(self) -> None:
        """Stop serving and drop every connection; callable from any loop."""
        loop = self._loop
        if loop is None:
            return
        if asyncio.get_running_loop() is loop:
            await self._shutdown()
        elif not loop.is_closed():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._shutdown(), loop))

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- internals; everything below runs on the proxy's loop --

    def _call_on_loop(self, action: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or _running_loop() is loop:
            action()
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run_and_report() -> None:
            try:
                action()
            except BaseException as error:
                done.set_exception(error)
            else:
                done.set_result(None)

        loop.call_soon_threadsafe(run_and_report)
        done.result(_SET_FAULT_TIMEOUT_SECONDS)

    def _apply(self, settings: FaultSettings) -> None:
        self._settings = settings
        if self._loop is None:
            return  # start() honours the settings
        if settings.fault is not Fault.HANG:
            self._release_hung_requests()
        if settings.fault is Fault.REFUSE:
            self._stop_listening()
        else:
            self._start_listening()

    async def _shutdown(self) -> None:
        self._stop_listening()
        self._drop_open_connections()  # already done, unless it was refusing
        for pending in self._pending_connections:
            pending.cancel()
        await asyncio.gather(*self._pending_connections, return_exceptions=True)
        if self._server is not None:
            await self._server.shutdown(_SHUTDOWN_TIMEOUT_SECONDS)
        if self._session is not None:
            await self._session.close()
        self._loop = None
        self._server = None
        self._session = None

    def _start_listening(self) -> None:
        if self._listen_socket is not None:
            return
        assert self._loop is not None
        listen_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Reopening the same port right after closing it must not trip over TIME_WAIT.
        listen_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listen_socket.bind(("127.0.0.1", self._port or 0))
            listen_socket.listen(128)
        except OSError:
            listen_socket.close()
            raise
        listen_socket.setblocking(False)
        self._port = listen_socket.getsockname()[1]
        self._listen_socket = listen_socket
        # A hand-rolled accept loop rather than loop.create_server(): opening and closing it
        # is then synchronous, so set_fault() works from the loop's own thread as well.
        self._loop.add_reader(listen_socket.fileno(), self._accept_waiting_connections)

    def _stop_listening(self) -> None:
        listen_socket = self._listen_socket
        if listen_socket is None:
            return
        assert self._loop is not None
        self._listen_socket = None
        self._loop.remove_reader(listen_socket.fileno())
        listen_socket.close()
        self._drop_open_connections()

    def _drop_open_connections(self) -> None:
        # A refused node does not keep serving pooled keep-alive connections either.
        # transport.close() only closes the socket on a later loop iteration; shutting it
        # down now sends the FIN before set_fault() returns.
        if self._server is None:
            return
        for connection in self._server.connections:
            transport = connection.transport
            if transport is not None:
                with contextlib.suppress(OSError):
                    transport.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
            connection.force_close()

    def _accept_waiting_connections(self) -> None:
        assert self._loop is not None and self._server is not None
        listen_socket = self._listen_socket
        while listen_socket is not None:
            try:
                connection, _ = listen_socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. the peer reset before accept; nothing to serve
            connection.setblocking(False)
            wiring = self._loop.create_task(
                self._loop.connect_accepted_socket(self._server, connection)
            )
            self._pending_connections.add(wiring)
            wiring.add_done_callback(self._forget_pending_connection)

    def _forget_pending_connection(self, wiring: asyncio.Task[Any]) -> None:
        self._pending_connections.discard(wiring)
        if not wiring.cancelled():
            wiring.exception()  # retrieved so asyncio does not log it; the client noticed

    def _release_hung_requests(self) -> None:
        # Dropping the connection (rather than forwarding late) keeps a request that the
        # client gave up on from reaching the upstream behind the test's back.
        for connection in list(self._hung_connections):
            connection.force_close()
        self._hung_connections.clear()

    def _record(self, payload: Any) -> None:
        items = payload if isinstance(payload, list) else [payload]
        methods = [
            item["method"]
            for item in items
            if isinstance(item, dict) and isinstance(item.get("method"), str)
        ]
        shape: str | list[str] | None = methods if isinstance(payload, list) else None
        if isinstance(payload, dict) and methods:
            shape = methods[0]
        with self._counts_lock:
            self._request_count += 1
            self._methods.extend(methods)
            self._requests.append(shape)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        payload = _parse_json(body)
        self._record(payload)
        settings = self._settings
        match settings.fault:
            case Fault.HEALTHY:
                return await self._forward(request, body)
            case Fault.LATENCY:
                await asyncio.sleep(settings.delay)
                return await self._forward(request, body)
            case Fault.HANG:
                return await self._never_answer(request, keep_connection=True)
            case Fault.REFUSE:
                # Only reachable on a connection accepted just before the switch.
                return await self._never_answer(request, keep_connection=False)
            case Fault.HTTP_5XX:
                return web.Response(status=settings.status, text=UNAVAILABLE_BODY)
            case Fault.HTTP_429:
                errors = _error_replies(payload, TOO_MANY_REQUESTS_CODE, TOO_MANY_REQUESTS_MESSAGE)
                return web.Response(
                    status=429,
                    body=json.dumps(errors).encode(),
                    headers={"Content-Type": _JSON, "Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            case Fault.RPC_ERROR:
                errors = _error_replies(payload, settings.error_code, settings.error_message)
                return web.Response(
                    status=200, body=json.dumps(errors).encode(), headers={"Content-Type": _JSON}
                )
            case Fault.GARBAGE:
                return web.Response(status=200, body=GARBAGE_BODY, headers={"Content-Type": _JSON})
            case Fault.LOGS_RANGE_LIMIT:
                return await self._limit_logs(request, body, payload, settings)

    async def _limit_logs(
        self, request: web.BaseRequest, body: bytes, payload: Any, settings: FaultSettings
    ) -> web.Response:
        blocks = _get_logs_blocks(payload)
        if blocks is not None and len(blocks) > settings.max_blocks:
            first = hex(blocks.start)
            last = hex(blocks.start + settings.max_blocks - 1)
            message = settings.error_message.replace("{from_block}", first)
            errors = _error_replies(
                payload, settings.error_code, message.replace("{to_block}", last)
            )
            return web.Response(
                status=200, body=json.dumps(errors).encode(), headers={"Content-Type": _JSON}
            )
        failing = settings.failing_block
        if blocks is not None and failing is not None and failing in blocks:
            return web.Response(status=settings.status, text=UNAVAILABLE_BODY)
        return await self._forward(request, body)

    async def _never_answer(
        self, request: web.BaseRequest, *, keep_connection: bool
    ) -> web.StreamResponse:
        # Ends only by cancellation: the connection is dropped (by a release, a stop or the
        # client) and handler_cancellation cancels this handler.
        protocol = request.protocol
        if keep_connection:
            self._hung_connections.add(protocol)
        else:
            protocol.force_close()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self._hung_connections.discard(protocol)
        raise AssertionError("unreachable")

    async def _forward(self, request: web.BaseRequest, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {"Content-Type": request.headers.get("Content-Type", _JSON)}
        try:
            async with self._session.request(
                request.method, self.upstream_url, data=body, headers=headers
            ) as upstream:
                reply = await upstream.read()
                content_type = upstream.headers.get("Content-Type", _JSON)
                return web.Response(
                    status=upstream.status, body=reply, headers={"Content-Type": content_type}
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            return web.Response(status=502, text=f"fault proxy: upstream failed: {error!r}")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _require_option_fits(value: object, name: str, fault: Fault, *owners: Fault) -> None:
    if value is not None and fault not in owners:
        names = " or ".join(owner.name for owner in owners)
        raise ValueError(f"{name} only applies to {names}, not {fault.name}")


def _get_logs_blocks(payload: Any) -> range | None:
    """The blocks one eth_getLogs request covers (a `blockHash` filter: one block, of no
    known number); None for anything else, or a bound that is not a number."""
    if not isinstance(payload, dict) or payload.get("method") != "eth_getLogs":
        return None
    params = payload.get("params")
    criteria = params[0] if isinstance(params, list) and params else None
    if not isinstance(criteria, dict):
        return None
    if "blockHash" in criteria:
        return range(-1, 0)
    try:
        first, last = (int(criteria[bound], 16) for bound in ("fromBlock", "toBlock"))
    except (KeyError, TypeError, ValueError):
        return None
    return range(first, last + 1)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _error_replies(payload: Any, code: int, message: str) -> Any:
    """JSON-RPC error replies mirroring the request: an array for a batch, else one object."""

    def error_for(item: Any) -> dict[str, Any]:
        request_id = item.get("id") if isinstance(item, dict) else None
        return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}

    if isinstance(payload, list) and payload:
        return [error_for(item) for item in payload]
    return error_for(payload)
