"""Quorum, opt-in per method: the highest pending nonce any pool knows, and answers that
several upstreams in different domains must agree on."""

from __future__ import annotations

import pytest

from rpcgate.config.settings import ConfigError, parse_config
from rpcgate.consensus.quorum import (
    TOO_FEW_ANSWERS,
    UPSTREAMS_DISAGREE,
    Said,
    decide_agree,
    decide_max,
    hear,
)
from rpcgate.rpc.errors import ErrorClass
from rpcgate.rpc.jsonrpc import rpc_error
from tests.chain.test_failover import REVERTER, REVERTING_CODE
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway, gateway_config
from tests.harness.anvil import DEV_ADDRESSES, AnvilCluster, JsonRpcError, sign_transaction
from tests.harness.faultproxy import FaultProxy

CHAIN_ID = 31337
ADDR = DEV_ADDRESSES[0]


REVERT = {"code": 3, "message": "execution reverted", "data": "0xdeadbeef"}


def ok(upstream: str, result: object) -> Said:
    return Said(upstream, result)


def reverted(upstream: str, data: str = "0xdeadbeef", code: int = 3) -> Said:
    error = {**REVERT, "code": code, "data": data}
    return Said(upstream, error=error, error_class=ErrorClass.REVERT)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("said", "result", "error"),
    [
        ([ok("a", "0x1"), ok("b", "0x3"), ok("c", "0x2")], "0x3", None),
        ([ok("a", None), ok("b", "0x0")], "0x0", None),
        ([ok("a", "0x1"), reverted("b")], "0x1", None),  # a pool that knows wins
        ([reverted("a"), reverted("b", "0x01")], None, REVERT),  # nobody knows: as said
    ],
)
def test_max_takes_the_highest_quantity_and_a_verdict_only_when_nobody_answered(
    said: list[Said], result: object, error: object
) -> None:
    assert decide_max(said) == (result, error)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("said", "on_dispute", "result", "code"),
    [
        ([ok("a", "0x1"), ok("b", "0x1")], "error", "0x1", None),
        ([ok("a", "0x1"), ok("b", "0x2")], "error", None, UPSTREAMS_DISAGREE),
        ([ok("a", "0x1"), ok("b", "0x2")], "majority", None, UPSTREAMS_DISAGREE),  # no majority
        ([ok("a", "0x1"), ok("b", "0x2"), ok("c", "0x1")], "majority", "0x1", None),
        ([ok("a", "0x1"), ok("b", "0x2"), ok("c", "0x1")], "error", None, UPSTREAMS_DISAGREE),
        ([ok("a", "0x1")], "error", None, TOO_FEW_ANSWERS),
        ([ok("a", {"x": 1, "y": 2}), ok("b", {"y": 2, "x": 1})], "error", {"x": 1, "y": 2}, None),
        # The same revert from both, whatever each vendor's code for it: the node's error.
        ([reverted("a"), reverted("b")], "error", None, 3),
        ([reverted("a"), reverted("b", code=-32000)], "error", None, 3),
        # A revert beside a result, or two reverts with other data: they disagree.
        ([reverted("a"), ok("b", "0x2a")], "error", None, UPSTREAMS_DISAGREE),
        ([reverted("a"), reverted("b", "0x01")], "error", None, UPSTREAMS_DISAGREE),
        ([reverted("a"), ok("b", "0x2a"), reverted("c")], "majority", None, 3),
        ([reverted("a")], "error", None, TOO_FEW_ANSWERS),
    ],
)
def test_agree_needs_the_same_answer_or_the_same_verdict(
    said: list[Said], on_dispute: str, result: object, code: int | None
) -> None:
    needed = 2 if len(said) < 3 else 3
    got, error = decide_agree(said, needed, on_dispute)
    assert got == result
    assert (error or {}).get("code") == code
    if error is not None and code == UPSTREAMS_DISAGREE:
        assert [a["upstream"] for a in error["data"]["answers"]] == [s.upstream for s in said]
    if code == 3:
        assert error == said[0].error  # verbatim, message and data included


@pytest.mark.unit
@pytest.mark.parametrize(
    ("said", "result"),
    [
        ([], None),  # nobody said anything
        ([ok("a", "not a number"), ok("b", None)], None),
        ([ok("a", "0x9"), ok("b", "0x10")], "0x10"),  # by value, not by spelling
        ([ok("a", "0x01"), ok("b", "0x1")], "0x01"),  # a tie: the first said
    ],
)
def test_max_compares_quantities(said: list[Said], result: object) -> None:
    assert decide_max(said) == (result, None)


