"""What the hot path's memos cost under calls made to fill them: the plan of each call and
the policy's verdict for each method name are remembered, but never for big ones, so
distinct big calls cost nothing once answered. The gateway runs as `rpcgate serve` in a
process of its own, so its memory is measured alone."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
import orjson

from tests.conftest import GatewayFactory, ServeProcess
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.memory import PeakRss

CHAIN_ID = 31337
CALLS = 100
PARAMS_BYTES = 2 * 1024 * 1024  # each call's params (measured before: +417 MB, +209 MB)
BOUND = 32 * 1024 * 1024  # a few requests' worth in flight, and the allocator's slack
SETTINGS: dict[str, Any] = {
    "limits": {"rate_per_s": 0, "max_concurrent_per_client": 0},
    "cache": {"memory_bytes": 1024 * 1024},  # so that what grows is what the memos hold
}


async def _send(url: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The calls, one request each, two at a time; their answers."""
    answers: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as session:

        async def send(call: dict[str, Any]) -> None:
            async with session.post(
                url + "/devnet",
                data=orjson.dumps(call),
                headers={"Content-Type": "application/json"},
            ) as resp:
                answers.append(await resp.json(loads=orjson.loads))

        for first in range(0, len(calls), 2):
            await asyncio.gather(*(send(call) for call in calls[first : first + 2]))
    return answers


def _eth_call(i: int) -> dict[str, Any]:
    """An eth_call with 2 MB of params of its own (1 MB of calldata)."""
    data = "0x" + os.urandom(PARAMS_BYTES // 4).hex() + f"{i:08x}" * (PARAMS_BYTES // 32)
    target = {"to": "0x" + "22" * 20, "data": data, "gas": hex(30_000_000)}
    return {"jsonrpc": "2.0", "id": i, "method": "eth_call", "params": [target, "latest"]}


def _denied(i: int) -> dict[str, Any]:
    """A method name of 2 MB that the default policy denies (personal_*)."""
    name = f"personal_{i:08x}" + "x" * PARAMS_BYTES
    return {"jsonrpc": "2.0", "id": i, "method": name, "params": []}


def test_distinct_big_calls_leave_no_plan_behind(
    anvil_cluster: AnvilClusterFactory, serve_process: ServeProcess
) -> None:
    node = anvil_cluster(1, chain_id=CHAIN_ID, automine=True)[0]
    url, process = serve_process(node.url, **SETTINGS)
    asyncio.run(_send(url, [_eth_call(-n) for n in range(1, 5)]))  # the allocator, warmed
    calls = [_eth_call(i) for i in range(CALLS)]
    with PeakRss(process.pid) as rss:
        answers = asyncio.run(_send(url, calls))
    print(f"{CALLS} eth_calls of 2 MB params: RSS +{rss.growth / 1e6:.1f} MB")
    assert all("result" in a for a in answers), answers[0]
    assert rss.growth < BOUND, rss.growth


def test_denied_calls_with_huge_method_names_leave_no_verdict_behind(
    anvil_cluster: AnvilClusterFactory, serve_process: ServeProcess
) -> None:
    node = anvil_cluster(1, chain_id=CHAIN_ID, automine=True)[0]
    url, process = serve_process(node.url, **SETTINGS)
    asyncio.run(_send(url, [_denied(-n) for n in range(1, 5)]))
    calls = [_denied(i) for i in range(CALLS)]
    with PeakRss(process.pid) as rss:
        answers = asyncio.run(_send(url, calls))
    print(f"{CALLS} denied calls of 2 MB method names: RSS +{rss.growth / 1e6:.1f} MB")
    assert all(a["error"]["code"] == -32601 for a in answers), answers[0]["error"]["code"]
    assert rss.growth < BOUND, rss.growth


def test_a_big_call_is_not_remembered_and_leaves_the_hot_calls_plans_alone(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    """The plan memo keeps small calls only: a big one would take its space, and, clearing
    the memo to make room, cost every hot call its plan."""
    node = anvil_cluster(1, chain_id=CHAIN_ID, automine=True)[0]
    gateway = start_gateway([node.url], cache={"memory_bytes": 1024 * 1024})
    runtime = gateway.gateway.chains[0]
    hot = [("eth_getBalance", ["0x" + f"{i:040x}", "latest"]) for i in range(50)]
    for method, params in hot:
        gateway.result(method, params)
    remembered = dict(runtime._plans)
    assert len(remembered) >= len(hot)
    big = _eth_call(1)
    for _ in range(3):
        assert "result" in gateway.post(big).json()
    assert runtime._plans.keys() == remembered.keys()  # nothing added, nothing cleared
    assert runtime.policy.check("personal_" + "x" * 200) is not None
    assert not any(len(name) > 128 for name in runtime.policy._verdicts)
