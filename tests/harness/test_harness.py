"""The test harness does what it claims, against real anvil processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
from eth_typing import HexStr
from web3 import Web3

from tests.harness import tools
from tests.harness.anvil import (
    DEFAULT_CHAIN_ID,
    DEFAULT_GENESIS_TIMESTAMP,
    DEV_ADDRESSES,
    DEV_KEYS,
    AnvilNode,
    AnvilStartError,
    JsonRpcError,
    sign_transaction,
    transaction_hash,
)
from tests.harness.contract import (
    INIT_CODE,
    LOG_TOPIC,
    RETURN_DATA,
    RETURN_VALUE,
    RUNTIME_CODE,
    create_address,
)
from tests.harness.faultproxy import (
    GARBAGE_BODY,
    UNAVAILABLE_BODY,
    Fault,
    FaultProxy,
)
from tests.harness.fixtures import (
    AnvilClusterFactory,
    FaultProxyFactory,
    LoadBalancerFactory,
    anvil_cluster,
    background_loop,
    fault_proxy,
    load_balancer,
)
from tests.harness.loop import BackgroundLoop

# fixtures, used by name
__all__ = ["anvil_cluster", "background_loop", "fault_proxy", "load_balancer"]

CHAIN_ID_REQUEST: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "eth_chainId",
    "params": [],
}
BATCH_REQUEST: list[dict[str, Any]] = [
    {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
    {"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []},
]
CHAIN_ID_HEX = hex(DEFAULT_CHAIN_ID)


# -- tools --


@pytest.mark.unit
def test_anvil_binary_prefers_env_var(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "anvil"
    fake.write_text("")
    monkeypatch.setenv(tools.ANVIL_BIN_ENV, str(fake))
    assert tools.anvil_binary() == str(fake)


@pytest.mark.unit
def test_anvil_binary_missing_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(tools.ANVIL_BIN_ENV, raising=False)
    monkeypatch.setattr(tools, "REPO_ROOT", tmp_path)
    with pytest.raises(RuntimeError) as raised:
        tools.anvil_binary()
    assert str(raised.value) == (
        "anvil not found: run ./scripts/test (it installs @foundry-rs/anvil@1.7.1 into .tools/) "
        "or `npm install --prefix .tools @foundry-rs/anvil@1.7.1`"
    )


def test_free_port_is_bindable() -> None:
    import socket

    port = tools.free_port()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))


# -- anvil nodes and clusters --


def test_cluster_nodes_share_genesis(anvil_cluster: AnvilClusterFactory) -> None:
    cluster = anvil_cluster(3)
    genesis_hashes = cluster.block_hashes(0)
    assert len(set(genesis_hashes)) == 1
    assert int(cluster[0].block(0)["timestamp"], 16) == DEFAULT_GENESIS_TIMESTAMP
    assert {node.rpc("eth_chainId") for node in cluster} == {CHAIN_ID_HEX}
    assert len(set(cluster.urls)) == 3


def test_mining_with_same_timestamps_gives_identical_blocks(
    anvil_cluster: AnvilClusterFactory,
) -> None:
    cluster = anvil_cluster(3)
    cluster.mine_all(3)
    assert cluster.heights() == [3, 3, 3]
    for height in (1, 2, 3):
        assert len(set(cluster.block_hashes(height))) == 1
        block = cluster[0].block(height)
        assert int(block["timestamp"], 16) == DEFAULT_GENESIS_TIMESTAMP + 12 * height


def test_lagging_node_catches_up_with_identical_hashes(
    anvil_cluster: AnvilClusterFactory,
) -> None:
    cluster = anvil_cluster(3)
    cluster.mine_on([0, 1], 4)
    assert cluster.heights() == [4, 4, 0]

    cluster.mine_all(1)  # everyone advances; the laggard stays behind
    assert cluster.heights() == [5, 5, 1]

    cluster.catch_up(2)
    assert cluster.heights() == [5, 5, 5]
    for height in range(1, 6):
        assert len(set(cluster.block_hashes(height))) == 1


def test_forked_node_differs_until_reverted(anvil_cluster: AnvilClusterFactory) -> None:
    cluster = anvil_cluster(3)
    cluster.mine_all(2)
    before_fork = cluster.snapshot_all()

    cluster.mine_on([0, 1], 1)
    cluster.fork(2)
    assert cluster.heights() == [3, 3, 3]
    assert len(set(cluster.block_hashes(2))) == 1
    hashes = cluster.block_hashes(3)
    assert hashes[0] == hashes[1] != hashes[2]

    # Stays forked on later blocks too: each block commits to its parent.
    cluster.mine_all(1)
    hashes = cluster.block_hashes(4)
    assert hashes[0] == hashes[1] != hashes[2]

    cluster.revert_all(before_fork)
    assert cluster.heights() == [2, 2, 2]
    cluster.mine_all(2)
    assert len(set(cluster.block_hashes(4))) == 1


def test_transaction_waits_for_mining_without_automine(
    anvil_cluster: AnvilClusterFactory,
) -> None:
    cluster = anvil_cluster(1)
    node = cluster[0]
    raw = sign_transaction(chain_id=DEFAULT_CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=1)
    tx_hash = node.send_raw_transaction(raw)
    assert node.receipt(tx_hash) is None
    assert node.block_number() == 0

    cluster.mine_all()
    receipt = node.receipt(tx_hash)
    assert receipt is not None and receipt["status"] == "0x1"


def test_transaction_sent_to_one_node_can_be_broadcast_to_the_rest(
    anvil_cluster: AnvilClusterFactory,
) -> None:
    cluster = anvil_cluster(3)
    raw = sign_transaction(chain_id=DEFAULT_CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=1)
    sent_hash = cluster[1].send_raw_transaction(raw)  # as if through the gateway
    assert cluster.broadcast_raw_transaction(raw) == sent_hash == transaction_hash(raw)
    cluster.mine_all()
    assert len(set(cluster.block_hashes(1))) == 1
    assert all(node.receipt(sent_hash) is not None for node in cluster)


def test_contract_deploys_answers_42_and_logs(anvil_cluster: AnvilClusterFactory) -> None:
    cluster = anvil_cluster(2)
    deployer = DEV_ADDRESSES[0]
    deploy_hash = cluster.broadcast_raw_transaction(
        sign_transaction(chain_id=DEFAULT_CHAIN_ID, nonce=0, data=INIT_CODE)
    )
    cluster.mine_all()
    # Same transactions + same timestamps: blocks with transactions stay identical too.
    assert len(set(cluster.block_hashes(1))) == 1

    receipt = cluster[0].receipt(deploy_hash)
    assert receipt is not None and receipt["status"] == "0x1"
    address = create_address(deployer, 0)
    assert Web3.to_checksum_address(receipt["contractAddress"]) == address
    assert cluster[1].rpc("eth_getCode", [address, "latest"]) == RUNTIME_CODE

    # eth_call through web3's sync client, the way gateway tests talk to the gateway.
    web3 = Web3(Web3.HTTPProvider(cluster[1].url))
    answer = web3.eth.call({"to": address, "data": HexStr("0x1234")})
    assert "0x" + answer.hex() == RETURN_DATA
    assert int.from_bytes(answer, "big") == RETURN_VALUE

    calldata = "0xdeadbeef"
    call_hash = cluster.broadcast_raw_transaction(
        sign_transaction(chain_id=DEFAULT_CHAIN_ID, nonce=1, to=address, data=calldata)
    )
    cluster.mine_all()
    call_receipt = cluster[1].receipt(call_hash)
    assert call_receipt is not None and call_receipt["status"] == "0x1"
    [log] = call_receipt["logs"]
    assert log["topics"] == [LOG_TOPIC]
    assert log["data"] == calldata
    assert Web3.to_checksum_address(log["address"]) == address
    logs = cluster[0].rpc("eth_getLogs", [{"fromBlock": "0x0", "topics": [LOG_TOPIC]}])
    assert [entry["transactionHash"] for entry in logs] == [call_hash]


def test_automine_node_mines_each_transaction() -> None:
    with AnvilNode(automine=True) as node:
        raw = sign_transaction(
            chain_id=DEFAULT_CHAIN_ID, nonce=0, to=DEV_ADDRESSES[0], value=1, key=DEV_KEYS[1]
        )
        tx_hash = node.send_raw_transaction(raw)
        receipt = node.wait_for_receipt(tx_hash)
        assert int(receipt["blockNumber"], 16) == 1


def test_node_rpc_error_carries_the_error() -> None:
    with AnvilNode() as node, pytest.raises(JsonRpcError) as raised:
        node.rpc("evm_mine", [DEFAULT_GENESIS_TIMESTAMP - 1])
    assert raised.value.code == -32602
    assert "lower than previous block" in raised.value.error_message


def test_node_that_cannot_start_reports_stderr() -> None:
    node = AnvilNode(extra_args=["--no-such-flag"])
    with pytest.raises(AnvilStartError, match="no-such-flag"):
        node.start()
    assert not node.is_running


def test_node_on_a_taken_port_fails_instead_of_using_the_other_node() -> None:
    with AnvilNode() as taken:
        with pytest.raises(AnvilStartError, match="Address already in use"):
            AnvilNode(port=taken.port).start()
        assert taken.block_number() == 0


def test_node_dies_with_the_process_that_spawned_it() -> None:
    spawner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tests.harness.anvil import AnvilNode\n"
            "node = AnvilNode().start()\n"
            "print(node._process.pid, flush=True)\n"
            "input()\n",
        ],
        cwd=tools.REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert spawner.stdout is not None
    anvil_pid = int(spawner.stdout.readline())
    spawner.kill()  # no teardown runs, as when a test run is killed
    spawner.wait()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{anvil_pid}").exists() and not _is_zombie(anvil_pid):
        assert time.monotonic() < deadline, f"anvil {anvil_pid} outlived its spawner"
        time.sleep(0.02)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_stopped_node_refuses_connections() -> None:
    node = AnvilNode().start()
    url = node.url
    node.stop()
    with pytest.raises(requests.ConnectionError):
        requests.post(url, json=CHAIN_ID_REQUEST, timeout=2)


# -- fault proxy, seen by a plain aiohttp client --


@pytest.fixture(scope="module")
def upstream() -> Iterator[AnvilNode]:
    with AnvilNode() as node:
        yield node


async def post(
    session: aiohttp.ClientSession, url: str, payload: Any, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    async with session.post(
        url, json=payload, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as response:
        return response.status, dict(response.headers), await response.read()


async def wait_until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_healthy_proxy_forwards_and_counts_methods(upstream: AnvilNode) -> None:
    async with FaultProxy(upstream.url) as proxy, aiohttp.ClientSession() as session:
        status, _, body = await post(session, proxy.url, CHAIN_ID_REQUEST)
        assert status == 200
        assert json.loads(body) == {"jsonrpc": "2.0", "id": 7, "result": CHAIN_ID_HEX}

        status, _, body = await post(session, proxy.url, BATCH_REQUEST)
        assert status == 200
        assert [reply["id"] for reply in json.loads(body)] == [1, 2]

        assert proxy.request_count == 2
        assert proxy.methods == ["eth_chainId", "eth_chainId", "eth_blockNumber"]
        proxy.reset_counts()
        assert (proxy.request_count, proxy.methods) == (0, [])


async def test_refuse_closes_the_port_and_healthy_reopens_it(upstream: AnvilNode) -> None:
    async with FaultProxy(upstream.url) as proxy, aiohttp.ClientSession() as session:
        port = proxy.port
        # Prime a keep-alive connection: a refused upstream must not keep serving it.
        assert (await post(session, proxy.url, CHAIN_ID_REQUEST))[0] == 200

        proxy.set_fault(Fault.REFUSE)
        # Same loop, no iteration in between: the client has not yet read the FIN on its
        # pooled connection, so it reuses it and finds it dead - as with a real crash.
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, proxy.url, CHAIN_ID_REQUEST)
        for _ in range(2):
            with pytest.raises(aiohttp.ClientConnectorError):
                await post(session, proxy.url, CHAIN_ID_REQUEST)

        proxy.set_fault(Fault.HEALTHY)
        assert proxy.port == port
        status, _, body = await post(session, proxy.url, CHAIN_ID_REQUEST)
        assert status == 200 and json.loads(body)["result"] == CHAIN_ID_HEX
        assert proxy.request_count == 2  # refused attempts never reached the proxy


async def test_proxy_can_start_refusing(upstream: AnvilNode) -> None:
    proxy = FaultProxy(upstream.url)
    proxy.set_fault(Fault.REFUSE)
    async with proxy, aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorError):
            await post(session, proxy.url, CHAIN_ID_REQUEST)
        proxy.heal()
        assert (await post(session, proxy.url, CHAIN_ID_REQUEST))[0] == 200


async def test_hang_times_out_and_is_released_on_mode_change(upstream: AnvilNode) -> None:
    async with FaultProxy(upstream.url) as proxy, aiohttp.ClientSession() as session:
        proxy.set_fault(Fault.HANG)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await post(session, proxy.url, CHAIN_ID_REQUEST, timeout=0.3)
        assert time.monotonic() - started < 2
        # The client hung up, and the proxy let go of the request.
        await wait_until(lambda: proxy.hung_requests == 0)

        waiting = asyncio.create_task(post(session, proxy.url, CHAIN_ID_REQUEST, timeout=10))
        await wait_until(lambda: proxy.hung_requests == 1)
        assert not waiting.done()
        proxy.set_fault(Fault.HEALTHY)
        # The hung request is dropped, not forwarded late.
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await asyncio.wait_for(waiting, timeout=2)
        assert (await post(session, proxy.url, CHAIN_ID_REQUEST))[0] == 200
        assert proxy.methods == ["eth_chainId"] * 3


async def test_stop_releases_hung_requests(upstream: AnvilNode) -> None:
    proxy = await FaultProxy(upstream.url).start()
    proxy.set_fault(Fault.HANG)
    async with aiohttp.ClientSession() as session:
        waiting = asyncio.create_task(post(session, proxy.url, CHAIN_ID_REQUEST, timeout=10))
        await wait_until(lambda: proxy.hung_requests == 1)
        started = time.monotonic()
        await proxy.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await asyncio.wait_for(waiting, timeout=2)


@pytest.mark.parametrize("status", [None, 500, 502, 504])
async def test_http_5xx_returns_status_and_non_json_body(
    upstream: AnvilNode, status: int | None
) -> None:
    async with FaultProxy(upstream.url) as proxy, aiohttp.ClientSession() as session:
        proxy.set_fault(Fault.HTTP_5XX, status=status)
        got_status, _, body = await post(session, proxy.url, CHAIN_ID_REQUEST)
        assert got_status == (status or 503)
        assert body.decode() == UNAVAILABLE_BODY
        with pytest.raises(ValueError):
            json.loads(body)


async def test_http_429_has_retry_after_and_rpc_error(upstream: AnvilNode) -> None:
    async with FaultProxy(upstream.url) as proxy, aiohttp.ClientSession() as session:
        proxy.set_fault(Fault.HTTP_429)
        status, headers, body = await post(session, proxy.url, CHAIN_ID_REQUEST)
        assert status == 429
        assert headers["Retry-After"] == "1"
        assert json.loads(body) == {
            "jsonrpc": "2.0",
            "id": 7,
            "error": {"code": -32005, "message": "Too Many Requests"},
        }


async def test_rpc_error_answers_each_request_with_an_error(upstream: AnvilNode) -> None:
    async with FaultProxy(upstream.url) as proxy, aiohttp.ClientSession() as session:
        proxy.set_fault(Fault.RPC_ERROR)
        status, _, body = await post(session, proxy.url, CHAIN_ID_REQUEST)
        assert status == 200
        assert json.loads(body) == {
            "jsonrpc": "2.0",
            "id": 7,
            "error": {"code": -32603, "message": "internal error"},
        }

        proxy.set_fault(Fault.RPC_ERROR, error_code=-32000, error_message="header not found")
        status, _, body = await post(session, proxy.url, BATCH_REQUEST)
        assert status == 200
        replies = json.loads(body)
        assert [reply["id"] for reply in replies] == [1, 2]
        assert {json.dumps(reply["error"]) for reply in replies} == {
            json.dumps({"code": -32000, "message": "header not found"})
        }


async def test_latency_delays_but_still_answers(upstream: AnvilNode) -> None:
    async with FaultProxy(upstream.url) as proxy, aiohttp.ClientSession() as session:
        await post(session, proxy.url, CHAIN_ID_REQUEST)  # warm the connection pools
        proxy.set_fault(Fault.LATENCY, delay=0.3)
        started = time.monotonic()
        status, _, body = await post(session, proxy.url, CHAIN_ID_REQUEST)
        elapsed = time.monotonic() - started
        assert status == 200 and json.loads(body)["result"] == CHAIN_ID_HEX
        assert 0.3 <= elapsed < 1.5

        proxy.heal()
        started = time.monotonic()
        await post(session, proxy.url, CHAIN_ID_REQUEST)
        assert time.monotonic() - started < 0.3


async def test_a_fault_for_some_methods_leaves_the_other_calls_alone(
    upstream: AnvilNode,
) -> None:
    async with FaultProxy(upstream.url) as proxy, aiohttp.ClientSession() as session:
        proxy.set_fault(Fault.HTTP_5XX, methods=["eth_blockNumber"])
        status, _, body = await post(session, proxy.url, CHAIN_ID_REQUEST)
        assert status == 200 and json.loads(body)["result"] == CHAIN_ID_HEX
        status, _, _ = await post(session, proxy.url, BATCH_REQUEST)  # holds eth_blockNumber
        assert status == 503
        with pytest.raises(ValueError, match="REFUSE"):
            proxy.set_fault(Fault.REFUSE, methods=["eth_blockNumber"])


async def test_garbage_is_not_json(upstream: AnvilNode) -> None:
    async with FaultProxy(upstream.url) as proxy, aiohttp.ClientSession() as session:
        proxy.set_fault(Fault.GARBAGE)
        status, _, body = await post(session, proxy.url, CHAIN_ID_REQUEST)
        assert status == 200
        assert body == GARBAGE_BODY
        with pytest.raises(ValueError):
            json.loads(body)


def test_fault_options_must_match_the_mode(upstream: AnvilNode) -> None:
    proxy = FaultProxy(upstream.url)
    with pytest.raises(ValueError, match="status only applies to HTTP_5XX"):
        proxy.set_fault(Fault.RPC_ERROR, status=502)
    with pytest.raises(ValueError, match="5xx"):
        proxy.set_fault(Fault.HTTP_5XX, status=429)


# -- fault proxy driven from a synchronous test through the background loop --


def test_sync_test_drives_proxy_on_background_loop(
    upstream: AnvilNode, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(upstream.url)
    web3 = Web3(Web3.HTTPProvider(proxy.url, request_kwargs={"timeout": 2}))
    assert web3.eth.chain_id == DEFAULT_CHAIN_ID

    proxy.set_fault(Fault.REFUSE)
    with pytest.raises(requests.ConnectionError):
        requests.post(proxy.url, json=CHAIN_ID_REQUEST, timeout=2)
    with pytest.raises(requests.ConnectionError):
        web3.eth.block_number  # noqa: B018 - a property that performs the call

    proxy.set_fault(Fault.HEALTHY)
    assert web3.eth.block_number == upstream.block_number()
    assert "eth_blockNumber" in proxy.methods


async def test_async_test_drives_proxy_on_background_loop(
    upstream: AnvilNode, fault_proxy: FaultProxyFactory
) -> None:
    proxy = fault_proxy(upstream.url)
    async with aiohttp.ClientSession() as session:
        assert (await post(session, proxy.url, CHAIN_ID_REQUEST))[0] == 200
        # set_fault hops to the background loop and waits; this loop is a different one.
        proxy.set_fault(Fault.REFUSE)
        with pytest.raises(aiohttp.ClientConnectionError):
            await post(session, proxy.url, CHAIN_ID_REQUEST)
        proxy.set_fault(Fault.HEALTHY)
        assert (await post(session, proxy.url, CHAIN_ID_REQUEST))[0] == 200
    await proxy.stop()  # also hops loops; the fixture's second stop is a no-op


@pytest.mark.unit
def test_background_loop_runs_coroutines_and_refuses_after_stop() -> None:
    loop = BackgroundLoop()

    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    assert loop.run(answer()) == 42
    loop.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        loop.run(answer())


# -- load balancer over replicas at different heights --


def test_load_balancer_reaches_every_replica(
    anvil_cluster: AnvilClusterFactory, load_balancer: LoadBalancerFactory
) -> None:
    cluster = anvil_cluster(2)
    cluster.mine_on([0])  # replica 1 is one block behind
    balancer = load_balancer(cluster.urls, seed=1)
    heights = [
        requests.post(balancer.url, json=BATCH_REQUEST[1], timeout=5).json()["result"]
        for _ in range(20)
    ]
    assert set(heights) == {"0x1", "0x0"}
    assert balancer.counts == {
        cluster[0].url: heights.count("0x1"),
        cluster[1].url: heights.count("0x0"),
    }


def test_load_balancer_sends_a_batch_whole_to_one_replica(
    anvil_cluster: AnvilClusterFactory, load_balancer: LoadBalancerFactory
) -> None:
    cluster = anvil_cluster(2)
    cluster.mine_on([0])
    balancer = load_balancer(cluster.urls, seed=1)
    batch = [
        {"jsonrpc": "2.0", "id": index, "method": "eth_blockNumber", "params": []}
        for index in range(5)
    ]
    batch_heights = []
    for _ in range(20):
        replies = requests.post(balancer.url, json=batch, timeout=5).json()
        assert [reply["id"] for reply in replies] == list(range(5))
        batch_heights.append({reply["result"] for reply in replies})
    assert all(len(heights) == 1 for heights in batch_heights)
    assert set.union(*batch_heights) == {"0x1", "0x0"}
    assert sum(balancer.counts.values()) == 20


def test_load_balancer_backends_can_be_swapped_while_serving(
    anvil_cluster: AnvilClusterFactory, load_balancer: LoadBalancerFactory
) -> None:
    cluster = anvil_cluster(2)
    cluster.mine_on([0])
    balancer = load_balancer([cluster[1].url])
    assert requests.post(balancer.url, json=BATCH_REQUEST[1], timeout=5).json()["result"] == "0x0"
    balancer.backends = [cluster[0].url]
    for _ in range(5):
        reply = requests.post(balancer.url, json=BATCH_REQUEST[1], timeout=5).json()
        assert reply["result"] == "0x1"
    assert balancer.counts == {cluster[1].url: 1, cluster[0].url: 5}


def test_load_balancer_returns_the_backends_status_and_body_as_is(
    upstream: AnvilNode, fault_proxy: FaultProxyFactory, load_balancer: LoadBalancerFactory
) -> None:
    failing = fault_proxy(upstream.url, Fault.HTTP_5XX)
    balancer = load_balancer([failing.url])
    response = requests.post(balancer.url, json=CHAIN_ID_REQUEST, timeout=5)
    assert response.status_code == 503
    assert response.headers["Content-Type"].startswith("text/plain")
    assert response.text == UNAVAILABLE_BODY