@pytest.mark.unit
def test_an_error_object_s_data_agrees_whatever_its_key_order() -> None:
    one = Said("a", error={**REVERT, "data": {"x": 1, "y": 2}}, error_class=ErrorClass.REVERT)
    two = Said("b", error={**REVERT, "data": {"y": 2, "x": 1}}, error_class=ErrorClass.REVERT)
    assert decide_agree([one, two], 2, "error") == (None, one.error)


@pytest.mark.unit
def test_verdicts_of_another_class_with_the_same_data_disagree() -> None:
    refused = {"code": -32000, "message": "nonce too low", "data": REVERT["data"]}
    txpool = Said("b", error=refused, error_class=ErrorClass.TXPOOL)
    revert = Said("a", error=REVERT, error_class=ErrorClass.REVERT)
    _, error = decide_agree([revert, txpool], 2, "error")
    assert error is not None and error["code"] == UPSTREAMS_DISAGREE


@pytest.mark.unit
def test_a_dispute_and_a_shortfall_say_who_said_what() -> None:
    said = [ok("a", "0x1"), reverted("b")]
    _, error = decide_agree(said, 2, "error")
    assert error == rpc_error(
        UPSTREAMS_DISAGREE,
        "quorum: the upstreams disagree (2 different answers from 2)",
        {
            "answers": [
                {"upstream": "a", "result": "0x1"},
                {"upstream": "b", "error": said[1].error},
            ]
        },
    )
    _, error = decide_agree(said[:1], 2, "error")
    assert error == rpc_error(
        TOO_FEW_ANSWERS,
        "quorum: 1 of the 2 upstreams needed answered",
        {"answers": [{"upstream": "a", "result": "0x1"}], "failed": []},
    )


@pytest.mark.unit
def test_only_results_and_verdicts_about_the_call_count_as_answers() -> None:
    said, failed = hear(
        [
            ("a", "0x1", None, None),
            ("b", None, ErrorClass.REVERT, REVERT),
            ("c", None, ErrorClass.TRANSIENT, {"code": -32603, "message": "internal error"}),
            ("d", None, ErrorClass.RATE_LIMITED, None),
        ]
    )
    assert said == [ok("a", "0x1"), Said("b", error=REVERT, error_class=ErrorClass.REVERT)]
    assert failed == [("c", ErrorClass.TRANSIENT), ("d", ErrorClass.RATE_LIMITED)]
    _, error = decide_agree(said[1:], 2, "error", failed)
    assert error is not None and error["code"] == TOO_FEW_ANSWERS
    assert error["data"]["failed"] == [
        {"upstream": "c", "class": "transient"},
        {"upstream": "d", "class": "rate_limited"},
    ]


@pytest.mark.unit
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


def _revert_of(cluster: AnvilCluster, params: list[object]) -> dict[str, object]:
    """The node's own answer to a call that reverts, for comparison."""
    with pytest.raises(JsonRpcError) as raised:
        cluster[0].rpc("eth_call", params)
    error = raised.value
    return {"code": error.code, "message": error.error_message, "data": error.data}


@pytest.mark.parametrize("mode", ["agree", "max"])
def test_a_revert_every_upstream_gives_comes_back_as_the_node_gave_it(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory, mode: str
) -> None:
    cluster, proxies = proxied_cluster(2, chain_id=CHAIN_ID, mined=1)
    gateway = _gateway(start_gateway, proxies, [{"method": "eth_call", "mode": mode}])
    params: list[object] = [{"to": REVERTER}, "latest", {REVERTER: {"code": REVERTING_CODE}}]
    direct = _revert_of(cluster, params)
    reply = gateway.rpc("eth_call", params, fresh=True)
    error = reply.json()["error"]
    assert error == direct
    assert (error["code"], error["data"]) == (3, "0xdeadbeef")
    assert [p.methods.count("eth_call") for p in proxies] == [1, 1]  # both were asked


def test_a_revert_beside_a_result_is_a_dispute(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    cluster, proxies = proxied_cluster(2, chain_id=CHAIN_ID, mined=1)
    gateway = _gateway(start_gateway, proxies, [{"method": "eth_call", "mode": "agree"}])
    cluster[0].rpc("anvil_setCode", [REVERTER, REVERTING_CODE])  # node0 alone has the code
    error = gateway.rpc("eth_call", [{"to": REVERTER}, "latest"], fresh=True).json()["error"]
    assert error["code"] == UPSTREAMS_DISAGREE
    said = {a["upstream"]: a for a in error["data"]["answers"]}
    assert said["node0"]["error"]["data"] == "0xdeadbeef"
    assert said["node1"]["result"] == "0x"
