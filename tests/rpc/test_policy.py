"""The method policy: what a public URL refuses to forward, and a chain's allow/deny lists."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from rpcgate.config.settings import MethodsConfig
from rpcgate.rpc.method_policy import MethodPolicy
from rpcgate.rpc.methods import DENY_RULES, Policy
from tests.conftest import GatewayFactory, ProxiedClusterFactory

# At least one real method per default rule, as probes of a public URL send them.
DENIED_BY_DEFAULT = [
    "eth_sendTransaction",
    "eth_sign",
    "eth_signTransaction",
    "eth_signTypedData_v4",
    "eth_accounts",
    "eth_coinbase",
    "personal_unlockAccount",
    "personal_sign",
    "personal_listAccounts",
    "personal_importRawKey",
    "admin_peers",
    "admin_addPeer",
    "admin_nodeInfo",
    "admin_startHTTP",
    "miner_start",
    "miner_setEtherbase",
    "eth_submitWork",
    "eth_submitHashrate",
    "eth_getWork",
    "engine_forkchoiceUpdatedV3",
    "engine_newPayloadV4",
    "clique_propose",
    "les_addBalance",
    "anvil_setBalance",
    "anvil_impersonateAccount",
    "hardhat_setBalance",
    "evm_mine",
    "evm_revert",
    "debug_traceTransaction",
    "debug_traceBlockByNumber",
    "trace_block",
    "trace_replayTransaction",
    "txpool_content",
    "txpool_status",
]


@pytest.mark.unit
def test_every_default_rule_has_a_probe_here() -> None:
    policy = MethodPolicy(MethodsConfig())
    rules_hit = {policy.check(m).pattern for m in DENIED_BY_DEFAULT}  # type: ignore[union-attr]
    assert rules_hit == {rule.pattern for rule in DENY_RULES}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("allow", "deny", "method", "denied_by"),
    [
        ((), (), "eth_getBalance", None),
        ((), (), "eth_sendRawTransaction", None),  # signed by the wallet: the write to serve
        ((), (), "eth_chainId", None),
        ((), (), "admin_peers", "admin_*"),
        ((), (), "ADMIN_PEERS", "admin_*"),  # a node may not care about case; the policy doesn't
        ((), (), "Personal_unlockAccount", "personal_*"),
        ((), (), "admin_\npeers", "admin_*"),
        ((), (), "eth_signTypedData_v3", "eth_sign*"),
        ((), (), "debug_traceCall", "debug_*"),
        (("debug_*",), (), "debug_traceCall", None),
        (("debug_traceCall",), (), "debug_traceTransaction", "debug_*"),
        (("txpool_*", "trace_*"), (), "txpool_status", None),
        (("*",), (), "personal_sign", None),  # the operator's choice, said in full
        ((), ("eth_getProof",), "eth_getProof", "eth_getProof"),
        (("debug_*",), ("debug_traceBlock*",), "debug_traceBlockByNumber", "debug_traceBlock*"),
        (("debug_*",), ("debug_traceBlock*",), "debug_traceTransaction", None),
        ((), ("eth_get*",), "eth_getLogs", "eth_get*"),
        ((), ("eth_get*",), "eth_gasPrice", None),
    ],
)
def test_policy_decides_by_deny_then_allow_then_default(
    allow: tuple[str, ...], deny: tuple[str, ...], method: str, denied_by: str | None
) -> None:
    denial = MethodPolicy(MethodsConfig(allow=allow, deny=deny)).check(method)
    assert (denial.pattern if denial else None) == denied_by


@pytest.mark.unit
def test_denial_error_names_the_policy_and_how_to_change_it() -> None:
    policy = MethodPolicy(MethodsConfig(deny=("eth_getProof",)))
    by_default = policy.check("personal_unlockAccount")
    assert by_default is not None
    error = by_default.error()
    assert error["code"] == -32601
    assert "default method policy" in error["message"]
    assert "personal_*" in error["message"]
    assert "chains[].methods.allow" in error["message"]
    assert error["data"] == {
        "policy": "default policy",
        "rule": "personal_*",
        "method": "personal_unlockAccount",
    }
    by_config = policy.check("eth_getProof")
    assert by_config is not None
    assert "chains[].methods.deny" in by_config.error()["message"]
    send = policy.check("eth_sendTransaction")
    assert send is not None and "eth_sendRawTransaction" in send.error()["message"]


@pytest.mark.unit
def test_every_rule_says_why_and_under_which_policy() -> None:
    for rule in DENY_RULES:
        assert rule.why and isinstance(rule.policy, Policy)


def test_denied_methods_never_reach_an_upstream(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, proxies = proxied_cluster(2, mined=2)
    gateway = start_gateway([p.url for p in proxies])
    for proxy in proxies:
        proxy.reset_counts()
    for method in DENIED_BY_DEFAULT:
        reply = gateway.rpc(method, [])
        assert reply.status == 200
        body = reply.json()
        assert body["error"]["code"] == -32601, (method, body)
        assert "method policy" in body["error"]["message"]
        assert reply.headers["X-Rpcgate-Upstream"] == "gateway"
    batch = [
        {"jsonrpc": "2.0", "id": i, "method": m, "params": []}
        for i, m in enumerate(["admin_peers", "eth_chainId", "personal_sign"])
    ]
    answers = gateway.post(batch).json()
    assert [("error" in a) for a in answers] == [True, False, True]
    assert answers[1]["result"] == hex(31337)
    forwarded = [m for p in proxies for m in p.methods]
    assert not set(forwarded) & set(DENIED_BY_DEFAULT), forwarded


def test_a_chain_serves_what_it_allows_and_refuses_what_it_denies(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, proxies = proxied_cluster(1, mined=2)
    gateway = start_gateway(
        [p.url for p in proxies],
        chain={"methods": {"allow": ["txpool_*", "debug_*"], "deny": ["eth_getProof"]}},
    )
    proxies[0].reset_counts()
    status = gateway.rpc("txpool_status").json()
    assert status["result"] == {"pending": "0x0", "queued": "0x0"}
    denied = gateway.rpc("eth_getProof", ["0x" + "00" * 20, [], "latest"]).json()
    assert denied["error"]["code"] == -32601
    assert "chains[].methods.deny" in denied["error"]["message"]
    still_default = gateway.rpc("admin_peers").json()
    assert still_default["error"]["code"] == -32601
    assert proxies[0].methods.count("txpool_status") == 1
    assert "eth_getProof" not in proxies[0].methods


@pytest.mark.unit
def test_documented_policy_table_is_generated_from_the_rules() -> None:
    from rpcgate.rpc.methods import policy_reference

    page = (Path(__file__).resolve().parents[2] / "docs" / "methods.md").read_text()
    start, end = "<!-- policy-reference:start -->\n", "<!-- policy-reference:end -->"
    documented = page.split(start, 1)[1].split(end, 1)[0]
    assert documented == policy_reference()


@pytest.mark.unit
def test_the_method_table_names_the_rule_the_policy_applies() -> None:
    from rpcgate.rpc.methods import METHODS, denying_rule

    policy = MethodPolicy(MethodsConfig())
    for method in [*METHODS, *DENIED_BY_DEFAULT]:
        rule = denying_rule(method)
        denial = policy.check(method)
        assert (rule.pattern if rule else None) == (denial.pattern if denial else None), method


def test_denials_are_counted_by_rule_in_status_and_metrics(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, proxies = proxied_cluster(1, mined=1)
    gateway = start_gateway([p.url for p in proxies])
    for method in ("admin_peers", "admin_nodeInfo", "debug_traceCall"):
        gateway.rpc(method)

    async def get(path: str) -> bytes:
        async with aiohttp.ClientSession() as session, session.get(gateway.url + path) as resp:
            return await resp.read()

    status = json.loads(gateway.loop.run(get("/status.json")))
    assert status["chains"][0]["denied_by_policy"] == {"admin_*": 2, "debug_*": 1}
    metrics = gateway.loop.run(get("/metrics")).decode()
    assert 'rpcgate_method_denials_total{chain="devnet",rule="admin_*"} 2.0' in metrics


def test_a_denied_method_is_refused_over_websocket_as_over_http(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    """Every call over the socket passes the policy, the socket's own eth_subscribe and
    eth_unsubscribe too: the same error as over HTTP, and no subscription made."""
    _, proxies = proxied_cluster(1, mined=2)
    denied = ["eth_subscribe", "eth_unsubscribe", "eth_getBalance", "eth_newBlockFilter"]
    gateway = start_gateway([p.url for p in proxies], chain={"methods": {"deny": denied}})
    calls = [
        ("eth_subscribe", ["newHeads"]),
        ("eth_unsubscribe", ["0x" + "ab" * 16]),
        ("eth_getBalance", ["0x" + "00" * 20, "latest"]),
        ("eth_newBlockFilter", []),
        ("admin_peers", []),  # the default policy's
    ]

    async def over_websocket() -> list[Any]:
        url = gateway.url.replace("http://", "ws://") + "/devnet"
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            answers = []
            for i, (method, params) in enumerate(calls):
                await ws.send_json({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
                answers.append(await ws.receive_json(timeout=10))
            batch = [
                {"jsonrpc": "2.0", "id": 100 + i, "method": method, "params": params}
                for i, (method, params) in enumerate(calls)
            ]
            await ws.send_json(batch)
            answers.append(await ws.receive_json(timeout=10))
            return answers

    *singles, batch = gateway.loop.run(over_websocket())
    for (method, params), answer in zip(calls, singles, strict=True):
        over_http = gateway.rpc(method, params).json()
        assert "result" not in answer, (method, answer)
        assert answer["error"] == over_http["error"], method
        assert answer["error"]["code"] == -32601
    assert [a["error"] for a in sorted(batch, key=lambda a: a["id"])] == [
        a["error"] for a in singles
    ]
    assert gateway.ingress.websocket_counts()["websocket_subscriptions"] == 0
    status = gateway.gateway.chains[0].denied
    assert status["eth_subscribe"] == 3 and status["eth_unsubscribe"] == 3  # ws twice, http
