"""Upstream WebSockets: the pure decisions as tables, then the socket against real anvil
nodes (anvil serves WebSocket on its HTTP port), behind a small WebSocket proxy the tests
cut, take down and bring back, or tell to refuse a subscription the way a provider does."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
import json
import time
import warnings
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rpcgate.config.settings import UpstreamConfig
from rpcgate.consensus.heads import Block
from rpcgate.consensus.health import UpstreamHealth, record_failure
from rpcgate.rpc.errors import ErrorClass, UpstreamFailure, classify
from rpcgate.rpc.masking import MASKER
from rpcgate.upstream.websocket import (
    Backoff,
    PendingMerger,
    UpstreamSocket,
    parse_notification,
    subscribe_reply,
)
from tests.harness.anvil import (
    DEV_ADDRESSES,
    DEV_KEYS,
    AnvilNode,
    sign_transaction,
    transaction_hash,
)
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.tools import free_port

CHAIN_ID = 31337
FAST = Backoff(initial_s=0.05, max_s=0.2, stable_s=60.0)
WAIT_S = 5.0

HEADS_ID = "0x62497a334845567a436d4c3349566b56"
PENDING_ID = "0x68554874686e55454b6a71485a534c66"
KINDS = {HEADS_ID: "newHeads", PENDING_ID: "newPendingTransactions"}
TX_HASH = "0x8e1a03e4da40a661e4b5ae4fa46d0b980b57701007e8385182fec32348a7c5f2"
# A header as anvil sends it in a newHeads notification (trimmed to the fields that matter).
ANVIL_HEADER: dict[str, Any] = {
    "hash": "0xdb8174198c4208cba9353e21bc1a155bcaeff9a198783980074592efcb414b64",
    "parentHash": "0x84d8f4a431d3e59f9d1c36f8b139dd509a915808f9db11f8fe05b9790bf8ee0c",
    "number": "0x1",
    "timestamp": "0x6553f10c",
    "transactions": [TX_HASH],
}


def notification(subscription: str, result: Any) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "method": "eth_subscription",
        "params": {"subscription": subscription, "result": result},
    }


# -- pure decisions ------------------------------------------------------------------------

BACKOFF = Backoff(initial_s=0.5, max_s=30.0, stable_s=60.0)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("attempt", "rand", "at_least", "delay"),
    [
        pytest.param(1, 0.0, 0.0, 0.25, id="first-retry-shortest"),
        pytest.param(1, 1.0, 0.0, 0.5, id="first-retry-longest"),
        pytest.param(2, 1.0, 0.0, 1.0, id="doubles"),
        pytest.param(4, 0.5, 0.0, 3.0, id="jitter-in-between"),
        pytest.param(7, 1.0, 0.0, 30.0, id="capped"),
        pytest.param(7, 0.0, 0.0, 15.0, id="capped-and-jittered"),
        pytest.param(10_000, 1.0, 0.0, 30.0, id="a-long-outage-does-not-overflow"),
        pytest.param(1, 0.0, 300.0, 300.0, id="a-cooldown-the-answer-asked-for-wins"),
    ],
)
def test_backoff_doubles_from_half_a_second_to_thirty_jittered(
    attempt: int, rand: float, at_least: float, delay: float
) -> None:
    assert BACKOFF.delay(attempt, rand, at_least) == pytest.approx(delay)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("attempt", "connected_s", "after"),
    [
        pytest.param(0, None, 1, id="first-failure"),
        pytest.param(3, None, 4, id="never-came-up"),
        pytest.param(5, 2.0, 6, id="flapping-keeps-backing-off"),
        pytest.param(5, 60.0, 1, id="stable-connection-starts-over"),
    ],
)
def test_backoff_starts_over_only_after_a_stable_connection(
    attempt: int, connected_s: float | None, after: int
) -> None:
    assert BACKOFF.next_attempt(attempt, connected_s) == after


SUBSCRIBE_REPLIES = [
    pytest.param({"jsonrpc": "2.0", "id": 1, "result": HEADS_ID}, HEADS_ID, id="subscribed"),
    pytest.param(
        {"jsonrpc": "2.0", "id": 1, "error": {"code": -32601, "message": "Method not found"}},
        UpstreamFailure(rpc_code=-32601, rpc_message="Method not found"),
        id="no-subscriptions",
    ),
    pytest.param(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "error": {
                "code": 429,
                "message": "Your app has exceeded its compute units per second capacity.",
            },
        },
        UpstreamFailure(
            rpc_code=429,
            rpc_message="Your app has exceeded its compute units per second capacity.",
        ),
        id="alchemy-ws-rate-limit",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 7, "result": HEADS_ID},
        UpstreamFailure(
            transport="WebSocket: bad answer to eth_subscribe",
            body_text="id mismatch: asked 1, answered 7",
        ),
        id="another-calls-answer",
    ),
    pytest.param(
        {"jsonrpc": "2.0", "id": 1, "result": None},
        UpstreamFailure(
            transport="WebSocket: bad answer to eth_subscribe",
            body_text="the subscription id is not a string",
        ),
        id="no-subscription-id",
    ),
]


@pytest.mark.unit
@pytest.mark.parametrize(("answer", "outcome"), SUBSCRIBE_REPLIES)
def test_subscribe_reply_gives_the_subscription_or_the_failure(
    answer: dict[str, Any], outcome: str | UpstreamFailure
) -> None:
    assert subscribe_reply(answer, 1) == outcome


@pytest.mark.unit
@pytest.mark.parametrize(
    ("failure", "error_class", "counts"),
    [
        pytest.param(
            UpstreamFailure(transport="WebSocket: connection refused (127.0.0.1:1)"),
            ErrorClass.TRANSIENT,
            True,
            id="refused",
        ),
        pytest.param(
            UpstreamFailure(transport="WebSocket: closed (code 1006)"),
            ErrorClass.TRANSIENT,
            True,
            id="dropped",
        ),
        pytest.param(UpstreamFailure(http_status=401), ErrorClass.AUTH, True, id="bad-key"),
        pytest.param(
            UpstreamFailure(rpc_code=429, rpc_message="compute units per second capacity"),
            ErrorClass.RATE_LIMITED,
            True,
            id="rate-limited",
        ),
        pytest.param(
            UpstreamFailure(rpc_code=-32601, rpc_message="Method not found"),
            ErrorClass.UNSUPPORTED,
            False,
            id="no-subscriptions",
        ),
    ],
)
def test_websocket_failures_are_classified_like_any_other(
    failure: UpstreamFailure, error_class: ErrorClass, counts: bool
) -> None:
    health = UpstreamHealth()
    record_failure(health, classify(failure), now=0.0)
    assert (classify(failure).error_class, health.failures == 1) == (error_class, counts)


NOTIFICATIONS = [
    pytest.param(
        notification(HEADS_ID, ANVIL_HEADER),
        Block(1, ANVIL_HEADER["hash"], ANVIL_HEADER["parentHash"]),
        id="head",
    ),
    pytest.param(notification(PENDING_ID, TX_HASH), TX_HASH, id="pending-hash"),
    pytest.param(notification(PENDING_ID, TX_HASH.upper().replace("0X", "0x")), TX_HASH, id="case"),
    pytest.param(
        notification(PENDING_ID, {"hash": TX_HASH, "nonce": "0x0"}), TX_HASH, id="full-tx"
    ),
    pytest.param(notification("0x1234", TX_HASH), None, id="not-our-subscription"),
    pytest.param(notification(PENDING_ID, "0x1234"), None, id="not-a-hash"),
    pytest.param(notification(HEADS_ID, {"number": "0x1"}), None, id="header-without-hashes"),
    pytest.param(notification(HEADS_ID, TX_HASH), None, id="header-not-an-object"),
    pytest.param({"jsonrpc": "2.0", "id": 1, "result": HEADS_ID}, None, id="an-answer"),
    pytest.param({"method": "eth_subscription", "params": []}, None, id="params-not-an-object"),
    pytest.param([notification(HEADS_ID, ANVIL_HEADER)], None, id="a-batch"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("message", "parsed"), NOTIFICATIONS)
def test_notification_gives_a_head_or_a_pending_hash(message: Any, parsed: Any) -> None:
    assert parse_notification(message, KINDS) == parsed


@pytest.mark.unit
def test_merger_lets_each_hash_through_once_whatever_its_case() -> None:
    merger = PendingMerger()
    other = "0x" + "ab" * 32
    offered = [TX_HASH, other, TX_HASH.replace("8e1a", "8E1A"), other, TX_HASH]
    assert [merger.is_new(h) for h in offered] == [True, True, False, False, False]


@pytest.mark.unit
def test_merger_memory_is_bounded_and_forgets_the_least_recently_seen() -> None:
    merger = PendingMerger(capacity=3)
    hashes = [f"0x{i:064x}" for i in range(5)]
    for tx_hash in hashes[:3]:
        merger.is_new(tx_hash)
    assert not merger.is_new(hashes[0])  # seen again: now the most recent
    assert merger.is_new(hashes[3])  # pushes out hashes[1], the least recently seen
    assert len(merger) == 3
    assert merger.is_new(hashes[1])
    assert not merger.is_new(hashes[0])


# -- against real nodes --------------------------------------------------------------------


class WsProxy:
    """A WebSocket proxy in front of one node: `cut()` drops its connections as a network
    would, `down()`/`up()` stop and resume listening on the same port (a node restarting),
    `reject` answers chosen eth_subscribe kinds with a provider's error instead of the
    node's, `refuse_upgrade` answers the handshake with an HTTP status and text instead of a
    WebSocket, and `silent` makes it forward nothing and answer no ping (a hung node)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.port = 0
        self.reject: dict[str, dict[str, Any]] = {}
        self.silent = False
        self.refuse_upgrade: tuple[int, str] | None = None
        self.connections = 0
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None
        self._open: set[tuple[web.WebSocketResponse, asyncio.Transport | None]] = set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    async def start(self) -> WsProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await self.up()
        return self

    async def up(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def down(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None
        self.cut()

    def cut(self) -> None:
        for _, transport in list(self._open):
            if transport is not None:
                transport.abort()

    async def stop(self) -> None:
        self.cut()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        if self.refuse_upgrade is not None:
            status, text = self.refuse_upgrade
            return web.Response(status=status, text=text)
        client = web.WebSocketResponse(autoping=False)
        await client.prepare(request)
        self.connections += 1
        entry = (client, request.transport)
        self._open.add(entry)
        try:
            async with self._session.ws_connect(self.target) as node:
                pipes = [
                    asyncio.create_task(self._client_to_node(client, node)),
                    asyncio.create_task(self._node_to_client(node, client)),
                ]
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        finally:
            self._open.discard(entry)
        return client

    async def _client_to_node(
        self, client: web.WebSocketResponse, node: aiohttp.ClientWebSocketResponse
    ) -> None:
        async for msg in client:
            if msg.type is aiohttp.WSMsgType.PING:
                if not self.silent:
                    await client.pong(msg.data)
                continue
            if msg.type is not aiohttp.WSMsgType.TEXT or self.silent:
                continue
            call = json.loads(msg.data)
            kind = (call.get("params") or [None])[0]
            if call.get("method") == "eth_subscribe" and kind in self.reject:
                await client.send_json(
                    {"jsonrpc": "2.0", "id": call["id"], "error": self.reject[kind]}
                )
                continue
            await node.send_str(msg.data)

    async def _node_to_client(
        self, node: aiohttp.ClientWebSocketResponse, client: web.WebSocketResponse
    ) -> None:
        async for msg in node:
            if msg.type is aiohttp.WSMsgType.TEXT and not self.silent:
                await client.send_str(msg.data)


@pytest.fixture
def node(anvil_cluster: AnvilClusterFactory) -> AnvilNode:
    return anvil_cluster(1)[0]


@pytest.fixture
async def proxy(node: AnvilNode) -> Any:
    started = await WsProxy(f"ws://127.0.0.1:{node.port}").start()
    yield started
    await started.stop()


def events(captured: io.StringIO, name: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in captured.getvalue().splitlines() if line.startswith("{")]
    return [event for event in lines if event.get("event") == name]


class Heard:
    """What the callbacks were given, in order."""

    def __init__(self) -> None:
        self.heads: list[tuple[str, Block]] = []
        self.pending: list[tuple[str, str]] = []

    def on_head(self, upstream: str, block: Block) -> None:
        self.heads.append((upstream, block))

    def on_pending(self, upstream: str, tx_hash: str) -> None:
        self.pending.append((upstream, tx_hash))


async def eventually(check: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def off_loop(call: Callable[..., Any], *args: Any) -> Any:
    """A synchronous node call, off the event loop the socket reads on."""
    return await asyncio.to_thread(call, *args)


@contextlib.asynccontextmanager
async def running(socket: UpstreamSocket) -> Any:
    await socket.start()
    try:
        yield socket
    finally:
        await socket.stop()


def upstream(name: str, ws_url: str) -> UpstreamConfig:
    return UpstreamConfig(name=name, url="http://127.0.0.1:1", ws_url=ws_url)


def socket_for(
    name: str, ws_url: str, heard: Heard, *, pending: bool = False, **options: Any
) -> UpstreamSocket:
    return UpstreamSocket(
        upstream(name, ws_url),
        UpstreamHealth(),
        on_head=heard.on_head,
        on_pending=heard.on_pending if pending else None,
        backoff=options.pop("backoff", FAST),
        **options,
    )


async def mine(node: AnvilNode, height: int) -> None:
    await off_loop(node.mine, node.genesis_timestamp + 12 * height)


async def test_mined_blocks_arrive_as_heads(node: AnvilNode) -> None:
    heard = Heard()
    async with running(socket_for("node0", f"ws://127.0.0.1:{node.port}", heard)) as socket:
        await eventually(lambda: socket.state.connected)
        await mine(node, 1)
        await mine(node, 2)
        await eventually(lambda: len(heard.heads) == 2)
    first, second = (block for _, block in heard.heads)
    assert [first.number, second.number] == [1, 2]
    assert first.hash == await off_loop(node.block_hash, 1)
    assert second.parent_hash == first.hash
    assert {name for name, _ in heard.heads} == {"node0"}


async def test_a_transaction_sent_without_mining_arrives_as_a_pending_hash(
    node: AnvilNode,
) -> None:
    heard = Heard()
    url = f"ws://127.0.0.1:{node.port}"
    async with running(socket_for("node0", url, heard, pending=True)) as socket:
        await eventually(lambda: socket.state.connected)
        assert socket.supports_pending
        raw = sign_transaction(chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=1)
        await off_loop(node.send_raw_transaction, raw)
        await eventually(lambda: len(heard.pending) == 1)
    assert heard.pending == [("node0", transaction_hash(raw))]
    assert heard.heads == []  # nothing was mined


async def test_a_cut_connection_is_counted_reconnected_and_resubscribed(
    node: AnvilNode, proxy: WsProxy
) -> None:
    heard = Heard()
    async with running(socket_for("node0", proxy.url, heard, pending=True)) as socket:
        await eventually(lambda: socket.state.connected)
        proxy.cut()
        await eventually(lambda: socket.state.reconnects == 1 and socket.state.connected)
        assert socket.health.failures == 1
        assert "WebSocket: closed" in socket.health.last_error
        assert "WebSocket: closed" in socket.state.last_error
        await mine(node, 1)
        raw = sign_transaction(chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=1)
        await off_loop(node.send_raw_transaction, raw)
        await eventually(lambda: len(heard.heads) == 1 and len(heard.pending) == 1)
    assert proxy.connections == 2
    assert heard.pending == [("node0", transaction_hash(raw))]


async def test_a_node_down_for_a_while_is_retried_with_backoff_and_logged_once(
    node: AnvilNode, proxy: WsProxy, log_lines: io.StringIO
) -> None:
    heard = Heard()
    async with running(socket_for("node0", proxy.url, heard)) as socket:
        await eventually(lambda: socket.state.connected)
        await proxy.down()
        await asyncio.sleep(1.0)
        failures = socket.health.failures
        # Without backoff a refused connect repeats thousands of times a second; with
        # 0.05 s doubling to 0.2 s, jittered, one second holds 4 to 9 attempts.
        assert 3 <= failures <= 10, failures
        # Counted, without cooling the upstream's HTTP path (its own calls say how it is).
        assert socket.health.consecutive_failures == 0
        assert socket.health.cooldown_until == 0
        assert not socket.state.connected
        await proxy.up()
        await eventually(lambda: socket.state.connected)
        await mine(node, 1)
        await eventually(lambda: len(heard.heads) == 1)
    assert socket.state.reconnects == 1
    down = events(log_lines, "upstream_ws_down")
    assert len(down) == 1
    assert down[0]["upstream"] == "node0" and down[0]["url"] == proxy.url
    (up,) = events(log_lines, "upstream_ws_up")
    assert up["failed_attempts"] >= failures


async def test_a_refused_websocket_is_retried_and_logged_once_without_its_key(
    log_lines: io.StringIO,
) -> None:
    key = "9aa3d95b3bc440fa88ea12eaa4456161"
    url = f"ws://127.0.0.1:{free_port()}/ws/v3/{key}"
    heard = Heard()
    socket = socket_for("infura", url, heard)
    async with running(socket):
        await eventually(lambda: socket.health.failures >= 3)
    assert socket.health.last_error.startswith("WebSocket: connection refused")
    assert socket.health.last_error_class is ErrorClass.TRANSIENT
    assert not socket.state.connected and socket.state.reconnects == 0
    (down,) = events(log_lines, "upstream_ws_down")
    assert down["url"].endswith("/ws/v3/***")
    assert "connection refused" in down["error"]
    assert key not in log_lines.getvalue()
    assert key not in MASKER.mask(f"aiohttp said: {url}")


async def test_a_node_refusing_pending_transactions_still_gives_heads(
    node: AnvilNode, proxy: WsProxy
) -> None:
    proxy.reject["newPendingTransactions"] = {"code": -32601, "message": "Method not found"}
    heard = Heard()
    async with running(socket_for("node0", proxy.url, heard, pending=True)) as socket:
        await eventually(lambda: socket.state.connected)
        assert not socket.supports_pending
        assert socket.state.offers_pending is False
        await mine(node, 1)
        await eventually(lambda: len(heard.heads) == 1)
    assert socket.health.failures == 0  # not supported says nothing about the node's health


async def test_a_refused_head_subscription_counts_and_is_retried(
    node: AnvilNode, proxy: WsProxy
) -> None:
    # Alchemy's WebSocket rate limit, as it answers eth_subscribe.
    proxy.reject["newHeads"] = {
        "code": 429,
        "message": "Your app has exceeded its compute units per second capacity.",
    }
    heard = Heard()
    async with running(socket_for("node0", proxy.url, heard)) as socket:
        await eventually(lambda: socket.health.failures >= 1)
        assert socket.health.last_error_class is ErrorClass.RATE_LIMITED
        assert not socket.state.connected
        del proxy.reject["newHeads"]
        await eventually(lambda: socket.state.connected, timeout_s=WAIT_S)
        await mine(node, 1)
        await eventually(lambda: len(heard.heads) == 1)


async def test_a_rejected_key_at_the_handshake_waits_out_the_auth_cooldown(
    node: AnvilNode, proxy: WsProxy
) -> None:
    proxy.refuse_upgrade = (401, "invalid project id")  # Infura's answer to a bad key
    heard = Heard()
    async with running(socket_for("infura", proxy.url, heard)) as socket:
        await eventually(lambda: socket.health.failures == 1)
        await asyncio.sleep(0.5)  # FAST backoff alone would have retried several times
        assert socket.health.failures == 1
        assert socket.health.last_error_class is ErrorClass.AUTH
        assert socket.health.cooldown_until - time.monotonic() > 200


async def test_a_server_without_websocket_there_is_a_transient_failure(
    node: AnvilNode, proxy: WsProxy
) -> None:
    proxy.refuse_upgrade = (200, "this is not a WebSocket")
    heard = Heard()
    async with running(socket_for("node0", proxy.url, heard)) as socket:
        await eventually(lambda: socket.health.failures >= 2)
    assert socket.health.last_error == "WebSocket: not upgraded (HTTP 200)"


async def test_a_node_that_stops_answering_pings_is_dropped_and_reconnected(
    node: AnvilNode, proxy: WsProxy
) -> None:
    heard = Heard()
    socket = socket_for("node0", proxy.url, heard, heartbeat_s=0.2, subscribe_timeout_s=1.0)
    async with running(socket):
        await eventually(lambda: socket.state.connected)
        proxy.silent = True
        await eventually(lambda: socket.health.failures >= 1)
        assert socket.health.last_error == "WebSocket: no answer to a ping"
        proxy.silent = False
        await eventually(lambda: socket.state.connected and socket.state.reconnects >= 1)


async def test_merged_pending_hashes_from_two_nodes_come_once(
    anvil_cluster: AnvilClusterFactory,
) -> None:
    cluster = anvil_cluster(2)
    merger = PendingMerger()
    heard = Heard()
    merged: list[str] = []

    def on_pending(upstream: str, tx_hash: str) -> None:
        heard.on_pending(upstream, tx_hash)
        if merger.is_new(tx_hash):
            merged.append(tx_hash)

    sockets = [
        UpstreamSocket(
            upstream(f"node{i}", f"ws://127.0.0.1:{node.port}"),
            UpstreamHealth(),
            on_head=heard.on_head,
            on_pending=on_pending,
            backoff=FAST,
        )
        for i, node in enumerate(cluster)
    ]
    async with running(sockets[0]), running(sockets[1]):
        await eventually(lambda: all(s.state.connected for s in sockets))
        both = sign_transaction(chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=1)
        await off_loop(cluster.broadcast_raw_transaction, both)
        only_second = sign_transaction(
            chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[0], value=1, key=DEV_KEYS[1]
        )
        await off_loop(cluster[1].send_raw_transaction, only_second)
        await eventually(lambda: len(heard.pending) == 3)
    assert sorted(name for name, h in heard.pending if h == transaction_hash(both)) == [
        "node0",
        "node1",
    ]
    assert sorted(merged) == sorted([transaction_hash(both), transaction_hash(only_second)])


async def test_stop_closes_everything_even_during_an_outage() -> None:
    heard = Heard()
    socket = socket_for(
        "node0", f"ws://127.0.0.1:{free_port()}", heard, backoff=Backoff(initial_s=30.0)
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        await socket.start()
        await eventually(lambda: socket.health.failures == 1)  # now asleep for 15 s or more
        loop = asyncio.get_running_loop()
        started = loop.time()
        await socket.stop()
        assert loop.time() - started < 1.0
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert not socket.state.connected


@pytest.mark.unit
def test_a_socket_needs_a_ws_url() -> None:
    with pytest.raises(ValueError, match="no ws_url"):
        UpstreamSocket(upstream("node0", ""), UpstreamHealth(), on_head=Heard().on_head)
