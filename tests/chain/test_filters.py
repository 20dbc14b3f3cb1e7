"""Filters kept by the gateway: a block or log filter survives any upstream's failure and is
served by every replica sharing the Redis, with no block or log missing or repeated; after a
reorg it delivers what a WebSocket subscription does (the dropped logs again with
`removed: true`, then the new chain's blocks and logs)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from rpcgate.chain.filters import (
    MAX_BLOCKS_PER_POLL,
    REMEMBERED_BLOCKS,
    REMEMBERED_LOGS,
    Delivered,
    Filter,
    FilterStore,
    advance,
    criteria_too_large,
    logs_by_block,
    logs_window,
    poll_reach,
    remembered,
    walk_limit,
)
from rpcgate.chain.reorg_walk import follow
from rpcgate.config.settings import FiltersConfig
from rpcgate.consensus.heads import Block
from rpcgate.storage.redis_client import RedisLink
from rpcgate.storage.shared_state import SharedState
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.edge.test_websocket import Socket
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, AnvilCluster, sign_transaction
from tests.harness.contract import INIT_CODE, LOG_TOPIC, create_address
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.redis_server import RedisServer
from tests.storage.test_replicas import _result

CHAIN_ID = 31337
CONTRACT = create_address(DEV_ADDRESSES[0], 0)
LOGS = {"address": CONTRACT, "topics": [LOG_TOPIC]}


@pytest.mark.unit
def test_each_poll_delivers_the_blocks_after_the_last_one_delivered() -> None:
    assert poll_reach(10, 13) == 13
    assert poll_reach(10, 9) == 9  # a head below: the walk finds what a reorg dropped
    assert poll_reach(0, 5000) == MAX_BLOCKS_PER_POLL
    assert logs_window({"fromBlock": "0x5", "toBlock": "0x8"}, 3, 12) == (5, 8)
    assert logs_window({"toBlock": "0x2"}, 3, 12) is None
    assert logs_window({"fromBlock": "latest"}, 3, 12) == (3, 12)


@pytest.mark.unit
def test_the_walk_back_goes_no_lower_than_a_link_can_be_found() -> None:
    item = Filter("block", 10, recent=[Delivered(n, f"h{n}") for n in range(8, 11)])
    assert walk_limit(item, 13) == 5  # 13 down to 9, whose parent is the oldest remembered
    assert walk_limit(Filter("logs", 10), 13) == 3  # nothing remembered (an older replica's)


@pytest.mark.unit
def test_a_filter_remembers_the_last_blocks_and_a_bounded_number_of_their_logs() -> None:
    entry = {"address": "0x" + "11" * 20, "logIndex": "0x0"}
    many = [Delivered(n, f"h{n}", [entry] * 100) for n in range(100)]
    kept = remembered(many)
    assert [d.number for d in kept] == list(range(100 - REMEMBERED_BLOCKS, 100))
    assert [d.logs is not None for d in kept[-3:]] == [False, True, True]  # 200 of 256
    assert all(d.logs is None for d in kept[:-2])
    huge = [Delivered(1, "h1", [entry] * 10), Delivered(2, "h2", [entry] * (REMEMBERED_LOGS + 1))]
    assert [d.logs is not None for d in remembered(huge)] == [False, True]  # the newest always
    blocks = [Delivered(1, "h1"), Delivered(2, "h2")]
    assert remembered(blocks) == blocks  # block filters keep hashes only
    # Through Redis and back as it was.
    item = Filter("logs", 2, {"address": entry["address"]}, recent=remembered(huge))
    assert Filter.from_json(item.to_json()) == item
    # Replicas are upgraded one by one: what another version wrote is read.
    assert Filter.from_json(b'{"kind": "block", "last_block": 7}') == Filter("block", 7)
    assert Filter.from_json(b'{"kind": "block", "last_block": 7, "later": 1}') == Filter("block", 7)


def _log(block: str, index: int) -> dict[str, Any]:
    return {"blockHash": block, "logIndex": hex(index)}


def _logs(prefix: str, first: int, last: int) -> list[dict[str, Any]]:
    return [_log(f"{prefix}{n}", 0) for n in range(first, last + 1)]


def _poll(item: Filter, head: Block, walked: list[Block]) -> tuple[list[Any], Filter]:
    """One poll of `item` whose walk back from `head` fetched `walked` (newest first); a
    log filter finds one log in each new block."""
    step = follow([d.hash for d in item.recent], head.hash, walked)
    logs = {block.hash: [_log(block.hash, 0)] for block in step.new}
    return advance(item, head, step, logs)


@pytest.mark.unit
def test_after_a_reorg_a_filter_delivers_the_dropped_logs_removed_then_the_new_branch() -> None:
    a = [Block(n, f"a{n}", f"a{n - 1}") for n in range(8)]  # the chain delivered
    b = {n: Block(n, f"b{n}", "a4" if n == 5 else f"b{n - 1}") for n in range(5, 9)}  # from a4
    delivered = [Delivered(n, f"a{n}", [_log(f"a{n}", 0), _log(f"a{n}", 1)]) for n in (4, 5, 6)]
    logs = Filter("logs", 6, {}, recent=delivered)
    blocks = Filter("block", 6, recent=[Delivered(n, f"a{n}") for n in (4, 5, 6)])
    removed_5_6 = [{**_log(h, i), "removed": True} for h in ("a5", "a6") for i in (0, 1)]
    cases = [
        # (head, walked) -> (a block filter's result, a log filter's result, last block)
        (a[7], [a[7]], (["a7"], [_log("a7", 0)], 7)),  # one more block
        (a[6], [], ([], [], 6)),  # nothing new
        (b[7], [b[7], b[6], b[5]], (["b5", "b6", "b7"], [*removed_5_6, *_logs("b", 5, 7)], 7)),
        (b[6], [b[6], b[5]], (["b5", "b6"], [*removed_5_6, *_logs("b", 5, 6)], 6)),  # one-block
        (b[5], [b[5]], (["b5"], [*removed_5_6, _log("b5", 0)], 5)),  # a shorter branch
        (a[5], [], ([], removed_5_6[2:], 5)),  # back to a5 (a rollback): a6 dropped
        # The walk ended (its limit) without meeting a block delivered: a gap, above 6 only.
        (b[8], [b[8], b[7], b[6]], (["b7", "b8"], _logs("b", 7, 8), 8)),
    ]
    for head, walked, (hashes, entries, last) in cases:
        result, after = _poll(blocks, head, walked)
        assert (result, after.last_block) == (hashes, last), head
        result, after = _poll(logs, head, walked)
        assert (result, after.last_block) == (entries, last), head
    # What the filter remembers after the reorg: the blocks kept, then the new branch.
    _, after = _poll(logs, b[6], [b[6], b[5]])
    assert [(d.hash, d.logs) for d in after.recent] == [
        ("a4", delivered[0].logs),
        ("b5", [_log("b5", 0)]),
        ("b6", [_log("b6", 0)]),
    ]
    assert logs.recent == delivered  # the filter polled is not changed in place


@pytest.mark.unit
def test_logs_of_another_branch_are_not_delivered() -> None:
    blocks = [Block(5, "0xa5", "0xa4"), Block(6, "0xa6", "0xa5")]
    ours = [
        {"blockNumber": "0x5", "blockHash": "0xa5"},
        {"blockNumber": "0x6", "blockHash": "0xa6"},
    ]
    assert logs_by_block(ours, blocks) == {"0xa5": [ours[0]], "0xa6": [ours[1]]}
    assert logs_by_block([], blocks) == {"0xa5": [], "0xa6": []}
    assert logs_by_block([{"blockNumber": "0x6", "blockHash": "0xb6"}], blocks) is None
    assert logs_by_block([{"blockNumber": "0x7", "blockHash": "0xa7"}], blocks) is None
    assert logs_by_block({"not": "a list"}, blocks) is None


def _mine_with_logs(cluster: AnvilCluster, nonce: int, blocks: int, fork: bool = False) -> int:
    """Mines `blocks` blocks, each with a call of the logging contract; the next nonce.
    `fork`: other calldata, and timestamps the canonical chain does not use (new hashes)."""
    for _ in range(blocks):
        data = (nonce + (1000 if fork else 0)).to_bytes(4, "big")
        raw = sign_transaction(chain_id=CHAIN_ID, nonce=nonce, to=CONTRACT, data=data, gas=100_000)
        cluster.broadcast_raw_transaction(raw)
        if fork:
            for index in range(len(cluster)):
                cluster.fork(index)
        else:
            cluster.mine_all()
        nonce += 1
    return nonce


def _node_logs(cluster: AnvilCluster, first: int, last: int) -> list[dict[str, Any]]:
    logs: list[dict[str, Any]] = cluster[0].rpc(
        "eth_getLogs", [{**LOGS, "fromBlock": hex(first), "toBlock": hex(last)}]
    )
    return logs


def _hashes(cluster: AnvilCluster, first: int, last: int) -> list[str]:
    return [cluster[0].block_hash(n) for n in range(first, last + 1)]


def _removed(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**entry, "removed": True} for entry in logs]


@pytest.fixture
def chain(
    proxied_cluster: ProxiedClusterFactory,
) -> tuple[AnvilCluster, list[FaultProxy], int]:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=1)
    deploy = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=None, data=INIT_CODE, key=DEV_KEYS[0], gas=200_000
    )
    cluster.broadcast_raw_transaction(deploy)
    cluster.mine_all()
    return cluster, proxies, 1


def _gateway(
    start_gateway: GatewayFactory, proxies: list[FaultProxy], redis_url: str, reverse: bool
) -> RunningGateway:
    named = [{"name": f"node{i}", "url": p.url} for i, p in enumerate(proxies)]
    return start_gateway(
        [],
        upstreams=list(reversed(named)) if reverse else named,
        head_poll_interval=60,
        cache={"redis_url": redis_url},
    )


def test_a_block_filter_is_read_through_another_process_with_nothing_missing_or_repeated(
    chain, start_gateway: GatewayFactory, redis_server: RedisServer, replica_process
) -> None:  # type: ignore[no-untyped-def]
    cluster, proxies, nonce = chain
    first = _gateway(start_gateway, proxies, redis_server.url, reverse=False)
    # A gateway process of its own, its upstreams listed the other way round.
    named = [(f"node{i}", p.url) for i, p in enumerate(proxies)]
    second = replica_process(list(reversed(named)), redis_server.url, head_poll_interval=0.05)
    start = int(first.result("eth_blockNumber"), 16)
    filter_id = first.result("eth_newBlockFilter")
    seen: list[str] = []
    for round_ in range(6):
        nonce = _mine_with_logs(cluster, nonce, 1 + round_ % 3)
        if round_ % 2 == 0:
            first.sync()
            seen += first.result("eth_getFilterChanges", [filter_id])
        else:
            time.sleep(0.3)  # the other process polls on its own
            seen += _result(second, "eth_getFilterChanges", [filter_id])
        if round_ == 3:
            proxies[0].set_fault(Fault.REFUSE)  # the node that answered first is gone
    end = cluster[1].block_number()
    assert seen == [cluster[1].block_hash(n) for n in range(start + 1, end + 1)]
    assert len(set(seen)) == len(seen)


def test_a_log_filter_delivers_every_log_once_in_order_through_failures(
    chain, start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    cluster, proxies, nonce = chain
    gateway = _gateway(start_gateway, proxies, redis_server.url, reverse=False)
    start = int(gateway.result("eth_blockNumber"), 16)
    filter_id = gateway.result("eth_newFilter", [{"address": CONTRACT, "topics": [LOG_TOPIC]}])
    logs: list[dict] = []  # type: ignore[type-arg]
    for round_ in range(5):
        nonce = _mine_with_logs(cluster, nonce, 2)
        gateway.sync()
        if round_ == 2:
            proxies[round_ % 3].set_fault(Fault.HTTP_5XX)
        logs += gateway.result("eth_getFilterChanges", [filter_id])
    end = cluster[2].block_number()
    expected = cluster[2].rpc(
        "eth_getLogs", [{"address": CONTRACT, "fromBlock": hex(start + 1), "toBlock": hex(end)}]
    )
    assert logs == expected and len(logs) == 10
    assert gateway.result("eth_getFilterLogs", [filter_id]) == cluster[2].rpc(
        "eth_getLogs", [{"address": CONTRACT, "topics": [LOG_TOPIC]}]
    )


def test_unknown_and_uninstalled_filters_are_not_found(
    chain, start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    _, proxies, _ = chain
    gateway = _gateway(start_gateway, proxies, redis_server.url, reverse=False)
    missing = gateway.rpc("eth_getFilterChanges", ["0x" + "ab" * 16]).json()["error"]
    assert (missing["code"], missing["message"]) == (-32000, "filter not found")
    filter_id = gateway.result("eth_newBlockFilter")
    assert gateway.result("eth_uninstallFilter", [filter_id]) is True
    assert gateway.result("eth_uninstallFilter", [filter_id]) is False
    assert "error" in gateway.rpc("eth_getFilterChanges", [filter_id]).json()


def test_a_pending_transaction_filter_lives_on_its_node_until_that_node_is_gone(
    chain, start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    cluster, proxies, nonce = chain
    gateway = _gateway(start_gateway, proxies, redis_server.url, reverse=False)
    filter_id = gateway.result("eth_newPendingTransactionFilter")
    raw = sign_transaction(chain_id=CHAIN_ID, nonce=nonce, to=CONTRACT, gas=100_000)
    tx_hash = cluster.broadcast_raw_transaction(raw)
    assert gateway.result("eth_getFilterChanges", [filter_id]) == [tx_hash]
    for proxy in proxies:
        proxy.set_fault(Fault.REFUSE)
    error = gateway.rpc("eth_getFilterChanges", [filter_id]).json()["error"]
    assert error["message"] == "filter not found"


def test_after_a_one_block_reorg_of_the_head_filters_deliver_the_replacement_block(
    chain, start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    """The head is replaced at the same height: a block filter gets the new hash, a log
    filter the old log again with `removed: true`, then the new one. Polled through a
    replica that started after the reorg (it serves the new head at once, so what the
    filters remember goes through Redis), and through one that sees the replacement only
    with the next block (a head poll reads a block when the height changes)."""
    cluster, proxies, nonce = chain
    first = _gateway(start_gateway, proxies, redis_server.url, reverse=False)
    filters = [first.result("eth_newBlockFilter"), first.result("eth_newFilter", [LOGS])]
    later = [first.result("eth_newBlockFilter"), first.result("eth_newFilter", [LOGS])]
    snapshot = cluster.snapshot_all()
    _mine_with_logs(cluster, nonce, 1)
    height = cluster[0].block_number()
    old_hashes, old_logs = _hashes(cluster, height, height), _node_logs(cluster, height, height)
    first.sync()
    for blocks, logs in (filters, later):
        assert first.result("eth_getFilterChanges", [blocks]) == old_hashes
        assert first.result("eth_getFilterChanges", [logs]) == old_logs

    cluster.revert_all(snapshot)
    nonce = _mine_with_logs(cluster, nonce, 1, fork=True)  # the same height, another block
    assert cluster[0].block_number() == height
    new_hashes, new_logs = _hashes(cluster, height, height), _node_logs(cluster, height, height)
    assert new_hashes != old_hashes
    second = _gateway(start_gateway, proxies, redis_server.url, reverse=True)
    blocks, logs = filters
    assert second.result("eth_getFilterChanges", [blocks]) == new_hashes
    assert second.result("eth_getFilterChanges", [logs]) == _removed(old_logs) + new_logs
    assert second.result("eth_getFilterChanges", [blocks]) == []  # each once
    assert second.result("eth_getFilterChanges", [logs]) == []

    _mine_with_logs(cluster, nonce, 1)  # the next block, on the new one
    next_hashes = _hashes(cluster, height + 1, height + 1)
    next_logs = _node_logs(cluster, height + 1, height + 1)
    first.sync()
    assert first.result("eth_getFilterChanges", [blocks]) == next_hashes
    assert first.result("eth_getFilterChanges", [logs]) == next_logs
    blocks, logs = later  # not polled since the reorg
    assert first.result("eth_getFilterChanges", [blocks]) == new_hashes + next_hashes
    assert first.result("eth_getFilterChanges", [logs]) == (
        _removed(old_logs) + new_logs + next_logs
    )


@pytest.mark.parametrize("new_blocks", [4, 2], ids=["longer-new-branch", "shorter-new-branch"])
def test_after_a_deeper_reorg_filters_send_the_dropped_logs_removed_then_the_new_branch(
    chain, start_gateway: GatewayFactory, redis_server: RedisServer, new_blocks: int
) -> None:  # type: ignore[no-untyped-def]
    """Three blocks with logs are dropped for a branch of `new_blocks` others: the dropped
    logs come again with `removed: true`, oldest first (as geth and the WebSocket feed send
    them), then the new branch's blocks and logs from the fork point up; and the next block
    after a shorter branch (a height the filter had delivered before) is not skipped."""
    cluster, proxies, nonce = chain
    gateway = _gateway(start_gateway, proxies, redis_server.url, reverse=False)
    block_filter = gateway.result("eth_newBlockFilter")
    log_filter = gateway.result("eth_newFilter", [LOGS])
    start = cluster[0].block_number() + 1
    nonce = _mine_with_logs(cluster, nonce, 1)  # kept by the reorg
    snapshot, fork_nonce = cluster.snapshot_all(), nonce
    _mine_with_logs(cluster, nonce, 3)  # dropped by the reorg
    old_logs = _node_logs(cluster, start, start + 3)
    gateway.sync()
    assert gateway.result("eth_getFilterChanges", [block_filter]) == _hashes(
        cluster, start, start + 3
    )
    assert gateway.result("eth_getFilterChanges", [log_filter]) == old_logs

    cluster.revert_all(snapshot)
    nonce = _mine_with_logs(cluster, fork_nonce, new_blocks, fork=True)
    end = start + new_blocks
    assert cluster[0].block_number() == end
    new_logs = _node_logs(cluster, start + 1, end)
    assert len(new_logs) == new_blocks
    gateway.sync()
    assert gateway.result("eth_getFilterChanges", [block_filter]) == _hashes(
        cluster, start + 1, end
    )
    assert gateway.result("eth_getFilterChanges", [log_filter]) == (
        _removed(old_logs[1:]) + new_logs
    )

    _mine_with_logs(cluster, nonce, 1)  # the next block on the new branch
    gateway.sync()
    assert gateway.result("eth_getFilterChanges", [block_filter]) == _hashes(
        cluster, end + 1, end + 1
    )
    assert gateway.result("eth_getFilterChanges", [log_filter]) == _node_logs(
        cluster, end + 1, end + 1
    )


def test_http_filters_deliver_what_websocket_subscriptions_deliver_through_a_reorg(
    chain, start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    """One reorg (two blocks dropped, three new), watched by a WebSocket `logs` and
    `newHeads` subscription and by an HTTP log filter and block filter: the filters deliver
    the same log objects (the removed ones included) and the same block hashes, in the same
    order."""
    cluster, proxies, nonce = chain
    gateway = _gateway(start_gateway, proxies, redis_server.url, reverse=False)
    socket = Socket(gateway)
    try:
        ws_logs = socket.subscribe("logs", LOGS)
        ws_heads = socket.subscribe("newHeads")
        log_filter = gateway.result("eth_newFilter", [LOGS])
        block_filter = gateway.result("eth_newBlockFilter")
        http_logs: list[dict[str, Any]] = []
        http_hashes: list[str] = []

        nonce = _mine_with_logs(cluster, nonce, 1)  # kept by the reorg
        snapshot, fork_nonce = cluster.snapshot_all(), nonce
        _mine_with_logs(cluster, nonce, 2)  # dropped by the reorg
        gateway.sync()
        socket.wait(lambda: len(socket.notes[ws_logs]) >= 3, "the 3 logs before the reorg")
        socket.wait(lambda: len(socket.notes[ws_heads]) >= 3, "the 3 heads before the reorg")
        http_logs += gateway.result("eth_getFilterChanges", [log_filter])
        http_hashes += gateway.result("eth_getFilterChanges", [block_filter])

        cluster.revert_all(snapshot)
        _mine_with_logs(cluster, fork_nonce, 3, fork=True)
        gateway.sync()
        socket.wait(lambda: len(socket.notes[ws_logs]) >= 8, "2 removed and 3 new logs")
        socket.wait(lambda: len(socket.notes[ws_heads]) >= 6, "the 3 new heads")
        http_logs += gateway.result("eth_getFilterChanges", [log_filter])
        http_hashes += gateway.result("eth_getFilterChanges", [block_filter])
        time.sleep(0.3)  # nothing more may come
    finally:
        socket.close()
    assert [e["removed"] for e in socket.notes[ws_logs]] == [False] * 3 + [True] * 2 + [False] * 3
    assert http_logs == socket.notes[ws_logs]
    assert http_hashes == [head["hash"] for head in socket.notes[ws_heads]]


# -- bounds: what filters may take -----------------------------------------------------------


@pytest.mark.unit
def test_criteria_over_the_limit_are_refused_naming_the_setting() -> None:
    address = "0x" + "11" * 20
    assert criteria_too_large({"address": [address] * 10}, 1024) is None
    over = {"address": [address] * 100}
    error = criteria_too_large(over, 1024)
    assert error is not None and error["code"] == -32602
    assert "filters.max_criteria_bytes" in error["message"]
    assert error["data"] == {"limit": 1024, "size": len(orjson.dumps(over))}
    beyond_64_bits = criteria_too_large({"fromBlock": 2**70}, 1024)
    assert beyond_64_bits is not None and beyond_64_bits["code"] == -32602


def _criteria_filter(size: int) -> Filter:
    """A log filter whose JSON takes about `size` bytes."""
    return Filter("logs", 1, {"address": "0x" + "ab" * 20, "padding": "x" * size})


async def _store_bounds(shared: list[SharedState] | None) -> None:
    """Three filters at most: the least recently polled goes first; with Redis, for all
    replicas together (a filter made on one is forgotten for the other)."""
    settings = FiltersConfig(max_count=3, memory_bytes=10**9)
    first, second = (
        (FilterStore(shared[0], settings), FilterStore(shared[1], settings))
        if shared
        else (FilterStore(None, settings),) * 2
    )
    block = Filter("block", 1, recent=[Delivered(1, "h1")])
    await first.put(CHAIN_ID, "f1", block)
    await first.put(CHAIN_ID, "f2", block)
    await second.put(CHAIN_ID, "f3", block)
    polled = await second.get(CHAIN_ID, "f1")
    assert polled == block
    await second.put(CHAIN_ID, "f1", polled)  # a poll stores it again
    await second.put(CHAIN_ID, "f4", block)
    assert await second.get(CHAIN_ID, "f2") is None  # the least recently polled
    for kept in ("f1", "f3", "f4"):
        assert await second.get(CHAIN_ID, kept) == block, kept


async def _byte_bounds(shared: SharedState | None) -> tuple[FilterStore, list[str]]:
    one = len(_criteria_filter(1000).to_json())
    store = FilterStore(shared, FiltersConfig(max_count=1000, memory_bytes=3 * one + 10))
    for n in range(5):
        await store.put(CHAIN_ID, f"f{n}", _criteria_filter(1000))
    kept = [f"f{n}" for n in range(5) if await store.get(CHAIN_ID, f"f{n}") is not None]
    assert kept == ["f2", "f3", "f4"]
    assert store.local_bytes == 3 * one and store.local_count == 3
    # Stored again bigger: the oldest makes room.
    await store.put(CHAIN_ID, "f3", _criteria_filter(1500))
    assert await store.get(CHAIN_ID, "f2") is None
    assert await store.delete(CHAIN_ID, "f4") is True
    assert store.local_bytes == len(_criteria_filter(1500).to_json())
    return store, kept


@pytest.mark.unit
def test_filters_beyond_the_count_forget_the_least_recently_polled_first() -> None:
    asyncio.run(_store_bounds(None))


@pytest.mark.unit
def test_filters_beyond_their_bytes_forget_the_least_recently_polled_first() -> None:
    asyncio.run(_byte_bounds(None))


def test_filters_in_redis_are_bounded_for_all_replicas_together(
    redis_server: RedisServer,
) -> None:
    async def run() -> None:
        links = [RedisLink(redis_server.url, "rpcgate:t:", 1.0) for _ in range(2)]
        replicas = [SharedState(link) for link in links]
        try:
            await _store_bounds(replicas)
            await replicas[0].client.flushdb()
            await _byte_bounds(replicas[0])
        finally:
            for link in links:
                await link.close()

    asyncio.run(run())
    client = redis_server.client()
    stored = client.keys(f"rpcgate:t:{{filters}}:{CHAIN_ID}:filter:*")
    assert sorted(stored) == [f"rpcgate:t:{{filters}}:{CHAIN_ID}:filter:f3".encode()]
    # What Redis counts is what the filters take there, and goes with them.
    assert int(client.get("rpcgate:t:{filters}:filters:total") or 0) == client.strlen(stored[0])
    assert client.zcard("rpcgate:t:{filters}:filters:polled") == 1


def test_a_gateway_refuses_huge_criteria_and_forgets_the_least_recently_polled_filter(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    node = anvil_cluster(1, chain_id=CHAIN_ID, automine=True)[0]
    gateway = start_gateway([node.url], filters={"max_count": 2})
    addresses = [f"0x{i:040x}" for i in range(20_000)]  # 900 KB: 7x the default limit
    refused = gateway.rpc("eth_newFilter", [{"address": addresses}]).json()["error"]
    assert refused["code"] == -32602
    assert refused["message"].startswith("filter criteria too large: 900")
    assert "(filters.max_criteria_bytes)" in refused["message"]
    first = gateway.result("eth_newFilter", [{"address": addresses[:1000]}])  # geth's most
    second = gateway.result("eth_newBlockFilter")
    assert gateway.result("eth_getFilterChanges", [first]) == []  # polled: now the newest
    third = gateway.result("eth_newBlockFilter")
    forgotten = gateway.rpc("eth_getFilterChanges", [second]).json()["error"]
    assert (forgotten["code"], forgotten["message"]) == (-32000, "filter not found")
    assert gateway.result("eth_getFilterChanges", [first]) == []
    assert gateway.result("eth_getFilterChanges", [third]) == []
