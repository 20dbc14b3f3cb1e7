"""WebSocket ingress: every JSON-RPC call over a socket, and subscriptions.

A connection is a loop reading messages and a sender writing from a bounded queue. Each
message is admitted (the connection's message rate, then the client's rate limit and calls
in flight, as over HTTP), parsed, and answered by a task of its own, so answers go out as
they are ready, each with its id. Calls take the HTTP path (`answers`): pinning, cache,
failover. `eth_subscribe` and `eth_unsubscribe` are the connection's own
(`subscriptions.py`), under the chain's method policy as every call is.

A client that does not read fills its send queue (`websocket.send_queue` messages, or
`websocket.send_queue_bytes` bytes) and is then disconnected with 1008 and the reason, so it
costs bounded memory; a client that does not answer pings is dropped by aiohttp's heartbeat.
Closing releases every subscription, task and queued message of the connection. When the
server shuts down, every client is told with 1001 (going away), so it reconnects elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

import structlog
from aiohttp import WSMsgType, web

from rpcgate.config.settings import WebSocketConfig
from rpcgate.edge.clients import Caller
from rpcgate.edge.rate_limits import LIMIT_EXCEEDED, Bucket, Rate, take
from rpcgate.edge.subscriptions import Subscriptions, answer_on_connection
from rpcgate.rpc.jsonrpc import (
    dumps,
    parse_body,
    response_object,
    rpc_error,
)

if TYPE_CHECKING:
    from rpcgate.chain.runtime import ChainRuntime
    from rpcgate.edge.ingress import Ingress

log = structlog.get_logger("rpcgate.ws")

CLOSE_NOT_READING = 1008  # policy violation: the reason says which
CLOSE_GOING_AWAY = 1001  # the server shuts down
_CLOSE_WAIT_S = 1.0  # a close frame to a client that does not read is not waited for longer


def is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


class Connection:
    def __init__(
        self,
        ws: web.WebSocketResponse,
        ingress: Ingress,
        chain: ChainRuntime,
        caller: Caller,
        settings: WebSocketConfig,
        transport: asyncio.Transport | None = None,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.ingress = ingress
        self.gateway = ingress.gateway
        self.chain = chain
        self.caller = caller
        self.settings = settings
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=settings.send_queue)
        self.queued_bytes = 0  # of the messages in `queue`
        self.subscriptions = Subscriptions(chain, self.send, settings.max_subscriptions)
        self.tasks: set[asyncio.Task[None]] = set()
        self._bucket: Bucket | None = None
        self._rate = Rate(settings.messages_per_s, max(1, int(settings.messages_per_s * 2)))
        self.closing: str | None = None

    # -- sending ---------------------------------------------------------------------------

    def send(self, payload: bytes) -> None:
        """Queues a message; a full queue means the client does not read: it is dropped.
        A message is queued while fewer than `send_queue_bytes` wait, so one answer as
        large as an upstream may give still goes to a client that reads."""
        if self.closing is not None:
            return
        limit = self.settings.send_queue_bytes
        if self.queued_bytes >= limit:
            self.close_soon(
                f"send queue full ({self.queued_bytes} bytes waiting, "
                f"websocket.send_queue_bytes {limit}): the client does not read its messages"
            )
            return
        # Exact size: orjson's output keeps its working buffer, 4 KB or ~8x the message.
        exact = memoryview(payload).tobytes()
        try:
            self.queue.put_nowait(exact)
        except asyncio.QueueFull:
            self.close_soon(
                f"send queue full ({self.settings.send_queue} messages, websocket.send_queue): "
                "the client does not read its messages"
            )
            return
        self.queued_bytes += len(exact)

    async def _sender(self) -> None:
        while True:
            payload = await self.queue.get()
            self.queued_bytes -= len(payload)
            # A text frame of the UTF-8 bytes as they are (send_str would copy them twice).
            await self.ws.send_frame(payload, WSMsgType.TEXT)

    def close_soon(self, reason: str) -> None:
        if self.closing is not None:
            return
        self.closing = reason
        log.warning("ws_closed_by_gateway", reason=reason, client=self.caller.identity)
        task = asyncio.create_task(self._close(reason))
        self.tasks.add(task)

    async def _close(self, reason: str) -> None:
        try:
            async with asyncio.timeout(_CLOSE_WAIT_S):
                await self.ws.close(code=CLOSE_NOT_READING, message=reason.encode()[:120])
        except (TimeoutError, ConnectionError):
            pass
        finally:
            if self.transport is not None:
                self.transport.abort()  # a client that does not read cannot take a close frame

    async def going_away(self, wait_s: float) -> None:
        """The server shuts down: the client is told (1001), and its close answer waited
        for `wait_s` at most; the connection is then released as any closed one."""
        self.closing = "the server is shutting down"
        try:
            async with asyncio.timeout(wait_s):
                await self.ws.close(code=CLOSE_GOING_AWAY, message=b"server shutting down")
        except (TimeoutError, ConnectionError):
            if self.transport is not None:
                self.transport.abort()

    # -- receiving -------------------------------------------------------------------------

    async def serve(self) -> None:
        sender = asyncio.create_task(self._sender(), name="ws-sender")
        try:
            async for message in self.ws:
                if self.closing is not None:
                    break
                if message.type is WSMsgType.TEXT:
                    self._received(message.data.encode())
                elif message.type is WSMsgType.BINARY:
                    self._received(message.data)
                else:
                    break  # CLOSE, ERROR (a message over the size limit: 1009)
        finally:
            sender.cancel()
            await self.release()

    async def release(self) -> None:
        """Everything the connection held: subscriptions, calls in flight, queued messages."""
        self.subscriptions.release()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queued_bytes = 0

    def _received(self, body: bytes) -> None:
        if self._rate.per_s > 0 and self.caller.limited:  # not the operator's own clients
            self._bucket, wait = take(self._bucket, self._rate, 1, time.monotonic())
            if wait > 0:
                message = (
                    f"too many messages: {self._rate.per_s:g} per second on one connection "
                    f"(websocket.messages_per_s); retry after {wait:.2f} s"
                )
                error = rpc_error(LIMIT_EXCEEDED, message, {"retry_after_s": round(wait, 3)})
                self.send(dumps(response_object(None, error=error)))
                return
        task = asyncio.create_task(self._answer(body))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, body: bytes) -> None:
        limits = self.gateway.config.limits
        parsed = parse_body(body, limits.max_batch_items, max_depth=limits.max_json_depth)
        cost = len(parsed.items)
        admission = self.ingress.admission
        verdict = await admission.admit(self.caller, cost)
        if not verdict.allowed:
            data = (
                {"retry_after_s": round(verdict.retry_after_s, 3)}
                if verdict.retry_after_s
                else None
            )
            error = rpc_error(LIMIT_EXCEEDED, verdict.message, data)
            self.send(dumps(response_object(None, error=error)))
            return
        try:
            payload = await answer_on_connection(
                self.chain,
                parsed,
                self.subscriptions,
                self.gateway.config.failover.deadline_s,
                self.gateway.metrics,
            )
        finally:
            admission.leave(self.caller, cost)
        if payload is not None:
            self.send(payload)


async def close_websockets(ingress: Ingress) -> None:
    """Shutdown (the listener is closed): every client is told the server goes away (1001),
    each given a second at most (and no more than `shutdown.timeout_s`) to answer, so that
    their handlers end and the drain waits only for HTTP calls in flight."""
    wait_s = min(_CLOSE_WAIT_S, ingress.gateway.config.shutdown.timeout_s)
    connections = list(ingress.websockets)
    if connections:
        log.info("ws_going_away", connections=len(connections))
    await asyncio.gather(*(c.going_away(wait_s) for c in connections), return_exceptions=True)


async def serve_websocket(
    request: web.Request, ingress: Ingress, chain: ChainRuntime, caller: Caller
) -> web.WebSocketResponse:
    settings = ingress.gateway.config.websocket
    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat_s,
        max_msg_size=settings.max_message_bytes,
        compress=False,  # per-message deflate costs CPU and memory per connection
    )
    await ws.prepare(request)
    connection = Connection(ws, ingress, chain, caller, settings, request.transport)
    ingress.websockets.add(connection)
    try:
        await connection.serve()
    finally:
        ingress.websockets.discard(connection)
        if not ws.closed:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_CLOSE_WAIT_S):
                    await ws.close()
    return ws
