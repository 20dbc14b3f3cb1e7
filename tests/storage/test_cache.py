"""The cache with real anvil nodes and a real Redis: hits, reorgs, coalescing, Redis
failures, and two gateway processes sharing one Redis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway, gossip
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, AnvilCluster, sign_transaction
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.redis_server import RedisServer
from tests.harness.tools import free_port, wait_for_http

CHAIN_ID = 31337
ADDR = DEV_ADDRESSES[0]
RECEIVER = "0x000000000000000000000000000000000000bEEF"  # checksummed


def calls_to_upstreams(proxies: list[FaultProxy], method: str) -> int:
    return sum(p.methods.count(method) for p in proxies)


@pytest.fixture
def devnet(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
):  # type: ignore[no-untyped-def]
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=5)
    return cluster, proxies, start_gateway


def test_repeated_calls_are_answered_from_the_cache(devnet) -> None:  # type: ignore[no-untyped-def]
    _, proxies, start_gateway = devnet
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60)
    first = gateway.rpc("eth_getBalance", [ADDR, "latest"])
    second = gateway.rpc("eth_getBalance", [ADDR, "latest"])
    assert first.headers["X-Rpcgate-Cache"] == "miss"
    assert second.headers["X-Rpcgate-Cache"] == "hit"
    assert second.headers["X-Rpcgate-Upstream"] == "cache"
    assert second.json() == first.json()
    assert calls_to_upstreams(proxies, "eth_getBalance") == 1
    # The same call spelled differently is the same entry.
    spelled = gateway.post(
        {
            "jsonrpc": "2.0",
            "id": "other-id",
            "method": "eth_getBalance",
            "params": [ADDR.upper().replace("0X", "0x"), "0x5"],
        }
    )
    assert spelled.headers["X-Rpcgate-Cache"] == "hit"
    assert spelled.json()["id"] == "other-id"
    # A caller can skip the read; the fresh answer is stored again.
    fresh = gateway.rpc("eth_getBalance", [ADDR, "latest"], fresh=True)
    assert fresh.headers["X-Rpcgate-Cache"] == "miss"
    assert calls_to_upstreams(proxies, "eth_getBalance") == 2


def test_batches_say_hit_miss_or_bypass_per_item(devnet) -> None:  # type: ignore[no-untyped-def]
    _, proxies, start_gateway = devnet
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60)
    gateway.rpc("eth_chainId")
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=RECEIVER, value=1, key=DEV_KEYS[0], gas=21000
    )
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_gasPrice"},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_blockNumber"},
        {"jsonrpc": "2.0", "id": 4, "method": "eth_sendRawTransaction", "params": [raw]},
    ]
    reply = gateway.post(batch)
    assert reply.headers["X-Rpcgate-Cache"] == "hit,miss,bypass,bypass"
    assert [item["id"] for item in reply.json()] == [1, 2, 3, 4]
    assert gateway.post(batch[1:2]).headers["X-Rpcgate-Cache"] == "hit"


def test_a_new_head_gives_latest_calls_a_new_entry(devnet) -> None:  # type: ignore[no-untyped-def]
    cluster, proxies, start_gateway = devnet
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60)
    assert gateway.result("eth_getBalance", [RECEIVER, "latest"]) == "0x0"
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=RECEIVER, value=777, key=DEV_KEYS[0], gas=21000
    )
    gateway.result("eth_sendRawTransaction", [raw])
    gossip(cluster, raw)
    cluster.mine_all()
    gateway.sync()
    reply = gateway.rpc("eth_getBalance", [RECEIVER, "latest"])
    assert reply.json()["result"] == hex(777)
    assert reply.headers["X-Rpcgate-Cache"] == "miss"
    price = gateway.rpc("eth_gasPrice")
    assert price.headers["X-Rpcgate-Cache"] == "miss"  # head answers died with the head


def _send(cluster: AnvilCluster, gateway: RunningGateway, value: int) -> str:
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=RECEIVER, value=value, key=DEV_KEYS[0], gas=21000
    )
    tx_hash: str = gateway.result("eth_sendRawTransaction", [raw])
    gossip(cluster, raw)
    return tx_hash


# 3: the new head's parent contradicts what the gateway knew; 5: blocks were skipped
# between two polls, so the gateway checks whether the head it knew is still there.
@pytest.mark.parametrize("new_chain_length", [3, 5])
def test_a_reorg_on_every_node_changes_what_a_repeated_call_returns(  # type: ignore[no-untyped-def]
    devnet, new_chain_length: int
) -> None:
    cluster, proxies, start_gateway = devnet
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60)
    before = cluster.snapshot_all()  # all at block 5
    old_tx = _send(cluster, gateway, 1000)
    cluster.mine_all(2)  # the transfer is in block 6
    gateway.sync()
    calls: list[tuple[str, list[Any]]] = [
        ("eth_getBalance", [RECEIVER, "0x6"]),
        ("eth_getTransactionReceipt", [old_tx]),
        ("eth_getBlockByNumber", ["0x6", False]),
    ]
    first = {m: gateway.rpc(m, p).json()["result"] for m, p in calls}
    assert first["eth_getBalance"] == hex(1000)
    assert first["eth_getTransactionReceipt"]["blockNumber"] == "0x6"
    assert all(gateway.rpc(m, p).headers["X-Rpcgate-Cache"] == "hit" for m, p in calls)

    # Every node abandons blocks 6 and 7 for a longer chain with another transfer in 6.
    cluster.revert_all(before)
    new_tx = _send(cluster, gateway, 2000)
    for index in range(len(cluster)):
        cluster.fork(index, new_chain_length)
    assert len(set(cluster.block_hashes())) == 1  # the nodes agree on the new chain
    gateway.sync()

    after = {m: gateway.rpc(m, p) for m, p in calls}
    assert after["eth_getBalance"].json()["result"] == hex(2000)
    assert after["eth_getTransactionReceipt"].json()["result"] is None  # dropped
    assert (
        after["eth_getBlockByNumber"].json()["result"]["hash"]
        != first["eth_getBlockByNumber"]["hash"]
    )
    assert all(r.headers["X-Rpcgate-Cache"] == "miss" for r in after.values())
    assert gateway.result("eth_getTransactionReceipt", [new_tx])["blockNumber"] == "0x6"
    assert gateway.gateway.chains[0].cache_counters.stale_dropped >= 2


def test_identical_calls_in_flight_share_one_upstream_call(devnet) -> None:  # type: ignore[no-untyped-def]
    _, proxies, start_gateway = devnet
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60)
    for proxy in proxies:
        proxy.set_fault(Fault.LATENCY, delay=0.3)
        proxy.reset_counts()
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getCode", "params": [ADDR, "latest"]}

    async def burst() -> list[Any]:
        import asyncio

        import aiohttp

        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> Any:
                async with session.post(gateway.url, json={**body, "id": i}) as resp:
                    return await resp.json()

            return await asyncio.gather(*(one(i) for i in range(20)))

    answers = gateway.loop.run(burst())
    assert [a["id"] for a in answers] == list(range(20))
    assert len({json.dumps(a["result"]) for a in answers}) == 1
    assert calls_to_upstreams(proxies, "eth_getCode") == 1
    assert gateway.gateway.chains[0].cache_counters.coalesced == 19


# --- Redis ----------------------------------------------------------------------------


def test_every_redis_key_has_a_ttl_and_a_namespace(devnet, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    _cluster, proxies, start_gateway = devnet
    gateway = start_gateway(
        [p.url for p in proxies],
        head_poll_interval=60,
        cache={"redis_url": redis_server.url},
        limits={"rate_per_s": 100, "unlimited_networks": []},
    )
    gateway.rpc("eth_chainId")
    gateway.rpc("eth_getBalance", [ADDR, "latest"])
    gateway.rpc("eth_getBlockByNumber", ["0x0", False])
    gateway.rpc("eth_gasPrice")
    client = redis_server.client()
    deadline = time.monotonic() + 5
    while len(client.keys("*")) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)  # the writes happen after the answers
    keys = client.keys("*")
    # four answers, the head served (shared by replicas), and the client's rate bucket
    assert len(keys) == 6
    assert f"rpcgate:v1:{CHAIN_ID}:served-head".encode() in keys
    assert b"rpcgate:v1:rl:ip:127.0.0.1" in keys  # limits span chains: no chain id
    # Answers are kept per life of the chain: its id and its genesis hash.
    life = f"rpcgate:v1:{CHAIN_ID}-{_cluster[0].block_hash(0)[2:18]}:".encode()
    for key in keys:
        if not key.startswith(b"rpcgate:v1:rl:") and not key.endswith(b":served-head"):
            assert key.startswith(life), key
        assert 0 < client.pttl(key) <= 86_400_000


def test_redis_killed_mid_test_costs_no_failed_request(devnet, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    cluster, proxies, start_gateway = devnet
    gateway = start_gateway([p.url for p in proxies], cache={"redis_url": redis_server.url})
    cache = gateway.gateway.cache
    calls = [("eth_getBalance", [DEV_ADDRESSES[i % 2], "latest"]) for i in range(4)] + [
        ("eth_chainId", []),
        ("eth_getBlockByNumber", ["latest", False]),
        ("eth_getCode", [ADDR, "0x1"]),
    ]

    def all_answered() -> None:
        for method, params in calls:
            reply = gateway.rpc(method, params).json()
            assert "error" not in reply, reply

    all_answered()
    redis_server.kill()
    for _ in range(5):
        all_answered()
        cluster.mine_all()
        gateway.sync()  # new keys: every tier is asked again
    assert cache.redis is not None and not cache.redis.up

    revived = RedisServer(port=redis_server.port).start()
    try:
        deadline = time.monotonic() + 5
        while not cache.redis.up and time.monotonic() < deadline:
            time.sleep(0.1)
        assert cache.redis.up  # reconnected in the background
        cluster.mine_all()
        gateway.sync()
        all_answered()
        deadline = time.monotonic() + 5
        while not revived.client().keys("*") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert revived.client().keys("*")  # writing to it again
    finally:
        revived.stop()


def test_hung_redis_slows_a_request_by_its_timeout_at_most(
    devnet, redis_server: RedisServer
) -> None:  # type: ignore[no-untyped-def]
    _, proxies, start_gateway = devnet
    gateway = start_gateway(
        [p.url for p in proxies], cache={"redis_url": redis_server.url, "redis_timeout_s": 0.2}
    )
    gateway.rpc("eth_chainId")
    redis_server.pause()
    try:
        started = time.monotonic()
        for i in range(10):
            reply = gateway.rpc("eth_getBalance", [DEV_ADDRESSES[i % 2], hex(i % 5)]).json()
            assert "error" not in reply
        assert time.monotonic() - started < 2.0  # one timeout, then Redis is skipped
    finally:
        redis_server.resume()


def test_full_redis_refuses_writes_and_requests_go_on(devnet, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    _, proxies, start_gateway = devnet
    client = redis_server.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", "1")
    gateway = start_gateway([p.url for p in proxies], cache={"redis_url": redis_server.url})
    for i in range(6):
        reply = gateway.rpc("eth_getBalance", [DEV_ADDRESSES[i % 2], hex(i % 5)])
        assert "error" not in reply.json()
    time.sleep(0.2)
    assert client.dbsize() == 0
    cache = gateway.gateway.cache
    assert cache.redis is not None and cache.redis.up  # reads still work: not "down"
    assert (
        gateway.rpc("eth_getBalance", [DEV_ADDRESSES[0], "0x0"]).headers["X-Rpcgate-Cache"] == "hit"
    )  # memory still serves


def test_two_gateway_processes_share_entries_through_redis(
    devnet,
    redis_server: RedisServer,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    _, proxies, start_gateway = devnet
    # Head polls (a `latest` header each) only at start: every block fetch counted is a call's.
    gateway_a = start_gateway(
        [p.url for p in proxies], head_poll_interval=60, cache={"redis_url": redis_server.url}
    )
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "cache": {"redis_url": redis_server.url},
        "chains": [
            {
                "name": "devnet",
                "chain_id": CHAIN_ID,
                "head_poll_interval": 60,
                "upstreams": [{"name": f"node{i}", "url": p.url} for i, p in enumerate(proxies)],
            }
        ],
    }
    path = tmp_path / "b.yaml"
    path.write_text(yaml.safe_dump(config))
    process_b = subprocess.Popen(
        [sys.executable, "-m", "rpcgate.cli", "serve", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        url_b = f"http://127.0.0.1:{port}"
        wait_for_http(url_b + "/healthz")
        shared_calls = [
            ("eth_getBalance", [ADDR, "latest"]),
            ("eth_chainId", []),
            ("eth_getBlockByNumber", ["latest", True]),
        ]
        for method, params in shared_calls:
            assert gateway_a.rpc(method, params).headers["X-Rpcgate-Cache"] == "miss"
        time.sleep(0.3)  # A's background writes reach Redis
        before = {m: calls_to_upstreams(proxies, m) for m, _ in shared_calls}
        for method, params in shared_calls:
            _status, headers, body = _post(url_b, method, params)
            assert headers["X-Rpcgate-Cache"] == "hit", (method, body)
            assert headers["X-Rpcgate-Upstream"] == "cache"
            assert body["result"] == gateway_a.rpc(method, params).json()["result"]
        assert {m: calls_to_upstreams(proxies, m) for m, _ in shared_calls} == before
    finally:
        process_b.send_signal(signal.SIGINT)  # no drain grace
        process_b.wait(10)


def _post(url: str, method: str, params: list[Any]) -> tuple[int, dict[str, str], Any]:
    data = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, dict(resp.headers), json.loads(resp.read())


def test_finalized_history_is_cached_right_after_a_start(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    # A chain with history: anvil's finalized block trails its head by 64.
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=80)
    start = lambda: start_gateway(  # noqa: E731
        [p.url for p in proxies], head_poll_interval=60, cache={"redis_url": redis_server.url}
    )
    gateway = start()
    assert gateway.gateway.chains[0].tracker.consensus.finalized.number == 16  # type: ignore[union-attr]
    block_5 = cluster[0].block(5)
    calls = [
        ("eth_getBlockByNumber", ["0x5", False]),
        ("eth_getBlockByHash", [block_5["hash"], False]),
        ("eth_getBalance", [ADDR, "0x5"]),
        ("eth_getBlockReceipts", ["0x5"]),
    ]
    for proxy in proxies:
        proxy.reset_counts()
    for _ in range(30):
        for method, params in calls:
            answer = gateway.rpc(method, params).json()
            assert answer["result"] == cluster[2].rpc(method, params), method
    for method, params in calls:  # besides what verification asks for its anchors
        assert sum(p.calls_of(method, params) for p in proxies) == 1, method
    # The writes reach Redis after the answers: until none is pending (a loaded machine
    # can take longer than a fixed pause).
    redis_tier = gateway.gateway.cache.redis
    assert redis_tier is not None
    deadline = time.monotonic() + 5.0
    while redis_tier._writes and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.05)
    replica = start()  # a fresh process: its memory is empty, Redis is warm
    for proxy in proxies:
        proxy.reset_counts()
    for method, params in calls:
        assert replica.rpc(method, params).headers["X-Rpcgate-Cache"] == "hit", method
    assert sum(p.request_count for p in proxies) == 0
