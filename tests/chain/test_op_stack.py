"""An OP stack chain behind the gateway, with deposit transactions (type 0x7e): three anvil
nodes started with `--network optimism` (the chain table's OP Mainnet, chain id 10), kept in
step, the first behind a proxy that tampers with its answers. With `verify: integrity` the
blocks, transactions and receipts holding deposits are checked (not waved through as a type
the gateway does not know), honest answers pass, and a tampered deposit is caught."""

from __future__ import annotations

from typing import Any

import pytest
from eth_hash.auto import keccak
from eth_utils import to_checksum_address

from tests.chain.test_verified_answers import _integrity_failures
from tests.conftest import ConfigFactory, RunningGateway
from tests.harness.anvil import AnvilCluster, sign_transaction
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.fixtures import AnvilClusterFactory, FaultProxyFactory
from tests.verify.test_op_deposits import raw_deposit

OP_MAINNET = 10
OPTIMISM = ("--network", "optimism")


def _deposit(label: str, to: str, mint: int) -> str:
    return raw_deposit(
        source_hash=keccak(f"rpcgate.tests.chain.test_op_stack {label}".encode()),
        sender="0x" + keccak(label.encode())[-20:].hex(),
        to=to,
        mint=mint,
        value=mint // 2,
        gas=100_000,
    )


def _to(label: str) -> str:
    return to_checksum_address(keccak(f"recipient {label}".encode())[-20:])


@pytest.fixture
def op_chain(
    anvil_cluster: AnvilClusterFactory, fault_proxy: FaultProxyFactory
) -> tuple[AnvilCluster, list[FaultProxy], list[str], int, int]:
    """Block 2 holds deposits only (the tamperer changes a block's first transaction: a
    deposit); block 3 an ordinary transaction and a deposit."""
    cluster = anvil_cluster(3, chain_id=OP_MAINNET, extra_args=OPTIMISM)
    cluster.mine_all(1)
    deposits = [
        cluster.broadcast_raw_transaction(_deposit("one", _to("one"), 10**15)),
        cluster.broadcast_raw_transaction(_deposit("two", _to("two"), 3 * 10**15)),
    ]
    cluster.mine_all(1)
    signed = sign_transaction(chain_id=OP_MAINNET, nonce=0, to=_to("signed"), value=7, gas=21000)
    hashes = [
        *deposits,
        cluster.broadcast_raw_transaction(signed),
        cluster.broadcast_raw_transaction(_deposit("three", _to("three"), 10**15)),
    ]
    cluster.mine_all(3)
    assert len(set(cluster.block_hashes())) == 1, "the nodes mined different blocks"
    types = {tx["type"] for tx in cluster[1].block(2, full_transactions=True)["transactions"]}
    assert types == {"0x7e"}
    return cluster, [fault_proxy(url) for url in cluster.urls], hashes, 2, 3


@pytest.fixture
def start_op_gateway(start_config: ConfigFactory) -> Any:
    def start(urls: list[str]) -> RunningGateway:
        gateway = start_config(
            {
                "failover": {"attempt_timeout_s": 2.0, "deadline_s": 15.0, "max_attempts": 5},
                "chains": [
                    {
                        "name": "optimism",
                        "verify": "integrity",
                        "upstreams": [{"name": f"node{i}", "url": u} for i, u in enumerate(urls)],
                    }
                ],
            }
        )
        gateway.sync()
        return gateway

    return start


def _calls(hashes: list[str], blocks: tuple[int, ...]) -> list[tuple[str, list[Any]]]:
    calls: list[tuple[str, list[Any]]] = []
    for number in blocks:
        calls += [
            ("eth_getBlockByNumber", [hex(number), True]),
            ("eth_getBlockReceipts", [hex(number)]),
        ]
    calls += [("eth_getTransactionByHash", [h]) for h in hashes]
    calls += [("eth_getTransactionReceipt", [h]) for h in hashes]
    return calls


def _ask(gateway: RunningGateway, method: str, params: list[Any]) -> tuple[Any, str]:
    reply = gateway.rpc(method, params, path="/optimism", fresh=True)
    body = reply.json()
    assert "error" not in body, (method, params, body)
    return body["result"], reply.headers.get("X-Rpcgate-Verified", "missing")


def test_honest_answers_with_deposits_pass_the_integrity_checks(
    op_chain: Any, start_op_gateway: Any
) -> None:
    cluster, proxies, hashes, deposits_only, mixed = op_chain
    gateway = start_op_gateway([p.url for p in proxies])
    runtime = gateway.gateway.chains[0]
    assert runtime.config.chain_id == OP_MAINNET and runtime.config.header_format == "ethereum"
    for method, params in _calls(hashes, (deposits_only, mixed)) * 2:
        result, level = _ask(gateway, method, params)
        assert result == cluster[1].rpc(method, params)
        assert level == "integrity", (method, params, level)
    assert [_integrity_failures(gateway, f"node{i}") for i in range(3)] == [0, 0, 0]
    assert runtime.verifier.headers_recomputed  # OP stack headers hash as Ethereum's


@pytest.mark.parametrize("fault", [Fault.TAMPER_BLOCK, Fault.TAMPER_RECEIPT])
def test_a_tampered_deposit_is_caught(op_chain: Any, start_op_gateway: Any, fault: Fault) -> None:
    cluster, proxies, hashes, deposits_only, _ = op_chain
    gateway = start_op_gateway([p.url for p in proxies])
    field = {"field": "transaction"} if fault is Fault.TAMPER_BLOCK else {}
    proxies[0].set_fault(fault, **field)
    deposit_hashes = [hashes[0], hashes[1], hashes[3]]
    calls = _calls(deposit_hashes, (deposits_only,))
    for _ in range(4):  # every upstream gets its share of each call
        for method, params in calls:
            result, _level = _ask(gateway, method, params)
            assert result == cluster[1].rpc(method, params), (method, params)
    assert proxies[0].tampered_answers > 0, "the tampering upstream was never asked"
    assert _integrity_failures(gateway, "node0") > 0
    assert _integrity_failures(gateway, "node1") == _integrity_failures(gateway, "node2") == 0
