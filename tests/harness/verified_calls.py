"""Client calls to a verifying gateway, for the tests of `chains[].verify` against liars:
a gateway over fault proxies at one `verify` level, calls sent at once with `no-cache` (each
answer with the X-Rpcgate-Verified value it carried), and a traced call."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from tests.conftest import GatewayFactory, RunningGateway
from tests.harness.faultproxy import FaultProxy


def verifying_gateway(
    start_gateway: GatewayFactory,
    proxies: list[FaultProxy],
    verify: str,
    *,
    attempt_timeout_s: float = 2.0,
    deadline_s: float = 15.0,
) -> RunningGateway:
    gateway = start_gateway(
        [p.url for p in proxies],
        chain={"verify": verify},
        failover={
            "attempt_timeout_s": attempt_timeout_s,
            "deadline_s": deadline_s,
            "max_attempts": 5,
        },
    )
    gateway.sync()
    return gateway


async def ask_all(url: str, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Each call at once, `no-cache`: the replies, each with `verified` (its header)."""
    async with aiohttp.ClientSession() as session:

        async def one(index: int, method: str, params: list[Any]) -> dict[str, Any]:
            body = {"jsonrpc": "2.0", "id": index, "method": method, "params": params}
            headers = {"Cache-Control": "no-cache"}
            async with session.post(url + "/", json=body, headers=headers) as resp:
                reply: dict[str, Any] = json.loads(await resp.read())
                reply["verified"] = resp.headers.get("X-Rpcgate-Verified")
                return reply

        return await asyncio.gather(*(one(i, m, p) for i, (m, p) in enumerate(calls)))


async def traced(url: str, method: str, params: list[Any]) -> dict[str, Any]:
    """One `no-cache` call with `X-Rpcgate-Trace: 1`: the reply, its trace included."""
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    headers = {"Cache-Control": "no-cache", "X-Rpcgate-Trace": "1"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/", json=body, headers=headers) as resp,
    ):
        return dict(json.loads(await resp.read()))
