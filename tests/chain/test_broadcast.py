"""Transactions broadcast to several upstreams in different domains: never lost while one
accepts, the same hash every time, a real rejection as the node said it, and lookups of a
pending transaction first from the upstreams that accepted it."""

from __future__ import annotations

import time

import pytest

from rpcgate.chain.broadcast import Verdict, broadcast_targets, verdict
from rpcgate.consensus.routing import Candidate
from rpcgate.rpc.errors import UpstreamFailure
from rpcgate.upstream.client import Reply
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, AnvilCluster, sign_transaction
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.redis_server import RedisServer
from tests.storage.test_replicas import _result

CHAIN_ID = 31337
RECEIVER = "0x000000000000000000000000000000000000bEEF"
# A key with no funds (not one of anvil's dev accounts).
POOR_KEY = "0x" + "11" * 32


def transfer(nonce: int, key: str = DEV_KEYS[0]) -> str:
    return sign_transaction(
        chain_id=CHAIN_ID, nonce=nonce, to=RECEIVER, value=10**15, key=key, gas=21000
    )


def in_pool(cluster: AnvilCluster, tx_hash: str) -> list[bool]:
    return [node.rpc("eth_getTransactionByHash", [tx_hash]) is not None for node in cluster]


@pytest.fixture
def devnet(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> tuple[AnvilCluster, list[FaultProxy], RunningGateway]:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    gateway = start_gateway(
        [],
        upstreams=[
            {"name": f"node{i}", "url": p.url, "domain": f"d{i}"} for i, p in enumerate(proxies)
        ],
        head_poll_interval=60,
    )
    return cluster, proxies, gateway


@pytest.mark.unit
def test_targets_are_one_per_domain_first() -> None:
    order = [
        Candidate("a1", "aws", True),
        Candidate("a2", "aws", True),
        Candidate("g1", "gcp", True),
        Candidate("cold", "own", False),
    ]
    assert broadcast_targets(order, 2) == ["a1", "g1"]
    assert broadcast_targets(order, 3) == ["a1", "g1", "a2"]  # resting ones are not sent to


@pytest.mark.unit
@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(result="0xabc"), Verdict.ACCEPTED),
        (Reply(error={"code": -32000, "message": "already known"}), Verdict.ACCEPTED),
        (Reply(error={"code": -32000, "message": "nonce too low"}), Verdict.CHECK),
        (Reply(error={"code": -32000, "message": "insufficient funds for gas"}), Verdict.REJECTED),
        (Reply(failure=UpstreamFailure(transport="timeout")), Verdict.FAILED),
    ],
)
def test_what_counts_as_accepted(reply: Reply, expected: str) -> None:
    if reply.error is not None:
        reply = Reply(
            error=reply.error,
            failure=UpstreamFailure(
                rpc_code=reply.error["code"], rpc_message=reply.error["message"]
            ),
        )
    assert verdict(reply) == expected


def test_sent_once_it_reaches_every_node_and_the_same_bytes_give_the_same_hash(devnet) -> None:  # type: ignore[no-untyped-def]
    cluster, _, gateway = devnet
    raw = transfer(0)
    tx_hash = gateway.result("eth_sendRawTransaction", [raw])
    deadline = time.monotonic() + 5
    while not all(in_pool(cluster, tx_hash)) and time.monotonic() < deadline:
        time.sleep(0.05)  # the other sends finish after the answer
    assert in_pool(cluster, tx_hash) == [True, True, True]
    assert gateway.result("eth_sendRawTransaction", [raw]) == tx_hash  # "already known"
    cluster.mine_all()
    assert gateway.result("eth_sendRawTransaction", [raw]) == tx_hash  # "nonce too low", its own
    gateway.sync()
    receipt = gateway.result("eth_getTransactionReceipt", [tx_hash])
    assert receipt["status"] == "0x1"


def test_two_of_three_down_the_transaction_is_still_sent_and_mined(devnet) -> None:  # type: ignore[no-untyped-def]
    cluster, proxies, gateway = devnet
    proxies[0].set_fault(Fault.REFUSE)
    proxies[1].set_fault(Fault.HANG)
    started = time.monotonic()
    tx_hash = gateway.result("eth_sendRawTransaction", [transfer(0)])
    assert time.monotonic() - started < 1.0  # the healthy one answered; no wait for the hang
    assert in_pool(cluster, tx_hash) == [False, False, True]
    cluster.mine_on([2])  # the one that is up mines it
    gateway.sync()  # the two others fail their polls: node2 alone votes
    assert gateway.result("eth_getTransactionReceipt", [tx_hash])["blockNumber"] == "0x3"


