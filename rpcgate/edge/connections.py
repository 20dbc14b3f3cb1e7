"""Client connections: what a slow or abusive client may cost, and no more.

aiohttp closes idle keep-alive connections, but it gives a client all the time it likes to
send a request head, and it counts no connections. `runner_for` builds an AppRunner whose
connections obey `limits`:

- `header_timeout_s`: a connection that has not sent a complete request head within this
  long of opening, or (kept alive) of the first byte of its next request, is closed; so a
  client sending one byte a second holds a socket for that long and costs nothing else;
- `max_connections`: a connection over the count is closed as it arrives;
- `keepalive_timeout_s`: aiohttp's own `keepalive_timeout`.

`read_body` reads a request's body within `max_body_bytes` and `body_timeout_s`, and a
body it refuses is never read to its end: the connection closes after the answer.

On the RPC listener a connection is first the fast path's (`fast_http`, which keeps the
same limits itself) and becomes aiohttp's at the first request it leaves to aiohttp
(`LimitedServer.adopt`); `LimitedServer` counts both kinds as one (`open_connections`,
`refused_connections`, `late_heads`) and drains both on shutdown.

The head clock is one timer handle per connection, re-armed lazily (as aiohttp arms its
keep-alive timer): a request on a kept-alive connection moves a deadline and schedules
nothing, and no task is started per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler

from rpcgate.config.settings import Config, LimitsConfig
from rpcgate.rpc.jsonrpc import INVALID_REQUEST

# How long a connection whose body was refused stays half-closed (answer sent, nothing read)
# before it is closed, so that a client still sending reads the answer before the reset.
_RESET_AVOIDANCE_S = 0.5


def runner_for(
    app: web.Application,
    config: Config,
    first_protocol: FirstProtocol | None = None,
    **runner_kwargs: Any,
) -> web.AppRunner:
    """An AppRunner for `app` whose client connections obey `config.limits` (read once: a
    reload does not change them). `first_protocol`: what serves a new connection first
    (the fast path, `fast_http`), handing it to aiohttp (`LimitedServer.adopt`) when it
    will not serve it; None: aiohttp from the start."""
    limits = config.limits
    return _LimitedRunner(
        app,
        limits,
        first_protocol,
        **{**runner_kwargs, "keepalive_timeout": limits.keepalive_timeout_s},
    )


class FastConnection(Protocol):
    """A connection served before (or instead of) aiohttp, drained with aiohttp's own."""

    def close(self) -> None:
        """Close once the request in hand is answered; at once when idle."""

    async def shutdown(self, timeout: float | None) -> None:
        """Wait up to `timeout` for the request in hand, then close."""


FirstProtocol = Callable[["LimitedServer"], asyncio.BaseProtocol]


@dataclass(frozen=True, slots=True)
class BodyRefused:
    """Why a body was not read, as the answer to give: an HTTP status and a JSON-RPC error
    naming the setting. The connection is closed after that answer."""

    status: int  # 413: too large, 408: too slow
    code: int
    message: str
    data: dict[str, float]


def body_too_large(limit: int) -> BodyRefused:
    return BodyRefused(
        413,
        INVALID_REQUEST,
        f"request body exceeds {limit} bytes (limits.max_body_bytes)",
        {"limit": limit},
    )


def body_too_slow(timeout_s: float) -> BodyRefused:
    return BodyRefused(
        408,
        INVALID_REQUEST,
        f"request body not received within {timeout_s:g} s (limits.body_timeout_s)",
        {"limit": timeout_s},
    )


async def read_body(request: web.BaseRequest, limit: int, timeout_s: float) -> bytes | BodyRefused:
    """The body, read within `limit` bytes and `timeout_s` seconds, or why it was refused.

    A declared Content-Length over the limit is refused before a byte is read; a chunked
    body is counted as it arrives. On a refusal the rest of the body is left unread and the
    connection closes after the answer (aiohttp would otherwise read and drop it for up to
    10 s); send the answer with `response.force_close()` so that it says `Connection: close`.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        return _refuse(request, body_too_large(limit))
    content = request.content
    if content.is_eof():  # it came with the head (the common case): no clock, no await
        whole = content.read_nowait()
        return whole if len(whole) <= limit else _refuse(request, body_too_large(limit))
    else:
        try:
            async with asyncio.timeout(timeout_s):
                body = await _read_within(content, limit)
        except TimeoutError:
            return _refuse(request, body_too_slow(timeout_s))
    if body is None:
        return _refuse(request, body_too_large(limit))
    return body


async def _read_within(content: StreamReader, limit: int) -> bytes | None:
    """The whole stream, or None as soon as it passes `limit` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in content.iter_any():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _refuse(request: web.BaseRequest, refused: BodyRefused) -> BodyRefused:
    if isinstance(request.protocol, _LimitedHandler):
        request.protocol.leave_body_unread()
    return refused


