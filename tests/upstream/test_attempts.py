"""One attempt primitive: every upstream call made for a client is timed, counted in
flight, classified, weighed against the upstream's health and traced alike, whichever path
made it (failover, quorum, broadcast, filters, the verifier through failover), and no other
code calls an upstream."""

from __future__ import annotations

import ast
import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import rpcgate
from rpcgate.consensus.health import UpstreamHealth
from rpcgate.rpc.errors import ErrorClass
from rpcgate.rpc.trace import CallTrace
from rpcgate.upstream.attempt import Attempt, attempt, cut_short
from rpcgate.upstream.client import Upstream
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway, gateway_config
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, sign_transaction
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.loop import BackgroundLoop
from tests.harness.tools import status_json

CHAIN_ID = 31337
ADDR = DEV_ADDRESSES[0]
PACKAGE = Path(rpcgate.__file__).parent
# The modules that may call an upstream: the primitive, and the two health probes with
# rules of their own (head polls, `rpcgate check`).
MAY_CALL_UPSTREAMS = {"upstream/attempt.py", "chain/head_tracker.py", "cli/probe.py"}
UPSTREAM_CALLS = {"call", "call_batch"}


def upstream_calls(source: str) -> list[int]:
    """Lines of `<something>.call(...)` / `.call_batch(...)` in Python source."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in UPSTREAM_CALLS
    ]


@pytest.mark.unit
def test_only_the_attempt_module_calls_upstreams_for_clients() -> None:
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := upstream_calls(path.read_text()))
    }
    assert found.get("upstream/attempt.py"), "the scan finds nothing: it sees no upstream calls"
    elsewhere = {name: lines for name, lines in found.items() if name not in MAY_CALL_UPSTREAMS}
    assert elsewhere == {}, (
        "an upstream called outside rpcgate/upstream/attempt.py: its timing, health and trace "
        f"would go unrecorded; call `attempt(...)` instead ({elsewhere})"
    )


@pytest.mark.unit
def test_the_scan_sees_an_upstream_called_directly() -> None:
    bypass = "async def f(upstream):\n    return await upstream.call('eth_chainId', [], 1)\n"
    assert upstream_calls(bypass) == [2]
    assert upstream_calls("x = state.call.method\nredis = 'redis.call(1)'\n") == []


@pytest.fixture
def one_upstream(proxied_cluster: ProxiedClusterFactory, background_loop: BackgroundLoop) -> Any:
    _, proxies = proxied_cluster(1, chain_id=CHAIN_ID, mined=1)
    config = gateway_config([proxies[0].url]).chains[0].upstreams[0]
    upstream = Upstream(config, max_response_bytes=1 << 20, max_concurrent=8)
    yield upstream, proxies[0], background_loop
    background_loop.run(upstream.close())


def test_an_attempt_is_timed_counted_classified_recorded_and_traced(one_upstream) -> None:  # type: ignore[no-untyped-def]
    upstream, proxy, loop = one_upstream
    health: UpstreamHealth = upstream.health
    log: list[Attempt] = []
    trace = CallTrace()
    proxy.set_fault(Fault.LATENCY, delay=0.3)

    async def watched() -> tuple[int, Any]:
        task = asyncio.create_task(
            attempt(upstream, "eth_blockNumber", [], 2.0, log, trace=trace, hedge=True)
        )
        await asyncio.sleep(0.15)
        under_way = health.in_flight
        return under_way, await task

    under_way, tried = loop.run(watched())
    assert under_way == 1 and health.in_flight == 0
    assert tried.classification is None and tried.reply.result == "0x1"
    assert health.successes == 1 and health.latency_ewma_s is not None
    assert health.latency_ewma_s >= 0.3
    assert log == [Attempt(upstream.name, None, tried.reply.latency_s)]
    assert trace.attempts[0]["upstream"] == upstream.name
    assert trace.attempts[0]["result"] == "ok" and trace.attempts[0]["hedge"] is True
    assert trace.attempts[0]["ms"] >= 300

    proxy.set_fault(Fault.HTTP_5XX)
    failed = loop.run(attempt(upstream, "eth_blockNumber", [], 2.0, log, trace=trace))
    assert failed.error_class is ErrorClass.TRANSIENT
    assert (health.failures, health.last_error_class) == (1, ErrorClass.TRANSIENT)
    assert [a.error_class for a in log] == [None, ErrorClass.TRANSIENT]
    assert trace.attempts[-1]["result"] == "transient" and "hedge" not in trace.attempts[-1]


def test_a_cancelled_attempt_leaves_nothing_in_flight_and_teaches_a_lower_bound(
    one_upstream,
) -> None:  # type: ignore[no-untyped-def]
    upstream, proxy, loop = one_upstream
    proxy.set_fault(Fault.HANG)
    log: list[Attempt] = []
    trace = CallTrace()

    async def abandoned() -> int:
        task = asyncio.create_task(attempt(upstream, "eth_blockNumber", [], 5.0, log))
        await asyncio.sleep(0.1)
        under_way = upstream.health.in_flight
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        cut_short(upstream, 0.1, trace, "cancelled, the other answered")
        return under_way

    assert loop.run(abandoned()) == 1
    assert upstream.health.in_flight == 0
    assert log == []  # it never ended: the metrics count attempts that did
    assert upstream.health.latency_ewma_s == pytest.approx(0.1)
    assert trace.attempts == [
        {"upstream": upstream.name, "result": "cancelled, the other answered"}
    ]


def _gateway(
    start_gateway: GatewayFactory, proxies: list[FaultProxy], **chain: Any
) -> RunningGateway:
    return start_gateway(
        [],
        upstreams=[
            {"name": f"node{i}", "url": p.url, "domain": f"d{i}"} for i, p in enumerate(proxies)
        ],
        head_poll_interval=60,  # no polls during the test: the counts are the calls'
        chain=chain,
    )


def _upstreams(gateway: RunningGateway) -> dict[str, dict[str, Any]]:
    return {u["name"]: u for u in status_json(gateway.url)["chains"][0]["upstreams"]}


def _traced(gateway: RunningGateway, method: str, params: list[Any]) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    reply: dict[str, Any] = gateway.post(
        body, headers={"X-Rpcgate-Trace": "1", "Cache-Control": "no-cache"}
    ).json()
    return reply


def test_quorum_attempts_count_in_each_upstreams_health(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    rule = {"method": "eth_getBalance", "mode": "agree", "upstreams": 3}
    gateway = _gateway(start_gateway, proxies, quorum=[rule])
    before = _upstreams(gateway)
    for _ in range(3):
        assert "result" in gateway.rpc("eth_getBalance", [ADDR, "latest"], fresh=True).json()
    after = _upstreams(gateway)
    for name in ("node0", "node1", "node2"):
        assert after[name]["requests"] == before[name]["requests"] + 3, name
        assert after[name]["latency_ms"] is not None, name
        assert after[name]["score"]["in_flight"] == 0, name
    proxies[2].set_fault(Fault.HTTP_5XX)
    error = gateway.rpc("eth_getBalance", [ADDR, "latest"], fresh=True).json()["error"]
    assert error["code"] == -32055
    assert error["data"]["failed"] == [{"upstream": "node2", "class": "transient"}]
    failing = _upstreams(gateway)["node2"]
    assert failing["requests"] == after["node2"]["requests"] + 1
    assert failing["error_rate"] > 0


def test_a_quorum_trace_lists_its_attempts(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    rule = {"method": "eth_getBalance", "mode": "agree", "upstreams": 3}
    gateway = _gateway(start_gateway, proxies, quorum=[rule])
    proxies[1].set_fault(Fault.HTTP_5XX)
    plain = gateway.rpc("eth_getBalance", [ADDR, "latest"], fresh=True).json()
    assert "trace" not in plain
    trace = _traced(gateway, "eth_getBalance", [ADDR, "latest"])["trace"]
    results = {a["upstream"]: a["result"] for a in trace["attempts"]}
    assert results == {"node0": "ok", "node1": "transient", "node2": "ok"}
    assert all(a["ms"] >= 0 for a in trace["attempts"])
    assert {c["upstream"] for c in trace["considered"]} == {"node0", "node1", "node2"}
    assert trace["block"] == 2
    assert sorted(trace["answered_by"].split(",")) == ["node0", "node2"]


def test_broadcast_sends_are_attempts_in_the_trace_and_the_health(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    gateway = _gateway(start_gateway, proxies)
    before = _upstreams(gateway)
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=1, key=DEV_KEYS[0], gas=21000
    )
    reply = _traced(gateway, "eth_sendRawTransaction", [raw])
    sends = {a["upstream"]: a["result"] for a in reply["trace"]["attempts"]}
    assert sends[reply["trace"]["answered_by"]] == "ok"  # the one that accepted it, at least
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the other sends end after the answer
        after = _upstreams(gateway)
        if all(after[n]["requests"] == before[n]["requests"] + 1 for n in after):
            break
        time.sleep(0.05)
    assert {n: after[n]["requests"] - before[n]["requests"] for n in after} == {
        "node0": 1,
        "node1": 1,
        "node2": 1,
    }
    assert all(u["score"]["in_flight"] == 0 and u["latency_ms"] is not None for u in after.values())
    # Sent again, "already known" is an acceptance: an attempt that answered.
    again = _traced(gateway, "eth_sendRawTransaction", [raw])
    assert again["result"] == reply["result"]
    assert again["trace"]["attempts"][0]["result"] == "ok"
