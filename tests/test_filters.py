"""Filters kept by the gateway: a block or log filter survives any upstream's failure and is
served by every replica sharing the Redis, with no block or log missing or repeated."""

from __future__ import annotations

import time

import pytest

from rpcgate.filters import MAX_BLOCKS_PER_POLL, changes_range, logs_window
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, AnvilCluster, sign_transaction
from tests.harness.contract import INIT_CODE, LOG_TOPIC, create_address
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.redis_server import RedisServer
from tests.test_replicas import _result

CHAIN_ID = 31337
CONTRACT = create_address(DEV_ADDRESSES[0], 0)


def test_each_poll_delivers_the_blocks_after_the_last_one_delivered() -> None:
    assert changes_range(10, 10) is None
    assert changes_range(10, 13) == (11, 13)
    assert changes_range(0, 5000) == (1, MAX_BLOCKS_PER_POLL)
    assert logs_window({"fromBlock": "0x5", "toBlock": "0x8"}, 3, 12) == (5, 8)
    assert logs_window({"toBlock": "0x2"}, 3, 12) is None
    assert logs_window({"fromBlock": "latest"}, 3, 12) == (3, 12)


def _mine_with_logs(cluster: AnvilCluster, nonce: int, blocks: int) -> int:
    """Mines `blocks` blocks, each with a call of the logging contract; the next nonce."""
    for _ in range(blocks):
        raw = sign_transaction(
            chain_id=CHAIN_ID, nonce=nonce, to=CONTRACT, data=nonce.to_bytes(4, "big"), gas=100_000
        )
        cluster.broadcast_raw_transaction(raw)
        cluster.mine_all()
        nonce += 1
    return nonce


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
