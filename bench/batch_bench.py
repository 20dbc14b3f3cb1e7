"""Batch benchmark: a 50-item client batch of uncached calls, before and after upstream batches.

    .venv/bin/python bench/batch_bench.py [--rounds 200] [--items 50] [--latency-ms 0 20]

Needs anvil (./scripts/test installs it; or set ANVIL_BIN). One anvil node; two rpcgate
processes in front of it: "before" with `max_batch: 1` (every item its own upstream request,
as rpcgate did before issue 12), "after" with the default (the items of a client batch go to
the upstream as one batch request). First straight to anvil, then each through a fault proxy
of its own, which counts HTTP requests and adds a delay to each (a provider's round trip);
the proxy, in Python, also adds its own cost per request, more of it for "before". Each
client batch is eth_getBalance at addresses never asked before, with `Cache-Control:
no-cache`: nothing is answered from the cache or coalesced. The two gateways take turns, ten
batches at a time.
Prints a Markdown table: median and p90 latency of one client batch, upstream HTTP requests
per client batch, and the gateway's CPU time per client batch.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from tests.harness.anvil import AnvilCluster  # noqa: E402
from tests.harness.faultproxy import Fault, FaultProxy  # noqa: E402
from tests.harness.loop import BackgroundLoop  # noqa: E402
from tests.harness.tools import free_port, wait_for_http  # noqa: E402

CHAIN_ID = 31337
TURN = 10  # client batches per gateway before the other takes its turn
WARMUP = 10  # client batches per gateway before measuring (connections, latency estimates)


@dataclass
class Gateway:
    label: str
    max_batch: int | None
    proxy: FaultProxy
    process: subprocess.Popen[bytes]
    port: int
    latencies_s: list[float] = field(default_factory=list)
    upstream_requests: int = 0
    cpu_s: float = 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_gateway(
    label: str, max_batch: int | None, proxy: FaultProxy, upstream_url: str, workdir: Path
) -> Gateway:
    port = free_port()
    upstream: dict[str, Any] = {"name": "node0", "url": upstream_url}
    if max_batch is not None:
        upstream["max_batch"] = max_batch
    config = {
        "listen": f"127.0.0.1:{port}",
        "log_level": "warning",
        "limits": {"rate_per_s": 0, "max_concurrent_per_client": 0},
        "chains": [{"name": "devnet", "chain_id": CHAIN_ID, "upstreams": [upstream]}],
    }
    path = workdir / f"{label}.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "rpcgate.cli", "serve", "--config", str(path)], cwd=REPO
    )
    wait_for_http(f"http://127.0.0.1:{port}/healthz")
    return Gateway(label, max_batch, proxy, process, port)


class Client:
    """One keep-alive connection to a gateway."""

    def __init__(self, port: int) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def batch(self, body: bytes) -> list[dict[str, Any]]:
        headers = {"Content-Type": "application/json", "Cache-Control": "no-cache"}
        self._connection.request("POST", "/", body, headers)
        reply = self._connection.getresponse()
        answers: list[dict[str, Any]] = json.loads(reply.read())
        return answers

    def close(self) -> None:
        self._connection.close()


def balance_batch(first_account: int, items: int) -> bytes:
    calls = [
        {
            "jsonrpc": "2.0",
            "id": i,
            "method": "eth_getBalance",
            "params": [f"0x{first_account + i:040x}", "latest"],
        }
        for i in range(items)
    ]
    return json.dumps(calls).encode()


def balance_requests(proxy: FaultProxy) -> int:
    """HTTP requests that carried eth_getBalance (head polls are not the batch's)."""
    return sum(
        1
        for request in proxy.requests
        if request == "eth_getBalance" or (isinstance(request, list) and request)
    )


def measure(gateways: list[Gateway], rounds: int, items: int, next_account: list[int]) -> None:
    clients = {g.label: Client(g.port) for g in gateways}

    def one(gateway: Gateway, record: bool) -> None:
        body = balance_batch(next_account[0], items)
        next_account[0] += items
        started = time.perf_counter()
        answers = clients[gateway.label].batch(body)
        took = time.perf_counter() - started
        if len(answers) != items or any("result" not in a for a in answers):
            raise RuntimeError(f"{gateway.label}: not every item answered: {answers[:3]}")
        if record:
            gateway.latencies_s.append(took)

    try:
        for gateway in gateways:
            for _ in range(WARMUP):
                one(gateway, record=False)
        before = {
            g.label: (balance_requests(g.proxy), cpu_seconds(g.process.pid)) for g in gateways
        }
        done = 0
        while done < rounds:
            turn = min(TURN, rounds - done)
            for gateway in gateways:
                for _ in range(turn):
                    one(gateway, record=True)
            done += turn
        for gateway in gateways:
            requests_before, cpu_before = before[gateway.label]
            gateway.upstream_requests = balance_requests(gateway.proxy) - requests_before
            gateway.cpu_s = cpu_seconds(gateway.process.pid) - cpu_before
    finally:
        for client in clients.values():
            client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="client batches per row")
    parser.add_argument("--items", type=int, default=50, help="calls per client batch")
    parser.add_argument(
        "--latency-ms",
        type=float,
        nargs="+",
        default=[0.0, 20.0],
        help="delay the proxy adds to each upstream HTTP request (a row pair per value)",
    )
    args = parser.parse_args()

    loop = BackgroundLoop()
    cluster = AnvilCluster(1, chain_id=CHAIN_ID).start()
    workdir = Path(tempfile.mkdtemp(prefix="rpcgate-batch-bench-"))
    rows = []
    next_account = [0xB0000000]
    # Straight to anvil first (no proxy in the way, so no request count), then through the
    # counting proxies, with each added delay.
    scenarios: list[tuple[str, float | None]] = [("anvil direct", None)]
    scenarios += [(f"proxy +{ms:g} ms", ms) for ms in args.latency_ms]
    try:
        cluster.mine_all(1)
        for scenario, latency_ms in scenarios:
            gateways: list[Gateway] = []
            try:
                for label, max_batch in (("before", 1), ("after", None)):
                    proxy = loop.run(FaultProxy(cluster.urls[0]).start())
                    if latency_ms:
                        proxy.set_fault(Fault.LATENCY, delay=latency_ms / 1000)
                    upstream_url = cluster.urls[0] if latency_ms is None else proxy.url
                    gateways.append(start_gateway(label, max_batch, proxy, upstream_url, workdir))
                measure(gateways, args.rounds, args.items, next_account)
            finally:
                for gateway in gateways:
                    gateway.process.terminate()
                    gateway.process.wait(10)
                    loop.run(gateway.proxy.stop())
            for gateway in gateways:
                latencies_ms = sorted(s * 1000 for s in gateway.latencies_s)
                p90 = latencies_ms[int(0.9 * (len(latencies_ms) - 1))]
                per_batch = gateway.upstream_requests / len(latencies_ms)
                rows.append(
                    f"| {gateway.label} | {gateway.max_batch or 'default (100)'} | {scenario} "
                    f"| {statistics.median(latencies_ms):.1f} | {p90:.1f} "
                    f"| {'-' if latency_ms is None else f'{per_batch:.1f}'} "
                    f"| {gateway.cpu_s * 1000 / len(latencies_ms):.1f} |"
                )
    finally:
        cluster.stop()
        loop.stop()

    print(
        f"\n{args.items}-item client batches of uncached eth_getBalance, {args.rounds} per "
        "row, one anvil node\n"
    )
    print(
        "| rpcgate | max_batch | upstream | median ms | p90 ms "
        "| upstream HTTP requests / client batch | gateway CPU ms / client batch |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
