"""What the gateway does with each kind of upstream failure, against real anvil nodes."""

from __future__ import annotations

import time

import pytest

from tests.conftest import GatewayFactory, ProxiedClusterFactory, gossip
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, JsonRpcError, sign_transaction
from tests.harness.faultproxy import Fault

CHAIN_ID = 31337
# PUSH4 0xdeadbeef PUSH1 0 MSTORE PUSH1 4 PUSH1 28 REVERT: reverts with 0xdeadbeef as data.
REVERTING_CODE = "0x63deadbeef6000526004601cfd"
REVERTER = "0x00000000000000000000000000000000000dead1"


@pytest.fixture
def two_nodes(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
):  # type: ignore[no-untyped-def]
    cluster, proxies = proxied_cluster(2, chain_id=CHAIN_ID, mined=1)
    return cluster, proxies, start_gateway


def test_revert_comes_back_verbatim_with_its_data_and_is_not_retried(two_nodes) -> None:  # type: ignore[no-untyped-def]
    cluster, proxies, start_gateway = two_nodes
    gateway = start_gateway([p.url for p in proxies])
    overrides = {REVERTER: {"code": REVERTING_CODE}}
    with pytest.raises(JsonRpcError) as raised:  # the node's own answer, for comparison
        cluster[0].rpc("eth_call", [{"to": REVERTER}, "latest", overrides])
    direct = {
        "code": raised.value.code,
        "message": raised.value.error_message,
        "data": raised.value.data,
    }
    reply = gateway.rpc("eth_call", [{"to": REVERTER}, "latest", overrides])
    error = reply.json()["error"]
    assert error == direct
    assert error["data"] == "0xdeadbeef"
    assert reply.headers["X-Rpcgate-Attempts"] == "1"
    assert proxies[0].methods.count("eth_call") + proxies[1].methods.count("eth_call") == 1


def test_invalid_params_are_the_callers_problem_and_not_retried(two_nodes) -> None:  # type: ignore[no-untyped-def]
    _, proxies, start_gateway = two_nodes
    gateway = start_gateway([p.url for p in proxies])
    reply = gateway.rpc("eth_getBalance", ["not-an-address", "latest"])
    assert reply.json()["error"]["code"] == -32602
    assert reply.headers["X-Rpcgate-Attempts"] == "1"


def test_unknown_method_is_tried_everywhere_then_the_upstream_error_returned(two_nodes) -> None:  # type: ignore[no-untyped-def]
    _, proxies, start_gateway = two_nodes
    gateway = start_gateway([p.url for p in proxies])
    reply = gateway.rpc("eth_noSuchMethod", [])
    error = reply.json()["error"]
    assert error["code"] == -32601  # anvil's own answer, not a gateway wrapper
    assert reply.headers["X-Rpcgate-Attempts"] == "2"


def test_missing_data_on_one_node_is_served_by_another(two_nodes) -> None:  # type: ignore[no-untyped-def]
    cluster, proxies, start_gateway = two_nodes
    proxies[0].set_fault(Fault.RPC_ERROR, error_code=-32000, error_message="header not found")
    gateway = start_gateway([p.url for p in proxies])
    for _ in range(4):
        reply = gateway.rpc("eth_getBlockByNumber", ["0x1", False], fresh=True)
        assert reply.json()["result"]["hash"] == cluster[1].block_hash(1)
        assert reply.headers["X-Rpcgate-Upstream"] == "node1"
    # Missing data says nothing about the node's health: no cooldown for it.
    assert gateway.gateway.chains[0].upstreams["node0"].health.is_available(time.monotonic())


def test_rate_limited_upstream_is_rested_for_its_retry_after(two_nodes) -> None:  # type: ignore[no-untyped-def]
    _, proxies, start_gateway = two_nodes
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60)
    proxies[0].set_fault(Fault.HTTP_429)
    proxies[0].reset_counts()
    for _ in range(6):
        assert "result" in gateway.rpc("eth_chainId", fresh=True).json()
    # One 429 (Retry-After: 1) and the upstream is left alone for that second.
    assert proxies[0].methods.count("eth_chainId") == 1
    node0 = gateway.gateway.chains[0].upstreams["node0"]
    assert not node0.health.is_available(time.monotonic())
    assert "429" in node0.health.cooldown_reason


def test_all_upstreams_down_gives_a_clear_error_naming_each_attempt(two_nodes) -> None:  # type: ignore[no-untyped-def]
    _, proxies, start_gateway = two_nodes
    gateway = start_gateway([p.url for p in proxies])
    for proxy in proxies:
        proxy.set_fault(Fault.REFUSE)
    reply = gateway.rpc("eth_getBalance", [DEV_ADDRESSES[0], "0x0"])
    error = reply.json()["error"]
    assert error["code"] == -32050
    attempts = error["data"]["attempts"]
    assert {a["upstream"] for a in attempts} == {"node0", "node1"}
    assert all(a["class"] == "transient" for a in attempts)
    assert reply.headers["X-Rpcgate-Upstream"] == "gateway"


