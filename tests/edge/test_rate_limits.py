"""Rate limits per client: the bucket arithmetic, floods from one address, limits shared by
replicas through Redis, Redis down, batches, keys, and calls in flight."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import time
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from rpcgate.edge.rate_limits import Bucket, Rate, lease_size, retry_after_header, take
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway, ServeProcess
from tests.harness.faultproxy import Fault
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.redis_server import RedisServer

CALL = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("bucket", "cost", "now", "after", "wait"),
    [
        (None, 1, 0.0, Bucket(9.0, 0.0), 0.0),  # a new client starts with a full bucket
        (None, 10, 0.0, Bucket(0.0, 0.0), 0.0),
        (Bucket(0.0, 0.0), 1, 0.0, Bucket(0.0, 0.0), 0.5),  # empty: wait for one token
        (Bucket(0.0, 0.0), 1, 0.5, Bucket(0.0, 0.5), 0.0),  # refilled at 2 per second
        (Bucket(0.0, 0.0), 4, 1.0, Bucket(2.0, 1.0), 1.0),  # not enough: nothing is taken
        (Bucket(3.0, 0.0), 2, 100.0, Bucket(8.0, 100.0), 0.0),  # refill stops at the burst
        (Bucket(5.0, 10.0), 1, 9.0, Bucket(4.0, 9.0), 0.0),  # a clock going back adds nothing
    ],
)
def test_token_bucket(
    bucket: Bucket | None, cost: int, now: float, after: Bucket, wait: float
) -> None:
    assert take(bucket, Rate(2.0, 10), cost, now) == (after, wait)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("rate", "size"),
    [
        (Rate(100.0, 200), 5),  # a twentieth of a second of the rate
        (Rate(1000.0, 100), 5),  # at most a twentieth of the burst
        (Rate(10.0, 20), 1),
        (Rate(0.001, 5), 1),  # at least one
        (Rate(10_000.0, 10_000), 500),
    ],
)
def test_a_lease_is_a_small_share_of_the_bucket(rate: Rate, size: int) -> None:
    assert lease_size(rate) == size


@pytest.mark.unit
def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after_header(0.01) == {"Retry-After": "1"}
    assert retry_after_header(2.2) == {"Retry-After": "3"}
    assert retry_after_header(None) == {}


async def _post_from(
    url: str, source: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.post(url, json=body, headers=headers) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.json(content_type=None)


# The tests' clients are on loopback, which limits.unlimited_networks spares by default.
LIMIT_LOOPBACK: dict[str, Any] = {"unlimited_networks": []}


def _limited(
    cluster_urls: list[str], start_gateway: GatewayFactory, **limits: Any
) -> RunningGateway:
    return start_gateway(cluster_urls, limits={**LIMIT_LOOPBACK, **limits})


def test_a_flood_from_one_address_leaves_another_address_served(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    gateway = _limited(
        anvil_cluster(1, automine=True).urls, start_gateway, rate_per_s=20, rate_burst=20
    )

    async def scenario() -> tuple[list[int], list[tuple[int, dict[str, str], Any]], list[int]]:
        flood_statuses: list[int] = []
        refusals: list[tuple[int, dict[str, str], Any]] = []
        calm: list[int] = []
        stop = asyncio.Event()

        async def flood() -> None:  # 127.0.0.2, as fast as 16 connections go
            connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), limit=16)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def one() -> None:
                    while not stop.is_set():
                        async with session.post(gateway.url, json=CALL) as resp:
                            flood_statuses.append(resp.status)
                            if resp.status == 429 and len(refusals) < 3:
                                body = await resp.json(content_type=None)
                                refusals.append((resp.status, dict(resp.headers), body))
                            else:
                                await resp.read()

                await asyncio.gather(*(one() for _ in range(16)))

        async def steady() -> None:  # 127.0.0.3, ten calls a second
            for _ in range(15):
                status, _, body = await _post_from(gateway.url, "127.0.0.3", CALL)
                calm.append(status if "result" in body else -status)
                await asyncio.sleep(0.1)
            stop.set()

        await asyncio.gather(flood(), steady())
        return flood_statuses, refusals, calm

    flood_statuses, refusals, calm = gateway.loop.run(scenario())
    assert calm == [200] * 15
    assert flood_statuses.count(429) > 10 * flood_statuses.count(200) / 2
    # 1.5 s at 20 per second, plus the burst of 20: what the flood could get, no more
    assert flood_statuses.count(200) <= 20 + 20 * 2.5
    assert refusals[0][0] == 429
    _, headers, body = refusals[0]
    assert body["error"]["code"] == -32005
    assert "limits.rate_per_s" in body["error"]["message"]
    assert 0 < body["error"]["data"]["retry_after_s"] <= 1
    assert headers["Retry-After"] == "1"


def test_forwarded_for_counts_the_client_only_behind_a_trusted_proxy(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    urls = anvil_cluster(1, automine=True).urls
    trusting = start_gateway(
        urls,
        limits={
            **LIMIT_LOOPBACK,
            "rate_per_s": 0.001,
            "rate_burst": 2,
            "trusted_proxies": ["127.0.0.0/8"],
        },
    )
    distrusting = start_gateway(
        urls, limits={**LIMIT_LOOPBACK, "rate_per_s": 0.001, "rate_burst": 2}
    )

    def statuses(gateway: RunningGateway, forwarded: list[str]) -> list[int]:
        return [
            gateway.post(CALL, headers={"X-Forwarded-For": address}).status for address in forwarded
        ]

    addresses = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.1", "198.51.100.1"]
    assert statuses(trusting, addresses) == [200, 200, 200, 200, 429]
    # From a peer that is no trusted proxy, the header is the client's say: ignored.
    assert statuses(distrusting, addresses) == [200, 200, 429, 429, 429]


def test_the_operators_own_backends_are_not_throttled_at_the_defaults(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    """An indexer on the same host: 1,200 calls from 8 connections at once, at the default
    limits (200 a second, bursts of 400, 100 in flight). On loopback none is refused; a
    public client sending the same through a trusted proxy is."""
    gateway = start_gateway(
        anvil_cluster(1, automine=True).urls, limits={"trusted_proxies": ["127.0.0.2/32"]}
    )

    async def flood(source: str, headers: dict[str, str]) -> list[int]:
        connector = aiohttp.TCPConnector(local_addr=(source, 0), limit=8)
        statuses: list[int] = []
        async with aiohttp.ClientSession(connector=connector) as session:

            async def worker() -> None:
                for _ in range(150):
                    async with session.post(gateway.url, json=CALL, headers=headers) as resp:
                        await resp.read()
                        statuses.append(resp.status)

            await asyncio.gather(*(worker() for _ in range(8)))
        return statuses

    own = gateway.loop.run(flood("127.0.0.1", {}))
    assert own.count(200) == 1200, {s: own.count(s) for s in set(own)}
    private = gateway.loop.run(flood("127.0.0.2", {"X-Forwarded-For": "10.20.30.40"}))
    assert private.count(200) == 1200  # a private address behind the trusted proxy
    public = gateway.loop.run(flood("127.0.0.2", {"X-Forwarded-For": "198.51.100.7"}))
    assert public.count(429) > 0  # the same load from a public address is limited
    assert public.count(200) >= 400  # ...after its burst


def test_a_forged_first_forwarded_for_line_does_not_escape_the_limit(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    """Behind a proxy that adds a line of its own (HAProxy's `option forwardfor`), the
    client's forged line comes first; the address the proxy saw is the last line's."""
    gateway = start_gateway(
        anvil_cluster(1, automine=True).urls,
        limits={"rate_per_s": 0.001, "rate_burst": 2, "trusted_proxies": ["127.0.0.0/8"]},
    )

    async def ten() -> list[int]:
        statuses = []
        async with aiohttp.ClientSession() as session:
            for i in range(10):
                headers = CIMultiDict(
                    [("X-Forwarded-For", f"198.51.100.{i + 1}"), ("X-Forwarded-For", "203.0.113.9")]
                )
                async with session.post(gateway.url, json=CALL, headers=headers) as resp:
                    statuses.append(resp.status)
        return statuses

    assert gateway.loop.run(ten()) == [200, 200] + [429] * 8


def test_batch_items_count_one_each(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    gateway = _limited(
        anvil_cluster(1, automine=True).urls,
        start_gateway,
        rate_per_s=0.001,
        rate_burst=10,
        max_batch_items=50,
    )
    batch = [{**CALL, "id": i} for i in range(8)]
    assert gateway.post(batch).status == 200
    again = gateway.post(batch)
    assert again.status == 429
    assert again.json()["error"]["code"] == -32005
    assert gateway.post(batch[:2]).status == 200  # the two tokens left
    too_big = gateway.post([{**CALL, "id": i} for i in range(11)])
    assert too_big.status == 429
    assert "limits.rate_burst" in too_big.json()["error"]["message"]
    assert "Retry-After" not in too_big.headers  # waiting would not help


def test_a_key_has_its_own_rate(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    slow_key, fast_key = "s" * 24, "f" * 24
    gateway = start_gateway(
        anvil_cluster(1, automine=True).urls,
        limits={**LIMIT_LOOPBACK, "rate_per_s": 0.001, "rate_burst": 5},
        auth={
            "keys": [
                {"name": "slow", "key": slow_key, "rate_per_s": 0.001, "rate_burst": 2},
                {"name": "fast", "key": fast_key},
            ]
        },
    )
    slow = [gateway.post(CALL, f"/devnet/{slow_key}").status for _ in range(3)]
    fast = [gateway.post(CALL, f"/devnet/{fast_key}").status for _ in range(6)]
    assert slow == [200, 200, 429]
    assert fast == [200] * 5 + [429]  # the limits' default rate, counted for this key


def test_a_key_with_a_rate_of_its_own_is_limited_on_loopback_too(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    slow_key, fast_key = "s" * 24, "f" * 24
    gateway = start_gateway(
        anvil_cluster(1, automine=True).urls,
        limits={"rate_per_s": 0.001, "rate_burst": 5},  # loopback spared (the default)
        auth={
            "keys": [
                {"name": "slow", "key": slow_key, "rate_per_s": 0.001, "rate_burst": 2},
                {"name": "fast", "key": fast_key},
            ]
        },
    )
    slow = [gateway.post(CALL, f"/devnet/{slow_key}").status for _ in range(3)]
    fast = [gateway.post(CALL, f"/devnet/{fast_key}").status for _ in range(8)]
    assert slow == [200, 200, 429]  # the config gave this key a rate: it is kept
    assert fast == [200] * 8  # the default rate spares loopback


def test_calls_in_flight_per_client_are_capped(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, proxies = proxied_cluster(1, mined=1)
    gateway = start_gateway(
        [p.url for p in proxies], limits={**LIMIT_LOOPBACK, "max_concurrent_per_client": 2}
    )
    proxies[0].set_fault(Fault.LATENCY, delay=0.5)

    async def five_at_once() -> list[tuple[int, Any]]:
        async with aiohttp.ClientSession() as session:

            async def one(i: int) -> tuple[int, Any]:
                call = {
                    "jsonrpc": "2.0",
                    "id": i,
                    "method": "eth_getBalance",
                    "params": [f"0x{i:040x}", "latest"],
                }
                async with session.post(gateway.url, json=call) as resp:
                    return resp.status, await resp.json(content_type=None)

            return await asyncio.gather(*(one(i) for i in range(5)))

    answers = gateway.loop.run(five_at_once())
    assert sorted(status for status, _ in answers) == [200, 200, 429, 429, 429]
    refused = next(body for status, body in answers if status == 429)
    assert "limits.max_concurrent_per_client" in refused["error"]["message"]
    proxies[0].heal()
    assert gateway.rpc("eth_chainId").status == 200  # released when they were answered


def test_redis_down_falls_back_to_counting_in_process(
    anvil_cluster: AnvilClusterFactory,
    start_gateway: GatewayFactory,
    redis_server: RedisServer,
    log_lines: io.StringIO,
) -> None:
    gateway = start_gateway(
        anvil_cluster(1, automine=True).urls,
        cache={"redis_url": redis_server.url},
        limits={**LIMIT_LOOPBACK, "rate_per_s": 0.001, "rate_burst": 5},
    )
    assert [gateway.post(CALL).status for _ in range(2)] == [200, 200]  # 3 left, in Redis
    redis_server.kill()
    # In process, the client starts again with a full bucket: served, never all refused
    # (and the token its replica's lease still held, taken from Redis before it went)...
    after = [gateway.post(CALL).status for _ in range(8)]
    assert after[:5] == [200] * 5 and after[-2:] == [429] * 2  # ...and still limited
    assert after.count(200) <= 6
    events = [json.loads(line)["event"] for line in log_lines.getvalue().splitlines()]
    assert events.count("rate_limits_local") == 1


def test_two_gateway_processes_share_limits_through_redis(
    serve_process: ServeProcess, anvil_cluster: AnvilClusterFactory, redis_server: RedisServer
) -> None:
    upstream = anvil_cluster(1, automine=True).urls[0]
    shared = {
        "cache": {"redis_url": redis_server.url},
        "limits": {**LIMIT_LOOPBACK, "rate_per_s": 10, "rate_burst": 20},
    }
    first, first_process = serve_process(upstream, **shared)
    second, second_process = serve_process(upstream, **shared)
    try:

        async def alternate() -> tuple[list[int], float]:
            statuses = []
            started = time.monotonic()
            async with aiohttp.ClientSession() as session:
                for i in range(60):
                    url = first if i % 2 == 0 else second
                    async with session.post(url, json=CALL) as resp:
                        statuses.append(resp.status)
            return statuses, time.monotonic() - started

        statuses, elapsed = asyncio.run(alternate())
    finally:
        for process in (first_process, second_process):
            process.send_signal(signal.SIGINT)
            process.wait(10)
    served = statuses.count(200)
    # One bucket of 20 refilled at 10/s for both; each counting alone would serve 40+.
    assert served <= 20 + 10 * elapsed + 1, (served, elapsed)
    assert served >= 20
    assert statuses.count(429) == 60 - served


def test_refusals_are_counted_in_status_and_metrics(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    gateway = _limited(
        anvil_cluster(1, automine=True).urls, start_gateway, rate_per_s=0.001, rate_burst=2
    )
    statuses = [gateway.post(CALL).status for _ in range(5)]
    assert statuses == [200, 200, 429, 429, 429]

    async def get(path: str) -> bytes:
        async with aiohttp.ClientSession() as session, session.get(gateway.url + path) as resp:
            return await resp.read()

    status = json.loads(gateway.loop.run(get("/status.json")))
    assert status["clients"] == {
        "refusals": {"rate_limit": 3},
        "rate_limits_counted_in": "process",
        "websocket_connections": 0,
        "websocket_subscriptions": 0,
    }
    metrics = gateway.loop.run(get("/metrics")).decode()
    assert 'rpcgate_client_refusals_total{reason="rate_limit"} 3.0' in metrics
    assert "rpcgate_rate_limits_shared 0.0" in metrics


def _evalsha_calls(redis_server: RedisServer) -> int:
    stats = redis_server.client().info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_calls_spend_a_lease_without_a_redis_round_trip_each(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    """A hundred calls of one client through one replica: a few Redis scripts (a lease of
    five tokens each, asked ahead), not one a call; and still limited by the Redis bucket."""
    gateway = start_gateway(
        anvil_cluster(1, automine=True).urls,
        cache={"redis_url": redis_server.url},
        limits={**LIMIT_LOOPBACK, "rate_per_s": 100, "rate_burst": 100},
    )
    gateway.rpc("eth_chainId")  # the first lease
    before = _evalsha_calls(redis_server)
    statuses = [gateway.post(CALL).status for _ in range(60)]
    scripts = _evalsha_calls(redis_server) - before
    assert statuses.count(200) >= 55
    assert scripts <= 60 // lease_size(Rate(100, 100)) + 3, scripts


def test_two_replicas_spend_a_clients_budget_within_what_the_leases_hold(
    serve_process: ServeProcess, anvil_cluster: AnvilClusterFactory, redis_server: RedisServer
) -> None:
    """One client floods two replicas at once for two seconds: what they serve together is
    never more than its Redis bucket gives (burst plus the rate over the time), and short of
    it by at most the tokens the leases hold (the error the docs state)."""
    upstream = anvil_cluster(1, automine=True).urls[0]
    rate, burst = 100, 100
    shared = {
        "cache": {"redis_url": redis_server.url},
        "limits": {**LIMIT_LOOPBACK, "rate_per_s": rate, "rate_burst": burst},
    }
    first, first_process = serve_process(upstream, **shared)
    second, second_process = serve_process(upstream, **shared)
    try:

        async def flood() -> tuple[list[int], float]:
            statuses: list[int] = []
            started = time.monotonic()
            async with aiohttp.ClientSession() as session:

                async def one_stream(url: str) -> None:
                    while time.monotonic() - started < 2.0:
                        async with session.post(url, json=CALL) as resp:
                            statuses.append(resp.status)

                await asyncio.gather(*(one_stream(u) for u in (first, second) * 8))
            return statuses, time.monotonic() - started

        statuses, elapsed = asyncio.run(flood())
    finally:
        for process in (first_process, second_process):
            process.send_signal(signal.SIGINT)
            process.wait(10)
    served = statuses.count(200)
    budget = burst + rate * elapsed
    assert served <= budget + 1, (served, budget)
    held = 2 * lease_size(Rate(rate, burst))
    assert served >= 0.9 * budget - held, (served, budget)
    assert statuses.count(429) > 0
