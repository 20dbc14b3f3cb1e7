"""Quorum, opt-in per method: the highest pending nonce any pool knows, and answers that
several upstreams in different domains must agree on."""

from __future__ import annotations

import pytest

from rpcgate.config import ConfigError, parse_config
from rpcgate.quorum import TOO_FEW_ANSWERS, UPSTREAMS_DISAGREE, decide_agree, decide_max
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway, gateway_config
from tests.harness.anvil import DEV_ADDRESSES, AnvilCluster, sign_transaction
from tests.harness.faultproxy import FaultProxy

CHAIN_ID = 31337
ADDR = DEV_ADDRESSES[0]


def test_max_takes_the_highest_quantity() -> None:
    assert decide_max([("a", "0x1"), ("b", "0x3"), ("c", "0x2")]) == "0x3"
    assert decide_max([("a", None), ("b", "0x0")]) == "0x0"


@pytest.mark.parametrize(
    ("answers", "on_dispute", "result", "code"),
    [
        ([("a", "0x1"), ("b", "0x1")], "error", "0x1", None),
        ([("a", "0x1"), ("b", "0x2")], "error", None, UPSTREAMS_DISAGREE),
        ([("a", "0x1"), ("b", "0x2")], "majority", None, UPSTREAMS_DISAGREE),  # no majority
        ([("a", "0x1"), ("b", "0x2"), ("c", "0x1")], "majority", "0x1", None),
        ([("a", "0x1"), ("b", "0x2"), ("c", "0x1")], "error", None, UPSTREAMS_DISAGREE),
        ([("a", "0x1")], "error", None, TOO_FEW_ANSWERS),
        ([("a", {"x": 1, "y": 2}), ("b", {"y": 2, "x": 1})], "error", {"x": 1, "y": 2}, None),
    ],
)
def test_agree_needs_equal_answers(
    answers: list[tuple[str, object]], on_dispute: str, result: object, code: int | None
) -> None:
    needed = 2 if len(answers) < 3 else 3
    got, error = decide_agree(answers, needed, on_dispute)
    assert got == result
    assert (error or {}).get("code") == code
    if error is not None and code == UPSTREAMS_DISAGREE:
        assert [a["upstream"] for a in error["data"]["answers"]] == [n for n, _ in answers]


def test_a_quorum_rule_cannot_ask_more_upstreams_than_the_chain_has() -> None:
    config = gateway_config(["http://127.0.0.1:1", "http://127.0.0.1:2"])
    assert config.chains[0].quorum == ()
    with pytest.raises(ConfigError, match=r"quorum\[0\].upstreams: the chain has only 2"):
        parse_config(
            "chains:\n  - name: x\n    chain_id: 1\n"
            "    quorum: [{method: eth_call, upstreams: 3}]\n"
            "    upstreams: [{url: 'http://127.0.0.1:1'}, {url: 'http://127.0.0.1:2'}]\n"
        )


def _gateway(
    start_gateway: GatewayFactory, proxies: list[FaultProxy], rules: list[dict[str, object]]
) -> RunningGateway:
    return start_gateway(
        [],
        upstreams=[
            {"name": f"node{i}", "url": p.url, "domain": f"d{i}"} for i, p in enumerate(proxies)
        ],
        head_poll_interval=60,
        chain={"quorum": rules},
    )


def test_max_gives_the_pending_nonce_the_fullest_pool_knows(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    gateway = _gateway(
        start_gateway,
        proxies,
        [{"method": "eth_getTransactionCount", "mode": "max", "upstreams": 3}],
    )
    raw = sign_transaction(chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=1, gas=21000)
    cluster[2].send_raw_transaction(raw)  # only node2's pool has it
    for _ in range(6):
        assert gateway.result("eth_getTransactionCount", [ADDR, "pending"]) == "0x1"


def _cheat(cluster: AnvilCluster, index: int) -> str:
    """One node's balance for ADDR is changed behind everyone's back."""
    head = cluster[index].block_number()
    cluster[index].rpc("anvil_setBalance", [ADDR, hex(123456789)])
    return hex(head)


def test_agree_refuses_an_answer_one_upstream_alone_would_give(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    strict = _gateway(
        start_gateway,
        proxies,
        [{"method": "eth_getBalance", "mode": "agree", "upstreams": 3}],
    )
    honest = cluster[1].rpc("eth_getBalance", [ADDR, "latest"])
    block = _cheat(cluster, 0)
    assert cluster[0].rpc("eth_getBalance", [ADDR, block]) != honest  # the lie is there
    error = strict.rpc("eth_getBalance", [ADDR, "latest"], fresh=True).json()["error"]
    assert error["code"] == UPSTREAMS_DISAGREE
    said = {a["upstream"]: a["result"] for a in error["data"]["answers"]}
    assert said == {"node0": hex(123456789), "node1": honest, "node2": honest}
    majority = _gateway(
        start_gateway,
        proxies,
        [{"method": "eth_getBalance", "upstreams": 3, "on_dispute": "majority"}],
    )
    for _ in range(3):
        assert majority.rpc("eth_getBalance", [ADDR, "latest"], fresh=True).json()["result"] == (
            honest
        )
