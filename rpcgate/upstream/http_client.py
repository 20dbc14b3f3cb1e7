"""The HTTP connections of one upstream: keep-alive connections over asyncio, each carrying
one call (or one upstream batch) at a time, framed by `http1` (which bounds and checks all
that an upstream sends back).

Why not aiohttp's client, which the gateway used before: a call through it builds a
request object, a header multidict, a payload, a response object and a stream reader, and
that was most of what a pass-through call cost. A bare pass-through proxy on these
connections reaches about 3x the requests per second of the same proxy on aiohttp's
`ClientSession` (bench/suite.py scenario b and its note in docs/speed.md). aiohttp still
serves the gateway's own HTTP and the upstream WebSockets.

What this shell adds to `http1`: a pool of idle connections (most recent first, closed
after `idle_timeout_s` unused, at most `max_idle` kept), TLS with the system's trust store,
names resolved at most every `DNS_TTL_S`, a connection the server closed while it sat idle
retried once on a fresh one (nothing of the call reached the server), a connection whose
call was abandoned (a deadline, a hedge's loser) or whose answer broke a rule of `http1`
closed rather than reused, and connect failures said in an operator's words.

Connecting: a name's addresses are raced Happy Eyeballs style (RFC 8305, `aiohappyeyeballs`,
as aiohttp does): the next address starts `HAPPY_EYEBALLS_DELAY_S` after the one before if
that one has not connected yet, address families interleaved, so an address that swallows
connects (a blackholed IPv6 route) costs a quarter of a second, not the attempt.

Egress proxy: the upstream's `proxy` setting, else HTTPS_PROXY / HTTP_PROXY / NO_PROXY from
the environment (`http1.proxy_url`). Every upstream, http or https, goes through a
`CONNECT host:port` tunnel (TLS, for https, inside it, to the upstream), so the proxy sees
no call either way; credentials in the proxy's URL go as `Proxy-Authorization: Basic` and
are registered with the masker, and a proxy's failure names the proxy by host:port only.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any

import aiohappyeyeballs

from rpcgate.rpc.masking import MASKER
from rpcgate.upstream.http1 import (
    MAX_HEAD_BYTES,
    ProtocolError,
    Proxy,
    Response,
    ResponseReader,
    Target,
    TooLarge,
    connect_request,
    proxy_url,
    tunnel_answer,
)
from rpcgate.upstream.http1 import proxy as _proxy
from rpcgate.upstream.http1 import request_bytes as _request_bytes
from rpcgate.upstream.http1 import target as _target

__all__ = ["ConnectFailure", "ProtocolError", "TooLarge", "UpstreamHttp", "connect_error_words"]

IDLE_TIMEOUT_S = 60.0
MAX_IDLE = 256
DNS_TTL_S = 300.0  # how long a name's addresses are kept (aiohttp's ttl_dns_cache was 300)
HAPPY_EYEBALLS_DELAY_S = 0.25  # RFC 8305's "Connection Attempt Delay"


class ConnectFailure(Exception):
    """No connection could be opened; `reason` says why in an operator's words."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class _Lost(ConnectionResetError):
    """The connection closed before a byte of the answer came."""


def connect_error_words(error: BaseException | None, host: str, port: int | None) -> str:
    """What went wrong before any HTTP, in the words an operator searches for. Pure."""
    if isinstance(error, socket.gaierror):
        return f"DNS: name not resolved ({host})"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS: certificate not accepted ({host}: {error.verify_message})"
    if isinstance(error, ssl.SSLError):
        return f"TLS: handshake failed ({host})"
    if isinstance(error, ConnectionRefusedError):
        return f"connection refused ({host}:{port})"
    if isinstance(error, OSError):
        return f"cannot connect ({host}:{port}: {error.strerror or error})"
    return f"cannot connect ({host}:{port}: {error})"


