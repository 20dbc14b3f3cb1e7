"""What the embedded web3.py providers cost per call, against web3.py's own HTTP providers
straight to one node, in one run (the issue "rpcgate inside a Python program").

    .venv/bin/python bench/web3_bench.py [--calls 400] [--rounds 5]

One anvil node. Each provider makes `--calls` calls one after another, `--rounds` times,
the providers taking turns; the table holds the median time per call over the rounds:
  - pass-through: eth_getBalance at `pending` (never cached: every call reaches the node);
  - finalized read: eth_getBalance at block 5 with the head 80 blocks on (rpcgate answers
    from its cache after the first; the direct provider asks the node each time).
Providers: web3.py's AsyncHTTPProvider and HTTPProvider to the node; AsyncRpcgateProvider,
RpcgateProvider and PersistentRpcgateProvider over the same node; and the two async ones'
`make_request` called directly, without web3.py's middleware and formatting around it
(what the provider itself costs). The "added" column is the embedded provider's time minus
the direct one's, on the same path.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from web3 import AsyncHTTPProvider, AsyncWeb3, HTTPProvider, Web3  # noqa: E402

from rpcgate.web3 import (  # noqa: E402
    AsyncRpcgateProvider,
    PersistentRpcgateProvider,
    RpcgateProvider,
)
from tests.harness.anvil import DEV_ADDRESSES, AnvilCluster  # noqa: E402

CHAIN_ID = 31337
PATHS = {"pass-through": "pending", "finalized read": 5}


def config(url: str) -> dict[str, Any]:
    return {
        "log_level": "warning",
        "chains": [
            {"name": "devnet", "chain_id": CHAIN_ID, "upstreams": [{"name": "node", "url": url}]}
        ],
    }


def timed_sync(call: Callable[[], Any], calls: int) -> float:
    call()  # warm: connections made, the answer cached where it can be
    started = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - started) / calls


async def timed_async(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    await call()
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls


async def measure(url: str, args: argparse.Namespace) -> dict[tuple[str, str], list[float]]:
    times: dict[tuple[str, str], list[float]] = {}
    sync_direct = Web3(HTTPProvider(url))
    sync_embedded_provider = RpcgateProvider(config(url))
    sync_embedded = Web3(sync_embedded_provider)
    async_direct = AsyncWeb3(AsyncHTTPProvider(url))
    async_embedded_provider = AsyncRpcgateProvider(config(url))
    async_embedded = AsyncWeb3(async_embedded_provider)
    persistent = await AsyncWeb3(PersistentRpcgateProvider(config(url)))
    account = DEV_ADDRESSES[0]
    try:
        for _ in range(args.rounds):
            for path, block in PATHS.items():
                for name, w3 in (
                    ("AsyncHTTPProvider (direct)", async_direct),
                    ("AsyncRpcgateProvider", async_embedded),
                    ("PersistentRpcgateProvider", persistent),
                ):

                    async def call(w3: Any = w3, block: Any = block) -> Any:
                        return await w3.eth.get_balance(account, block)

                    times.setdefault((path, name), []).append(await timed_async(call, args.calls))
                for name, provider in (
                    ("AsyncHTTPProvider.make_request, no web3 (direct)", async_direct.provider),
                    ("AsyncRpcgateProvider.make_request, no web3", async_embedded_provider),
                ):
                    params = [account, block if block == "pending" else hex(block)]

                    async def raw(provider: Any = provider, params: Any = params) -> Any:
                        return await provider.make_request("eth_getBalance", params)

                    times.setdefault((path, name), []).append(await timed_async(raw, args.calls))
                for name, sw3 in (
                    ("HTTPProvider (direct)", sync_direct),
                    ("RpcgateProvider", sync_embedded),
                ):
                    seconds = await asyncio.to_thread(
                        timed_sync,
                        lambda sw3=sw3, block=block: sw3.eth.get_balance(account, block),
                        args.calls,
                    )
                    times.setdefault((path, name), []).append(seconds)
    finally:
        sync_embedded_provider.close()
        await async_embedded_provider.disconnect()
        await async_direct.provider.disconnect()
        await persistent.provider.disconnect()
    return times


def table(times: dict[tuple[str, str], list[float]]) -> str:
    direct = {
        "AsyncRpcgateProvider.make_request": "AsyncHTTPProvider.make_request, no web3 (direct)",
        "Async": "AsyncHTTPProvider (direct)",
        "Persistent": "AsyncHTTPProvider (direct)",
    }
    lines = [
        "| path | provider | median per call | added to the direct provider |",
        "|---|---|---|---|",
    ]
    for (path, name), values in times.items():
        median = statistics.median(values)
        base_name = next(
            (v for k, v in direct.items() if name.startswith(k)), "HTTPProvider (direct)"
        )
        added = ""
        if "direct" not in name:
            added = f"{(median - statistics.median(times[(path, base_name)])) * 1e6:+,.0f} µs"
        lines.append(f"| {path} | {name} | {median * 1e6:,.0f} µs | {added} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cluster = AnvilCluster(1, chain_id=CHAIN_ID).start()
    try:
        cluster.mine_all(80)  # block 5 is finalized (anvil: 64 behind the head)
        times = asyncio.run(measure(cluster.urls[0], args))
    finally:
        cluster.stop()
    text = (
        f"# web3.py providers ({time.strftime('%Y-%m-%d')}, `bench/web3_bench.py "
        f"--calls {args.calls} --rounds {args.rounds}`, one anvil node on loopback)\n\n"
        + table(times)
        + "\n"
    )
    print(text)
    out = REPO / "bench" / "results" / "web3.md"
    out.write_text(text)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
