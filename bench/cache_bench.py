"""Cache benchmark: a realistic dApp mix against upstreams that add 30 ms, and cache-hit
throughput against a bare aiohttp server answering the same JSON from a dict.

    .venv/bin/python bench/cache_bench.py [--seconds 10] [--connections 32]

Needs anvil (./scripts/test installs it) and, for the load, `wrk` (Debian: apt-get install
wrk); without wrk a Python load generator is used (it saturates before the server does,
so ratios read closer to 1 than they are).

Part 1 replays the mix while a block is mined every 3 s (each new head makes every
`latest` call a new key), and prints the share of client calls answered without an
upstream call, req/s, p50 and p99. Part 2 warms the cache, then measures rpcgate on
cache hits and the bare server on the same answers, alternating rounds, and prints the
medians and their ratio. Targets (issue "Caching hot calls"): share >= 90 %, ratio >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402
from web3 import Web3  # noqa: E402

from tests.harness.anvil import (  # noqa: E402
    DEV_ADDRESSES,
    DEV_KEYS,
    AnvilCluster,
    sign_transaction,
)
from tests.harness.contract import INIT_CODE, create_address  # noqa: E402
from tests.harness.faultproxy import Fault, FaultProxy  # noqa: E402
from tests.harness.loop import BackgroundLoop  # noqa: E402
from tests.harness.tools import free_port, wait_for_http  # noqa: E402

CHAIN_ID = 31337
UPSTREAM_LATENCY_S = 0.030
BLOCK_EVERY_S = 3.0
# On a machine with two or more cores, the server under test and the load generator get a
# core each, so the scheduler moving them around adds no noise to the comparison.
_PIN = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
SERVER_CPU = ["taskset", "-c", "1"] if _PIN else []
CLIENT_CPU = ["taskset", "-c", "0"] if _PIN else []
HOT_ACCOUNTS = [Web3.to_checksum_address(f"0x{i:040x}") for i in range(0xA11CE0, 0xA11CE5)]


def post(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def rpc(url: str, method: str, params: list[Any]) -> Any:
    reply = post(url, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    if "error" in reply:
        raise RuntimeError(f"{method}: {reply['error']}")
    return reply["result"]


def prepare_chain(cluster: AnvilCluster) -> tuple[list[str], list[str]]:
    """Two deployed contracts and five transfers: hot contracts, hot receipts."""
    raws = [
        sign_transaction(chain_id=CHAIN_ID, nonce=n, data=INIT_CODE, key=DEV_KEYS[0])
        for n in range(2)
    ]
    raws += [
        sign_transaction(
            chain_id=CHAIN_ID,
            nonce=2 + i,
            to=HOT_ACCOUNTS[i],
            value=10**15 * (i + 1),
            key=DEV_KEYS[0],
            gas=21000,
        )
        for i in range(5)
    ]
    hashes = [cluster.broadcast_raw_transaction(raw) for raw in raws]
    cluster.mine_all(2)
    contracts = [create_address(DEV_ADDRESSES[0], n) for n in range(2)]
    return contracts, hashes[2:]


def dapp_mix(contracts: list[str], receipts: list[str]) -> list[dict[str, Any]]:
    """The calls of the issue's first paragraph, weighted by how often dApps send them."""
    weighted: list[tuple[int, str, list[Any]]] = [
        (10, "eth_chainId", []),
        (20, "eth_blockNumber", []),
        (10, "eth_getBlockByNumber", ["latest", False]),
        (5, "eth_gasPrice", []),
    ]
    weighted += [(4, "eth_getBalance", [a, "latest"]) for a in HOT_ACCOUNTS]
    weighted += [(2, "eth_getTransactionReceipt", [h]) for h in receipts]
    weighted += [
        (
            25 // (len(contracts) * 5) or 1,
            "eth_call",
            [{"to": c, "data": "0x70a08231" + a[2:].rjust(64, "0")}, "latest"],
        )
        for c in contracts
        for a in HOT_ACCOUNTS
    ]
    bodies = []
    for weight, method, params in weighted:
        bodies += [{"jsonrpc": "2.0", "id": 1, "method": method, "params": params}] * weight
    random.Random(7).shuffle(bodies)
    return bodies


