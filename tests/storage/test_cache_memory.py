"""What the in-process cache really costs: the bytes it counts against `cache.memory_bytes`
cover what its entries take, and a full cache keeps the process within a stated factor of
that budget. The gateway runs as `rpcgate serve` in a process of its own, so its resident
memory (RSS) is measured alone."""

from __future__ import annotations

import asyncio
import gc
import os
import time
import tracemalloc
import urllib.request
from collections.abc import Callable

import aiohttp
import orjson
import pytest

from rpcgate.storage.cache_policy import Entry, cache_key
from rpcgate.storage.response_cache import MemoryLRU
from tests.conftest import ServeProcess
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.tools import process_memory, status_json

CHAIN_ID = 31337
BUDGET = 16 * 1024 * 1024  # cache.memory_bytes in the process test
# A full cache may add at most this many times its budget to the idle process's RSS: what
# the entries take (counted, so at most the budget) plus what the allocator keeps around
# them (partly used pools and pages). docs/caching.md states the same factor.
RSS_FACTOR = 1.5
BATCH = 100  # calls per HTTP request
CONCURRENCY = 8  # requests in flight
WARM_UP_CALLS = 10_000
FILL_CALLS = 45_000  # about 1.5x what fits in BUDGET with small answers


# -- the count, against what Python really allocates --


def _small_final(i: int) -> tuple[str, Entry]:
    """eth_getBalance at a finalized block: a key of ~70 bytes, an answer of a few."""
    result = orjson.loads(orjson.dumps(hex(i * 7919)))  # parsed, as an upstream's answer is
    return cache_key(CHAIN_ID, "eth_getBalance", [f"0x{i:040x}", "0x10"]), Entry(result, 16)


def _unfinalized(i: int) -> tuple[str, Entry]:
    """An answer about a recent block, with a hash of its own to check freshness against."""
    key = cache_key(CHAIN_ID, "eth_getTransactionCount", [f"0x{i:040x}", "0x64"])
    return key, Entry(hex(i), 100, "0x" + os.urandom(32).hex())


def _block(i: int) -> tuple[str, Entry]:
    """eth_getBlockByNumber with full transactions: ~10 KB of JSON, a large parsed form."""
    transactions = [
        {"hash": "0x" + os.urandom(32).hex(), "input": "0x" + os.urandom(200).hex()}
        for _ in range(20)
    ]
    result = orjson.loads(orjson.dumps({"number": hex(i), "transactions": transactions}))
    return cache_key(CHAIN_ID, "eth_getBlockByNumber", [hex(i), True]), Entry(result, i)


@pytest.mark.parametrize("make", [_small_final, _unfinalized, _block])
def test_the_counted_bytes_cover_what_the_entries_take(
    make: Callable[[int], tuple[str, Entry]],
) -> None:
    budget = 4 * 1024 * 1024
    gc.collect()
    tracemalloc.start()
    try:
        lru = MemoryLRU(budget)
        before = tracemalloc.get_traced_memory()[0]
        worst = 0.0
        for i in range(1, 100_000):
            key, entry = make(i)
            lru.put(key, entry, expires=1e12)
            if i % 97 == 0:  # now and then, at every fill of the dict's tables
                taken = tracemalloc.get_traced_memory()[0] - before
                assert taken <= lru.bytes, (i, taken, lru.bytes)
                worst = max(worst, taken / lru.bytes)
            if len(lru) * 2 < i:  # half of all entries evicted: well past full
                break
    finally:
        tracemalloc.stop()
    assert budget - lru.bytes < 20_000  # full, yet within the budget
    # Honest both ways: not so generous that the budget buys far less than it says.
    print(f"{make.__name__}: at most {worst:.2f} of the counted bytes taken")
    assert worst > 0.6, worst


