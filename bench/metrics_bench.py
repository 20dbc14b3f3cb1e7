"""What the metrics cost on the cache-hit path, measured in-process (no HTTP, no load
generator, so the numbers are the server's own CPU and the comparison is not drowned in
the noise of a shared machine).

    .venv/bin/python bench/metrics_bench.py [--calls 20000] [--rounds 9]

Needs anvil (./scripts/test installs it). One gateway over one anvil node; an
`eth_getBalance` at `latest` is answered once, so that it is a cache hit from then on.
Then, alternating in each round:

- `handle_rpc` on that call as it is shipped (with the metrics);
- `handle_rpc` with the gateway's metrics replaced by a stub that records nothing (the two
  `perf_counter()` calls and one method call remain);
- the observation alone: `perf_counter()` twice and `call_answered_locally`.

It prints the medians per call. The request is a mocked aiohttp request with its body
already read, so what is timed is the handler from framing to the response object: the
HTTP parsing and writing aiohttp does around it (most of a real hit's cost) are left out,
which makes the share of the metrics there an upper bound. For scale, it then serves the
same hit over HTTP (`rpcgate serve` in a process of its own, a keep-alive client here)
and prints the server's CPU time per request, read from /proc.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import orjson  # noqa: E402
import yaml  # noqa: E402
from aiohttp import web  # noqa: E402
from aiohttp.test_utils import make_mocked_request  # noqa: E402

from rpcgate.edge.http_server import GATEWAY, build_app, handle_rpc  # noqa: E402
from rpcgate.rpc.logs import configure_logging  # noqa: E402
from tests.conftest import gateway_config  # noqa: E402
from tests.harness.anvil import DEV_ADDRESSES, AnvilCluster  # noqa: E402
from tests.harness.tools import free_port, wait_for_http  # noqa: E402

BODY = orjson.dumps(
    {"jsonrpc": "2.0", "id": 7, "method": "eth_getBalance", "params": [DEV_ADDRESSES[0], "latest"]}
)


class _NoMetrics:
    """Records nothing: the baseline."""

    def call_answered_locally(self, chain: str, method: str, seconds: float) -> None:
        pass


def _request(app: web.Application) -> web.Request:
    request = make_mocked_request(
        "POST",
        "/",
        headers={"Content-Type": "application/json", "Content-Length": str(len(BODY))},
        app=app,
    )
    request._read_bytes = BODY  # read() returns it at once, as for a body already read
    return request


async def _time_handler(request: web.Request, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await handle_rpc(request)
    return (time.perf_counter() - started) / calls


def _time_observation(metrics: Any, calls: int) -> float:
    observe, clock = metrics.call_answered_locally, time.perf_counter
    started = clock()
    for _ in range(calls):
        begun = clock()
        observe("devnet", "eth_getBalance", clock() - begun)
    return (clock() - started) / calls


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def http_cpu_per_hit(upstream_url: str, calls: int, connections: int = 8) -> float:
    """Server CPU seconds per cache hit served over HTTP by `rpcgate serve`."""
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "log_level": "warning",
        "limits": {"rate_per_s": 0, "max_concurrent_per_client": 0},  # one address, by design
        "chains": [
            {
                "name": "devnet",
                "chain_id": 31337,
                "head_poll_interval": 60,
                "upstreams": [{"name": "node0", "url": upstream_url}],
            }
        ],
    }
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as file:
        yaml.safe_dump(config, file)
    server = subprocess.Popen(
        [sys.executable, "-m", "rpcgate.cli", "serve", "--config", file.name], cwd=REPO
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for_http(url + "healthz")
        headers = {"Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session:

            async def send(count: int) -> None:
                for _ in range(count):
                    async with session.post(url, data=BODY, headers=headers) as resp:
                        assert resp.headers["X-Rpcgate-Cache"] in ("hit", "miss")
                        await resp.read()

            await send(2)  # now it is a hit
            before = cpu_seconds(server.pid)
            await asyncio.gather(*(send(calls // connections) for _ in range(connections)))
            used = cpu_seconds(server.pid) - before
        return used / (calls // connections * connections)
    finally:
        server.terminate()
        server.wait(10)
        os.unlink(file.name)


async def run(calls: int, rounds: int) -> None:
    cluster = AnvilCluster(1).start()
    try:
        cluster.mine_all(3)
        http_cpu = await http_cpu_per_hit(cluster.urls[0], calls)
        app = build_app(gateway_config(cluster.urls, head_poll_interval=60))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()  # starts the gateway (one head poll round)
        gateway = app[GATEWAY]
        # `latest` is pinned to the consensus head: until the first poll round has decided
        # one, the call bypasses the cache.
        tracker = gateway.chains[0].tracker
        deadline = time.monotonic() + 10
        while tracker.consensus.head is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        request = _request(app)
        first = await handle_rpc(request)
        second = await handle_rpc(request)
        assert first.headers["X-Rpcgate-Cache"] == "miss", first.headers
        assert second.headers["X-Rpcgate-Cache"] == "hit", second.headers
        shipped = gateway.metrics
        timings: dict[str, list[float]] = {"with": [], "without": [], "observation": []}
        for _ in range(rounds):
            gateway.metrics = shipped
            timings["with"].append(await _time_handler(request, calls))
            gateway.metrics = _NoMetrics()  # type: ignore[assignment]
            timings["without"].append(await _time_handler(request, calls))
            timings["observation"].append(_time_observation(shipped, calls))
        gateway.metrics = shipped
        await runner.cleanup()
    finally:
        cluster.stop()
    medians = {name: statistics.median(values) * 1e9 for name, values in timings.items()}
    paired = statistics.median(
        w / wo for w, wo in zip(timings["with"], timings["without"], strict=True)
    )
    print(f"{rounds} rounds of {calls} cache hits (eth_getBalance at latest), medians per call:")
    print(f"  handle_rpc with metrics:    {medians['with']:8.0f} ns")
    print(f"  handle_rpc without metrics: {medians['without']:8.0f} ns  (a stub records nothing)")
    print(
        f"  the observation alone:      {medians['observation']:8.0f} ns  (2 perf_counter + 1 call)"
    )
    print(
        f"  -> with/without, median of paired rounds: {paired:.3f}; the observation is "
        f"{medians['observation'] / medians['with']:.1%} of the in-process hit path"
    )
    print(
        f"over HTTP (rpcgate serve, keep-alive): {http_cpu * 1e6:.0f} us of server CPU per hit "
        f"-> the observation is {medians['observation'] / (http_cpu * 1e9):.2%} of it"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    configure_logging("warning")
    asyncio.run(run(args.calls, args.rounds))


if __name__ == "__main__":
    main()
