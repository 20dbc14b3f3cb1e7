"""The baseline for pass-through: a bare aiohttp reverse proxy that forwards each JSON-RPC
body as it is to one upstream over a keep-alive session and returns the answer, with the
same event loop and HTTP library as rpcgate. Nothing to do but read, forward and answer:
the floor a pass-through call could reach on this framework.

    python bench/bare_proxy.py UPSTREAM_URL PORT
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web


def main() -> None:
    upstream, port = sys.argv[1], int(sys.argv[2])
    session: aiohttp.ClientSession | None = None

    async def start(app: web.Application) -> None:
        nonlocal session
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            headers={"Content-Type": "application/json"},
            skip_auto_headers=("Accept-Encoding",),
        )

    async def stop(app: web.Application) -> None:
        if session is not None:
            await session.close()

    async def handle(request: web.Request) -> web.Response:
        assert session is not None
        body = await request.read()
        async with session.post(upstream, data=body) as resp:
            answer = await resp.read()
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/", handle)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
