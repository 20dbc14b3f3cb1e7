"""Capacity: what one core of rpcgate serves on each path, what the dApp mix costs Redis and
the upstreams, and from those the replicas, cores and Redis shards a load needs
(docs/capacity.md is written from its output).

    .venv/bin/python bench/capacity.py [--seconds 5] [--rounds 3] [--out bench/results]

Part 1, calls per core-second: one gateway process (pinned to core 1, wrk on core 0, where
there are two cores) on each path: cache hits (a finalized eth_getBalance), pass-through
(eth_getBalance at `pending`), batches of 50 uncached calls, and the dApp mix (three
upstreams 30 ms away, a block every 3 s). The figure is client calls per CPU-second of the
server (its utime + stime from /proc), the median of `--rounds`: what a core does, whatever
else the machine is doing, where requests per wall second move with every neighbour.
Part 2, what the mix costs: two gateway processes on one throwaway redis-server, as two
replicas behind a load balancer, with rate limits on for every client (loopback is not
exempt, and the rate is one no load reaches, so each call runs the limiter as a remote
client's would). The mix is sent to both at once. Counted per 1,000 client calls: Redis
commands by command (INFO commandstats), redis-server CPU-seconds, upstream calls
(status.json), gateway CPU-seconds; and, with no load, each replica's upstream calls per
second (head polling).
Part 3, the model (`plan`): for 10,000 and 100,000 calls per second, with its assumptions.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import yaml  # noqa: E402
from cache_bench import (  # noqa: E402
    cpu_seconds,
    dapp_mix,
    prepare_chain,
)
from suite import CORES, Servers, path_bodies, wrk  # noqa: E402

from tests.harness.anvil import AnvilCluster  # noqa: E402
from tests.harness.faultproxy import Fault, FaultProxy  # noqa: E402
from tests.harness.loop import BackgroundLoop  # noqa: E402
from tests.harness.redis_server import RedisServer  # noqa: E402
from tests.harness.tools import free_port  # noqa: E402

CHAIN_ID = 31337
UPSTREAM_LATENCY_S = 0.030
BLOCK_EVERY_S = 3.0
# Every client limited (loopback included) at a rate no load here reaches: the limiter runs
# on every call, as it does for remote clients, and refuses none.
LIMITS_ON = {
    "rate_per_s": 1_000_000,
    "rate_burst": 1_000_000,
    "max_concurrent_per_client": 0,
    "unlimited_networks": [],
}
NO_LIMITS = {"rate_per_s": 0, "max_concurrent_per_client": 0}


# -- the model: plain arithmetic over the measured figures --------------------------------


@dataclass(frozen=True)
class Costs:
    """What the measurements say one client call of the mix costs."""

    calls_per_core_s: float  # client calls one gateway core serves per CPU-second
    redis_commands_per_1000: float  # round trips
    redis_cpu_s_per_1000: float  # redis-server CPU-seconds per 1,000 client calls
    upstream_calls_per_1000: float  # caused by client calls (misses, broadcasts)
    polls_per_process_s: (
        float  # upstream calls per second per gateway process, no load (3 upstreams)
    )


@dataclass(frozen=True)
class Assumptions:
    utilisation: float = 0.6  # of each gateway core, leaving room for bursts and a lost zone
    cores_per_replica: int = 2  # `--workers 2` per pod
    min_replicas: int = 2  # never one
    redis_core_budget: float = 0.5  # of one core per Redis primary (it runs commands on one)
    upstreams: int = 3  # upstreams per chain, each polled by every replica


@dataclass(frozen=True)
class Plan:
    calls_per_s: float
    gateway_cores: int
    replicas: int
    redis_commands_per_s: float
    redis_cores: float
    redis_shards: int
    upstream_calls_per_s: float


def plan(calls_per_s: float, costs: Costs, assume: Assumptions = Assumptions()) -> Plan:
    """The gateway cores, replicas and Redis primaries `calls_per_s` of the mix needs, and
    the load it puts on Redis and on the upstreams (all of them together)."""
    cores = math.ceil(calls_per_s / (costs.calls_per_core_s * assume.utilisation))
    replicas = max(assume.min_replicas, math.ceil(cores / assume.cores_per_replica))
    redis_cores = calls_per_s * costs.redis_cpu_s_per_1000 / 1000
    shards = max(1, math.ceil(redis_cores / assume.redis_core_budget))
    upstream = (
        calls_per_s * costs.upstream_calls_per_1000 / 1000
        + replicas * assume.cores_per_replica * costs.polls_per_process_s * assume.upstreams / 3
    )
    return Plan(
        calls_per_s,
        cores,
        replicas,
        calls_per_s * costs.redis_commands_per_1000 / 1000,
        redis_cores,
        shards,
        upstream,
    )


# -- the measurements -----------------------------------------------------------------------


def gateway(
    servers: Servers,
    upstreams: list[str],
    pinned: bool,
    redis_url: str | None = None,
    limits: dict[str, Any] | None = None,
) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    config: dict[str, Any] = {
        "listen": f"127.0.0.1:{port}",
        "log_level": "warning",
        "limits": limits or NO_LIMITS,
        "chains": [
            {
                "name": "devnet",
                "chain_id": CHAIN_ID,
                "upstreams": [{"name": f"node{i}", "url": u} for i, u in enumerate(upstreams)],
            }
        ],
    }
    if redis_url:
        config["cache"] = {"redis_url": redis_url}
    path = servers.workdir / f"rpcgate-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "rpcgate.cli", "serve", "--config", str(path)]
    return url, servers.spawn(command, pinned, url + "/healthz")


def per_core_second(
    url: str, pid: int, bodies: list[Any], items: int, args: argparse.Namespace, pinned: bool
) -> tuple[float, float, int]:
    """Client calls per CPU-second of process `pid`, requests per second, errors: one round."""
    before = cpu_seconds(pid)
    result = wrk(url + "/", bodies, args.seconds, args.connections, pinned)
    used = cpu_seconds(pid) - before
    return result["requests"] * items / used, result["rps"], result["errors"]


class Mining:
    """A block every `every_s` on every node while inside."""

    def __init__(self, cluster: AnvilCluster, every_s: float) -> None:
        self.cluster, self.every_s = cluster, every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(self.every_s):
            self.cluster.mine_all()

    def __enter__(self) -> Mining:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def commandstats(server: RedisServer) -> dict[str, int]:
    """Calls per command since the server started (INFO commandstats)."""
    info = server.client().info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


def redis_pid(server: RedisServer) -> int:
    return int(server.client().info("server")["process_id"])


def part1(
    servers: Servers, cluster: AnvilCluster, proxies: list[str], bodies: list[Any], args: Any
) -> dict[str, list[float]]:
    """Calls per core-second on each path, one gateway process, no Redis."""
    pinned = CORES >= 2
    node = cluster[0].url
    hit, passthrough, batch = path_bodies()
    figures: dict[str, list[float]] = {}
    url, process = gateway(servers, [node], pinned)
    wrk(url + "/", [hit], 1, 1, pinned)  # stored; the rest are hits
    paths: list[tuple[str, list[Any], int]] = [
        ("cache hit", [hit], 1),
        ("pass-through", [passthrough], 1),
        ("batch of 50 (per item)", [batch], 50),
    ]
    for _ in range(args.rounds):
        for name, load, items in paths:
            calls, rps, errors = per_core_second(url, process.pid, load, items, args, pinned)
            figures.setdefault(name, []).append(calls)
            print(f"  {name:<24} {calls:>8.0f} calls/core-s  ({rps:.0f} req/s, {errors} errors)")
    servers.stop_all()
    url, process = gateway(servers, proxies, pinned)
    wrk(url + "/", bodies, 2, args.connections, pinned)  # warm
    with Mining(cluster, BLOCK_EVERY_S):
        for _ in range(args.rounds):
            calls, rps, errors = per_core_second(url, process.pid, bodies, 1, args, pinned)
            figures.setdefault("dApp mix", []).append(calls)
            print(
                f"  {'dApp mix':<24} {calls:>8.0f} calls/core-s  ({rps:.0f} req/s, {errors} errors)"
            )
    servers.stop_all()
    return figures


# The rate limiter's script runs these inside its one EVALSHA (edge/rate_limits.py):
# INFO commandstats counts them too, but they are no round trip of their own.
LIMITER_SCRIPT_COMMANDS = ("time", "hmget", "hset", "pexpire")


def part2(
    servers: Servers,
    cluster: AnvilCluster,
    proxies: list[FaultProxy],
    bodies: list[Any],
    args: Any,
    limits: dict[str, Any],
) -> dict[str, Any]:
    """Two replicas on one Redis, the mix over both: what it costs per 1,000 client calls."""
    redis = RedisServer().start()
    upstream_count = lambda: sum(p.request_count for p in proxies)  # noqa: E731
    try:
        urls = [
            gateway(servers, [p.url for p in proxies], False, redis.url, limits)[0]
            for _ in range(2)
        ]
        pids = [p.pid for p in servers.processes]
        for url in urls:
            wrk(url + "/", bodies, 2, args.connections // 2, False)  # warm
        # With no load: what head tracking alone asks of the upstreams.
        with Mining(cluster, BLOCK_EVERY_S):
            idle_before = upstream_count()
            time.sleep(args.idle_seconds)
            polls_per_process_s = (upstream_count() - idle_before) / args.idle_seconds / len(urls)
        results: list[dict[str, Any]] = []
        stats_before = commandstats(redis)
        redis_cpu_before = cpu_seconds(redis_pid(redis))
        up_before = upstream_count()
        cpu_before = sum(cpu_seconds(pid) for pid in pids)
        seconds = args.seconds * 2

        def drive(url: str) -> None:
            results.append(wrk(url + "/", bodies, seconds, args.connections // 2, False))

        with Mining(cluster, BLOCK_EVERY_S):
            threads = [threading.Thread(target=drive, args=(url,)) for url in urls]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        calls = sum(r["requests"] for r in results)
        gateway_cpu = sum(cpu_seconds(pid) for pid in pids) - cpu_before
        # What head polling alone made meanwhile is not the calls' doing.
        upstream_calls = upstream_count() - up_before - polls_per_process_s * len(urls) * seconds
        redis_cpu = cpu_seconds(redis_pid(redis)) - redis_cpu_before
        stats = commandstats(redis)
        by_command = {
            name: stats[name] - stats_before.get(name, 0)
            for name in stats
            if stats[name] - stats_before.get(name, 0) > 0 and name != "info"
        }
        inner = sum(by_command.get(name, 0) for name in LIMITER_SCRIPT_COMMANDS)
        return {
            "calls": calls,
            "rps": calls / seconds,
            "errors": sum(r["errors"] for r in results),
            "calls_per_core_s": calls / gateway_cpu,
            "redis_per_1000": {k: 1000 * v / calls for k, v in sorted(by_command.items())},
            "redis_round_trips_per_1000": 1000 * (sum(by_command.values()) - inner) / calls,
            "redis_cpu_s_per_1000": 1000 * redis_cpu / calls,
            "upstream_per_1000": 1000 * max(0.0, upstream_calls) / calls,
            "polls_per_process_s": polls_per_process_s,
        }
    finally:
        servers.stop_all()
        redis.stop()


def costs_of(two: dict[str, Any]) -> Costs:
    return Costs(
        calls_per_core_s=two["calls_per_core_s"],
        redis_commands_per_1000=two["redis_round_trips_per_1000"],
        redis_cpu_s_per_1000=two["redis_cpu_s_per_1000"],
        upstream_calls_per_1000=two["upstream_per_1000"],
        polls_per_process_s=two["polls_per_process_s"],
    )


def report(one: dict[str, list[float]], twos: dict[str, dict[str, Any]], args: Any) -> str:
    lines = [
        f"# Capacity figures ({time.strftime('%Y-%m-%d')}, {CORES} cores, "
        f"`bench/capacity.py --seconds {args.seconds:g} --rounds {args.rounds}`)",
        "",
        "## Part 1: client calls per core-second, one process, no Redis",
        "",
        "| path | median | rounds |",
        "|---|---|---|",
    ]
    for name, values in one.items():
        rounds = ", ".join(f"{v:,.0f}" for v in values)
        lines.append(f"| {name} | {statistics.median(values):,.0f} | {rounds} |")
    for variant, two in twos.items():
        lines += [
            "",
            f"## Part 2: the dApp mix on two replicas sharing one Redis, {variant}",
            "",
            f"- client calls: {two['calls']:,} in {args.seconds * 2:g} s ({two['rps']:,.0f}/s), "
            f"errors {two['errors']}",
            f"- client calls per gateway core-second: {two['calls_per_core_s']:,.0f}",
            "- Redis round trips per 1,000 client calls: "
            f"{two['redis_round_trips_per_1000']:,.1f}; "
            "commands run (INFO commandstats, a script's own included): "
            + ", ".join(f"{k} {v:,.1f}" for k, v in two["redis_per_1000"].items()),
            "- redis-server CPU per 1,000 client calls: "
            f"{two['redis_cpu_s_per_1000'] * 1000:.1f} ms",
            f"- upstream requests per 1,000 client calls: {two['upstream_per_1000']:.1f} "
            f"(head polling apart: {two['polls_per_process_s']:.1f} upstream requests/s per "
            "gateway process over 3 upstreams, a block every 3 s)",
        ]
    for variant, two in twos.items():
        lines += [
            "",
            f"## Part 3: the model, {variant}",
            "",
            "| calls/s | gateway cores | replicas (2 cores) | Redis round trips/s | "
            "Redis cores | Redis primaries | upstream requests/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for target in (10_000, 100_000):
            p = plan(target, costs_of(two))
            lines.append(
                f"| {target:,} | {p.gateway_cores} | {p.replicas} | "
                f"{p.redis_commands_per_s:,.0f} | {p.redis_cores:.2f} | {p.redis_shards} | "
                f"{p.upstream_calls_per_s:,.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args()
    loop = BackgroundLoop()
    cluster = AnvilCluster(3, chain_id=CHAIN_ID).start()
    workdir = Path(tempfile.mkdtemp(prefix="rpcgate-capacity-"))
    servers = Servers(workdir)
    proxies: list[FaultProxy] = []
    try:
        cluster.mine_all(3)
        contracts, receipts = prepare_chain(cluster)
        cluster.mine_all(70)  # the prepared blocks are far below the head: finalized
        proxies = [loop.run(FaultProxy(u).start()) for u in cluster.urls]
        for proxy in proxies:
            proxy.set_fault(Fault.LATENCY, delay=UPSTREAM_LATENCY_S)
        bodies = dapp_mix(contracts, receipts)
        print("== part 1: calls per core-second", flush=True)
        one = part1(servers, cluster, [p.url for p in proxies], bodies, args)
        twos = {}
        for variant, limits in (("limits on", LIMITS_ON), ("limits off", NO_LIMITS)):
            print(f"== part 2: two replicas on one Redis, {variant}", flush=True)
            twos[variant] = part2(servers, cluster, proxies, bodies, args, limits)
        text = report(one, twos, args)
        print(text)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "capacity.md").write_text(text)
        (args.out / "capacity.json").write_text(json.dumps({"part1": one, "part2": twos}, indent=1))
        print(f"written: {args.out / 'capacity.md'}")
    finally:
        servers.stop_all()
        for proxy in proxies:
            loop.run(proxy.stop())
        cluster.stop()
        loop.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
