"""Two gateway processes over Redis Sentinel and over a Redis Cluster (real servers:
`redis-server`, and `redis-server --sentinel`), sharing what replicas share: the cache, the
served head, rate limits and filters. Under load, the Sentinel primary is killed: no client
call fails, `eth_blockNumber` never goes back across the two gateways, and after the
failover what one gateway cached is a Redis hit on the other."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.anvil import AnvilCluster
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.redis_server import ClusterSet, RedisServer, SentinelSet
from tests.harness.tools import admin_drills, free_port, rpcgate_command, wait_for_http

CHAIN_ID = 31337
CLIENT_KEY = "topology-test-key-0123456789"

Start = Callable[..., str]


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    found = SentinelSet().start()
    yield found
    found.stop()


@pytest.fixture
def cluster_set() -> Iterator[ClusterSet]:
    found = ClusterSet().start()
    yield found
    found.stop()


@pytest.fixture
def gateway_process(tmp_path: Path) -> Iterator[Start]:
    """`rpcgate serve` in a process of its own over the given upstreams and Redis URL."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(urls: list[str], redis_url: str, **sections: Any) -> str:
        port = free_port()
        config: dict[str, Any] = {
            "listen": f"127.0.0.1:{port}",
            "log_level": "warning",
            "cache": {"redis_url": redis_url, "redis_timeout_s": 0.5},
            "chains": [
                {
                    "name": "devnet",
                    "chain_id": CHAIN_ID,
                    "head_poll_interval": 0.2,
                    "upstreams": [{"name": f"node{i}", "url": u} for i, u in enumerate(urls)],
                }
            ],
            **sections,
        }
        path = tmp_path / f"gateway-{port}.yaml"
        path.write_text(yaml.safe_dump(config))
        processes.append(
            subprocess.Popen(
                [*rpcgate_command(), "serve", "--config", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/healthz")
        return url

    yield start
    for process in processes:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def call(
    url: str, method: str, params: list[Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], dict[str, str], int]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(
        url,
        data=body.encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return json.loads(reply.read()), dict(reply.headers), reply.status
    except urllib.error.HTTPError as error:
        return json.loads(error.read() or b"{}"), dict(error.headers), error.code


class Load(threading.Thread):
    """Calls both gateways in turn, as fast as they answer: every answer noted in order."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.heads: list[tuple[float, int, int]] = []  # (when, gateway, eth_blockNumber)
        self.failures: list[Any] = []
        self.calls = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        turn = 0
        while not self.stop_event.is_set():
            index = turn % len(self.urls)
            turn += 1
            for method, params in (
                ("eth_blockNumber", []),
                ("eth_getBlockByNumber", ["0x1", False]),
                ("eth_chainId", []),
            ):
                try:
                    reply, _, status = call(self.urls[index], method, params)
                except OSError as error:
                    self.failures.append((method, repr(error)))
                    continue
                self.calls += 1
                if status != 200 or "result" not in reply:
                    self.failures.append((method, status, reply))
                elif method == "eth_blockNumber":
                    self.heads.append((time.monotonic(), index, int(reply["result"], 16)))
            time.sleep(0.01)


class Miner(threading.Thread):
    def __init__(self, cluster: AnvilCluster, every_s: float) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.every_s = every_s
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.every_s):
            self.cluster.mine_all(1)


def test_two_gateways_on_sentinel_ride_out_a_primary_failover(
    anvil_cluster: AnvilClusterFactory, sentinel_set: SentinelSet, gateway_process: Start
) -> None:
    cluster = anvil_cluster(2, chain_id=CHAIN_ID)
    cluster.mine_all(3)
    gateways = [gateway_process(cluster.urls, sentinel_set.url) for _ in range(2)]
    load, miner = Load(gateways), Miner(cluster, 0.7)
    load.start()
    miner.start()
    try:
        time.sleep(3)  # shared, before
        before = load.calls
        killed_at = time.monotonic()
        sentinel_set.primary.kill()
        failover_s = sentinel_set.wait_for_failover()
        time.sleep(4)  # shared again, after
    finally:
        miner.stop_event.set()
        load.stop_event.set()
        miner.join()
        load.join()
    assert before > 20 and load.calls > before + 20, (before, load.calls)
    assert load.failures == [], f"{len(load.failures)} calls failed: {load.failures[:3]}"
    highest, back = -1, []
    for at, gateway, number in load.heads:
        if number < highest:
            back.append((round(at - killed_at, 2), gateway, number, highest))
        highest = max(highest, number)
    assert back == [], f"eth_blockNumber went back across the gateways (s after the kill): {back}"
    assert failover_s < 15

    # After the failover, what one gateway caches is a Redis hit on the other.
    first, headers, _ = call(gateways[0], "eth_getBlockByNumber", ["0x2", True])
    assert headers["X-Rpcgate-Cache"] == "miss", headers
    deadline = time.monotonic() + 5
    while True:  # the new primary is written to once the gateway has found it
        second, headers, _ = call(gateways[1], "eth_getBlockByNumber", ["0x2", True])
        if headers["X-Rpcgate-Cache"] == "hit" or time.monotonic() > deadline:
            break
        call(gateways[0], "eth_getBlockByNumber", ["0x2", True], {"Cache-Control": "no-cache"})
        time.sleep(0.2)
    assert headers["X-Rpcgate-Cache"] == "hit" and second == first
    # The served head the replicas agreed on is on the new primary.
    stored = sentinel_set.replica.client().get(f"rpcgate:v1:{CHAIN_ID}:served-head")
    assert stored is not None and int(stored.split(b":")[0]) >= 3


def test_two_gateways_on_a_cluster_share_cache_rate_limits_and_filters(
    anvil_cluster: AnvilClusterFactory, cluster_set: ClusterSet, gateway_process: Start
) -> None:
    cluster = anvil_cluster(2, chain_id=CHAIN_ID)
    cluster.mine_all(3)
    keyed = {
        "auth": {"keys": [{"name": "bot", "key": CLIENT_KEY, "rate_per_s": 0.01, "rate_burst": 6}]}
    }
    gateways = [gateway_process(cluster.urls, cluster_set.url, **keyed) for _ in range(2)]
    header = {"X-Api-Key": CLIENT_KEY}

    # The cache: a block fetched through one gateway is a hit on the other.
    first, headers, _ = call(gateways[0], "eth_getBlockByNumber", ["0x2", True], header)
    assert headers["X-Rpcgate-Cache"] == "miss"
    second, headers, _ = call(gateways[1], "eth_getBlockByNumber", ["0x2", True], header)
    assert headers["X-Rpcgate-Cache"] == "hit" and second == first

    # A filter made through one gateway is polled through the other.
    made, _, _ = call(gateways[0], "eth_newBlockFilter", [], header)
    cluster.mine_all(1)
    time.sleep(0.6)  # a head poll or two
    changes, _, status = call(gateways[1], "eth_getFilterChanges", [made["result"]], header)
    assert status == 200 and "result" in changes, changes
    assert changes["result"] == [cluster[0].block_hash(4)]

    # Rate limits: the key's burst of 6 is spent across both gateways together (the 4
    # calls above, and 2 more), so the next call through either is refused.
    for url in gateways:
        reply, _, status = call(url, "eth_chainId", [], header)
        assert status == 200, reply
    refused, _, status = call(gateways[0], "eth_chainId", [], header)
    assert status == 429, refused
    refused, _, status = call(gateways[1], "eth_chainId", [], header)
    assert status == 429, refused

    # Every key rpcgate wrote lives on the cluster, spread over its primaries.
    spread = [len(node.client().keys("rpcgate:*")) for node in cluster_set.nodes]
    assert sum(spread) >= 4 and sum(1 for n in spread if n) >= 2, spread


ADMIN_TOKEN = "replicas-admin-token-0123456789"


def _drills(url: str, method: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    return admin_drills(url, ADMIN_TOKEN, method, body)


def _drill_ids(url: str) -> list[str]:
    status, listed = _drills(url, "GET")
    assert status == 200, listed
    return [d["id"] for d in listed["drills"]]


def test_a_drill_started_through_one_replica_applies_to_every_replica(
    anvil_cluster: AnvilClusterFactory, redis_server: RedisServer, gateway_process: Start
) -> None:
    """Through Redis: started on one, the drill runs on the other by the same id; a replica
    started later finds it; ended through any, it ends everywhere."""
    cluster = anvil_cluster(2, chain_id=CHAIN_ID)
    cluster.mine_all(2)
    admin = {"admin": {"token": ADMIN_TOKEN}}
    first, second = (gateway_process(cluster.urls, redis_server.url, **admin) for _ in range(2))
    status, started = _drills(first, "POST", {"upstream": "node0", "seconds": 60, "by": "ops"})
    assert status == 201 and started["workers"] == 2, started
    deadline = time.monotonic() + 5
    while _drill_ids(second) != [started["id"]] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _drill_ids(second) == [started["id"]]
    later = gateway_process(cluster.urls, redis_server.url, **admin)
    assert _drill_ids(later) == [started["id"]]  # kept in Redis until it ends
    status, ended = _drills(second, "DELETE", {"id": started["id"]})
    assert status == 200, ended
    deadline = time.monotonic() + 5
    while any(_drill_ids(url) for url in (first, later)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [_drill_ids(url) for url in (first, second, later)] == [[], [], []]