def test_a_real_rejection_comes_back_as_the_node_said_it(devnet) -> None:  # type: ignore[no-untyped-def]
    _, _, gateway = devnet
    answer = gateway.rpc("eth_sendRawTransaction", [transfer(0, key=POOR_KEY)]).json()
    assert "insufficient funds" in answer["error"]["message"].lower()
    assert answer["error"]["code"] != -32050  # the node's verdict, not "all upstreams failed"


def test_lookups_of_a_pending_transaction_go_first_where_it_was_accepted(devnet) -> None:  # type: ignore[no-untyped-def]
    cluster, proxies, gateway = devnet
    proxies[1].set_fault(Fault.REFUSE)
    proxies[2].set_fault(Fault.REFUSE)
    tx_hash = gateway.result("eth_sendRawTransaction", [transfer(0)])
    for proxy in proxies[1:]:
        proxy.heal()  # back, but they never saw the transaction
    assert in_pool(cluster, tx_hash) == [True, False, False]
    for _ in range(9):  # rotation alone would ask node1 and node2 two times in three
        found = gateway.rpc("eth_getTransactionByHash", [tx_hash], fresh=True).json()
        assert found["result"] is not None and found["result"]["hash"] == tx_hash
        nonce = gateway.rpc("eth_getTransactionCount", [DEV_ADDRESSES[0], "pending"]).json()
        assert nonce["result"] == "0x1"


def test_another_replica_asks_first_where_the_transaction_was_accepted(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
    redis_server: RedisServer,
    replica_process,  # type: ignore[no-untyped-def]
) -> None:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    sender_side = start_gateway(
        [p.url for p in proxies], head_poll_interval=60, cache={"redis_url": redis_server.url}
    )
    proxies[1].set_fault(Fault.REFUSE)
    proxies[2].set_fault(Fault.REFUSE)
    tx_hash = sender_side.result("eth_sendRawTransaction", [transfer(0)])
    for proxy in proxies[1:]:
        proxy.heal()
    assert in_pool(cluster, tx_hash) == [True, False, False]
    # Another process, its upstreams in the opposite order: it never saw the send.
    named = [(f"node{i}", p.url) for i, p in enumerate(proxies)]
    other = replica_process(list(reversed(named)), redis_server.url)
    for _ in range(6):
        found = _result(other, "eth_getTransactionByHash", [tx_hash])
        assert found is not None and found["hash"] == tx_hash
        assert _result(other, "eth_getTransactionCount", [DEV_ADDRESSES[0], "pending"]) == "0x1"


@pytest.mark.parametrize("broadcast", [1, 3])
def test_a_transaction_the_node_already_has_is_accepted_on_every_path(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory, broadcast: int
) -> None:
    """What a retry meets after an attempt that timed out but reached the node: the node
    already has the transaction ("already known"), or has mined it ("nonce too low"). Sent
    one at a time (`failover.broadcast: 1`, or when no broadcast target could say) as at
    once, that is the transaction accepted, never an error a wallet would act on."""
    cluster, proxies = proxied_cluster(1, chain_id=CHAIN_ID, mined=2)
    gateway = start_gateway(
        [p.url for p in proxies], head_poll_interval=60, failover={"broadcast": broadcast}
    )
    raw = transfer(0)
    tx_hash = cluster[0].rpc("eth_sendRawTransaction", [raw])  # the attempt that timed out
    assert gateway.rpc("eth_sendRawTransaction", [raw]).json().get("result") == tx_hash
    cluster.mine_all()
    assert gateway.rpc("eth_sendRawTransaction", [raw]).json().get("result") == tx_hash
    # ...while another transaction at a nonce already spent is refused as the node says
    other = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=RECEIVER, value=2 * 10**15, key=DEV_KEYS[0], gas=21000
    )
    refused = gateway.rpc("eth_sendRawTransaction", [other]).json()
    assert "nonce too low" in refused["error"]["message"].lower()
