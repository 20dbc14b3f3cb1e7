"""An HTTP load balancer over JSON-RPC replicas, as real providers run in front of nodes.

A provider's one URL is served by several nodes at slightly different heights, and each
HTTP request may land on any of them. A test puts a `LoadBalancer` where the gateway
expects one upstream: each POST (a single call or a whole batch, never split) goes to a
backend drawn uniformly at random from `backends`, and its status, body and content type
come back as the backend gave them. `counts` says how many requests each backend got.

`backends` may be replaced at any time from any thread (the swap of a list is atomic; a
request in flight finishes on the backend it drew). The balancer lives on the loop that
awaited `start()`; `stop()` may be awaited from any loop.
"""

from __future__ import annotations

import asyncio
import random
import threading

import aiohttp
from aiohttp import web

_JSON = "application/json"
_SHUTDOWN_TIMEOUT_SECONDS = 0.5


class Gate:
    """Shared by balancers on one loop: while it is closed, requests wait at the door, and
    closing waits for the requests in flight. A test closes it around what must not overlap
    with reads (anvil, while it mines, answers a state read about its head block with the
    state of the block being mined)."""

    def __init__(self) -> None:
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._in_flight = 0

    async def enter(self) -> None:
        while not self._open.is_set():
            await self._open.wait()
        self._in_flight += 1
        self._idle.clear()

    def leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def close(self) -> None:
        self._open.clear()
        await self._idle.wait()

    async def reopen(self) -> None:
        self._open.set()


class LoadBalancer:
    def __init__(
        self,
        backends: list[str],
        *,
        seed: int | None = None,
        upstream_timeout: float = 30.0,
        transactions_to: str | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.backends = backends
        self.gate = gate
        # Where eth_sendRawTransaction goes, when set: the replica a provider's network
        # learns it from first (the others have it once it is mined), so a test that mines
        # the replicas itself keeps their blocks identical.
        self.transactions_to = transactions_to
        self.upstream_timeout = upstream_timeout
        self._random = random.Random(seed)
        self._counts_lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: web.Server | None = None
        self._listener: asyncio.Server | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def backends(self) -> list[str]:
        return self._backends

    @backends.setter
    def backends(self, backends: list[str]) -> None:
        if not backends:
            raise ValueError("a load balancer needs at least one backend")
        self._backends = list(backends)

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("load balancer not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def counts(self) -> dict[str, int]:
        """HTTP requests forwarded to each backend since start or the last reset_counts()."""
        with self._counts_lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        with self._counts_lock:
            self._counts.clear()

    async def start(self) -> LoadBalancer:
        """Start serving on the running loop (which then owns the balancer)."""
        if self._loop is not None:
            raise RuntimeError("load balancer already started")
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.upstream_timeout)
        )
        self._server = web.Server(self._handle, access_log=None)
        self._listener = await self._loop.create_server(self._server, "127.0.0.1", 0)
        self._port = self._listener.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop serving and close every connection; callable from any loop."""
        loop = self._loop
        if loop is None:
            return
        if asyncio.get_running_loop() is loop:
            await self._shutdown()
        elif not loop.is_closed():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._shutdown(), loop))

    async def __aenter__(self) -> LoadBalancer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- internals; everything below runs on the balancer's loop --

    async def _shutdown(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self._server is not None:
            await self._server.shutdown(_SHUTDOWN_TIMEOUT_SECONDS)
        if self._session is not None:
            await self._session.close()
        self._loop = None
        self._listener = None
        self._server = None
        self._session = None

    async def _handle(self, request: web.BaseRequest) -> web.Response:
        if self.gate is None:
            return await self._pass(request)
        await self.gate.enter()
        try:
            return await self._pass(request)
        finally:
            self.gate.leave()

    async def _pass(self, request: web.BaseRequest) -> web.Response:
        body = await request.read()
        backend = self._random.choice(self._backends)
        if self.transactions_to is not None and b"eth_sendRawTransaction" in body:
            backend = self.transactions_to
        with self._counts_lock:
            self._counts[backend] = self._counts.get(backend, 0) + 1
        headers = {"Content-Type": request.headers.get("Content-Type", _JSON)}
        assert self._session is not None
        try:
            async with self._session.request(
                request.method, backend, data=body, headers=headers
            ) as reply:
                return web.Response(
                    status=reply.status,
                    body=await reply.read(),
                    headers={"Content-Type": reply.headers.get("Content-Type", _JSON)},
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            return web.Response(status=502, text=f"load balancer: {backend} failed: {error!r}")