@pytest.mark.unit
def test_an_entry_keeps_its_answer_as_exact_json_and_nothing_else() -> None:
    result = {"number": "0x10", "transactions": ["0x" + "ab" * 32] * 50}
    entry = Entry(result, 16)
    assert entry.result_json == orjson.dumps(result)
    assert not hasattr(entry, "result")  # the parsed form is not kept
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        entries = [Entry(result, 16) for _ in range(100)]
        taken = (tracemalloc.get_traced_memory()[0] - before) / len(entries)
    finally:
        tracemalloc.stop()
    # The JSON and a small object around it; orjson's working buffer is not kept.
    assert taken < len(entry.result_json) + 200, (taken, len(entry.result_json))


# -- a full cache, in a process of its own --


async def _flood(url: str, first: int, count: int, block: str, pid: int) -> dict[str, int]:
    """eth_getBalance of `count` distinct addresses at `block`, in batches, several at a
    time, watching the process's RSS and the cache's count while it runs."""
    starts = list(range(first, first + count, BATCH))
    seen = {"peak_rss": 0, "peak_counted": 0}
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            while starts:
                start = starts.pop()
                body = [
                    {
                        "jsonrpc": "2.0",
                        "id": i,
                        "method": "eth_getBalance",
                        "params": [f"0x{i:040x}", block],
                    }
                    for i in range(start, min(start + BATCH, first + count))
                ]
                async with session.post(url + "/devnet", json=body) as resp:
                    answers = await resp.json()
                assert all("result" in a for a in answers), answers[:1]

        async def watch() -> None:
            while True:
                seen["peak_rss"] = max(seen["peak_rss"], process_memory(pid))
                async with session.get(url + "/status.json") as resp:
                    counted = (await resp.json())["cache"]["memory_bytes"]
                seen["peak_counted"] = max(seen["peak_counted"], counted)
                await asyncio.sleep(0.05)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        watcher.cancel()
    seen["peak_rss"] = max(seen["peak_rss"], process_memory(pid))
    return seen


def test_a_full_cache_keeps_the_process_within_its_budget(
    anvil_cluster: AnvilClusterFactory,
    serve_process: ServeProcess,
) -> None:
    cluster = anvil_cluster(1, chain_id=CHAIN_ID)
    cluster.mine_all(80)  # anvil's finalized block trails its head by 64: 0x10
    url, process = serve_process(
        cluster.urls[0], cache={"memory_bytes": BUDGET}
    )  # the head polled every 0.1 s; client limits off: a flood, served
    pid = process.pid
    deadline = time.monotonic() + 10
    while status_json(url)["chains"][0]["consensus"]["finalized"] is None:
        assert time.monotonic() < deadline, "no finalized block"
        time.sleep(0.1)

    # Never cached ("pending"), with the same load: what serving costs once (buffers, the
    # plans of hot calls, the allocator's pools) is in the baseline.
    asyncio.run(_flood(url, 10**6, WARM_UP_CALLS, "pending", pid))
    assert status_json(url)["cache"]["memory_entries"] == 0
    time.sleep(0.5)
    idle = process_memory(pid)

    seen = asyncio.run(_flood(url, 1, FILL_CALLS, "0x1", pid))
    cache = status_json(url)["cache"]
    growth = seen["peak_rss"] - idle
    print(
        f"full cache: {cache['memory_entries']} entries, {cache['memory_bytes'] / 1e6:.1f} MB "
        f"counted of {BUDGET / 1e6:.1f} MB; RSS {idle / 1e6:.1f} MB idle, "
        f"+{growth / 1e6:.1f} MB at peak ({growth / BUDGET:.2f}x the budget)"
    )
    assert seen["peak_counted"] <= BUDGET
    assert cache["memory_entries"] < FILL_CALLS  # entries were evicted: the budget was spent
    assert cache["memory_bytes"] > 0.95 * BUDGET
    assert growth <= RSS_FACTOR * BUDGET, (growth, RSS_FACTOR * BUDGET)

    # The process's RSS is shown beside the cache's count, in status.json and the metrics.
    assert abs(cache["process_rss_bytes"] - process_memory(pid)) < 4 * 1024 * 1024
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        exposition = resp.read().decode()
    sample = next(
        line
        for line in exposition.splitlines()
        if line.startswith("rpcgate_process_resident_memory_bytes ")
    )
    assert float(sample.split()[1]) > idle / 2
