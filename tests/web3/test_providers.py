"""rpcgate inside a Python program: `Web3(RpcgateProvider(config))` and
`AsyncWeb3(AsyncRpcgateProvider(config))` over three anvil nodes behind fault proxies. They
read, send and get receipts; ride out two of three upstreams dying; answer a finalized read
again from the cache; keep a tampered block from the program; raise on a revert exactly as
a direct provider does; send a batch as upstream batches; and leave nothing behind when
closed."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from web3 import AsyncHTTPProvider, AsyncWeb3, Web3
from web3.exceptions import ContractLogicError, Web3RPCError

from rpcgate.web3 import AsyncRpcgateProvider, RpcgateProvider
from tests.conftest import GatewayFactory, ProxiedClusterFactory, gossip
from tests.harness.anvil import DEV_ADDRESSES, AnvilCluster, sign_transaction
from tests.harness.contract import INIT_CODE, LOG_TOPIC, RETURN_VALUE, create_address
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.redis_server import RedisServer
from tests.harness.sockets import connections_to
from tests.web3.configs import devnet_config

CHAIN_ID = 31337
RECEIVER = "0x000000000000000000000000000000000000bEEF"
# Creation code that reverts with Error("nope"): CODECOPY the 100 bytes after these 12, REVERT.
REVERT_PAYLOAD = (
    "08c379a0"
    + (32).to_bytes(32, "big").hex()
    + (4).to_bytes(32, "big").hex()
    + b"nope".ljust(32, b"\0").hex()
)
REVERTING_CODE = "0x6064600c60003960646000fd" + REVERT_PAYLOAD

Devnet = tuple[AnvilCluster, list[FaultProxy]]

# A provider that leaves a coroutine unawaited, a socket or a loop unclosed fails its test.
pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
def devnet(proxied_cluster: ProxiedClusterFactory) -> Devnet:
    return proxied_cluster(3, chain_id=CHAIN_ID, mined=3)


config = devnet_config


def sent(cluster: AnvilCluster, raw: str, tx_hash: str) -> None:
    """What the network does with a transaction the gateway broadcast: every node has it,
    and it is mined in the next block."""
    gossip(cluster, raw)
    cluster.mine_all(1)


def test_web3_reads_sends_and_gets_receipts_and_logs(devnet: Devnet, tmp_path: Path) -> None:
    cluster, proxies = devnet
    path = tmp_path / "rpcgate.yaml"
    path.write_text(yaml.safe_dump(config(proxies)))
    with RpcgateProvider(str(path), chain="devnet") as provider:
        w3 = Web3(provider)
        assert w3.eth.chain_id == CHAIN_ID
        assert w3.eth.block_number == 3
        assert w3.eth.get_balance(DEV_ADDRESSES[0]) == 10_000 * 10**18
        block = w3.eth.get_block(2)
        assert block["number"] == 2 and block["hash"].hex() == cluster[0].block_hash(2)[2:]

        deploy = sign_transaction(chain_id=CHAIN_ID, nonce=0, data=INIT_CODE)
        tx_hash = w3.eth.send_raw_transaction(deploy)
        sent(cluster, deploy, tx_hash.hex())
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10, poll_latency=0.1)
        contract = create_address(DEV_ADDRESSES[0], 0)
        assert receipt["status"] == 1 and receipt["contractAddress"] == contract

        call = sign_transaction(chain_id=CHAIN_ID, nonce=1, to=contract, data=b"\x01\x02")
        tx_hash = w3.eth.send_raw_transaction(call)
        sent(cluster, call, tx_hash.hex())
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10, poll_latency=0.1)
        logs = w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest", "address": contract})
        assert [log["topics"][0].to_0x_hex() for log in logs] == [LOG_TOPIC]
        assert logs[0]["data"] == b"\x01\x02"
        assert int.from_bytes(w3.eth.call({"to": contract, "data": "0x"}), "big") == RETURN_VALUE
        status = provider.status()
        assert status["chains"][0]["name"] == "devnet"
        assert status["chains"][0]["consensus"]["head"]["number"] >= 5


def test_async_web3_reads_sends_and_gets_receipts(devnet: Devnet) -> None:
    cluster, proxies = devnet

    async def run() -> None:
        async with AsyncRpcgateProvider(config(proxies), chain=CHAIN_ID) as provider:
            w3 = AsyncWeb3(provider)
            assert await w3.eth.block_number == 3
            assert (await w3.eth.get_block("latest"))["number"] == 3
            before = await w3.eth.get_balance(RECEIVER)
            raw = sign_transaction(chain_id=CHAIN_ID, nonce=0, to=RECEIVER, value=7, gas=21000)
            tx_hash = await w3.eth.send_raw_transaction(raw)
            await asyncio.to_thread(sent, cluster, raw, tx_hash.hex())
            receipt = await w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=10, poll_latency=0.1
            )
            assert receipt["status"] == 1 and receipt["blockNumber"] == 4
            deadline = asyncio.get_running_loop().time() + 5
            while await w3.eth.block_number < 4:  # the head reaches the receipt's block
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            assert await w3.eth.get_balance(RECEIVER) == before + 7
            logs = await w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest"})
            assert logs == []  # a plain transfer logs nothing; the contract's logs: below
            deploy = sign_transaction(chain_id=CHAIN_ID, nonce=1, data=INIT_CODE)
            call = sign_transaction(
                chain_id=CHAIN_ID, nonce=2, to=create_address(DEV_ADDRESSES[0], 1), data=b"\x07"
            )
            for raw in (deploy, call):
                tx_hash = await w3.eth.send_raw_transaction(raw)
                await asyncio.to_thread(sent, cluster, raw, tx_hash.hex())
                await w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10, poll_latency=0.1)
            logs = await w3.eth.get_logs({"fromBlock": 5, "toBlock": 6})
            assert [(log["blockNumber"], log["data"]) for log in logs] == [(6, b"\x07")]

    asyncio.run(run())


def test_async_web3_rides_out_two_of_three_upstreams_dying(devnet: Devnet) -> None:
    _, proxies = devnet

    async def run() -> tuple[int, list[BaseException]]:
        failures: list[BaseException] = []
        calls = 0
        async with AsyncRpcgateProvider(config(proxies)) as provider:
            w3 = AsyncWeb3(provider)

            async def read() -> None:
                nonlocal calls
                while True:
                    try:
                        await w3.eth.get_balance(DEV_ADDRESSES[1], "pending")  # never cached
                        calls += 1
                    except Exception as exc:  # every failure is the finding
                        failures.append(exc)

            readers = [asyncio.create_task(read()) for _ in range(4)]
            await asyncio.sleep(0.5)
            await asyncio.to_thread(proxies[0].set_fault, Fault.REFUSE)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(proxies[2].set_fault, Fault.HANG)
            await asyncio.sleep(1.5)
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        return calls, failures

    calls, failures = asyncio.run(run())
    assert failures == []
    assert calls > 20


def test_two_of_three_upstreams_dying_mid_run_fail_no_call(devnet: Devnet) -> None:
    cluster, proxies = devnet
    failures: list[BaseException] = []
    calls = 0
    stop = threading.Event()
    with RpcgateProvider(config(proxies)) as provider:
        w3 = Web3(provider)

        def read() -> None:
            nonlocal calls
            while not stop.is_set():
                try:
                    w3.eth.get_balance(DEV_ADDRESSES[1], "pending")  # never cached
                    w3.eth.get_block("latest")
                    calls += 2
                except Exception as exc:  # every failure is the finding
                    failures.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            stop.wait(0.5)
            proxies[0].set_fault(Fault.REFUSE)
            cluster.mine_all(1)
            stop.wait(0.5)
            proxies[1].set_fault(Fault.REFUSE)
            cluster.mine_all(1)
            stop.wait(1.5)
        finally:
            stop.set()
            reader.join()
        assert failures == []
        assert calls > 20
        assert w3.eth.block_number == 5  # the survivor's head


def test_a_finalized_read_again_makes_no_upstream_call(devnet: Devnet) -> None:
    cluster, proxies = devnet
    cluster.mine_all(77)  # anvil's finalized block trails its head by 64: block 16
    with RpcgateProvider(config(proxies)) as provider:
        w3 = Web3(provider)
        first = w3.eth.get_balance(DEV_ADDRESSES[0], 5)
        asked = sum(p.methods.count("eth_getBalance") for p in proxies)
        assert asked == 1
        for _ in range(5):
            assert w3.eth.get_balance(DEV_ADDRESSES[0], 5) == first
        assert sum(p.methods.count("eth_getBalance") for p in proxies) == asked


def test_async_a_finalized_read_again_makes_no_upstream_call_and_no_tampered_block_gets_through(
    devnet: Devnet,
) -> None:
    cluster, proxies = devnet
    cluster.mine_all(77)  # block 16 finalized
    honest = {n: cluster[1].block(hex(n)) for n in range(60, 76)}
    proxies[0].set_fault(Fault.TAMPER_BLOCK, field="gasUsed")

    async def run() -> None:
        async with AsyncRpcgateProvider(config(proxies, verify="integrity")) as provider:
            w3 = AsyncWeb3(provider)
            first = await w3.eth.get_balance(DEV_ADDRESSES[0], 5)
            asked = sum(p.methods.count("eth_getBalance") for p in proxies)
            for _ in range(5):
                assert await w3.eth.get_balance(DEV_ADDRESSES[0], 5) == first
            assert sum(p.methods.count("eth_getBalance") for p in proxies) == asked == 1
            for number, block in honest.items():
                served = await w3.eth.get_block(number)
                assert served["gasUsed"] == int(block["gasUsed"], 16), number
        assert proxies[0].tampered_answers > 0, "the tampering upstream was never asked"

    asyncio.run(run())


def test_the_cache_is_shared_with_gateway_servers_on_the_same_redis(
    devnet: Devnet, start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    cluster, proxies = devnet
    cluster.mine_all(77)  # block 16 finalized
    shared = {"redis_url": redis_server.url}
    server = start_gateway([p.url for p in proxies], cache=shared)
    served = server.rpc("eth_getBalance", [DEV_ADDRESSES[0], "0x5"]).json()["result"]
    stored = time.monotonic() + 5
    while not redis_server.client().keys("*getBalance*") and time.monotonic() < stored:
        time.sleep(0.05)  # the write reaches Redis after the answer
    asked = sum(p.methods.count("eth_getBalance") for p in proxies)
    with RpcgateProvider({**config(proxies), "cache": shared}) as provider:
        assert Web3(provider).eth.get_balance(DEV_ADDRESSES[0], 5) == int(served, 16)
        assert provider.status()["cache"]["redis"] == "up"
    assert sum(p.methods.count("eth_getBalance") for p in proxies) == asked


def test_a_tampered_block_never_reaches_the_program(devnet: Devnet) -> None:
    cluster, proxies = devnet
    cluster.mine_all(12)
    honest = {n: cluster[1].block(hex(n)) for n in range(1, 16)}
    proxies[0].set_fault(Fault.TAMPER_BLOCK, field="gasUsed")
    with RpcgateProvider(config(proxies, verify="integrity")) as provider:
        w3 = Web3(provider)
        for number, block in honest.items():
            served = w3.eth.get_block(number)
            assert served["gasUsed"] == int(block["gasUsed"], 16), number
            assert served["hash"].to_0x_hex() == block["hash"]
        assert proxies[0].tampered_answers > 0, "the tampering upstream was never asked"
        (node0,) = [u for u in provider.status()["chains"][0]["upstreams"] if u["name"] == "node0"]
        assert node0["integrity_failures"] > 0


def test_a_revert_raises_as_with_a_direct_provider(devnet: Devnet) -> None:
    cluster, proxies = devnet

    async def revert(w3: AsyncWeb3[Any]) -> ContractLogicError:
        with pytest.raises(ContractLogicError) as caught:
            await w3.eth.call({"from": DEV_ADDRESSES[0], "data": REVERTING_CODE})
        return caught.value

    async def run() -> tuple[ContractLogicError, ContractLogicError]:
        direct = AsyncWeb3(AsyncHTTPProvider(cluster.urls[0]))
        try:
            expected = await revert(direct)
        finally:
            await direct.provider.disconnect()
        async with AsyncRpcgateProvider(config(proxies)) as provider:
            return expected, await revert(AsyncWeb3(provider))

    expected, got = asyncio.run(run())
    assert type(got) is type(expected)
    assert got.message == expected.message and "nope" in got.message
    assert got.data == expected.data == "0x" + REVERT_PAYLOAD


def test_a_gateway_error_carries_rpcgates_reason(devnet: Devnet) -> None:
    _, proxies = devnet
    with RpcgateProvider(config(proxies, methods={"deny": ["eth_sign"]})) as provider:
        w3 = Web3(provider)
        with pytest.raises(Web3RPCError) as caught:
            w3.eth.sign(DEV_ADDRESSES[0], text="hello")
    error = caught.value.rpc_response["error"]  # type: ignore[index]
    assert "eth_sign" in error["message"] and error["code"] != -32603, error


def test_a_batch_of_twenty_reads_travels_as_upstream_batches(devnet: Devnet) -> None:
    _, proxies = devnet
    accounts = [Web3.to_checksum_address(f"0x{0xCAFE00 + i:040x}") for i in range(20)]
    with RpcgateProvider(config(proxies)) as provider:
        w3 = Web3(provider)
        assert w3.eth.block_number == 3  # started, heads agreed
        for proxy in proxies:
            proxy.reset_counts()
        with w3.batch_requests() as batch:
            for account in accounts:
                batch.add(w3.eth.get_balance(account, "pending"))
            balances = batch.execute()
    assert balances == [0] * 20
    requests = [r for p in proxies for r in p.requests]
    singles = [r for r in requests if r == "eth_getBalance"]
    batched = [m for r in requests if isinstance(r, list) for m in r if m == "eth_getBalance"]
    assert singles == [] and len(batched) >= 20, requests
    assert len([r for r in requests if isinstance(r, list)]) < 20


def _threads() -> set[str]:
    return {t.name for t in threading.enumerate()}


def test_closing_the_sync_provider_leaves_no_task_thread_or_socket(devnet: Devnet) -> None:
    _, proxies = devnet
    ports = [p.port for p in proxies]
    before = _threads()
    provider = RpcgateProvider(config(proxies))
    w3 = Web3(provider)
    w3.eth.get_balance(DEV_ADDRESSES[0], "pending")
    assert _threads() - before and connections_to(ports) > 0
    provider.close()
    provider.close()  # idempotent
    assert _threads() <= before
    assert connections_to(ports) == 0
    with pytest.raises(RuntimeError, match="closed"):
        w3.eth.get_balance(DEV_ADDRESSES[0], "pending")


def test_the_sync_provider_is_closed_from_inside_an_async_program(devnet: Devnet) -> None:
    _, proxies = devnet

    async def run() -> None:
        provider = RpcgateProvider(config(proxies))
        assert await asyncio.to_thread(lambda: Web3(provider).eth.block_number) == 3
        provider.close()  # on a thread whose own loop is running

    asyncio.run(run())


def test_closing_the_async_provider_leaves_no_task_or_socket(devnet: Devnet) -> None:
    _, proxies = devnet
    ports = [p.port for p in proxies]
    before = _threads()

    async def run() -> None:
        provider = AsyncRpcgateProvider(config(proxies))
        w3 = AsyncWeb3(provider)
        await w3.eth.get_balance(DEV_ADDRESSES[0], "pending")
        assert len(asyncio.all_tasks()) > 1 and connections_to(ports) > 0
        await provider.disconnect()
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert connections_to(ports) == 0

    asyncio.run(run())
    assert _threads() <= before


def test_providers_made_and_dropped_leave_no_warnings(devnet: Devnet) -> None:
    _, proxies = devnet
    before = _threads()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AsyncRpcgateProvider(config(proxies))
        RpcgateProvider(config(proxies))
        gc.collect()
    assert [str(w.message) for w in caught] == []
    assert _threads() <= before


# A program that uses a provider and exits without closing it. web3.py never frees a Web3
# that has made a call (its modules hold curried functions in a cycle with it), so the
# provider is closed by its finalizer at exit: quietly, and without holding the exit up.
FORGETFUL_PROGRAM = """
import sys, warnings
warnings.simplefilter("always")
from web3 import Web3
from rpcgate.web3 import RpcgateProvider
config = {"chains": [{"name": "devnet", "chain_id": 31337,
                      "upstreams": [{"name": "node0", "url": sys.argv[1]}]}]}
print(Web3(RpcgateProvider(config)).eth.block_number)
"""


def test_a_provider_never_closed_is_closed_quietly_at_exit(devnet: Devnet) -> None:
    _, proxies = devnet
    done = subprocess.run(
        [sys.executable, "-X", "dev", "-c", FORGETFUL_PROGRAM, proxies[0].url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    problems = [
        line
        for line in done.stderr.splitlines()
        if not line.startswith("{")  # rpcgate's own log lines (JSON)
    ]
    assert problems == [], done.stderr


def test_an_unknown_chain_is_refused_at_construction(devnet: Devnet) -> None:
    _, proxies = devnet
    with pytest.raises(ValueError, match=r"unknown chain 'base'; configured: devnet \(31337\)"):
        RpcgateProvider(config(proxies), chain="base")


@pytest.fixture(autouse=True)
def _no_leftover_threads() -> Iterator[None]:
    yield
    assert not [t for t in threading.enumerate() if t.name == "rpcgate-provider"]
