"""The one Redis client of a gateway and its one outage policy, against a real redis-server:
a hung Redis costs one timeout, not one per operation; the outage is one line each way; and
every part that shares state through Redis shares that one client."""

from __future__ import annotations

import asyncio
import io
import json
import time

from rpcgate.config.settings import parse_config
from rpcgate.edge.gateway import Gateway
from rpcgate.edge.ingress import Ingress
from rpcgate.storage import redis_client
from rpcgate.storage.redis_client import RedisLink
from tests.harness.redis_server import RedisServer


def _events(captured: io.StringIO) -> list[str]:
    return [json.loads(line)["event"] for line in captured.getvalue().splitlines()]


def test_a_hung_redis_costs_one_timeout_then_answers_at_once_until_the_retry(
    redis_server: RedisServer, log_lines: io.StringIO
) -> None:
    async def scenario() -> tuple[float, float, object, object]:
        link = RedisLink(redis_server.url, "rpcgate:t:", 0.2)
        try:
            assert await link.run("set", link.client.set("k", b"v")) is True
            redis_server.pause()  # connections stay open, nothing answers
            started = time.monotonic()
            first = await link.run("get", link.client.get("k"))
            first_s = time.monotonic() - started
            started = time.monotonic()
            rest = [await link.run("get", link.client.get("k")) for _ in range(50)]
            rest_s = time.monotonic() - started
            assert first is None and rest == [None] * 50 and not link.up
            redis_server.resume()
            await asyncio.sleep(redis_client.RETRY_S + 0.1)
            back = await link.run("get", link.client.get("k"))
            return first_s, rest_s, back, link.up
        finally:
            redis_server.resume()
            await link.close()

    first_s, rest_s, back, up = asyncio.run(scenario())
    assert 0.15 < first_s < 1.0  # the operation's timeout, once
    assert rest_s < 0.1  # then no operation waits for a Redis known to be down
    assert (back, up) == (b"v", True)  # tried again after RETRY_S: up
    assert _events(log_lines).count("redis_down") == 1
    assert _events(log_lines).count("redis_up") == 1


def test_every_part_shares_one_client(redis_server: RedisServer) -> None:
    config = parse_config(
        f"""
cache: {{redis_url: "{redis_server.url}"}}
chains:
  - name: devnet
    chain_id: 31337
    upstreams: [{{url: "http://127.0.0.1:1"}}]
"""
    )
    gateway = Gateway(config)
    link = gateway.redis
    assert link is not None
    assert gateway.cache.redis is not None and gateway.cache.redis.link is link
    assert gateway.shared_state is not None and gateway.shared_state.link is link
    assert gateway.shared_heads is not None and gateway.shared_heads.link is link
    assert Ingress(gateway).admission.limiter._link is link
    for runtime in gateway.chains:
        assert runtime.pending_transactions._shared is gateway.shared_state
        assert runtime.tracker._shared is gateway.shared_heads
    asyncio.run(link.close())
