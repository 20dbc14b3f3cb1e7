"""Every chain of the table at zero config, a chain by name over real nodes, chains polled
only while used, finality at a depth, and a fast chain (Arbitrum's 250 ms blocks) behind its
own defaults."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import threading
import time
from typing import Any

import aiohttp
from aiohttp import web

from rpcgate.config.chains import BY_NAME, CHAINS
from rpcgate.config.settings import load_config
from rpcgate.edge.http_server import build_app
from rpcgate.rpc.jsonrpc import NO_UPSTREAM
from tests.conftest import ConfigFactory, RunningGateway
from tests.harness.anvil import AnvilCluster
from tests.harness.fixtures import AnvilClusterFactory, FaultProxyFactory

# --- zero config, offline ------------------------------------------------------------------------


async def test_zero_config_lists_every_chain_and_polls_only_the_one_called() -> None:
    """No network: every name lookup fails (and is counted). `GET /` lists every chain of the
    table, none active; a call to /base fails with -32052 naming Base's endpoints, and only
    Base's hosts were looked up: no other chain was polled."""
    loop = asyncio.get_running_loop()
    looked_up: list[str] = []

    async def offline(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(str(host))
        raise socket.gaierror(socket.EAI_NONAME, "offline (test)")

    loop.getaddrinfo = offline  # type: ignore[method-assign]
    config = dataclasses.replace(load_config(None, env={}), listen="127.0.0.1:0")
    runner = web.AppRunner(build_app(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/") as reply:
                listed = (await reply.json())["chains"]
            assert [(c["name"], c["chain_id"]) for c in listed] == [
                (c.name, c.chain_id) for c in CHAINS
            ]
            assert not any(c["active"] for c in listed)
            assert looked_up == []  # nothing contacted before a call

            call = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
            async with session.post(url + "/base", json=call) as reply:
                error = (await reply.json())["error"]
            async with session.get(url + "/") as reply:
                active = {c["name"] for c in (await reply.json())["chains"] if c["active"]}
            async with session.post(url + "/8453", json=call) as reply:
                again = (await reply.json())["error"]
            async with session.get(url + "/status.json") as reply:
                status = {c["name"]: c for c in (await reply.json())["chains"]}
    finally:
        await runner.cleanup()
    base_hosts = {u.name for u in config.chains[1].upstreams}
    assert error["code"] == NO_UPSTREAM
    assert all(host in error["message"] for host in base_hosts), error["message"]
    assert "eth.drpc.org" not in error["message"] and "base.drpc.org" in error["message"]
    assert again["code"] == NO_UPSTREAM
    assert active == {"base"}
    assert status["base"]["active"] and not status["ethereum"]["active"]
    assert looked_up, "the call to /base looked up Base's endpoints"
    assert set(looked_up) <= base_hosts, set(looked_up) - base_hosts


# --- a chain by name over real nodes --------------------------------------------------------------


def test_a_chain_by_name_over_three_nodes_serves_at_its_name_alias_and_id_with_its_defaults(
    anvil_cluster: AnvilClusterFactory, start_config: ConfigFactory
) -> None:
    cluster = anvil_cluster(3, chain_id=8453)
    cluster.mine_all(3)
    gateway = start_config(
        {"chains": [{"name": "base", "upstreams": [{"url": u} for u in cluster.urls]}]}
    )
    for path in ("/base", "/8453", "/base-mainnet"):
        assert gateway.rpc("eth_chainId", path=path).json()["result"] == hex(8453)
        assert int(gateway.rpc("eth_blockNumber", path=path).json()["result"], 16) == 3
    chain = gateway.gateway.chains[0].config
    row = BY_NAME["base"]
    assert (chain.block_time_s, chain.head_poll_interval, chain.max_lag_blocks) == (
        row.block_time_s,
        0.25,
        10,
    )
    assert gateway.rpc("eth_blockNumber", path="/ethereum").json()["error"]["code"] == -32053


# --- on demand: polled only while used ------------------------------------------------------------


def test_an_on_demand_chain_is_polled_from_its_first_call_until_it_is_idle(
    anvil_cluster: AnvilClusterFactory, fault_proxy: FaultProxyFactory, start_config: ConfigFactory
) -> None:
    cluster = anvil_cluster(2, chain_id=31337)
    cluster.mine_all(2)
    proxies = [fault_proxy(url) for url in cluster.urls]
    gateway = start_config(
        {
            "chains": [
                {
                    "name": "devnet",
                    "chain_id": 31337,
                    "on_demand": True,
                    "idle_after_s": 1.0,
                    "head_poll_interval": 0.1,
                    "upstreams": [{"url": p.url} for p in proxies],
                }
            ]
        }
    )
    runtime = gateway.gateway.chains[0]
    time.sleep(0.5)
    assert sum(p.request_count for p in proxies) == 0  # not polled before it is used
    assert not runtime.active
    assert gateway.result("eth_blockNumber") == "0x2"  # waits for its first head
    assert runtime.active
    polled = sum(p.request_count for p in proxies)
    time.sleep(0.6)
    assert sum(p.request_count for p in proxies) > polled  # polled while in use
    deadline = time.monotonic() + 5
    while runtime.active and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not runtime.active, "idle for idle_after_s: its polling stops"
    time.sleep(0.3)
    quiet = sum(p.request_count for p in proxies)
    time.sleep(0.6)
    assert sum(p.request_count for p in proxies) == quiet  # nothing polled while idle
    cluster.mine_all(1)
    assert gateway.result("eth_blockNumber") == "0x3"  # a call starts it again, fresh head


def test_readiness_does_not_wait_for_an_on_demand_chain_nobody_uses(
    start_config: ConfigFactory,
) -> None:
    gateway = start_config(
        {
            "chains": [
                {
                    "name": "unused",
                    "chain_id": 31337,
                    "on_demand": True,
                    "upstreams": [{"url": "http://127.0.0.1:9"}],
                }
            ]
        }
    )
    reply = gateway.loop.run(_get(gateway.url + "/readyz"))
    assert reply == 200


async def _get(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url) as reply:
        return reply.status


# --- finality at a depth --------------------------------------------------------------------------


def test_a_chain_without_the_tags_takes_a_block_at_its_depth_as_final(
    anvil_cluster: AnvilClusterFactory, start_config: ConfigFactory
) -> None:
    cluster = anvil_cluster(2, chain_id=31337)
    cluster.mine_all(10)
    gateway = start_config(
        {
            "chains": [
                {
                    "name": "devnet",
                    "chain_id": 31337,
                    "finality_depth": 4,
                    "upstreams": [{"url": u} for u in cluster.urls],
                }
            ]
        }
    )
    consensus = gateway.gateway.chains[0].tracker.consensus
    assert consensus.head is not None and consensus.head.number == 10
    assert consensus.finalized is not None and consensus.finalized.number == 6
    assert consensus.safe is not None and consensus.safe.number == 6
    final = gateway.result("eth_getBlockByNumber", ["finalized", False])
    assert int(final["number"], 16) == 6
    assert final["hash"] == cluster[0].block_hash(6)


# --- a fast chain: Arbitrum One's 250 ms blocks behind its defaults -------------------------------

FAST_CHAIN_S = float(os.environ.get("RPCGATE_FAST_CHAIN_S", "60"))


class Miner(threading.Thread):
    """Mines one block on every node of the cluster each `interval_s`, in step (one
    explicit timestamp per height), and notes when each height was mined on all nodes."""

    def __init__(self, cluster: AnvilCluster, interval_s: float) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.interval_s = interval_s
        self.mined_at: dict[int, float] = {}
        self.stop_event = threading.Event()

    def run(self) -> None:
        height = self.cluster[0].block_number()
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            height += 1
            for node in self.cluster:
                node.mine(self.cluster.canonical_timestamp(height))
            self.mined_at[height] = time.monotonic()
            next_at += self.interval_s
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))


def test_arbitrum_blocks_every_250_ms_behind_its_defaults_for_a_minute(
    anvil_cluster: AnvilClusterFactory, start_config: ConfigFactory
) -> None:
    cluster = anvil_cluster(3, chain_id=42161)
    cluster.mine_all(1)
    gateway = start_config(
        {"chains": [{"name": "arbitrum", "upstreams": [{"url": u} for u in cluster.urls]}]}
    )
    miner = Miner(cluster, 0.25)
    miner.start()
    served: list[tuple[float, int]] = []  # (when asked, eth_blockNumber)
    stale_latest: list[tuple[int, int]] = []
    bad_states: list[dict[str, str]] = []
    try:
        started = time.monotonic()
        next_status = started
        while time.monotonic() - started < FAST_CHAIN_S:
            asked = time.monotonic()
            number = int(gateway.result("eth_blockNumber"), 16)
            served.append((asked, number))
            latest = gateway.result("eth_getBlockByNumber", ["latest", False])
            if int(latest["number"], 16) < number:
                stale_latest.append((int(latest["number"], 16), number))
            if asked >= next_status:
                next_status = asked + 0.25
                chain = _status(gateway)
                states = {u["name"]: u["state"] for u in chain["upstreams"]}
                if set(states.values()) != {"ok"}:
                    bad_states.append(states)
            time.sleep(0.02)
    finally:
        miner.stop_event.set()
        miner.join()
    assert len(miner.mined_at) >= FAST_CHAIN_S * 3  # about four blocks a second were mined
    numbers = [n for _, n in served]
    assert numbers == sorted(numbers), "eth_blockNumber decreased"
    behind = [
        (number, max(h for h, at in miner.mined_at.items() if at <= asked - 1.0))
        for asked, number in served
        if any(at <= asked - 1.0 for at in miner.mined_at.values())
    ]
    late = [(number, mined) for number, mined in behind if number < mined]
    assert late == [], f"{len(late)} answers over a second behind the nodes, e.g. {late[:5]}"
    assert stale_latest == [], (
        f"a cached latest block older than the served head: {stale_latest[:5]}"
    )
    assert bad_states == [], f"upstreams not ok while all are in step: {bad_states[:3]}"


def _status(gateway: RunningGateway) -> dict[str, Any]:
    import json

    async def fetch() -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.get(gateway.url + "/status.json") as reply,
        ):
            return json.loads(await reply.read())

    status = gateway.loop.run(fetch())
    return status["chains"][0]
