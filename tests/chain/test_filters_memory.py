"""What filters a client makes cost the gateway process: criteria over
`filters.max_criteria_bytes` are refused, and the filters kept stay within
`filters.memory_bytes` however many are made. The gateway runs as `rpcgate serve` in a
process of its own, so its memory is measured alone."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from tests.conftest import ServeProcess
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.memory import PeakRss

CHAIN_ID = 31337
# The attack measured before the bound: 150 filters of ~900 KB criteria (20,000 addresses
# each) grew the process by 305 MB.
HUGE_FILTERS = 150
HUGE_ADDRESSES = 20_000  # 900 KB of JSON
# Filters just under the default criteria limit (128 KiB), many more than the budget holds.
BUDGET = 16 * 1024 * 1024  # filters.memory_bytes in that test
BIG_FILTERS = 600
BIG_ADDRESSES = 2_600  # 117 KB of JSON: 70 MB of criteria in all, 4x the budget
SETTINGS: dict[str, Any] = {
    "limits": {"rate_per_s": 0, "max_concurrent_per_client": 0},
    "cache": {"memory_bytes": 1024 * 1024},  # so that what grows is what filters hold
}


def _addresses(count: int) -> list[str]:
    return [f"0x{i:040x}" for i in range(1, count + 1)]


async def _make_filters(url: str, addresses: list[str], count: int) -> list[dict[str, Any]]:
    """`count` eth_newFilter calls, each criteria its own (one address differs), four at a
    time; their answers."""
    answers: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:

        async def make(i: int) -> None:
            criteria = {"address": [*addresses[:-1], f"0x{i + 1:040x}"], "topics": []}
            body = orjson.dumps(
                {"jsonrpc": "2.0", "id": i, "method": "eth_newFilter", "params": [criteria]}
            )
            async with session.post(
                url + "/devnet", data=body, headers={"Content-Type": "application/json"}
            ) as resp:
                answers.append(await resp.json(loads=orjson.loads))

        for first in range(0, count, 4):
            await asyncio.gather(*(make(i) for i in range(first, min(first + 4, count))))
    return answers


def test_filters_with_huge_criteria_are_refused_at_a_bounded_cost(
    anvil_cluster: AnvilClusterFactory, serve_process: ServeProcess
) -> None:
    node = anvil_cluster(1, chain_id=CHAIN_ID, automine=True)[0]
    url, process = serve_process(node.url, **SETTINGS)
    addresses = _addresses(HUGE_ADDRESSES)
    asyncio.run(_make_filters(url, addresses, 8))  # the allocator's working set, warmed
    with PeakRss(process.pid) as rss:
        answers = asyncio.run(_make_filters(url, addresses, HUGE_FILTERS))
    print(f"{HUGE_FILTERS} filters of 900 KB criteria: RSS +{rss.growth / 1e6:.1f} MB")
    errors = [a.get("error") for a in answers]
    assert all(e is not None and e["code"] == -32602 for e in errors), answers[0]
    assert "filters.max_criteria_bytes" in errors[0]["message"]  # type: ignore[index]
    # Each request is read, parsed and refused: what it took is given back.
    assert rss.growth < 32 * 1024 * 1024, rss.growth


def test_the_filters_kept_stay_within_their_memory_budget(
    anvil_cluster: AnvilClusterFactory, serve_process: ServeProcess
) -> None:
    node = anvil_cluster(1, chain_id=CHAIN_ID, automine=True)[0]
    url, process = serve_process(node.url, **SETTINGS, filters={"memory_bytes": BUDGET})
    addresses = _addresses(BIG_ADDRESSES)
    asyncio.run(_make_filters(url, addresses, 8))
    with PeakRss(process.pid) as rss:
        answers = asyncio.run(_make_filters(url, addresses, BIG_FILTERS))
    print(f"{BIG_FILTERS} filters of 117 KB criteria: RSS +{rss.growth / 1e6:.1f} MB")
    assert all("result" in a for a in answers), next(a for a in answers if "result" not in a)
    # The budget, what the allocator keeps around it, and a few requests in flight.
    assert rss.growth < 2 * BUDGET + 8 * 1024 * 1024, rss.growth
