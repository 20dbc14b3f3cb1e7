"""The JSON-RPC 2.0 specification's example server: subtract, sum, get_data, update, ...

The specification's examples call methods no Ethereum node has, so they cannot run against
anvil; this small server answers them exactly as the specification's examples show, so the
gateway's framing (ids, batches, notifications, errors) is checked end to end.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.harness.tools import serve_posts

NOTIFICATION_METHODS = {"update", "notify_hello", "notify_sum", "foobar_notification"}
CHAIN_ID = 31337
# Just enough for the gateway's head tracker to verify the chain id and see a head: a
# gateway never lets an upstream whose chain it has not verified answer anything.
_GENESIS = {"number": "0x0", "hash": "0x" + "11" * 32, "parentHash": "0x" + "00" * 32}
IDENTITY_ANSWERS: dict[str, Any] = {
    "eth_chainId": hex(CHAIN_ID),
    "eth_blockNumber": "0x0",
    "eth_getBlockByNumber": _GENESIS,
    "eth_syncing": False,
}


def _answer(request: dict[str, Any]) -> dict[str, Any] | None:
    method, params, request_id = request.get("method"), request.get("params"), request.get("id")
    if method in IDENTITY_ANSWERS:
        return {"jsonrpc": "2.0", "result": IDENTITY_ANSWERS[method], "id": request_id}
    if method == "subtract":
        if isinstance(params, dict):
            result = params["minuend"] - params["subtrahend"]
        else:
            result = params[0] - params[1]
    elif method == "sum":
        result = sum(params)
    elif method == "get_data":
        result = ["hello", 5]
    elif method in NOTIFICATION_METHODS:
        result = None
    else:
        return {
            "jsonrpc": "2.0",
            "error": {"code": -32601, "message": "Method not found"},
            "id": request_id,
        }
    return {"jsonrpc": "2.0", "result": result, "id": request_id}


class SpecServer:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        items = body if isinstance(body, list) else [body]
        self.received.extend(i for i in items if i.get("method") not in IDENTITY_ANSWERS)
        answers = [_answer(item) for item in items]
        payload: Any = answers if isinstance(body, list) else answers[0]
        return web.json_response(payload)

    async def start(self) -> SpecServer:
        self._runner, self.url = await serve_posts(self._handle)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
