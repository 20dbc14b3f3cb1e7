"""eth_call verified by executing the call locally over proven state (`verify: proofs`).

Three anvil nodes in lock-step, each behind a fault proxy, with a small DEX deployed
(tests/harness/dex.py): a quote across three tokens and two pairs touches the factory, both
pairs and their tokens; another call's answer depends on state read only inside a frame
that reverts. Honest upstreams' answers are served as the node gives them, at the `proof`
level. A liar that changes eth_call results, and a liar that leaves slots out of its
eth_createAccessList and answers eth_call as if they held zero, never get a wrong result
to a client under `proofs`; under `integrity` (no execution) they do, so the tests can
fail."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from rpcgate.chain.local_evm import LocalEvm
from rpcgate.verify.calls import ZERO_ADDRESS, BlockEnvironment, CallRequest
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES, AnvilCluster
from tests.harness.dex import Dex, calldata, decoded, deploy_dex
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.loop import BackgroundLoop
from tests.harness.verified_calls import ask_all, traced, verifying_gateway

CHAIN_ID = 31337
ROUNDS = 4
World = tuple[AnvilCluster, list[FaultProxy], Dex]


@pytest.fixture
def world(proxied_cluster: ProxiedClusterFactory) -> World:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=3)
    dex = deploy_dex(cluster)
    cluster.mine_all(2)
    return cluster, proxies, dex


def _calls(dex: Dex) -> list[dict[str, Any]]:
    """Calls across several contracts and slots, a reverted frame, the block environment,
    and two ways to fail."""
    pair_ab, pair_bc = dex.pairs
    return [
        dex.quote_call(),
        dex.quote_call(3 * 10**17),
        dex.balance_call(0, pair_ab),
        dex.balance_call(1, pair_bc),
        dex.balance_call(2, DEV_ADDRESSES[0]),
        {"to": dex.quoter, "data": calldata("heldInReverted(address)", ["address"], [pair_bc])},
        {"to": dex.quoter, "data": calldata("environment()"), "from": DEV_ADDRESSES[1]},
        {"to": dex.quoter, "data": calldata("fail(uint256)", ["uint256"], [1])},
        {"to": dex.quoter, "data": calldata("fail(uint256)", ["uint256"], [0])},
    ]


def _gateway(start_gateway: GatewayFactory, proxies: list[FaultProxy], verify: str) -> Any:
    return verifying_gateway(start_gateway, proxies, verify, attempt_timeout_s=5.0, deadline_s=20.0)


def _honest(cluster: AnvilCluster, call: dict[str, Any], block: str) -> dict[str, Any]:
    """What an honest node answers: the result, or the revert's data."""
    reply = _raw(cluster[2].url, "eth_call", [call, block])
    if "error" in reply:
        return {"error_data": reply["error"].get("data")}
    return {"result": reply["result"]}


def _raw(url: str, method: str, params: list[Any]) -> dict[str, Any]:
    import urllib.request

    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def _served(reply: dict[str, Any]) -> dict[str, Any]:
    if "error" in reply:
        return {"error_data": reply["error"].get("data")}
    return {"result": reply["result"]}


def _rounds(
    loop: BackgroundLoop, gateway: RunningGateway, cluster: AnvilCluster, dex: Dex
) -> tuple[int, int, set[Any]]:
    """Every call, ROUNDS times at once, pinned to the head: (answers equal to an honest
    node's, answers that differ, X-Rpcgate-Verified values of the successes)."""
    block = hex(cluster[2].block_number())
    calls = _calls(dex)
    honest = [_honest(cluster, call, block) for call in calls]
    same = wrong = 0
    levels: set[Any] = set()
    for _ in range(ROUNDS):
        replies = loop.run(ask_all(gateway.url, [("eth_call", [c, block]) for c in calls]))
        for expected, reply in zip(honest, replies, strict=True):
            if _served(reply) == expected:
                same += 1
            else:
                wrong += 1
            if "result" in reply:
                levels.add(reply["verified"])
    return same, wrong, levels


