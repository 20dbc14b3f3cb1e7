"""The HTTP connections of one upstream: keep-alive connections over asyncio, each carrying
one call (or one upstream batch) at a time, framed by `http1`.

Why not aiohttp's client, which the gateway used before: a call through it builds a
request object, a header multidict, a payload, a response object and a stream reader, and
that was most of what a pass-through call cost. A bare pass-through proxy on these
connections reaches about 3x the requests per second of the same proxy on aiohttp's
`ClientSession` (bench/suite.py scenario b and its note in the README). aiohttp still
serves the gateway's own HTTP and the upstream WebSockets.

What this shell adds to `http1`: a pool of idle connections (most recent first, closed
after `idle_timeout_s` unused, at most `max_idle` kept), TLS with the system's trust store,
names resolved at most every `DNS_TTL_S`, a connection the server closed while it sat idle
retried once on a fresh one (nothing of the call reached the server), a connection whose
call was abandoned (a deadline, a hedge's loser) closed rather than reused, and connect
failures said in an operator's words.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping
from typing import Any

from rpcgate.http1 import ProtocolError, Response, ResponseReader, Target, TooLarge
from rpcgate.http1 import request_bytes as _request_bytes
from rpcgate.http1 import target as _target

__all__ = ["ConnectFailure", "ProtocolError", "TooLarge", "UpstreamHttp", "connect_error_words"]

IDLE_TIMEOUT_S = 60.0
MAX_IDLE = 256
DNS_TTL_S = 300.0  # how long a name's addresses are kept (aiohttp's ttl_dns_cache was 300)


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
        try:
            response = self.reader.feed(data)
        except (ProtocolError, TooLarge) as exc:
            self._settle(exc)
            self.abort()
            return
        if response is not None and not self._settle(response):  # an answer nobody asked for
            self.abort()

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
    ) -> None:
        self.target: Target = _target(url, headers, user_agent)
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
        target = self.target
        loop = asyncio.get_running_loop()
        try:
            addresses = await self._addresses(loop)
            error: OSError | None = None
            for address in addresses:  # in the resolver's order, as aiohttp tries them
                try:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(self._max_body_bytes),
                        address[0],
                        address[1],
                        ssl=self._ssl,
                        server_hostname=target.host if target.tls else None,
                    )
                    return connection
                except ssl.SSLError:
                    raise  # the same certificate at every address
                except OSError as exc:
                    error = exc
            assert error is not None
            raise error
        except (OSError, ssl.SSLError) as exc:
            self._resolved = None  # resolved anew next time: the addresses may have moved
            raise ConnectFailure(
                connect_error_words(exc, target.host, target.port), f"{type(exc).__name__}: {exc}"
            ) from None

    async def _addresses(self, loop: asyncio.AbstractEventLoop) -> list[tuple[Any, ...]]:
        """The upstream's addresses, resolved at most every DNS_TTL_S (new connections are
        rare on kept-alive ones, but an upstream that closes each one would ask the
        resolver on every call)."""
        now = loop.time()
        if self._resolved is None or now >= self._resolved_until:
            target = self.target
            infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            self._resolved = [info[4] for info in infos]
            self._resolved_until = now + DNS_TTL_S
        return self._resolved
