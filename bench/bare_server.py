"""The baseline for cache-hit throughput: a bare aiohttp server answering JSON-RPC from a
dict, with the same event loop and JSON library as rpcgate. Nothing to do but parse, look
up and answer: the ceiling a cache hit could reach on this framework (a batch: each item
looked up, one array answered).

    python bench/bare_server.py ANSWERS.json PORT [--reuse-port]

With --reuse-port, several of them share one port (SO_REUSEPORT), as `rpcgate serve
--workers N` does: the framework's own ceiling on all cores.
"""

from __future__ import annotations

import sys

import orjson
from aiohttp import web


def main() -> None:
    answers_path, port = sys.argv[1], int(sys.argv[2])
    reuse_port = "--reuse-port" in sys.argv[3:]
    with open(answers_path, "rb") as f:
        answers = {key: value for key, value in orjson.loads(f.read())}

    def answer(call: dict[str, object]) -> dict[str, object]:
        key = str(call["method"]) + orjson.dumps(call.get("params", [])).decode()
        return {"jsonrpc": "2.0", "id": call.get("id"), "result": answers.get(key)}

    async def handle(request: web.Request) -> web.Response:
        sent = orjson.loads(await request.read())
        # A batch: each item from the dict, the answers in one array.
        body = [answer(call) for call in sent] if isinstance(sent, list) else answer(sent)
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    app = web.Application()
    app.router.add_post("/", handle)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(
        app, host="127.0.0.1", port=port, print=None, access_log=None, reuse_port=reuse_port
    )


if __name__ == "__main__":
    main()
