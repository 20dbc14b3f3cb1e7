"""The fast path: JSON-RPC POSTs answered on rpcgate's own HTTP/1.1 protocol, everything
else handed to aiohttp on the same connection.

aiohttp's server costs most of a cache hit's CPU: a task, a request, a response, header
multidicts and a writer for every request. An RPC POST needs little of that: `POST /`,
`/{chain}` or `/{chain}/{key}` with a body of a declared length, a JSON answer. `FastHttp`
is an asyncio.Protocol that frames requests itself (the head ends at the first empty line,
the body is `Content-Length` bytes), has httptools (llhttp, as uvicorn uses) parse and judge
each head (`rpc_heads`), answers those POSTs through `rpc_post` (the code aiohttp's handler
calls too) and writes each answer in one piece. An answer the gateway holds (a cache hit)
is made in `data_received`, with no task, and written with the others of the loop's turn
(`Outbox`).

Any other request is aiohttp's, from its first byte: another method or path (WebSockets,
the probes, the status page, admin, preflights), `Expect`, `Upgrade`, a chunked or
compressed body, a version other than 1.0 and 1.1, a head llhttp or aiohttp would refuse.
The connection is handed over there (`LimitedServer.adopt`) with the bytes not yet
answered, and is aiohttp's from then on, so what aiohttp does, malformed requests
included, is unchanged.

The limits of `connections` hold here as there, and the connection count is one for both:
the head timeout (from the connection's start, or from the first byte of its next request),
the body timeout and the body cap (a refused body is never read: the connection closes
after the answer), the connection cap and the keep-alive timeout. A connection's requests
are answered one at a time, in order; pipelined ones wait in its buffer.
"""

from __future__ import annotations

import asyncio
import functools
from time import perf_counter
from typing import Any, cast

from aiohttp import HttpVersion11, web

from rpcgate.config.settings import Config
from rpcgate.edge.connections import (
    CANCELLED_HANDLER_WAIT_S,
    LimitedServer,
    body_too_large,
    body_too_slow,
    close_leaving_body_unread,
    runner_for,
)
from rpcgate.edge.http_server import INGRESS, OPERATOR_PATHS
from rpcgate.edge.ingress import Ingress
from rpcgate.edge.responses import reply_head
from rpcgate.edge.rpc_heads import HEAD_END, MOST_HEAD_BYTES, rpc_head
from rpcgate.edge.rpc_post import Reply, RpcPost


def rpc_runner(app: web.Application, config: Config, **runner_kwargs: Any) -> web.AppRunner:
    """The RPC listener's runner: aiohttp's under the client limits (`runner_for`), each
    connection served first by the fast path unless `server.fast_path` is off."""
    if not config.server.fast_path:
        return runner_for(app, config, None, **runner_kwargs)
    first = functools.partial(FastHttp, ingress=app[INGRESS], outbox=Outbox())
    return runner_for(app, config, first, **runner_kwargs)


