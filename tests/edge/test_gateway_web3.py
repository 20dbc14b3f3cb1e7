"""web3.py, a real client, through the gateway to real anvil nodes behind fault proxies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3

from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway, gossip
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, AnvilCluster, sign_transaction
from tests.harness.contract import INIT_CODE, LOG_TOPIC, RETURN_VALUE, create_address
from tests.harness.faultproxy import Fault, FaultProxy

CHAIN_ID = 31337


@pytest.fixture
def devnet(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
) -> Iterator[tuple[AnvilCluster, list[FaultProxy], RunningGateway]]:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    gateway = start_gateway([p.url for p in proxies])
    yield cluster, proxies, gateway


def _send_and_mine(w3: Web3, cluster: AnvilCluster, gateway: RunningGateway, raw: str) -> str:
    tx_hash = w3.eth.send_raw_transaction(raw).to_0x_hex()
    gossip(cluster, raw)
    cluster.mine_all()
    gateway.sync()  # the next head poll would see the block; don't wait for it
    return tx_hash


def test_web3_reads_chain_id_block_number_and_balance(devnet: tuple) -> None:
    cluster, _, gateway = devnet
    w3 = Web3(HTTPProvider(gateway.url))
    assert w3.eth.chain_id == CHAIN_ID
    assert w3.eth.block_number == cluster[0].block_number() == 2
    balance = w3.eth.get_balance(DEV_ADDRESSES[1])
    assert balance == int(cluster[1].rpc("eth_getBalance", [DEV_ADDRESSES[1], "latest"]), 16)
    assert balance > 0


def test_signed_transfer_is_mined_and_its_receipt_served(devnet: tuple) -> None:
    cluster, _, gateway = devnet
    w3 = Web3(HTTPProvider(gateway.url))
    receiver = "0x000000000000000000000000000000000000bEEF"
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=receiver, value=12345, key=DEV_KEYS[0], gas=21000
    )
    tx_hash = _send_and_mine(w3, cluster, gateway, raw)
    receipt = w3.eth.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    assert receipt["blockNumber"] == 3
    assert w3.eth.get_balance(Web3.to_checksum_address(receiver)) == 12345
    # Every node mined the same block, so whichever answered, the answer is the same.
    assert len(set(cluster.block_hashes())) == 1


def test_contract_deploy_call_and_logs(devnet: tuple) -> None:
    cluster, _, gateway = devnet
    w3 = Web3(HTTPProvider(gateway.url))
    deploy = sign_transaction(chain_id=CHAIN_ID, nonce=0, data=INIT_CODE, key=DEV_KEYS[0])
    receipt = w3.eth.get_transaction_receipt(_send_and_mine(w3, cluster, gateway, deploy))
    contract = receipt["contractAddress"]
    assert contract.lower() == create_address(DEV_ADDRESSES[0], 0).lower()
    assert w3.eth.get_code(contract) != b""

    answer = w3.eth.call({"to": contract, "data": "0x1234"})
    assert int.from_bytes(answer, "big") == RETURN_VALUE

    poke = sign_transaction(
        chain_id=CHAIN_ID, nonce=1, to=contract, data="0xc0ffee", key=DEV_KEYS[0]
    )
    poke_hash = _send_and_mine(w3, cluster, gateway, poke)
    logs = w3.eth.get_logs(
        {"fromBlock": 0, "toBlock": "latest", "address": contract, "topics": [LOG_TOPIC]}
    )
    assert [log["transactionHash"].to_0x_hex() for log in logs] == [poke_hash]
    assert logs[0]["data"].hex() == "c0ffee"


def test_batch_through_web3(devnet: tuple) -> None:
    cluster, _, gateway = devnet
    w3 = Web3(HTTPProvider(gateway.url))
    with w3.batch_requests() as batch:
        batch.add(w3.eth.get_block(1))
        batch.add(w3.eth.get_balance(DEV_ADDRESSES[0]))
        batch.add(w3.eth.get_block_number())
        results = batch.execute()
    assert results[0]["hash"].to_0x_hex() == cluster[0].block_hash(1)
    assert results[1] > 0
    assert results[2] == 2


async def test_async_web3_reads_and_sends(devnet: tuple) -> None:
    cluster, _, gateway = devnet
    w3 = AsyncWeb3(AsyncHTTPProvider(gateway.url))
    assert await w3.eth.chain_id == CHAIN_ID
    assert await w3.eth.block_number == 2
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=7, key=DEV_KEYS[0], gas=21000
    )
    tx_hash = (await w3.eth.send_raw_transaction(raw)).to_0x_hex()
    gossip(cluster, raw)
    cluster.mine_all()
    gateway.sync()
    receipt = await w3.eth.get_transaction_receipt(tx_hash)
    assert receipt["status"] == 1
    await w3.provider.disconnect()


FAULTS = [
    pytest.param(Fault.REFUSE, {}, id="refused"),
    pytest.param(Fault.HANG, {}, id="hanging"),
    pytest.param(Fault.HTTP_5XX, {"status": 503}, id="http-503"),
    pytest.param(Fault.HTTP_5XX, {"status": 502}, id="http-502"),
    pytest.param(Fault.HTTP_429, {}, id="http-429"),
    pytest.param(Fault.RPC_ERROR, {}, id="rpc-internal-error"),
    pytest.param(
        Fault.RPC_ERROR,
        {
            "error_code": -32005,
            "error_message": "daily request count exceeded, request rate limited",
        },
        id="rpc-infura-rate-limit",
    ),
    pytest.param(Fault.LATENCY, {"delay": 0.3}, id="latency"),
    pytest.param(Fault.GARBAGE, {}, id="garbage-body"),
]


@pytest.mark.parametrize(("fault", "options"), FAULTS)
def test_client_sees_no_error_when_first_upstream_fails(
    devnet: tuple, fault: Fault, options: dict
) -> None:
    cluster, proxies, gateway = devnet
    proxies[0].set_fault(fault, **options)
    # Every call goes to the upstreams (not the cache), so each one meets the fault.
    w3 = Web3(
        HTTPProvider(
            gateway.url, request_kwargs={"timeout": 30, "headers": {"Cache-Control": "no-cache"}}
        )
    )
    for _ in range(6):  # rotation sends some calls to the faulty upstream first
        assert w3.eth.chain_id == CHAIN_ID
        assert w3.eth.get_balance(DEV_ADDRESSES[0]) > 0
        reply = gateway.rpc("eth_getBlockByNumber", ["0x1", False], fresh=True)
        assert reply.json()["result"]["hash"] == cluster[0].block_hash(1)
        if fault is not Fault.LATENCY:  # a faulty upstream never produces an answer
            assert reply.headers["X-Rpcgate-Upstream"] in ("node1", "node2")
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=1, key=DEV_KEYS[0], gas=21000
    )
    tx_hash = w3.eth.send_raw_transaction(raw).to_0x_hex()
    gossip(cluster, raw)
    cluster.mine_all()
    assert w3.eth.get_transaction_receipt(tx_hash)["status"] == 1
    # The fault was really exercised: the faulty upstream was tried, and failed over.
    faulty = gateway.gateway.chains[0].upstreams["node0"]
    if fault is Fault.LATENCY:
        assert proxies[0].request_count > 0
        assert faulty.health.failures == 0
    else:
        assert faulty.health.failures > 0
