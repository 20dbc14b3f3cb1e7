"""The web3.py providers. Each encodes a call as web3.py's HTTP providers do, hands the
bytes to the embedded gateway, and decodes the answer as they do: an upstream's error (a
revert with its data) reaches web3.py exactly as a direct provider would deliver it, and a
gateway error (-32052 and the others of docs/errors.md) carries rpcgate's reason.

What web3.py lets a provider offer, and what it does not:
- request and response (`make_request`) and batches (`make_batch_request`, from
  `w3.batch_requests()`): any provider. `AsyncRpcgateProvider` and `RpcgateProvider` give
  both, straight to the gateway.
- subscriptions (`w3.eth.subscribe`, `w3.socket.process_subscriptions()`): only a
  `PersistentConnectionProvider`, and only for `AsyncWeb3`
  (web3.py has no synchronous subscriptions). `PersistentRpcgateProvider` is one. Its socket
  is an in-process queue: what web3.py sends is answered as rpcgate's WebSocket answers it
  (`edge.subscriptions`: newHeads and logs from the consensus, with failover, and
  `removed: true` on a reorg). web3.py routes *every* call of such a provider through its
  request processor, which polls for each answer (a loop yielding to the event loop until
  it comes): calls through it cost more CPU than through `AsyncRpcgateProvider`, so a
  program that calls a lot and subscribes too can hold one of each over one configuration.
- web3.py requires a persistent provider to be connected before use (`async with
  AsyncWeb3(PersistentRpcgateProvider(...)) as w3`, or `await`); the other two start on
  their first call.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from typing import Any, cast

from web3._utils.batching import sort_batch_response_by_response_ids
from web3.exceptions import ProviderConnectionError
from web3.providers.async_base import AsyncJSONBaseProvider
from web3.providers.base import JSONBaseProvider
from web3.providers.persistent import PersistentConnectionProvider
from web3.types import RPCEndpoint, RPCResponse

from rpcgate.edge.subscriptions import Subscriptions, answer_on_connection
from rpcgate.rpc.background import LoopThread
from rpcgate.rpc.jsonrpc import parse_body
from rpcgate.web3.embedded import ConfigSource, EmbeddedGateway

# Beyond the gateway's own deadline (`failover.deadline_s`), how long the synchronous
# provider waits for its loop before it gives up on an answer.
SYNC_MARGIN_S = 5.0


def _decoded(raw: bytes | None, decode: Any) -> Any:
    if raw is None:  # only notifications, which web3.py never sends
        raise ValueError("rpcgate: a request of notifications only has no answer")
    return decode(raw)


def _batch(response: Any) -> list[RPCResponse] | RPCResponse:
    if not isinstance(response, list):
        return cast(RPCResponse, response)  # one error for the whole batch
    return sort_batch_response_by_response_ids(cast(list[RPCResponse], response))


class AsyncRpcgateProvider(AsyncJSONBaseProvider):
    """For `AsyncWeb3`: the gateway runs on the loop that makes the first call.

        async with AsyncRpcgateProvider("rpcgate.yaml", chain="base") as provider:
            w3 = AsyncWeb3(provider)
            print(await w3.eth.block_number)

    `config`: a path to a YAML file, a mapping of the YAML's structure, or None (the
    zero-config default: every chain in the table over keyless public endpoints). `chain`:
    a name, alias or chain id (default: the first chain). `disconnect()` (or leaving the
    `async with`) stops every task and connection.
    """

    def __init__(
        self, config: ConfigSource = None, *, chain: str | int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.embedded = EmbeddedGateway(config, chain)

    def __str__(self) -> str:
        return f"rpcgate embedded gateway ({self.embedded.chain_key or 'first chain'})"

    async def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        raw = await self.embedded.answer(self.encode_rpc_request(method, params))
        return cast(RPCResponse, _decoded(raw, self.decode_rpc_response))

    async def make_batch_request(
        self, requests: list[tuple[RPCEndpoint, Any]]
    ) -> list[RPCResponse] | RPCResponse:
        raw = await self.embedded.answer(self.encode_batch_rpc_request(requests))
        return _batch(_decoded(raw, self.decode_rpc_response))

    async def connect(self) -> None:
        """Starts the gateway now (else the first call does): its chains have a consensus
        head when this returns."""
        await self.embedded.ready()

    async def disconnect(self) -> None:
        await self.embedded.close()

    async def __aenter__(self) -> AsyncRpcgateProvider:
        await self.connect()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.disconnect()

    def status(self) -> dict[str, Any]:
        """What the server's `/status.json` shows: chains, upstreams, heads, cache, drills."""
        return self.embedded.status()


def _shut(embedded: EmbeddedGateway, loop: LoopThread) -> None:
    """Closes the gateway and ends its loop's thread (a finalizer: it holds no provider)."""
    if loop.is_running:
        try:
            loop.run(embedded.close(), timeout=30)
        finally:
            loop.stop()