def test_upstreams_never_reached_serve_nothing_and_the_error_says_why(two_nodes) -> None:  # type: ignore[no-untyped-def]
    _, proxies, start_gateway = two_nodes
    for proxy in proxies:
        proxy.set_fault(Fault.REFUSE)
    gateway = start_gateway([p.url for p in proxies])
    reply = gateway.rpc("eth_getBalance", [DEV_ADDRESSES[0], "0x0"])
    error = reply.json()["error"]
    assert error["code"] == -32052
    assert "node0: down" in error["message"] and "connect" in error["message"]


def test_hanging_upstreams_end_at_the_deadline(two_nodes) -> None:  # type: ignore[no-untyped-def]
    _, proxies, start_gateway = two_nodes
    gateway = start_gateway(
        [p.url for p in proxies], failover={"attempt_timeout_s": 0.5, "deadline_s": 1.2}
    )
    for proxy in proxies:
        proxy.set_fault(Fault.HANG)
    started = time.monotonic()
    reply = gateway.rpc("eth_getBalance", [DEV_ADDRESSES[0], "0x0"])
    elapsed = time.monotonic() - started
    assert reply.json()["error"]["code"] in (-32050, -32051)
    assert elapsed < 3.0


def test_the_last_attempt_gets_only_what_is_left_of_the_deadline(two_nodes) -> None:  # type: ignore[no-untyped-def]
    """2 s per attempt, 2.5 s in all: the second attempt is cut to the 0.5 s left, so the
    call ends at the deadline, not at two whole attempts (4 s)."""
    _, proxies, start_gateway = two_nodes
    gateway = start_gateway(
        [p.url for p in proxies],
        failover={"attempt_timeout_s": 2.0, "deadline_s": 2.5, "hedge_budget": 0},
    )
    for proxy in proxies:  # the calls hang; the head polls go on
        proxy.set_fault(Fault.HANG, methods=["eth_getBalance"])
    started = time.monotonic()
    reply = gateway.rpc("eth_getBalance", [DEV_ADDRESSES[0], "0x0"], fresh=True)
    elapsed = time.monotonic() - started
    assert reply.json()["error"]["code"] in (-32050, -32051)
    assert 2.3 < elapsed < 2.9


def test_already_known_transaction_counts_as_sent(two_nodes) -> None:  # type: ignore[no-untyped-def]
    cluster, proxies, start_gateway = two_nodes
    gateway = start_gateway([p.url for p in proxies])
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=5, key=DEV_KEYS[0], gas=21000
    )
    gossip(cluster, raw)  # every node has it already, as after a retried broadcast
    first = gateway.result("eth_sendRawTransaction", [raw])
    again = gateway.rpc("eth_sendRawTransaction", [raw]).json()
    assert again.get("result") == first
    cluster.mine_all()
    assert cluster[0].receipt(first)["status"] == "0x1"


def test_failover_prefers_another_failure_domain(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
) -> None:
    """When an AWS-hosted upstream fails, the retry goes outside AWS first."""
    _, proxies = proxied_cluster(3, chain_id=CHAIN_ID)
    proxies[0].set_fault(Fault.HTTP_5XX)
    proxies[1].set_fault(Fault.HTTP_5XX)  # shares node0's domain, and fails the same way
    gateway = start_gateway(
        [],
        upstreams=[
            {"name": "aws-a", "url": proxies[0].url, "domain": "aws"},
            {"name": "aws-b", "url": proxies[1].url, "domain": "aws"},
            {"name": "other", "url": proxies[2].url, "domain": "hetzner"},
        ],
        failover={"max_attempts": 2},  # two tries: the second must not go to aws-b
    )
    for _ in range(6):
        reply = gateway.rpc("eth_chainId", fresh=True)
        assert reply.json()["result"] == hex(CHAIN_ID)
        assert reply.headers["X-Rpcgate-Upstream"] == "other"
    assert proxies[1].request_count <= proxies[0].request_count


def test_the_retry_after_a_failed_call_leaves_its_failure_domain(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
) -> None:
    """Only the calls fail, the head polls do not: both AWS upstreams stay in the rotation,
    and a call that starts on one of them is retried outside AWS, never on the other."""
    _, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=1)
    gateway = start_gateway(
        [],
        upstreams=[
            {"name": "aws-a", "url": proxies[0].url, "domain": "aws"},
            {"name": "aws-b", "url": proxies[1].url, "domain": "aws"},
            {"name": "other", "url": proxies[2].url, "domain": "hetzner"},
        ],
        failover={"max_attempts": 2, "hedge_budget": 0},
    )
    for proxy in proxies[:2]:
        proxy.set_fault(Fault.HTTP_5XX, methods=["eth_getBalance"])
    balance = [DEV_ADDRESSES[0], "latest"]
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": balance}
    started_in_aws = 0
    # Three calls take three turns of the rotation: one starts on aws-a with aws-b next.
    for _ in range(3):
        reply = gateway.post(
            body, headers={"X-Rpcgate-Trace": "1", "Cache-Control": "no-cache"}
        ).json()
        attempts = [a["upstream"] for a in reply["trace"]["attempts"]]
        assert "result" in reply, (reply, attempts)
        assert attempts[-1] == "other" and len(attempts) <= 2, attempts
        started_in_aws += attempts[0] != "other"
    assert started_in_aws >= 1
