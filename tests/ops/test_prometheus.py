"""The Grafana dashboard against a real Prometheus: Debian's `prometheus` scrapes two
gateway replicas (sharing Redis, over anvil nodes behind fault proxies) under a load that
exercises every panel, and every query of the dashboard, with Grafana's variables filled
in, must return data. A query that returns nothing, or only NaN, is a panel that shows
"No data"; one that returns only zeros is a panel the load never reached."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import AnvilCluster
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.prometheus import PrometheusServer, promtool
from tests.harness.redis_server import RedisServer
from tests.harness.tools import status_json

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "rpcgate.json"

# What Grafana puts in place of the dashboard's variables: every chain and every replica
# (the variables' "All", `allValue: .*`), and a rate window wide enough to hold the whole
# load (Grafana's own $__rate_interval is at least four scrape intervals).
GRAFANA_VARIABLES = {"chain": ".*", "instance": ".*", "__rate_interval": "1m"}

LOAD_KEY = "load-key-0123456789abcdef"
TINY_KEY = "tiny-key-0123456789abcdef"  # one call, then refused (rate_limit)
SLOW_S = 0.4  # node1's latency: every call that starts there is hedged


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every target of every panel, rows' panels included."""

    def walk(panels: list[dict[str, Any]]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            yield from walk(panel.get("panels", []))
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield panel.get("title", "?"), target["expr"]

    return list(walk(dashboard["panels"]))


def as_grafana_sends(expr: str) -> str:
    """`expr` with the dashboard's variables ($name, ${name}) replaced as Grafana does."""

    def value(match: re.Match[str]) -> str:
        return GRAFANA_VARIABLES[match[1] or match[2]]

    filled = re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)
    assert "$" not in filled, filled
    return filled


# -- the load ------------------------------------------------------------------------------


