"""The WebSocket ingress against real anvil nodes: calls, subscriptions fed by the
consensus (heads and logs, through upstream cut-offs and reorgs), and per-connection
limits."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from rpcgate.chain.feeds import LogFilter, header_object, log_matches, parse_log_filter
from rpcgate.consensus.heads import Block
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, AnvilCluster, sign_transaction
from tests.harness.contract import INIT_CODE, LOG_TOPIC, create_address
from tests.harness.faultproxy import Fault, FaultProxy

CHAIN_ID = 31337
CONTRACT = create_address(DEV_ADDRESSES[0], 0)


# -- pure decisions ------------------------------------------------------------------------


def _b(number: int, tag: str, parent: str) -> Block:
    return Block(number, tag, parent)


@pytest.mark.unit
def test_log_filters_match_as_a_node_matches() -> None:
    entry = {"address": "0xAbC" + "0" * 37, "topics": ["0x" + "11" * 32, "0x" + "22" * 32]}
    address = "0xabc" + "0" * 37
    cases = [
        (None, True),
        ({}, True),
        ({"address": address}, True),
        ({"address": [address, "0x" + "ff" * 20]}, True),
        ({"address": "0x" + "ff" * 20}, False),
        ({"topics": ["0x" + "11" * 32]}, True),
        ({"topics": [None, "0x" + "22" * 32]}, True),
        ({"topics": [None, ["0x" + "33" * 32, "0x" + "22" * 32]]}, True),
        ({"topics": ["0x" + "22" * 32]}, False),
        ({"topics": [None, None, "0x" + "11" * 32]}, False),  # no third topic
    ]
    for raw, expected in cases:
        wanted = parse_log_filter(raw)
        assert isinstance(wanted, LogFilter), (raw, wanted)
        assert log_matches(entry, wanted) is expected, raw
    for bad in (
        "x",
        {"address": "0x12"},
        {"topics": "0x"},
        {"topics": [1]},
        {"topics": [None] * 5},
    ):
        assert isinstance(parse_log_filter(bad), str), bad


@pytest.mark.unit
def test_a_header_is_the_block_without_its_body() -> None:
    block = {"number": "0x1", "hash": "0xa", "transactions": [], "uncles": [], "size": "0x2"}
    assert header_object(block) == {"number": "0x1", "hash": "0xa"}


# -- a WebSocket client for the tests ------------------------------------------------------


class Socket:
    """One client connection in the gateway's background loop: calls by id, and every
    notification collected by subscription."""

    def __init__(self, gateway: RunningGateway, path: str = "/devnet") -> None:
        self.loop = gateway.loop
        self.url = gateway.url.replace("http://", "ws://") + path
        self.notes: dict[str, list[Any]] = {}
        self.answers: dict[Any, Any] = {}
        self.order: list[Any] = []  # ids in the order answers came
        self.closed: tuple[int | None, str] | None = None
        self._ids = iter(range(1, 1_000_000))
        self.loop.run(self._open())

    async def _open(self) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.url, max_msg_size=0)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        reason = ""
        async for message in self.ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                reason = str(message.extra or "")
                break
            body = json.loads(message.data)
            for item in body if isinstance(body, list) else [body]:
                if item.get("method") == "eth_subscription":
                    params = item["params"]
                    self.notes.setdefault(params["subscription"], []).append(params["result"])
                else:
                    self.answers[item.get("id")] = item
                    self.order.append(item.get("id"))
        self.closed = (self.ws.close_code, reason)

    def send(self, payload: Any) -> None:
        self.send_text(json.dumps(payload))

    def send_text(self, text: str) -> None:
        self.loop.run(self.ws.send_str(text))

    def call(self, method: str, params: list[Any] | None = None, timeout: float = 10) -> Any:
        call_id = next(self._ids)
        self.send({"jsonrpc": "2.0", "id": call_id, "method": method, "params": params or []})
        return self.wait(lambda: self.answers.get(call_id), f"the answer to {method}", timeout)

    def wait(self, condition: Any, what: str, timeout: float = 10) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}; answers {self.answers}")

    def subscribe(self, *params: Any) -> str:
        reply = self.call("eth_subscribe", list(params))
        assert "result" in reply, reply
        self.notes.setdefault(reply["result"], [])
        return str(reply["result"])

    def close(self) -> None:
        async def shut() -> None:
            await self.ws.close()
            await self.session.close()

        self.loop.run(shut())


@pytest.fixture
def sockets() -> Iterator[list[Socket]]:
    opened: list[Socket] = []
    yield opened
    for socket in opened:
        if socket.closed is None:
            socket.close()


def _connect(gateway: RunningGateway, sockets: list[Socket], path: str = "/devnet") -> Socket:
    socket = Socket(gateway, path)
    sockets.append(socket)
    return socket


# -- chains that log -----------------------------------------------------------------------


@pytest.fixture
def logging_chain(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> tuple[AnvilCluster, list[FaultProxy], RunningGateway, list[int]]:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=1)
    deploy = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=None, data=INIT_CODE, key=DEV_KEYS[0], gas=200_000
    )
    cluster.broadcast_raw_transaction(deploy)
    cluster.mine_all()
    gateway = start_gateway(
        [],
        upstreams=[{"name": f"node{i}", "url": p.url} for i, p in enumerate(proxies)],
        head_poll_interval=0.1,
    )
    return cluster, proxies, gateway, [1]


def _mine_with_logs(cluster: AnvilCluster, nonce: list[int], blocks: int, on: Any = None) -> None:
    for _ in range(blocks):
        raw = sign_transaction(
            chain_id=CHAIN_ID,
            nonce=nonce[0],
            to=CONTRACT,
            data=nonce[0].to_bytes(4, "big"),
            gas=100_000,
        )
        if on is None:
            cluster.broadcast_raw_transaction(raw)
            cluster.mine_all()
        else:
            for i in on:
                cluster[i].send_raw_transaction(raw)
            cluster.mine_on(on)
        nonce[0] += 1


def _node_logs(cluster: AnvilCluster, node: int, start: int) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = cluster[node].rpc(
        "eth_getLogs", [{"fromBlock": hex(start), "toBlock": "latest", "address": CONTRACT}]
    )
    return logs


def _key(entry: dict[str, Any]) -> tuple[str, str, bool]:
    return entry["blockHash"], entry["logIndex"], bool(entry.get("removed"))


# -- calls ---------------------------------------------------------------------------------


def test_calls_and_batches_over_a_websocket_answer_as_over_http(
    logging_chain: Any, sockets: list[Socket]
) -> None:
    cluster, _, gateway, _ = logging_chain
    socket = _connect(gateway, sockets)
    assert socket.call("eth_chainId")["result"] == hex(CHAIN_ID)
    assert socket.call("eth_blockNumber")["result"] == hex(cluster[0].block_number())
    balance = socket.call("eth_getBalance", [DEV_ADDRESSES[1], "latest"])["result"]
    assert balance == cluster[0].rpc("eth_getBalance", [DEV_ADDRESSES[1], "latest"])
    socket.send(
        [
            {"jsonrpc": "2.0", "id": "a", "method": "eth_chainId"},
            {"jsonrpc": "2.0", "id": "b", "method": "admin_peers"},
            {"jsonrpc": "2.0", "method": "eth_chainId"},  # a notification: no answer
        ]
    )
    # The batch comes back as one message of two answers, in order.
    socket.wait(lambda: "a" in socket.answers and "b" in socket.answers, "the batch")
    assert socket.answers["b"]["error"]["code"] == -32601
    socket.send_text("{not json")
    assert socket.wait(lambda: socket.answers.get(None), "a parse error")["error"]["code"] == -32700
    # eth_subscribe over HTTP says where it works.
    reply = gateway.rpc("eth_subscribe", ["newHeads"]).json()
    assert reply["error"]["code"] == -32601 and "WebSocket" in reply["error"]["message"]


def test_answers_go_out_as_they_are_ready(logging_chain: Any, sockets: list[Socket]) -> None:
    _, proxies, gateway, _ = logging_chain
    socket = _connect(gateway, sockets)
    for proxy in proxies:
        proxy.set_fault(Fault.LATENCY, delay=0.4)
    socket.send(
        {
            "jsonrpc": "2.0",
            "id": "slow",
            "method": "eth_getBalance",
            "params": [DEV_ADDRESSES[1], "0x1"],
        }
    )
    socket.send({"jsonrpc": "2.0", "id": "fast", "method": "eth_blockNumber"})  # in hand
    socket.wait(lambda: "slow" in socket.answers, "the slow answer")
    assert socket.order.index("fast") < socket.order.index("slow")


# -- subscriptions -------------------------------------------------------------------------


def test_new_heads_each_canonical_head_once_in_order_through_cut_offs(
    logging_chain: Any, sockets: list[Socket]
) -> None:
    cluster, proxies, gateway, nonce = logging_chain
    socket = _connect(gateway, sockets)
    heads = socket.subscribe("newHeads")
    start = cluster[0].block_number()
    for round_ in range(12):
        if round_ == 3:
            proxies[0].set_fault(Fault.REFUSE)  # the upstream most likely in use
        if round_ == 6:
            proxies[1].set_fault(Fault.HANG)  # and now two of three
        if round_ == 9:
            proxies[0].heal()
            proxies[1].heal()
        _mine_with_logs(cluster, nonce, 1)
        time.sleep(0.15)
    end = cluster[2].block_number()
    socket.wait(lambda: len(socket.notes[heads]) >= end - start, "every head", timeout=20)
    time.sleep(0.5)  # nothing more may come
    got = [(int(h["number"], 16), h["hash"]) for h in socket.notes[heads]]
    expected = [(n, cluster[2].block_hash(hex(n))) for n in range(start + 1, end + 1)]
    assert got == expected
    assert all("transactions" not in h and "parentHash" in h for h in socket.notes[heads])


def test_logs_each_once_in_order_and_the_dropped_ones_removed_on_a_reorg(
    logging_chain: Any, sockets: list[Socket]
) -> None:
    cluster, proxies, gateway, nonce = logging_chain
    socket = _connect(gateway, sockets)
    logs = socket.subscribe("logs", {"address": CONTRACT, "topics": [LOG_TOPIC]})
    heads = socket.subscribe("newHeads")
    other = socket.subscribe("logs", {"address": "0x" + "11" * 20})  # matches nothing
    start = cluster[0].block_number() + 1
    _mine_with_logs(cluster, nonce, 3)
    proxies[0].set_fault(Fault.REFUSE)
    _mine_with_logs(cluster, nonce, 2)
    proxies[0].heal()
    socket.wait(lambda: len(socket.notes[logs]) >= 5, "five logs")
    before_fork = [e for e in socket.notes[logs]]
    assert [_key(e) for e in before_fork] == [_key(e) for e in _node_logs(cluster, 0, start)]

    # A reorg: the last two blocks are replaced by three others without the logs' calls.
    snapshot_height = cluster[0].block_number() - 2
    fork_point_hash = cluster[0].block_hash(hex(snapshot_height))
    _reorg(cluster, depth=2, new_blocks=3)
    socket.wait(
        lambda: any(e.get("removed") for e in socket.notes[logs]), "removed logs", timeout=15
    )
    socket.wait(
        lambda: int(socket.notes[heads][-1]["number"], 16) == cluster[0].block_number(),
        "the new head",
        timeout=15,
    )
    time.sleep(0.5)
    removed = [e for e in socket.notes[logs] if e.get("removed")]
    assert [_key({**e, "removed": False}) for e in removed] == [_key(e) for e in before_fork[-2:]]
    # newHeads: after the old heads, the new canonical heads from the fork point up.
    numbers = [int(h["number"], 16) for h in socket.notes[heads]]
    fork_at = numbers.index(snapshot_height + 1, numbers.index(snapshot_height + 1) + 1)
    new_heads = socket.notes[heads][fork_at:]
    assert [h["hash"] for h in new_heads] == [
        cluster[0].block_hash(hex(n)) for n in range(snapshot_height + 1, snapshot_height + 4)
    ]
    assert new_heads[0]["parentHash"] == fork_point_hash
    assert socket.notes[other] == []


def _reorg(cluster: AnvilCluster, depth: int, new_blocks: int) -> None:
    """Every node drops its last `depth` blocks and mines `new_blocks` others (empty, with
    timestamps the old chain did not use, so their hashes differ)."""
    for node in cluster:
        head = node.block_number()
        node.rpc("anvil_rollback", [depth])
        assert node.block_number() == head - depth
        base = int(node.block(hex(head - depth))["timestamp"], 16)
        for i in range(new_blocks):
            node.mine(base + 100 + i)


def test_unsubscribe_and_close_release_what_the_connection_held(
    logging_chain: Any, sockets: list[Socket]
) -> None:
    cluster, _, gateway, nonce = logging_chain
    socket = _connect(gateway, sockets)
    heads = socket.subscribe("newHeads")
    socket.subscribe("logs", {})
    feed = gateway.gateway.chains[0].head_feed()
    assert feed.subscriber_count == 2
    assert socket.call("eth_unsubscribe", [heads])["result"] is True
    assert socket.call("eth_unsubscribe", [heads])["result"] is False
    assert feed.subscriber_count == 1
    _mine_with_logs(cluster, nonce, 1)
    time.sleep(0.5)
    assert socket.notes[heads] == []
    socket.close()
    socket.wait(lambda: feed.subscriber_count == 0 or None, "the subscriptions released")
    socket.wait(lambda: not gateway.ingress.websockets or None, "the connection released")


def test_a_head_feed_runs_while_it_has_subscribers_and_again_for_the_next(
    logging_chain: Any, sockets: list[Socket]
) -> None:
    cluster, _, gateway, nonce = logging_chain
    feed = gateway.gateway.chains[0].head_feed()
    first = _connect(gateway, sockets)
    heads = first.subscribe("newHeads")
    assert feed.running
    assert first.call("eth_unsubscribe", [heads])["result"] is True
    first.wait(lambda: not feed.running or None, "the feed stopped with its last subscriber")
    _mine_with_logs(cluster, nonce, 1)  # a block no one asked for: nothing runs for it
    time.sleep(0.5)
    assert not feed.running
    second = _connect(gateway, sockets)
    again = second.subscribe("newHeads")
    assert feed.running
    _mine_with_logs(cluster, nonce, 1)
    second.wait(lambda: second.notes[again] or None, "a head for the next subscriber")
    head = cluster[0].rpc("eth_getBlockByNumber", ["latest", False])
    assert second.notes[again][-1]["hash"] == head["hash"]  # from the head it came at


def test_pending_transactions_without_an_upstream_socket_is_a_clear_error(
    logging_chain: Any, sockets: list[Socket]
) -> None:
    _, _, gateway, _ = logging_chain
    socket = _connect(gateway, sockets)
    reply = socket.call("eth_subscribe", ["newPendingTransactions"])
    assert reply["error"]["code"] == -32000
    assert "ws_url" in reply["error"]["message"]
    for bad in (["blocks"], ["logs", {"address": "0x12"}], [], ["newHeads", {}]):
        assert socket.call("eth_subscribe", bad)["error"]["code"] == -32602, bad


# -- per-connection limits -----------------------------------------------------------------


def test_connection_limits_say_which_limit(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory, sockets: list[Socket]
) -> None:
    _, proxies = proxied_cluster(1, mined=1)
    gateway = start_gateway(
        [p.url for p in proxies],
        websocket={"max_subscriptions": 2, "messages_per_s": 5, "max_message_bytes": 4096},
        limits={"unlimited_networks": []},  # the message rate spares loopback otherwise
    )
    socket = _connect(gateway, sockets)
    socket.subscribe("newHeads")
    socket.subscribe("newHeads")
    third = socket.call("eth_subscribe", ["newHeads"])
    assert third["error"]["code"] == -32005
    assert "websocket.max_subscriptions" in third["error"]["message"]
    time.sleep(2.5)  # the message bucket refills
    for i in range(15):
        socket.send({"jsonrpc": "2.0", "id": 100 + i, "method": "eth_chainId"})
    refused = socket.wait(lambda: socket.answers.get(None), "a refused message")
    assert "websocket.messages_per_s" in refused["error"]["message"]
    big = _connect(gateway, sockets)
    big.send({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": ["x" * 5000]})
    big.wait(lambda: big.closed, "the close")
    assert big.closed is not None and big.closed[0] == 1009  # message too big


def test_the_operators_own_client_is_not_held_to_the_message_rate(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory, sockets: list[Socket]
) -> None:
    """A backend on loopback streaming calls over one WebSocket: the connection's message
    rate is a per-client limit, and loopback is spared (limits.unlimited_networks)."""
    _, proxies = proxied_cluster(1, mined=1)
    gateway = start_gateway([p.url for p in proxies], websocket={"messages_per_s": 5})
    socket = _connect(gateway, sockets)
    for i in range(40):
        socket.send({"jsonrpc": "2.0", "id": 100 + i, "method": "eth_chainId"})
    socket.wait(lambda: all(100 + i in socket.answers for i in range(40)), "40 answers")
    assert all("result" in socket.answers[100 + i] for i in range(40))
    assert None not in socket.answers  # nothing refused


@pytest.mark.unit
def test_a_head_going_back_to_a_block_sent_drops_only_the_blocks_after_it() -> None:
    from rpcgate.chain.feeds import HeadFeed, Subscriber

    chain = [_b(0, "h0", "p"), _b(1, "h1", "h0"), _b(2, "h2", "h1"), _b(2, "x2", "h1")]
    blocks = {b.hash: b for b in chain}
    logs = {h: [{"blockHash": h, "logIndex": "0x0", "address": "0x" + "11" * 20}] for h in blocks}
    state = {"head": chain[0]}

    async def fetch(call: Any) -> tuple[Any, None]:
        if call.method == "eth_getBlockByHash":
            block = blocks[call.params[0]]
            return {
                "number": hex(block.number),
                "hash": block.hash,
                "parentHash": block.parent_hash,
            }, None
        return logs[call.params[0]["blockHash"]], None

    async def scenario() -> tuple[list[Any], list[Any]]:
        heads: list[Any] = []
        got: list[Any] = []
        never = asyncio.Event()  # no decisions of its own: the test steps the feed
        feed = HeadFeed("t", lambda: state["head"], never.wait, fetch)
        await feed.step()  # the starting point
        feed.subscribe(Subscriber(heads.append, "newHeads"))
        feed.subscribe(Subscriber(got.append, "logs", parse_log_filter({})))  # type: ignore[arg-type]
        for head in ("h1", "h2", "h1", "x2"):  # up, up, back (a rollback), up on a fork
            state["head"] = blocks[head]
            await feed.step()
        await feed.stop()
        return heads, got

    heads, got = asyncio.run(scenario())
    assert [h["hash"] for h in heads] == ["h1", "h2", "x2"]  # h1 once
    assert [(e["blockHash"], bool(e.get("removed"))) for e in got] == [
        ("h1", False),
        ("h2", False),
        ("h2", True),
        ("x2", False),
    ]


def test_upstream_sockets_give_a_faster_head_and_pending_transactions_once(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory, sockets: list[Socket]
) -> None:
    cluster, proxies = proxied_cluster(2, chain_id=CHAIN_ID, mined=1)
    gateway = start_gateway(
        [],
        upstreams=[
            {"name": f"node{i}", "url": proxy.url, "ws_url": node.url.replace("http", "ws")}
            for i, (proxy, node) in enumerate(zip(proxies, cluster, strict=True))
        ],
        head_poll_interval=60,  # polls alone would not see the next block for a minute
    )
    runtime = gateway.gateway.chains[0]
    socket = _connect(gateway, sockets)
    socket.wait(lambda: runtime.pending_feed and runtime.pending_feed.available, "the sockets")
    pending = socket.subscribe("newPendingTransactions")
    raw = sign_transaction(chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=1, gas=21_000)
    tx_hash = cluster.broadcast_raw_transaction(raw)  # both nodes see it: one hash
    socket.wait(lambda: socket.notes[pending], "the pending transaction")
    time.sleep(0.5)
    assert socket.notes[pending] == [tx_hash]
    started = time.monotonic()
    cluster.mine_all()
    target = hex(cluster[0].block_number())
    socket.wait(lambda: socket.call("eth_blockNumber")["result"] == target, "the new head", 5)
    assert time.monotonic() - started < 5  # from the upstream's newHeads, not a poll
    status = gateway.loop.run(_get_json(gateway.url + "/status.json"))
    assert all(u["websocket"]["connected"] for u in status["chains"][0]["upstreams"])


async def _get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return await resp.json()


def test_a_client_that_answers_no_ping_is_dropped_and_keys_guard_sockets(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory, sockets: list[Socket]
) -> None:
    import socket as sockets_module

    _, proxies = proxied_cluster(1, mined=1)
    key = "k" * 8 + "socketkey-0123456789"
    gateway = start_gateway(
        [p.url for p in proxies],
        websocket={"heartbeat_s": 0.5},
        auth={"keys": [{"name": "app", "key": key}]},
    )
    keyed = _connect(gateway, sockets, f"/devnet/{key}")
    assert keyed.call("eth_chainId")["result"] == hex(CHAIN_ID)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        _connect(gateway, sockets, "/devnet")
    assert refused.value.status == 401

    # A raw client that upgrades, then never reads: no pong ever comes back.
    host, port = gateway.url.removeprefix("http://").split(":")
    raw = sockets_module.create_connection((host, int(port)))
    raw.sendall(
        (
            f"GET /devnet/{key} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert raw.recv(12).startswith(b"HTTP/1.1 101")
    ingress = gateway.ingress
    keyed.wait(lambda: len(ingress.websockets) == 2, "both connections")
    started = time.monotonic()
    keyed.wait(lambda: len(ingress.websockets) == 1, "the silent client dropped", timeout=5)
    assert time.monotonic() - started < 3  # a ping, then its pong's wait: about 1 s
    assert keyed.call("eth_chainId")["result"] == hex(CHAIN_ID)  # the other one answers pongs
    raw.close()


@pytest.mark.unit
def test_a_late_subscriber_gets_no_removed_logs_of_blocks_sent_before_it_came() -> None:
    from rpcgate.chain.feeds import HeadFeed, Subscriber

    chain = [_b(0, "h0", "p"), _b(1, "h1", "h0"), _b(2, "h2", "h1"), _b(2, "x2", "h1")]
    blocks = {b.hash: b for b in chain}
    state = {"head": chain[0]}

    async def fetch(call: Any) -> tuple[Any, None]:
        if call.method == "eth_getBlockByHash":
            block = blocks[call.params[0]]
            header = {"number": hex(block.number), "hash": block.hash}
            return {**header, "parentHash": block.parent_hash}, None
        block_hash = call.params[0]["blockHash"]
        return [{"blockHash": block_hash, "logIndex": "0x0", "address": "0x" + "11" * 20}], None

    async def scenario() -> tuple[list[Any], list[Any]]:
        early: list[Any] = []
        late: list[Any] = []
        never = asyncio.Event()
        feed = HeadFeed("t", lambda: state["head"], never.wait, fetch)
        await feed.step()
        feed.subscribe(Subscriber(early.append, "logs", parse_log_filter({})))  # type: ignore[arg-type]
        state["head"] = blocks["h2"]
        await feed.step()  # h1 and h2 sent to the early subscriber only
        feed.subscribe(Subscriber(late.append, "logs", parse_log_filter({})))  # type: ignore[arg-type]
        state["head"] = blocks["x2"]
        await feed.step()  # h2 dropped: removed for the early one; the late one never had it
        await feed.stop()
        return early, late

    early, late = asyncio.run(scenario())
    assert [(e["blockHash"], bool(e.get("removed"))) for e in early] == [
        ("h1", False),
        ("h2", False),
        ("h2", True),
        ("x2", False),
    ]
    assert [(e["blockHash"], bool(e.get("removed"))) for e in late] == [("x2", False)]