def wrk_load(
    url: str, bodies: list[dict[str, Any]], seconds: float, connections: int
) -> dict[str, float]:
    lua_bodies = ",\n".join("[[" + json.dumps(b) + "]]" for b in bodies)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f"""
bodies = {{ {lua_bodies} }}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/", {{["Content-Type"] = "application/json"}},
                    bodies[(counter % #bodies) + 1])
end
""")
    out = subprocess.run(
        [
            *CLIENT_CPU,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            "--latency",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    os.unlink(script.name)
    text = out.stdout

    def latency_ms(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", text)
        assert match, text
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = float(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def python_load(
    url: str, bodies: list[dict[str, Any]], seconds: float, connections: int
) -> dict[str, float]:
    import aiohttp

    async def run() -> dict[str, float]:
        latencies: list[float] = []
        errors = 0
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession() as session:

            async def worker(offset: int) -> None:
                nonlocal errors
                i = offset
                while time.monotonic() < deadline:
                    body = bodies[i % len(bodies)]
                    i += connections
                    started = time.perf_counter()
                    async with session.post(url, json=body) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors += 1
                    latencies.append((time.perf_counter() - started) * 1000)

            started = time.monotonic()
            await asyncio.gather(*(worker(i) for i in range(connections)))
            elapsed = time.monotonic() - started
        latencies.sort()
        return {
            "requests": len(latencies),
            "rps": len(latencies) / elapsed,
            "p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[int(len(latencies) * 0.99)],
            "errors": errors,
        }

    return asyncio.run(run())


def load(
    url: str, bodies: list[dict[str, Any]], seconds: float, connections: int
) -> dict[str, float]:
    if shutil.which("wrk"):
        return wrk_load(url, bodies, seconds, connections)
    return python_load(url, bodies, seconds, connections)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def upstream_requests(url: str) -> int:
    with urllib.request.urlopen(url + "/status.json", timeout=5) as resp:
        status = json.loads(resp.read())
    return sum(u["requests"] for c in status["chains"] for u in c["upstreams"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    loader = "wrk" if shutil.which("wrk") else "python (install wrk for honest ratios)"

    loop = BackgroundLoop()
    cluster = AnvilCluster(3, chain_id=CHAIN_ID).start()
    processes: list[subprocess.Popen[bytes]] = []
    proxies: list[FaultProxy] = []
    workdir = Path(tempfile.mkdtemp(prefix="rpcgate-bench-"))
    try:
        cluster.mine_all(3)
        contracts, receipts = prepare_chain(cluster)
        proxies = [loop.run(FaultProxy(u).start()) for u in cluster.urls]
        for proxy in proxies:
            proxy.set_fault(Fault.LATENCY, delay=UPSTREAM_LATENCY_S)
        port = free_port()
        config = {
            "listen": f"127.0.0.1:{port}",
            "log_level": "warning",
            "limits": {"rate_per_s": 0, "max_concurrent_per_client": 0},  # one address, by design
            "chains": [
                {
                    "name": "devnet",
                    "chain_id": CHAIN_ID,
                    "upstreams": [
                        {"name": f"node{i}", "url": p.url} for i, p in enumerate(proxies)
                    ],
                }
            ],
        }
        (workdir / "rpcgate.yaml").write_text(yaml.safe_dump(config))
        gateway_url = f"http://127.0.0.1:{port}"
        processes.append(
            subprocess.Popen(
                [
                    *SERVER_CPU,
                    sys.executable,
                    "-m",
                    "rpcgate.cli",
                    "serve",
                    "--config",
                    str(workdir / "rpcgate.yaml"),
                ],
                cwd=REPO,
            )
        )
        wait_for_http(gateway_url + "/healthz")
        bodies = dapp_mix(contracts, receipts)

        # Part 1: the mix, with a new block every BLOCK_EVERY_S.
        stop = threading.Event()

        def mine() -> None:
            while not stop.wait(BLOCK_EVERY_S):
                cluster.mine_all()

        miner = threading.Thread(target=mine, daemon=True)
        before = upstream_requests(gateway_url)
        miner.start()
        mixed = load(gateway_url, bodies, args.seconds, args.connections)
        stop.set()
        miner.join()
        upstream_calls = upstream_requests(gateway_url) - before
        share = 1 - upstream_calls / mixed["requests"]

        # Part 2: cache hits only (no new blocks), rpcgate against the bare server.
        cacheable = [b for b in bodies if b["method"] != "eth_blockNumber"]
        distinct = {json.dumps(b, sort_keys=True): b for b in cacheable}
        answers = []
        for body in distinct.values():
            for _ in range(2):  # the second time it is a hit
                result = rpc(gateway_url, body["method"], body["params"])
            answers.append(
                [body["method"] + json.dumps(body["params"], separators=(",", ":")), result]
            )
        (workdir / "answers.json").write_text(json.dumps(answers))
        bare_port = free_port()
        bare_url = f"http://127.0.0.1:{bare_port}"
        processes.append(
            subprocess.Popen(
                [
                    *SERVER_CPU,
                    sys.executable,
                    str(REPO / "bench" / "bare_server.py"),
                    str(workdir / "answers.json"),
                    str(bare_port),
                ],
                cwd=REPO,
            )
        )
        wait_for_http(bare_url)
        hits_before = upstream_requests(gateway_url)
        rounds: dict[str, list[float]] = {"rpcgate": [], "bare": []}
        per_cpu: dict[str, list[float]] = {"rpcgate": [], "bare": []}
        servers = {"rpcgate": (gateway_url, processes[0].pid), "bare": (bare_url, processes[1].pid)}
        for _ in range(args.rounds):
            for name, (url, pid) in servers.items():
                cpu_before = cpu_seconds(pid)
                result = load(url, cacheable, args.seconds / 2, args.connections)
                rounds[name].append(result["rps"])
                per_cpu[name].append(result["requests"] / (cpu_seconds(pid) - cpu_before))
        hit_upstream_calls = upstream_requests(gateway_url) - hits_before
        cpu_ratio = statistics.median(per_cpu["rpcgate"]) / statistics.median(per_cpu["bare"])

        rpcgate_rps = statistics.median(rounds["rpcgate"])
        bare_rps = statistics.median(rounds["bare"])
        # Each round runs the two back to back: their ratio is less exposed to the machine's
        # drift than the ratio of the medians.
        paired = statistics.median(
            r / b for r, b in zip(rounds["rpcgate"], rounds["bare"], strict=True)
        )
        print(
            f"load generator: {loader}; {args.connections} connections; upstream latency "
            f"{UPSTREAM_LATENCY_S * 1000:.0f} ms; a block every {BLOCK_EVERY_S:.0f} s"
        )
        print(
            f"dApp mix ({args.seconds:.0f} s): {mixed['requests']:.0f} calls, "
            f"{upstream_calls} upstream calls -> answered without an upstream call: "
            f"{share:.1%}; {mixed['rps']:.0f} req/s; p50 {mixed['p50_ms']:.2f} ms; "
            f"p99 {mixed['p99_ms']:.2f} ms; non-2xx {mixed['errors']:.0f}"
        )
        print(
            f"cache hits, median of {args.rounds} rounds: rpcgate {rpcgate_rps:.0f} req/s, "
            f"bare aiohttp from a dict {bare_rps:.0f} req/s -> ratio of medians "
            f"{rpcgate_rps / bare_rps:.2f}, median of paired ratios {paired:.2f} "
            f"(upstream calls during the rounds: {hit_upstream_calls})"
        )
        print(
            f"per CPU second of the server: rpcgate {statistics.median(per_cpu['rpcgate']):.0f}, "
            f"bare {statistics.median(per_cpu['bare']):.0f} requests -> ratio {cpu_ratio:.2f} "
            "(what each server does with a core, whatever else the machine is doing)"
        )
        print(
            f"rounds: rpcgate {[round(r) for r in rounds['rpcgate']]}, "
            f"bare {[round(r) for r in rounds['bare']]}"
        )
    finally:
        for process in processes:
            process.terminate()
            process.wait(10)
        for proxy in proxies:
            loop.run(proxy.stop())
        cluster.stop()
        loop.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