class RpcgateProvider(JSONBaseProvider):
    """For `Web3`: the gateway runs on its own event loop, in a background thread started
    by the first call.

        with RpcgateProvider(chain="ethereum") as provider:
            w3 = Web3(provider)
            print(w3.eth.block_number)

    `config` and `chain` as for `AsyncRpcgateProvider`. `close()` (or leaving the `with`)
    stops every task, connection and the thread; a provider dropped without it is closed
    when it is collected, or at exit.
    """

    def __init__(
        self, config: ConfigSource = None, *, chain: str | int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.embedded = EmbeddedGateway(config, chain)
        self._loop: LoopThread | None = None
        self._starting = threading.Lock()
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._wait_s = self.embedded.config.failover.deadline_s + SYNC_MARGIN_S

    def __str__(self) -> str:
        return f"rpcgate embedded gateway ({self.embedded.chain_key or 'first chain'})"

    def _running(self) -> LoopThread:
        loop = self._loop
        if loop is not None:
            return loop
        with self._starting:
            if self._loop is None:
                if self.embedded.closed:
                    raise RuntimeError("this rpcgate provider is closed")
                started = LoopThread("rpcgate-provider")
                self._finalizer = weakref.finalize(self, _shut, self.embedded, started)
                self._loop = started
                started.run(self.embedded.ready(), timeout=self._wait_s * 2)
            return self._loop

    def _answer(self, body: bytes) -> Any:
        loop = self._running()
        if self.embedded.closed:
            raise RuntimeError("this rpcgate provider is closed")
        raw = loop.run(self.embedded.answer(body), timeout=self._wait_s)
        return _decoded(raw, self.decode_rpc_response)

    def make_request(self, method: RPCEndpoint, params: Any) -> RPCResponse:
        return cast(RPCResponse, self._answer(self.encode_rpc_request(method, params)))

    def make_batch_request(
        self, requests: list[tuple[RPCEndpoint, Any]]
    ) -> list[RPCResponse] | RPCResponse:
        return _batch(self._answer(self.encode_batch_rpc_request(requests)))

    def connect(self) -> None:
        """Starts the gateway now (else the first call does)."""
        self._running()

    def close(self) -> None:
        """Stops every task and connection, and the loop's thread; idempotent."""
        self.embedded.closed = True
        if self._finalizer is not None:
            self._finalizer()  # runs `_shut` once, whoever calls first

    def __enter__(self) -> RpcgateProvider:
        self.connect()
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def status(self) -> dict[str, Any]:
        """What the server's `/status.json` shows."""
        loop = self._loop
        if loop is None or not loop.is_running:
            return self.embedded.status()

        async def read() -> dict[str, Any]:
            return self.embedded.status()

        return loop.run(read(), timeout=self._wait_s)


class PersistentRpcgateProvider(PersistentConnectionProvider):
    """For `AsyncWeb3` with subscriptions, web3.py's persistent-connection API over an
    in-process socket:

        async with AsyncWeb3(PersistentRpcgateProvider(config)) as w3:
            await w3.eth.subscribe("newHeads")
            async for message in w3.socket.process_subscriptions():
                print(message["result"]["number"])

    `config` and `chain` as for `AsyncRpcgateProvider`; other keyword arguments are web3.py's
    (`request_timeout`, `subscription_response_queue_size`, ...). Leaving the `async with`
    (or `await w3.provider.disconnect()`) ends every subscription, task and connection.
    """

    def __init__(
        self, config: ConfigSource = None, *, chain: str | int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.embedded = EmbeddedGateway(config, chain)
        self.endpoint_uri = f"rpcgate://embedded/{self.embedded.chain_key or 'first'}"
        self._inbox: asyncio.Queue[bytes] | None = None
        self._subscriptions: Subscriptions | None = None
        self._answering: set[asyncio.Task[None]] = set()

    def __str__(self) -> str:
        return f"rpcgate embedded gateway, persistent ({self.embedded.chain_key or 'first chain'})"

    async def is_connected(self, show_traceback: bool = False) -> bool:
        connected = self._inbox is not None and not self.embedded.closed
        if not connected and show_traceback:
            raise ProviderConnectionError(f"{self} is not connected")
        return connected

    async def _provider_specific_connect(self) -> None:
        if self.embedded.closed:  # a gateway closed is not started again
            self.embedded = EmbeddedGateway(self.embedded.config, self.embedded.chain_key)
        chain = await self.embedded.ready()
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._inbox = inbox
        max_subscriptions = self.embedded.config.websocket.max_subscriptions
        self._subscriptions = Subscriptions(chain, inbox.put_nowait, max_subscriptions)

    async def socket_send(self, request_data: bytes) -> None:
        if self._inbox is None or self._subscriptions is None:
            raise ProviderConnectionError(f"{self} is not connected")
        task = asyncio.create_task(self._answer(request_data, self._inbox, self._subscriptions))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _answer(
        self, body: bytes, inbox: asyncio.Queue[bytes], subscriptions: Subscriptions
    ) -> None:
        gateway = self.embedded.gateway
        chain = self.embedded.chain
        if gateway is None or chain is None:
            return
        limits = gateway.config.limits
        parsed = parse_body(body, limits.max_batch_items, max_depth=limits.max_json_depth)
        payload = await answer_on_connection(
            chain, parsed, subscriptions, gateway.config.failover.deadline_s, gateway.metrics
        )
        if payload is not None:
            inbox.put_nowait(payload)

    async def socket_recv(self) -> RPCResponse:
        if self._inbox is None:
            raise ProviderConnectionError(f"{self} is not connected")
        return cast(RPCResponse, self.decode_rpc_response(await self._inbox.get()))

    async def _provider_specific_socket_reader(self) -> RPCResponse:
        return await self.socket_recv()

    async def _provider_specific_disconnect(self) -> None:
        subscriptions, self._subscriptions, self._inbox = self._subscriptions, None, None
        if subscriptions is not None:
            subscriptions.release()
        for task in list(self._answering):
            task.cancel()
        await asyncio.gather(*self._answering, return_exceptions=True)
        await self.embedded.close()

    def status(self) -> dict[str, Any]:
        """What the server's `/status.json` shows."""
        return self.embedded.status()


__all__ = ["AsyncRpcgateProvider", "PersistentRpcgateProvider", "RpcgateProvider"]