def close_leaving_body_unread(
    transport: asyncio.Transport, loop: asyncio.AbstractEventLoop
) -> None:
    """Close a connection whose answer is written and whose request body is partly unread.

    Closing a socket with unread bytes sends a reset, and a client still sending may lose
    the answer with it: say we are done (FIN), read nothing more (the client's sends stall
    in full buffers) and close a moment later, as Go's net/http does."""
    if transport.can_write_eof():
        transport.write_eof()
    transport.pause_reading()
    loop.call_later(_RESET_AVOIDANCE_S, transport.close)


# How long a handler cancelled at shutdown gets to unwind (its finally blocks).
CANCELLED_HANDLER_WAIT_S = 0.5


class _LimitedRunner(web.AppRunner):
    __slots__ = ("_first_protocol", "_limits")

    def __init__(
        self,
        app: web.Application,
        limits: LimitsConfig,
        first_protocol: FirstProtocol | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._limits = limits
        self._first_protocol = first_protocol

    async def _make_server(self) -> web.Server:
        # AppRunner starts the app and builds aiohttp's Server; ours is made of the same
        # parts. Those, and what _LimitedHandler reads of aiohttp's RequestHandler, are
        # aiohttp's private attributes (as of 3.14): tests/edge/test_slow_clients.py pins them.
        built = await super()._make_server()
        return LimitedServer(
            built.request_handler,
            self._limits,
            self._first_protocol,
            request_factory=built.request_factory,
            handler_cancellation=built.handler_cancellation,
            loop=built._loop,
            **built._kwargs,
        )


class LimitedServer(web.Server):
    """aiohttp's protocol factory, making connections that obey the limits, and counting
    them: aiohttp's own and those the first protocol serves (`runner_for`), each counted
    once, from its arrival to its end, whoever serves it."""

    def __init__(
        self,
        handler: Any,
        limits: LimitsConfig,
        first_protocol: FirstProtocol | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.header_timeout_s = limits.header_timeout_s
        self.keepalive_timeout_s = limits.keepalive_timeout_s
        self.max_connections = limits.max_connections
        self.open_connections = 0
        self.refused_connections = 0  # closed as they arrived, over max_connections
        self.late_heads = 0  # connections closed for a head not sent in time
        self.first_protocol = first_protocol
        self.fast_connections: set[FastConnection] = set()  # served by the first protocol

    def __call__(self) -> RequestHandler:  # what the listener makes for each new connection
        if self.first_protocol is not None:
            # aiohttp's Server makes RequestHandlers; the listener takes any protocol.
            return self.first_protocol(self)  # type: ignore[return-value]
        return _LimitedHandler(self, loop=self._loop, **self._kwargs)

    def admit_connection(self) -> bool:
        """Whether a new connection may stay (counted from now), or is one over the cap."""
        if self.open_connections >= self.max_connections:
            self.refused_connections += 1
            return False
        self.open_connections += 1
        return True

    def adopt(
        self, transport: asyncio.Transport, received: bytes, head_deadline: float | None
    ) -> None:
        """aiohttp takes over a connection the first protocol counted, from the start of
        the request in `received` (that and what followed it, not yet answered); its head
        is due by `head_deadline` (None: complete in `received`)."""
        handler = _LimitedHandler(self, loop=self._loop, adopted=True, **self._kwargs)
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if head_deadline is not None:
            handler.head_due_by(head_deadline)
        if received:
            handler.data_received(received)

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for connection in list(self.fast_connections):
            connection.close()

    async def shutdown(self, timeout: float | None = None) -> None:
        fast = [connection.shutdown(timeout) for connection in list(self.fast_connections)]
        await asyncio.gather(super().shutdown(timeout), *fast)
        self.fast_connections.clear()


class _LimitedHandler(RequestHandler):
    """One client connection: aiohttp's, with a clock on request heads and a place in the
    connection count."""

    __slots__ = (
        "_counted",
        "_head_deadline",
        "_head_timer",
        "_last_payload",
        "_leaving_body_unread",
        "_limited",
    )

    def __init__(self, manager: LimitedServer, *, adopted: bool = False, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limited = manager  # aiohttp forgets its manager when the connection is lost
        self._counted = adopted  # an adopted connection was counted as it arrived
        self._head_deadline: float | None = None  # None: no head is due
        self._head_timer: asyncio.TimerHandle | None = None
        self._last_payload: StreamReader | None = None  # the body of the last head received
        self._leaving_body_unread = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._counted and not self._limited.admit_connection():
            self._force_close = True  # no request task, nothing read
            transport.close()
            return
        self._counted = True
        super().connection_made(transport)
        self._start_head_clock()

    def connection_lost(self, exc: BaseException | None) -> None:
        if not self._counted:
            return  # refused as it arrived: aiohttp never saw it
        self._counted = False
        self._limited.open_connections -= 1
        self._head_deadline = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # aiohttp calls this with b"" to parse what it holds when it resumes reading.
        if data and self._head_deadline is None and self._between_requests():
            self._start_head_clock()  # the first byte of the next request
        heads_before = self._request_count
        super().data_received(data)
        if self._request_count != heads_before:  # a head arrived whole
            self._head_deadline = None
            if self._messages:
                self._last_payload = self._messages[-1][1]

    async def shutdown(self, timeout: float | None = 15.0) -> None:
        # aiohttp waits `timeout` for the handler in hand, then cancels only the request's
        # body and waits `timeout` again: a call waiting on a hung upstream held the exit
        # for grace + 2 x shutdown.timeout_s, past Kubernetes' 30 s. One `timeout` in all,
        # then the handler itself is cancelled and the connection closed.
        if timeout is None:
            await super().shutdown(timeout)
            return
        try:
            async with asyncio.timeout(timeout):
                await super().shutdown(timeout)
        except TimeoutError:
            handler = self._task_handler
            if handler is not None and not handler.done():
                handler.cancel()
                await asyncio.wait({handler}, timeout=CANCELLED_HANDLER_WAIT_S)
            if self.transport is not None:
                self.transport.close()

    def leave_body_unread(self) -> None:
        """Close the connection after the answer to the request in hand, without reading
        the rest of its body (aiohttp would read and drop it for up to 10 s)."""
        self._leaving_body_unread = True
        self._lingering_time = 0.0

    def close(self) -> None:
        # aiohttp calls this once the answer is sent and the body is still incomplete.
        transport = self.transport
        if (
            self._leaving_body_unread
            and not self._request_in_progress  # the answer is sent
            and transport is not None
            and not self._force_close
        ):
            self._close_leaving_body_unread(transport)
        else:
            super().close()

    def _close_leaving_body_unread(self, transport: asyncio.Transport) -> None:
        self._close = self._force_close = True  # aiohttp leaves the transport to us
        close_leaving_body_unread(transport, self._loop)

    def head_due_by(self, deadline: float) -> None:
        """The head in hand is due by `deadline` (set on a connection adopted with a head
        begun and not complete), not a whole header timeout from now."""
        self._head_deadline = deadline
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self._loop.call_at(deadline, self._on_head_clock)

    def _between_requests(self) -> bool:
        """Whether bytes arriving now start a new request head (not a body, nor a WebSocket
        frame): the last request's body is complete."""
        payload = self._last_payload
        return (
            payload is not None
            and payload.is_eof()
            and not self._upgraded
            and self._payload_parser is None
            and not self._force_close
            and not self._close
        )

    def _start_head_clock(self) -> None:
        loop = self._loop
        self._head_deadline = loop.time() + self._limited.header_timeout_s
        if self._head_timer is None:
            self._head_timer = loop.call_at(self._head_deadline, self._on_head_clock)

    def _on_head_clock(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None or self.transport is None:
            return
        if self._loop.time() < deadline:  # the clock was restarted since: wait on
            self._head_timer = self._loop.call_at(deadline, self._on_head_clock)
            return
        self._limited.late_heads += 1
        self._head_deadline = None
        if self._waiter is not None and not self._waiter.done():
            self.force_close()  # idle but for the late head: close now
        else:
            self.close()  # a request pipelined ahead is in hand: answer it, then close
