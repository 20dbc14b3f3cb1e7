"""Every answer is consistent with one served head: no receipt or block newer than what
`eth_blockNumber` says, and each answer says which block it is about (`X-Rpcgate-Block`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway, gossip
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, AnvilCluster, sign_transaction
from tests.harness.faultproxy import FaultProxy

CHAIN_ID = 31337
RECEIVER = "0x000000000000000000000000000000000000bEEF"
Devnet = tuple[AnvilCluster, list[FaultProxy], RunningGateway]


@pytest.fixture
def devnet(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> Iterator[Devnet]:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=3)
    # The head moves only when the test polls (sync) or an answer asks for a poll.
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60)
    yield cluster, proxies, gateway


def transfer(cluster: AnvilCluster, nonce: int) -> str:
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=nonce, to=RECEIVER, value=10**15, key=DEV_KEYS[0], gas=21000
    )
    gossip(cluster, raw)
    return cluster.broadcast_raw_transaction(raw)


def head(gateway: RunningGateway) -> int:
    return int(gateway.result("eth_blockNumber"), 16)


def test_a_receipt_is_not_given_out_before_the_head_reaches_its_block(devnet: Devnet) -> None:
    cluster, _, gateway = devnet
    tx_hash = transfer(cluster, 0)
    cluster.mine_all()  # block 4 holds it; the gateway has not polled since block 3
    reply = gateway.rpc("eth_getTransactionReceipt", [tx_hash])
    receipt = reply.json()["result"]
    assert receipt is not None and int(receipt["blockNumber"], 16) == 4
    assert reply.headers["X-Rpcgate-Block"] == "4"
    # What a dApp does next: read state. It must see the block the receipt is in.
    assert head(gateway) >= 4
    balance = gateway.rpc("eth_getBalance", [RECEIVER, "latest"])
    assert balance.json()["result"] == cluster[0].rpc("eth_getBalance", [RECEIVER, "0x4"])
    assert int(balance.headers["X-Rpcgate-Block"]) >= 4


def test_a_receipt_only_a_minority_has_is_answered_as_not_mined_yet(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=3)
    gateway = start_gateway(
        [p.url for p in proxies], head_poll_interval=60, chain={"hold_ahead_s": 0.3}
    )
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=RECEIVER, value=10**15, key=DEV_KEYS[0], gas=21000
    )
    tx_hash = cluster.broadcast_raw_transaction(raw)
    cluster.mine_on([0])  # only node0 has block 4: the consensus stays at 3
    assert cluster[0].receipt(tx_hash) is not None
    for _ in range(6):
        assert gateway.rpc("eth_getTransactionReceipt", [tx_hash]).json()["result"] is None
        assert head(gateway) == 3
    assert sum(p.methods.count("eth_getTransactionReceipt") for p in proxies[:1]) > 0
    cluster.mine_on([1])  # a majority has block 4 now
    gateway.sync()
    receipt = gateway.result("eth_getTransactionReceipt", [tx_hash])
    assert receipt is not None and head(gateway) == 4


def test_a_block_above_the_served_head_waits_for_the_head(devnet: Devnet) -> None:
    cluster, _, gateway = devnet
    cluster.mine_all()
    block = gateway.rpc("eth_getBlockByNumber", ["0x4", False])
    assert block.json()["result"]["hash"] == cluster[0].block_hash(4)
    assert block.headers["X-Rpcgate-Block"] == "4"
    assert head(gateway) == 4


def test_every_answer_says_which_block_it_is_about(devnet: Devnet) -> None:
    cluster, _, gateway = devnet
    tx_hash = transfer(cluster, 0)
    cluster.mine_all(2)  # the transaction is in block 4; the head is 5
    gateway.sync()
    cases = [
        ("eth_blockNumber", [], "5"),
        ("eth_getBalance", [DEV_ADDRESSES[0], "latest"], "5"),
        ("eth_getBlockByNumber", ["finalized", False], "0"),
        ("eth_getBlockByNumber", ["earliest", False], "0"),
        ("eth_getCode", [DEV_ADDRESSES[0], "0x2"], "2"),
        ("eth_getTransactionReceipt", [tx_hash], "4"),
        ("eth_getTransactionByHash", [tx_hash], "4"),
        ("eth_getBlockByHash", [cluster[0].block_hash(3), False], "3"),
        ("eth_getLogs", [{"fromBlock": "0x1", "toBlock": "latest"}], "5"),
        ("eth_chainId", [], None),
        ("eth_getTransactionCount", [DEV_ADDRESSES[0], "pending"], None),
    ]
    for method, params, expected in cases:
        for fresh in (True, False):  # from an upstream, then from the cache where it is kept
            headers = gateway.rpc(method, params, fresh=fresh).headers
            assert headers.get("X-Rpcgate-Block") == expected, (method, fresh, headers)
    batch = [
        {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
        for i, (method, params, _) in enumerate(cases)
    ]
    batch.append({"jsonrpc": "2.0", "method": "eth_chainId", "params": []})  # no answer
    reply = gateway.post(batch)
    assert reply.headers["X-Rpcgate-Block"].split(",") == [e or "-" for _, _, e in cases]


def test_a_call_about_a_block_some_upstream_has_waits_for_the_head_to_get_there(
    devnet: Devnet,
) -> None:
    cluster, _, gateway = devnet
    cluster.mine_on([0])
    gateway.sync()  # node0 is known to be at 4; the consensus stays at 3
    assert head(gateway) == 3
    cluster.mine_on([1])  # a majority has block 4 now, the gateway has not polled it
    reply = gateway.rpc("eth_getBalance", [RECEIVER, "0x4"], fresh=True)
    assert "result" in reply.json()
    assert reply.headers["X-Rpcgate-Block"] == "4"
    assert head(gateway) == 4  # it was polled before the call was answered