def _call(method: str, params: list[Any], call_id: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": call_id, "method": method, "params": params}


def _address(n: int) -> str:
    return f"0x{n:040x}"


def _shared_call(round_number: int) -> dict[str, Any]:
    """A call about a finalized block, new in each round: five copies of it at once share
    one upstream call, and the other replica finds its answer in Redis."""
    return _call("eth_getBalance", [_address(1000 * (round_number + 1) + 99), "0x0"])


async def _load_round(url: str, round_number: int) -> None:
    """One round of calls that touches every panel: cache misses, hits and bypasses; local
    answers; a batch; error answers (a bad parameter from an upstream, an invalid batch
    item, a method the policy denies); concurrent calls routed over the upstreams (node0's
    503s, node1's latency: hedges); identical calls sharing one upstream call; and refusals
    (a client key over its rate, a call without a key)."""
    served = f"{url}/devnet/{LOAD_KEY}"
    no_cache = {"Cache-Control": "no-cache"}
    base = 1000 * (round_number + 1)
    async with aiohttp.ClientSession() as session:

        async def post(body: Any, target: str = served, **kwargs: Any) -> tuple[int, Any]:
            async with session.post(target, json=body, **kwargs) as resp:
                return resp.status, await resp.json(content_type=None)

        for _ in range(2):  # a miss, then a hit
            await post(_call("eth_getBalance", [_address(base), "latest"]))
        for method in ("eth_blockNumber", "eth_chainId", "eth_gasPrice"):
            await post(_call(method, []))
        await post([_call("eth_chainId", [], 1), _call("eth_gasPrice", [], 2), {"id": 3}])
        transfer = {"from": _address(base), "to": _address(base + 1), "value": "0x0"}
        status, estimate = await post(_call("eth_estimateGas", [transfer]))  # not cached
        assert "result" in estimate, estimate
        status, bad = await post(_call("eth_getBalance", ["not an address", "latest"]))
        assert "error" in bad, bad
        status, denied = await post(_call("personal_unlockAccount", [_address(1), "", 1]))
        assert denied["error"]["code"] == -32601, denied
        fresh = await asyncio.gather(
            *(
                post(
                    _call("eth_getBalance", [_address(base + i), hex(i % 5)]),
                    headers=no_cache,
                )
                for i in range(40)
            )
        )
        assert all("result" in answer for _, answer in fresh), fresh
        await post([{**_shared_call(round_number), "id": i} for i in range(5)])
        tiny = [(await post(_call("eth_chainId", []), f"{url}/devnet/{TINY_KEY}"))[0]]
        tiny += [(await post(_call("eth_chainId", []), f"{url}/devnet/{TINY_KEY}"))[0]]
        assert 429 in tiny, tiny
        status, _ = await post(_call("eth_chainId", []), f"{url}/devnet")  # no key
        assert status in (401, 403), status


class Subscriber:
    """One client WebSocket holding a newHeads subscription while Prometheus scrapes."""

    def __init__(self, gateway: RunningGateway) -> None:
        self.loop = gateway.loop
        self.url = gateway.url.replace("http://", "ws://") + f"/devnet/{LOAD_KEY}"

    def open(self) -> Subscriber:
        self.loop.run(self._open())
        return self

    async def _open(self) -> None:
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(self.url)
        await self.ws.send_json(_call("eth_subscribe", ["newHeads"]))
        reply = await asyncio.wait_for(self.ws.receive_json(), 10)
        assert "result" in reply, reply

    def close(self) -> None:
        async def shut() -> None:
            await self.ws.close()
            await self.session.close()

        self.loop.run(shut())


async def _replica_read(url: str, round_number: int) -> str:
    """The other replica's X-Rpcgate-Cache for the round's shared call."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/devnet/{LOAD_KEY}", json=_shared_call(round_number)) as resp,
    ):
        return resp.headers["X-Rpcgate-Cache"]


def _wait_for_consensus_head(gateway: RunningGateway, number: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        head = status_json(gateway.url)["chains"][0]["consensus"]["head"]
        if head is not None and head["number"] >= number:
            return
        time.sleep(0.05)
    raise AssertionError(f"the consensus head of {gateway.url} did not reach {number}")


# Targets whose zero is the true reading under this load, and why.
ZERO_IS_THE_READING = {
    "sum by (chain) (rpcgate_requests_in_flight": "the load is over when Prometheus is asked",
    "rpcgate_upstream_integrity_failures_total": "no chain verifies answers (chains[].verify)",
}


# -- the tests -----------------------------------------------------------------------------

Replicas = tuple[AnvilCluster, list[FaultProxy], list[RunningGateway]]


@pytest.fixture
def replicas(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory, redis_server: RedisServer
) -> Replicas:
    """Two replicas sharing Redis over three anvil nodes behind fault proxies, a failure
    domain each (so that a call slow on node1 is hedged to another), with client keys."""
    cluster, proxies = proxied_cluster(3, mined=5)
    settings: dict[str, Any] = {
        "upstreams": [
            {"name": f"node{i}", "url": p.url, "domain": f"d{i}"} for i, p in enumerate(proxies)
        ],
        "failover": {"attempt_timeout_s": 2.0, "hedge_delay_min_s": 0.05, "hedge_delay_max_s": 0.1},
        "cache": {"redis_url": redis_server.url},
        "auth": {
            "keys": [
                {"name": "load", "key": LOAD_KEY},
                {"name": "tiny", "key": TINY_KEY, "rate_per_s": 0.001, "rate_burst": 1},
            ]
        },
    }
    return cluster, proxies, [start_gateway([], **settings) for _ in range(2)]


def test_every_dashboard_query_returns_data_from_a_real_prometheus(replicas: Replicas) -> None:
    cluster, proxies, (gateway, replica) = replicas
    prometheus = PrometheusServer([g.url.removeprefix("http://") for g in (gateway, replica)])
    checked = promtool("check", "config", str(prometheus.config_path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    prometheus.start()
    subscriber = None
    try:
        prometheus.wait_for_scrapes(1)
        subscriber = Subscriber(gateway).open()
        # node0 answers calls with 503s (failover, transient attempts, a breaker) while its
        # head polls still pass, so the router keeps trying it; node1 is slow (hedges).
        proxies[0].set_fault(Fault.HTTP_5XX, methods=["eth_getBalance"])
        proxies[1].set_fault(Fault.LATENCY, delay=SLOW_S)
        # Two rounds with scrapes between and after: every counter grows between two
        # samples inside the rate window, so rates, ratios and quantiles are numbers.
        gateway.loop.run(_load_round(gateway.url, 0))
        prometheus.wait_for_scrapes(2)
        proxies[0].set_fault(Fault.HTTP_5XX)  # now its polls fail too: down, its head stuck
        cluster.mine_on([1, 2])  # a new head: node0 lags, head-bound answers go stale
        for each in (gateway, replica):
            _wait_for_consensus_head(each, 6)
        assert gateway.loop.run(_replica_read(replica.url, 0)) == "hit"  # from Redis
        # node2 slow too: the router, which learned to avoid slow node1, starts every call
        # on a slow upstream, so this round hedges as well (else the rate window may hold
        # none, on a busy machine).
        proxies[2].set_fault(Fault.LATENCY, delay=SLOW_S)
        gateway.loop.run(_load_round(gateway.url, 1))
        prometheus.wait_for_scrapes(2)

        dashboard = json.loads(DASHBOARD.read_text())
        for variable in dashboard["templating"]["list"]:
            found = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable.get("definition", ""))
            if found:
                metric, label = found.groups()
                values = prometheus.api(f"label/{label}/values", **{"match[]": metric})
                assert values, f"variable ${variable['name']} has no values ({metric}, {label})"

        queries = panel_queries(dashboard)
        assert len(queries) >= 40
        broken, flat, results = [], [], {}
        for title, expr in queries:
            result = results[expr] = prometheus.query(as_grafana_sends(expr))
            values = [float(series["value"][1]) for series in result]
            finite = [v for v in values if math.isfinite(v)]
            if not values:
                broken.append(f"{title!r}: no series for {expr}")
            elif not finite:
                broken.append(f"{title!r}: only {values} for {expr}")
            elif not any(finite) and not any(part in expr for part in ZERO_IS_THE_READING):
                flat.append(f"{title!r}: only zeros for {expr}")
        assert not broken, "panels without data:\n" + "\n".join(broken)
        assert not flat, "panels the load left at zero:\n" + "\n".join(flat)
        # The 503s show on the errors panel, beside the callers' own mistakes.
        by_class = next(r for expr, r in results.items() if 'error_class!="none"' in expr)
        classes = {(s["metric"]["upstream"], s["metric"]["error_class"]) for s in by_class}
        assert ("node0", "transient") in classes, classes
    finally:
        if subscriber is not None:
            subscriber.close()
        prometheus.stop()
