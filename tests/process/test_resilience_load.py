"""Under a steady load, one upstream in any fault mode, or a whole failure domain down, costs
no failed call, and every answer is the one a healthy node gives."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES, AnvilCluster
from tests.harness.faultproxy import Fault, FaultProxy

CALLS = 240
DOMAINS = ("aws", "aws", "gcp")  # node0 and node1 share a failure domain


def _calls() -> list[tuple[str, list[Any]]]:
    calls: list[tuple[str, list[Any]]] = []
    for i in range(CALLS):
        block = hex(i % 5)
        match i % 4:
            case 0:
                calls.append(("eth_getBalance", [DEV_ADDRESSES[i % 2], block]))
            case 1:
                calls.append(("eth_getBlockByNumber", [block, False]))
            case 2:
                calls.append(("eth_getTransactionCount", [DEV_ADDRESSES[i % 2], block]))
            case _:
                calls.append(("eth_getCode", [DEV_ADDRESSES[i % 2], block]))
    return calls


def _load(gateway: RunningGateway, truth: dict[str, Any]) -> tuple[list[Any], float]:
    """Every call fresh (no cache read), eight at a time; the wrong or failed answers."""

    def one(call: tuple[str, list[Any]]) -> Any:
        method, params = call
        answer = gateway.rpc(method, params, fresh=True).json()
        expected = truth[repr(call)]
        return None if answer.get("result") == expected else (call, answer)

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        bad = [b for b in pool.map(one, _calls()) if b is not None]
    return bad, time.monotonic() - started


@pytest.fixture
def resilient(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> tuple[AnvilCluster, list[FaultProxy], RunningGateway, dict[str, Any]]:
    cluster, proxies = proxied_cluster(3, mined=4)
    gateway = start_gateway(
        [],
        upstreams=[
            {"name": f"node{i}", "url": p.url, "domain": DOMAINS[i]} for i, p in enumerate(proxies)
        ],
        head_poll_interval=0.2,
        failover={
            "attempt_timeout_s": 2.0,
            "deadline_s": 10.0,
            "hedge_delay_min_s": 0.05,
            "hedge_delay_max_s": 0.3,
        },
    )
    truth = {repr(call): cluster[2].rpc(*call) for call in _calls()}
    return cluster, proxies, gateway, truth


@pytest.mark.parametrize(
    "fault",
    [
        Fault.HANG,
        Fault.REFUSE,
        Fault.HTTP_5XX,
        Fault.HTTP_429,
        Fault.RPC_ERROR,
        Fault.GARBAGE,
        Fault.LATENCY,
    ],
)
def test_one_upstream_in_any_fault_mode_costs_no_failed_call(resilient, fault: Fault) -> None:  # type: ignore[no-untyped-def]
    _, proxies, gateway, truth = resilient
    bad, _ = _load(gateway, truth)  # warm: latencies learnt
    assert bad == []
    if fault is Fault.LATENCY:
        proxies[0].set_fault(fault, delay=1.5)  # slower than the hedge ceiling, answering
    else:
        proxies[0].set_fault(fault)
    bad, seconds = _load(gateway, truth)
    assert bad == [], bad[:3]
    assert seconds < 10


def test_a_whole_domain_down_costs_no_failed_call(resilient) -> None:  # type: ignore[no-untyped-def]
    _, proxies, gateway, truth = resilient
    assert _load(gateway, truth)[0] == []
    proxies[0].set_fault(Fault.REFUSE)  # the whole "aws" domain
    proxies[1].set_fault(Fault.HANG)
    bad, _ = _load(gateway, truth)
    assert bad == [], bad[:3]