async def _status(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/status.json") as resp:
        return dict(await resp.json())


def _integrity_failures(gateway: RunningGateway) -> dict[str, int]:
    status = gateway.loop.run(_status(gateway.url))
    return {u["name"]: u["integrity_failures"] for u in status["chains"][0]["upstreams"]}


def test_the_world_answers_what_the_contracts_say(world: World) -> None:
    """The DEX is what the tests think it is: quotes through both pairs, a reverted frame
    that carries the pair's holdings out, a revert with a reason."""
    cluster, _, dex = world
    block = hex(cluster[0].block_number())
    (amounts,) = decoded(["uint256[]"], _honest(cluster, dex.quote_call(), block)["result"])
    assert len(amounts) == 3 and amounts[0] == 10**18 and amounts[2] > 0
    held = _honest(cluster, _calls(dex)[5], block)["result"]
    assert int(held, 16) == 5 * 10**20 + 3 * 10**21
    assert _honest(cluster, _calls(dex)[7], block)["error_data"].startswith("0x08c379a0")


def test_honest_calls_are_executed_and_served_as_the_node_answers(
    world: World, start_gateway: GatewayFactory, background_loop: BackgroundLoop
) -> None:
    cluster, proxies, dex = world
    gateway = _gateway(start_gateway, proxies, "proofs")
    same, wrong, levels = _rounds(background_loop, gateway, cluster, dex)
    assert wrong == 0 and same == ROUNDS * len(_calls(dex))
    assert levels == {"proof"}
    assert set(_integrity_failures(gateway).values()) == {0}
    asked = [m for p in proxies for m in p.methods]
    assert "eth_getProof" in asked and "eth_createAccessList" in asked


@pytest.mark.parametrize("verify", ["proofs", "integrity"])
def test_a_changed_call_result_never_reaches_a_client_under_proofs(
    world: World, start_gateway: GatewayFactory, background_loop: BackgroundLoop, verify: str
) -> None:
    cluster, proxies, dex = world
    proxies[0].set_fault(Fault.TAMPER_CALL)
    gateway = _gateway(start_gateway, proxies, verify)
    same, wrong, _ = _rounds(background_loop, gateway, cluster, dex)
    assert proxies[0].tampered_answers > 0, "the liar was never asked"
    if verify == "integrity":  # no execution: the liar's results get through
        assert wrong > 0
        return
    assert wrong == 0, f"{wrong} changed results of {same + wrong} reached the client"
    assert _integrity_failures(gateway)["node0"] > 0


@pytest.mark.parametrize("verify", ["proofs", "integrity"])
def test_a_liar_that_omits_slots_from_its_access_list_never_gets_through_under_proofs(
    world: World, start_gateway: GatewayFactory, background_loop: BackgroundLoop, verify: str
) -> None:
    """The liar's access list leaves out a slot of each contract, and its eth_call answers
    as if those slots held zero: executed over only the slots it names, its answer would
    agree with itself. The honest nodes serve no access list, so the hint is always the
    liar's. Each slot the execution touches is proven when touched, and the lie is caught."""
    cluster, proxies, dex = world
    proxies[0].set_fault(Fault.OMIT_SLOT)
    for honest in proxies[1:]:
        honest.set_fault(
            Fault.RPC_ERROR,
            error_code=-32601,
            error_message="the method eth_createAccessList does not exist/is not available",
            methods=["eth_createAccessList"],
        )
    gateway = _gateway(start_gateway, proxies, verify)
    same, wrong, levels = _rounds(background_loop, gateway, cluster, dex)
    assert proxies[0].tampered_answers > 0, "the liar was never asked"
    if verify == "integrity":
        assert wrong > 0
        return
    assert wrong == 0, f"{wrong} wrong results of {same + wrong} reached the client"
    assert levels == {"proof"}
    assert _integrity_failures(gateway)["node0"] > 0
    assert _integrity_failures(gateway)["node1"] == 0


class _NothingProven:
    async def account(self, address: str) -> Any:
        raise AssertionError("not asked")

    async def slot(self, address: str, slot: int) -> int:
        raise AssertionError("not asked")

    async def header(self, number: int) -> dict[str, Any]:
        raise AssertionError("not asked")


async def test_an_execution_that_touches_too_much_unproven_state_fails() -> None:
    """A call whose every touch must be proven on the spot, with a source that can prove
    nothing: the execution fails (Unproven), it never runs on guessed state."""
    from rpcgate.chain.local_evm import Unproven

    evm = LocalEvm(CHAIN_ID)
    environment = BlockEnvironment(1, 1, ZERO_ADDRESS, 30_000_000, bytes(32), 0, 0, None)
    call = CallRequest(ZERO_ADDRESS, "0x" + "11" * 20, b"", 0, None, False)
    try:
        with pytest.raises(Unproven):
            await evm.execute(environment, call, {}, {}, _NothingProven(), 10.0)
    finally:
        await evm.close()


def test_the_trace_shows_the_execution_and_the_anchors(
    world: World, start_gateway: GatewayFactory, background_loop: BackgroundLoop
) -> None:
    """`X-Rpcgate-Trace: 1` says how the answer was verified: the execution (its block, the
    accounts and slots proven) and, for a block older than the head tracker holds, how its
    hash was anchored to the head."""
    _, proxies, dex = world
    gateway = _gateway(start_gateway, proxies, "proofs")
    block = hex(dex.deployed_at)  # mined in bulk: the tracker never saw this height

    reply = background_loop.run(traced(gateway.url, "eth_call", [dex.quote_call(), block]))
    notes = reply["trace"]["verification"]
    assert any(f"eth_call executed at block {int(block, 16)}" in n for n in notes), notes
    assert any("5 accounts" in n and "returned" in n for n in notes), notes
    assert any("history contract" in n for n in notes), notes


def test_without_pyrevm_calls_are_served_unexecuted(
    world: World,
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where pyrevm has no wheel (another platform, Python 3.13), the workers say so at
    their start: eth_call is answered as before, at the `consensus` level, never refused."""
    hidden = tmp_path / "pyrevm"
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ImportError('no pyrevm on this platform')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    cluster, proxies, dex = world
    gateway = _gateway(start_gateway, proxies, "proofs")
    block = hex(cluster[2].block_number())
    calls = _calls(dex)
    honest = [_honest(cluster, call, block) for call in calls]
    replies = background_loop.run(ask_all(gateway.url, [("eth_call", [c, block]) for c in calls]))
    assert [_served(r) for r in replies] == honest
    assert {r["verified"] for r in replies if "result" in r} == {"consensus"}