class Outbox:
    """Answers written together, once the event loop has read every connection that was
    ready: a loop turn reads a burst of requests, then writes their answers, and the client
    sends its next burst. Under load (cache hits, 32 connections, 2 cores) that served about
    a fifth more calls per second than writing each answer as it was made, 11 rounds of 12
    ahead: fewer wake-ups per call, on both sides."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        self._waiting: list[FastHttp] = []

    def add(self, connection: FastHttp, loop: asyncio.AbstractEventLoop) -> None:
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append(connection)

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        for connection in waiting:
            connection.write_now()


# The operator's paths are aiohttp's (rpc_heads.rpc_head).
OPERATOR_SEGMENTS = frozenset(path.split("/")[1].encode() for path in OPERATOR_PATHS)
_MOST_READ_AHEAD = 262144  # bytes held past the request in hand before reading pauses
_LINE_BREAKS = (13, 10)  # CR, LF: llhttp skips them between requests


# Where a connection is.
_HEAD = 0  # waiting for a request head (the buffer may hold part of it)
_BODY = 1  # the head is read, its body is awaited
_BUSY = 2  # the request is being answered (a task); the buffer holds what follows
_GONE = 3  # closed, or handed to aiohttp


class FastHttp(asyncio.Protocol):
    """One client connection, answering RPC POSTs until a request is aiohttp's."""

    __slots__ = (
        "_body_deadline",
        "_buffer",
        "_closing",
        "_counted",
        "_drained",
        "_head_deadline",
        "_idle_deadline",
        "_ingress",
        "_keep_alive",
        "_length",
        "_loop",
        "_outbox",
        "_outgoing",
        "_peer",
        "_post",
        "_reading_paused",
        "_searched",
        "_server",
        "_state",
        "_task",
        "_timer",
        "_timer_at",
        "_transport",
        "_version",
        "_writing_paused",
    )

    def __init__(self, server: LimitedServer, ingress: Ingress, outbox: Outbox) -> None:
        self._server = server
        self._ingress = ingress
        self._outbox = outbox
        self._outgoing: list[bytes] = []  # answers made, waiting for the outbox
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._counted = False
        self._peer: str | None = None
        self._state = _HEAD
        self._buffer = bytearray()
        self._searched = 0  # how much of the buffer is known to hold no head's end
        # The request in hand.
        self._post: RpcPost | None = None
        self._length = 0
        self._version: Any = HttpVersion11
        self._keep_alive = True
        self._task: asyncio.Task[None] | None = None
        self._closing = False  # close after the request in hand (shutdown, a late head)
        # One timer for every clock, moved lazily (a request moves a deadline and schedules
        # nothing): the head, the body and the keep-alive idle time.
        self._head_deadline: float | None = None
        self._body_deadline = 0.0
        self._idle_deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._reading_paused = False
        self._writing_paused = False
        self._drained: asyncio.Future[None] | None = None  # a shutdown waiting for the end

    # -- asyncio's callbacks ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if not self._server.admit_connection():
            self._state = _GONE
            transport.close()
            return
        self._counted = True
        self._transport = transport
        self._server.fast_connections.add(self)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if isinstance(peer, (list, tuple)) else peer
        self._head_deadline = self._loop.time() + self._server.header_timeout_s
        self._arm_clock()

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == _GONE:
            return
        buffer = self._buffer
        if not buffer and state != _BODY and self._head_deadline is None:
            # The first byte of the next request: its head is due within the timeout.
            self._head_deadline = self._loop.time() + self._server.header_timeout_s
        buffer += data
        if state != _BUSY:
            self._advance()
        self._settle()

    def eof_received(self) -> bool | None:
        # The client sends no more. As under aiohttp the transport closes (a call still in
        # flight is answered to no one); what is answered already goes out first.
        self.write_now()
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._counted:
            self._counted = False
            self._server.open_connections -= 1
        self._transport = None
        self._gone()  # a call in flight still finishes (as under aiohttp), answering no one
        self._server.fast_connections.discard(self)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._state == _HEAD or self._state == _BODY:
            self._advance()
            self._settle()

    # -- draining (LimitedServer.pre_shutdown, shutdown) ----------------------------------

    def close(self) -> None:
        """Close now when no request is in hand, else once it is answered."""
        self._closing = True
        if self._state == _HEAD and self._transport is not None:
            self._close_now()

    async def shutdown(self, timeout: float | None) -> None:
        """Wait up to `timeout` for the request in hand to be answered, then close."""
        self._closing = True
        if self._state in (_BODY, _BUSY) and self._transport is not None:
            drained = self._drained = self._loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(drained), timeout)
            except TimeoutError:
                task = self._task
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.wait({task}, timeout=CANCELLED_HANDLER_WAIT_S)
        if self._transport is not None:
            self._close_now()

    # -- requests -------------------------------------------------------------------------

    def _advance(self) -> None:
        """Serve what the buffer holds: heads, bodies, one request after another."""
        while not self._writing_paused:
            state = self._state
            if state == _HEAD:
                if not self._buffer or not self._take_head():
                    return
            elif state == _BODY:
                if len(self._buffer) < self._length:
                    return
                post = self._post
                assert post is not None
                self._answer(post, self._take(self._length))
            else:
                return

    def _take_head(self) -> bool:
        """Read the head the buffer starts with; False: it is not all here yet."""
        buffer = self._buffer
        if buffer[0] in _LINE_BREAKS:
            skipped = 0
            while skipped < len(buffer) and buffer[skipped] in _LINE_BREAKS:
                skipped += 1
            del buffer[:skipped]
            if not buffer:
                self._head_deadline = None  # line breaks alone start no request
                return False
        end = buffer.find(HEAD_END, self._searched, MOST_HEAD_BYTES)
        if end < 0:
            if len(buffer) >= MOST_HEAD_BYTES:
                self._hand_off(head_complete=False)
            else:
                self._searched = max(0, len(buffer) - len(HEAD_END) + 1)
            return False
        self._searched = 0
        head_length = end + len(HEAD_END)
        head = rpc_head(bytes(buffer[:head_length]), OPERATOR_SEGMENTS)
        if head is None:
            self._hand_off(head_complete=True)
            return False
        del buffer[:head_length]
        self._head_deadline = None
        self._version, self._keep_alive = head.version, head.keep_alive
        length = head.length
        post = RpcPost(
            self._ingress,
            head.chain,
            head.key,
            head.headers,
            head.query,
            self._peer,
            perf_counter(),
        )
        refusal = post.route()
        limit = self._ingress.gateway.config.limits.max_body_bytes
        if refusal is None and length > limit:
            refusal = post.body_refused(body_too_large(limit))  # before a byte of it is read
        if refusal is not None:
            if len(buffer) >= length and not refusal.close:
                del buffer[:length]  # here already: dropped, and the connection kept
            else:
                refusal.close = True  # the rest of the body stays unread
            self._send(refusal)
            return True
        if len(buffer) >= length:
            self._answer(post, self._take(length))
            return True
        self._state, self._post, self._length = _BODY, post, length
        self._body_deadline = self._loop.time() + self._ingress.gateway.config.limits.body_timeout_s
        return True

    def _take(self, length: int) -> bytes:
        buffer = self._buffer
        body = bytes(buffer[:length])
        del buffer[:length]
        return body

    def _answer(self, post: RpcPost, body: bytes) -> None:
        reply = post.at_once(body)
        if reply is not None:
            self._send(reply)
            return
        self._state, self._post = _BUSY, None
        if self._buffer and self._head_deadline is None:  # pipelined: the next head's clock
            self._head_deadline = self._loop.time() + self._server.header_timeout_s
        self._task = self._loop.create_task(self._answer_in_full(post))

    async def _answer_in_full(self, post: RpcPost) -> None:
        try:
            reply = await post.in_full()
        finally:
            self._task = None
        if self._state == _BUSY:
            self._send(reply)
            self._advance()
            self._settle()

    def _send(self, reply: Reply) -> None:
        """Write `reply` in one piece; then close, or wait for the next request."""
        transport = self._transport
        self._post = None
        if transport is None or transport.is_closing():
            self._gone()
            return
        keep_alive = self._keep_alive and not reply.close and not self._closing
        body = reply.body
        length = None if body is None else len(body)
        head = reply_head(reply.status, reply.fields, length, self._version, keep_alive)
        if not self._outgoing:
            self._outbox.add(self, self._loop)
        self._outgoing.append(head if body is None else head + body)
        if reply.close:
            self.write_now()
            self._gone()
            close_leaving_body_unread(transport, self._loop)
        elif not keep_alive:
            self._close_now()
        else:
            self._state = _HEAD
            if not self._buffer:
                self._idle_deadline = self._loop.time() + self._server.keepalive_timeout_s
            elif self._head_deadline is None:
                self._head_deadline = self._loop.time() + self._server.header_timeout_s

    def write_now(self) -> None:
        """Write the answers made so far (the outbox's turn, or before a close or a
        hand-over, which must come after them)."""
        outgoing = self._outgoing
        if not outgoing:
            return
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))
        outgoing.clear()

    def _hand_off(self, head_complete: bool) -> None:
        """aiohttp takes the connection over, from the request the buffer starts with."""
        self.write_now()  # the answers to the requests before it go first
        transport = self._transport
        assert transport is not None
        head_deadline = None if head_complete else self._head_deadline
        received = bytes(self._buffer)
        self._buffer.clear()
        self._counted = False  # aiohttp's handler holds this connection's place now
        self._transport = None
        self._gone()
        self._server.fast_connections.discard(self)
        if self._reading_paused:
            transport.resume_reading()
        self._server.adopt(transport, received, head_deadline)

    def _close_now(self) -> None:
        self.write_now()
        transport = self._transport
        self._gone()
        if transport is not None:
            transport.close()

    def _gone(self) -> None:
        self._state = _GONE
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        drained = self._drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- clocks and read-ahead ------------------------------------------------------------

    def _settle(self) -> None:
        """After the buffer moved: pause or resume reading, and keep the clock right."""
        transport = self._transport
        state = self._state
        if state == _HEAD and not self._buffer and not self._reading_paused:
            # Idle: only the keep-alive clock, usually armed already to fire before it.
            idle = self._idle_deadline
            if self._timer is None or (idle is not None and self._timer_at > idle):
                self._arm_clock()
            return
        if transport is None or state == _GONE:
            return
        held = len(self._buffer) - (self._length if self._state == _BODY else 0)
        if held > _MOST_READ_AHEAD:
            if not self._reading_paused:
                self._reading_paused = True
                transport.pause_reading()
        elif self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        self._arm_clock()

    def _due(self) -> float | None:
        """When the next limit falls due, if one can."""
        state = self._state
        due = self._head_deadline
        if state == _BODY:
            due = self._body_deadline if due is None else min(due, self._body_deadline)
        elif state == _HEAD and not self._buffer and due is None:
            due = self._idle_deadline
        return due

    def _arm_clock(self) -> None:
        due = self._due()
        if due is None:
            return
        timer = self._timer
        if timer is not None:
            if self._timer_at <= due:
                return  # it fires first and moves on to `due` then
            timer.cancel()
        self._timer_at = due
        self._timer = self._loop.call_at(due, self._on_clock)

    def _on_clock(self) -> None:
        self._timer = None
        if self._state == _GONE:
            return
        now = self._loop.time()
        head_deadline = self._head_deadline
        if head_deadline is not None and now >= head_deadline:
            self._head_deadline = None
            # A head in the buffer whole came in time (it waits for the one before it).
            if self._buffer.find(HEAD_END) < 0:
                self._server.late_heads += 1
                if self._state != _HEAD:  # the request in hand is answered, then it ends
                    self._closing = True
                else:
                    self._close_now()
                    return
        if self._state == _BODY and now >= self._body_deadline:
            post = self._post
            assert post is not None
            timeout_s = self._ingress.gateway.config.limits.body_timeout_s
            self._send(post.body_refused(body_too_slow(timeout_s)))
            return
        idle_deadline = self._idle_deadline
        if (
            self._state == _HEAD
            and not self._buffer
            and idle_deadline is not None
            and now >= idle_deadline
        ):
            self._close_now()
            return
        self._arm_clock()