class _Connection(asyncio.Protocol):
    def __init__(self, max_body_bytes: int) -> None:
        self.transport: asyncio.Transport | None = None
        self.reader = ResponseReader(max_body_bytes)
        self.closed = False
        self._paused = False  # reading paused while the reader works through what it holds
        self.idle_since = 0.0
        self._waiter: asyncio.Future[Response] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def send(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None and self._waiter is None
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self.reader.started = False
        self.transport.write(data)
        return waiter

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            self.abort()  # bytes nobody asked for: the connection is out of step
            return
        try:
            response = self.reader.feed(data)
        except (ProtocolError, TooLarge) as exc:
            self._settle(exc)
            self.abort()
            return
        if response is not None:
            self._settle(response)
        elif self.reader.more and self.transport is not None:
            # A body in tiny chunks: the rest is read a loop turn later, so the other calls
            # run between two pieces of it (uvloop reads up to 32 times in one turn).
            if not self._paused:
                self._paused = True
                self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self._read_on)
            return
        if self._paused:
            self._paused = False
            if not self.closed and self.transport is not None:
                self.transport.resume_reading()

    def _read_on(self) -> None:
        if not self.closed:
            self.data_received(b"")

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost completes what the close ends

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if not self.reader.started:
            self._settle(_Lost("connection closed before an answer"))
            return
        try:
            self._settle(self.reader.eof())
        except ProtocolError as error:
            self._settle(error)

    def _settle(self, outcome: Response | BaseException) -> bool:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return False
        if isinstance(outcome, BaseException):
            waiter.set_exception(outcome)
        else:
            waiter.set_result(outcome)
        return True

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamHttp:
    """The connections to one upstream URL."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        user_agent: str,
        max_body_bytes: int,
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        max_idle: int = MAX_IDLE,
        proxy: str | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        """`proxy`: the upstream's own setting (a URL; "" or "none": no proxy); None leaves
        it to `environ`'s HTTPS_PROXY, HTTP_PROXY and NO_PROXY."""
        self.target: Target = _target(url, headers, user_agent)
        self.proxy: Proxy | None = None
        self._proxy_problem: str | None = None  # a proxy URL that cannot be used, in words
        chosen = proxy_url(url, proxy, environ)
        if chosen is not None:
            MASKER.add_url(chosen if "://" in chosen else f"http://{chosen}")
            try:
                self.proxy = _proxy(chosen)
            except ValueError as exc:  # from the environment (the config's is checked)
                self._proxy_problem = f"proxy: {exc}"
        self._max_body_bytes = max_body_bytes
        self._idle_timeout_s = idle_timeout_s
        self._max_idle = max_idle
        self._idle: list[_Connection] = []
        self._busy: set[_Connection] = set()
        self._ssl = ssl.create_default_context() if self.target.tls else None
        self._resolved: list[tuple[Any, ...]] | None = None
        self._resolved_until = 0.0

    async def post(self, body: bytes) -> Response:
        """One POST and its answer. Raises ConnectFailure, TooLarge, ProtocolError or
        ConnectionError; cancelling it closes the connection it was on."""
        data = _request_bytes(self.target, body)
        connection = self._take_idle()
        if connection is not None:
            try:
                return await self._exchange(connection, data)
            except _Lost:
                pass  # closed by the server while idle: nothing of this call reached it
        return await self._exchange(await self._connect(), data)

    async def close(self) -> None:
        for connection in [*self._idle, *self._busy]:
            connection.abort()
        self._idle.clear()
        self._busy.clear()

    def _take_idle(self) -> _Connection | None:
        idle = self._idle
        if not idle:
            return None
        loop_time = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if connection.closed or loop_time - connection.idle_since > self._idle_timeout_s:
                connection.abort()
                continue
            # The oldest ones are at the front: those idle too long go at once.
            while idle and loop_time - idle[0].idle_since > self._idle_timeout_s:
                idle.pop(0).abort()
            return connection
        return None

    async def _exchange(self, connection: _Connection, data: bytes) -> Response:
        self._busy.add(connection)
        try:
            response = await connection.send(data)
        except BaseException:
            connection.abort()  # failed or abandoned: what it holds is unknown
            raise
        finally:
            self._busy.discard(connection)
        if (
            response.keep_alive
            and connection.reader.idle
            and not connection.closed
            and len(self._idle) < self._max_idle
        ):
            connection.idle_since = asyncio.get_running_loop().time()
            self._idle.append(connection)
        else:
            connection.abort()
        return response

    async def _connect(self) -> _Connection:
        """A new connection: straight to the upstream, or through a tunnel of its proxy."""
        target, proxy = self.target, self.proxy
        if self._proxy_problem is not None:
            raise ConnectFailure(self._proxy_problem, self._proxy_problem)
        host, port = (proxy.host, proxy.port) if proxy is not None else (target.host, target.port)
        loop = asyncio.get_running_loop()
        try:
            sock = await aiohappyeyeballs.start_connection(
                await self._addresses(loop, host, port),
                happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY_S,
                interleave=1,
            )
        except (OSError, RuntimeError) as exc:  # uvloop may raise RuntimeError
            self._resolved = None  # resolved anew next time: the addresses may have moved
            words = connect_error_words(exc, host, port)
            raise ConnectFailure(
                words if proxy is None else f"proxy: {words}", f"{type(exc).__name__}: {exc}"
            ) from None
        try:
            if proxy is not None:
                await self._tunnel(loop, sock, proxy)
        except BaseException:
            sock.close()
            raise
        try:  # the socket is the transport's from here, closed by it on failure
            _, connection = await loop.create_connection(
                lambda: _Connection(self._max_body_bytes),
                sock=sock,
                ssl=self._ssl,
                server_hostname=target.host if target.tls else None,
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConnectFailure(
                connect_error_words(exc, target.host, target.port), f"{type(exc).__name__}: {exc}"
            ) from None
        return connection

    async def _tunnel(
        self, loop: asyncio.AbstractEventLoop, sock: socket.socket, proxy: Proxy
    ) -> None:
        """Asks the proxy for a tunnel to the upstream over `sock`: returns once it is open,
        ConnectFailure when the proxy refuses or answers no HTTP."""
        target = self.target
        where = f"{target.host}:{target.port}"
        try:
            await loop.sock_sendall(sock, connect_request(proxy, target.host, target.port))
            answer = bytearray()
            while (reply := tunnel_answer(bytes(answer))) is None:
                data = await loop.sock_recv(sock, MAX_HEAD_BYTES)
                if not data:
                    raise ConnectionResetError("closed before answering CONNECT")
                answer += data
        except ProtocolError as exc:
            raise ConnectFailure(
                f"proxy: no HTTP answer to CONNECT ({proxy.shown})", f"ProtocolError: {exc}"
            ) from None
        except OSError as exc:
            raise ConnectFailure(
                f"proxy: {proxy.shown} failed while opening a tunnel to {where}",
                f"{type(exc).__name__}: {exc}",
            ) from None
        status, reason = reply
        if not 200 <= status < 300:
            said = f"{status} {reason}" if reason else str(status)
            words = f"proxy: {proxy.shown} refused a tunnel to {where} ({said})"
            raise ConnectFailure(words, words)

    async def _addresses(
        self, loop: asyncio.AbstractEventLoop, host: str, port: int
    ) -> list[tuple[Any, ...]]:
        """The addresses of the upstream (or of its proxy), resolved at most every DNS_TTL_S
        (new connections are rare on kept-alive ones, but an upstream that closes each one
        would ask the resolver on every call)."""
        now = loop.time()
        if self._resolved is None or now >= self._resolved_until:
            self._resolved = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            self._resolved_until = now + DNS_TTL_S
        return self._resolved
