"""What cached answers cost the process: the cache's own count beside the RSS it grew by.

    .venv/bin/python bench/memory_bench.py [--entries 20000] [--memory-mb 64]

Starts anvil (./scripts/test installs it) and `rpcgate serve` in a process of its own,
warms the gateway with never-cached calls (so that one-time growth is in the baseline),
then stores `--entries` distinct small answers (`eth_getBalance` of distinct addresses at
a finalized block) and prints what /status.json counts and what RSS grew by. Target
(issue "Memory that the settings really bound"): RSS with a full cache within 1.5x of
`cache.memory_bytes` plus the idle footprint.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import yaml  # noqa: E402

from tests.harness.anvil import AnvilCluster  # noqa: E402
from tests.harness.tools import (  # noqa: E402
    free_port,
    process_memory,
    rpcgate_command,
    status_json,
    wait_for_http,
)

BATCH = 100
CONCURRENCY = 8


async def flood(url: str, addresses: range, block: str) -> None:
    """eth_getBalance of each address at `block`, in batches, several at a time."""
    starts = list(range(addresses.start, addresses.stop, BATCH))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while starts:
                first = starts.pop()
                body = [
                    {
                        "jsonrpc": "2.0",
                        "id": i,
                        "method": "eth_getBalance",
                        "params": [f"0x{i:040x}", block],
                    }
                    for i in range(first, min(first + BATCH, addresses.stop))
                ]
                async with session.post(url + "/devnet", json=body) as resp:
                    answers = await resp.json()
                    assert all("result" in a for a in answers), answers[:1]

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--memory-mb", type=float, default=64)
    args = parser.parse_args()
    budget = int(args.memory_mb * 1024 * 1024)
    with AnvilCluster(1) as cluster, tempfile.TemporaryDirectory() as tmp:
        cluster.mine_all(80)  # anvil's finalized block trails its head by 64
        port = free_port()
        config = {
            "listen": f"127.0.0.1:{port}",
            "log_level": "warning",
            "limits": {"rate_per_s": 0, "max_concurrent_per_client": 0},
            "cache": {"memory_bytes": budget},
            "chains": [
                {
                    "name": "devnet",
                    "chain_id": cluster.chain_id,
                    "upstreams": [{"name": "node0", "url": cluster.urls[0]}],
                }
            ],
        }
        path = Path(tmp) / "gateway.yaml"
        path.write_text(yaml.safe_dump(config))
        process = subprocess.Popen(
            [*rpcgate_command(), "serve", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_http(url + "/healthz")
            # Never cached ("pending"): what serving costs once, whatever the cache holds.
            asyncio.run(flood(url, range(1, args.entries + 1), "pending"))
            time.sleep(1)
            idle = process_memory(process.pid)
            started = time.monotonic()
            asyncio.run(flood(url, range(1, args.entries + 1), "0x1"))
            elapsed = time.monotonic() - started
            time.sleep(1)
            full = process_memory(process.pid)
            cache = status_json(url)["cache"]
        finally:
            process.send_signal(signal.SIGINT)
            process.wait(10)
    growth = full - idle
    counted = cache["memory_bytes"]
    entries = max(1, cache["memory_entries"])
    print(f"calls: {args.entries} distinct eth_getBalance at block 0x1 in {elapsed:.1f} s")
    print(f"budget:   {budget / 1e6:6.1f} MB (cache.memory_bytes)")
    print(f"counted:  {counted / 1e6:6.1f} MB, {entries} entries, {counted / entries:.0f} B each")
    print(f"idle RSS: {idle / 1e6:6.1f} MB")
    print(f"growth:   {growth / 1e6:6.1f} MB, {growth / entries:.0f} B per entry")
    print(f"growth / counted: {growth / counted:.2f}; growth / budget: {growth / budget:.2f}")
    if "process_rss_bytes" in cache:
        print(f"status.json process_rss_bytes: {cache['process_rss_bytes'] / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
