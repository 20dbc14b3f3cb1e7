"""Old blocks anchored to the consensus head by EIP-2935's history contract.

Three anvil nodes in lock-step, 400 blocks high; the first sits behind a proxy that serves
a self-consistent fake of every numbered block (a header field changed and the block's hash
recomputed from it), and answers its fakes by their made-up hashes too. Blocks 300 and more
below the head are beyond the heights the head tracker remembers (256), so the fake's own
hash is all there is to check it by, unless the hash the consensus head's state holds for
that height is proven. With `integrity` or `proofs` no fake reaches a client, by number or
by hash; with `off` fakes get through (so the test can fail)."""

from __future__ import annotations

import random
from typing import Any

import aiohttp
import pytest

from rpcgate.chain.verifier import PARENT_WALK_MAX
from rpcgate.consensus.heads import HASH_HISTORY
from rpcgate.verify import HISTORY_ADDRESS, history_slot
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import AnvilCluster
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.loop import BackgroundLoop
from tests.harness.verified_calls import ask_all, traced, verifying_gateway

CHAIN_ID = 31337
HEIGHT = 400
OLD = range(20, HEIGHT - 300, 5)  # 300 and more below the head
Devnet = tuple[AnvilCluster, list[FaultProxy]]


@pytest.fixture
def devnet(proxied_cluster: ProxiedClusterFactory) -> Devnet:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=HEIGHT)
    proxies[0].set_fault(Fault.FAKE_BLOCK, field="gasUsed")
    return cluster, proxies


def _gateway(start_gateway: GatewayFactory, proxies: list[FaultProxy], verify: str) -> Any:
    return verifying_gateway(start_gateway, proxies, verify)


def _fakes_served(
    loop: BackgroundLoop, gateway: RunningGateway, cluster: AnvilCluster
) -> tuple[int, int, set[Any]]:
    """Every old block by number, three rounds at once, shuffled: (answers equal to an
    honest node's, fakes served, X-Rpcgate-Verified values seen)."""
    honest = {n: cluster[1].block(hex(n))["hash"] for n in OLD}
    same = fakes = 0
    levels = set()
    for round_ in range(3):
        numbers = random.Random(round_).sample(list(OLD), len(OLD))
        replies = loop.run(
            ask_all(gateway.url, [("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        )
        for number, reply in zip(numbers, replies, strict=True):
            assert "error" not in reply, reply
            levels.add(reply["verified"])
            if reply["result"]["hash"] == honest[number]:
                same += 1
            else:
                fakes += 1
    return same, fakes, levels


def test_the_heights_checked_are_beyond_what_the_head_tracker_remembers() -> None:
    assert HEIGHT - max(OLD) > HASH_HISTORY


@pytest.mark.parametrize("verify", ["integrity", "proofs"])
def test_a_self_consistent_fake_old_block_never_reaches_a_client(
    devnet: Devnet, start_gateway: GatewayFactory, background_loop: BackgroundLoop, verify: str
) -> None:
    cluster, proxies = devnet
    gateway = _gateway(start_gateway, proxies, verify)
    same, fakes, levels = _fakes_served(background_loop, gateway, cluster)
    assert proxies[0].tampered_answers > 0, "the liar was never asked"
    assert fakes == 0, f"{fakes} fake old blocks of {same + fakes} reached the client"
    assert levels == {"integrity"}
    status = gateway.loop.run(_status(gateway.url))
    (liar,) = [u for u in status["chains"][0]["upstreams"] if u["name"] == "node0"]
    assert liar["integrity_failures"] > 0

    # By hash: the liar's made-up hash is no block of the chain. Honest nodes know no such
    # block, and the liar's answer is caught; the client is told there is none.
    fake = proxies[0].fake_of(min(OLD))
    assert fake is not None
    for _ in range(3):
        (reply,) = background_loop.run(
            ask_all(gateway.url, [("eth_getBlockByHash", [fake["hash"], False])])
        )
        assert reply.get("result") is None, reply


def test_without_verification_fake_old_blocks_get_through(
    devnet: Devnet, start_gateway: GatewayFactory, background_loop: BackgroundLoop
) -> None:
    cluster, proxies = devnet
    gateway = _gateway(start_gateway, proxies, "off")
    _, fakes, _ = _fakes_served(background_loop, gateway, cluster)
    assert fakes > 0


async def _status(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/status.json") as resp:
        return dict(await resp.json())


@pytest.mark.parametrize("verify", ["integrity", "proofs"])
def test_a_lying_proof_of_the_history_is_caught_and_asked_elsewhere(
    devnet: Devnet, start_gateway: GatewayFactory, background_loop: BackgroundLoop, verify: str
) -> None:
    """A second liar answers the anchor's own question: its storage proofs carry a value
    the proof does not prove. Its lie is its integrity failure, the proof is asked of the
    honest node, and still no fake block reaches a client, and no call fails."""
    cluster, proxies = devnet
    proxies[1].set_fault(Fault.TAMPER_STORAGE)
    gateway = _gateway(start_gateway, proxies, verify)
    _, fakes, _ = _fakes_served(background_loop, gateway, cluster)
    assert fakes == 0
    assert proxies[1].tampered_answers > 0, "the proof liar was never asked"
    status = gateway.loop.run(_status(gateway.url))
    (proof_liar,) = [u for u in status["chains"][0]["upstreams"] if u["name"] == "node1"]
    assert proof_liar["integrity_failures"] > 0


def test_a_history_contract_of_another_kind_is_not_read_and_honest_blocks_pass(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
) -> None:
    """Arbitrum keeps block hashes at the same address with code of its own (a longer
    window): its slots mean other blocks. Only the standard contract, by its proven code
    hash, is read; elsewhere old blocks are checked for consistency only, and an honest
    upstream's old block never fails for a slot read the wrong way."""
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=HEIGHT)
    for node in cluster:  # the same on every node: they stay in lock-step
        node.rpc("anvil_setCode", [HISTORY_ADDRESS, "0x60006000f3"])
        for number in OLD:  # its slots hold what the standard layout would misread
            node.rpc(
                "anvil_setStorageAt", [HISTORY_ADDRESS, history_slot(number), "0x" + "11" * 32]
            )
    cluster.mine_all(1)
    gateway = _gateway(start_gateway, proxies, "integrity")
    same, fakes, levels = _fakes_served(background_loop, gateway, cluster)
    assert (same, fakes) == (3 * len(OLD), 0)
    assert levels == {"integrity"}
    status = gateway.loop.run(_status(gateway.url))
    assert all(u["integrity_failures"] == 0 for u in status["chains"][0]["upstreams"])


def test_what_checks_an_answer_is_read_from_the_cache_even_for_a_no_cache_client(
    devnet: Devnet, start_gateway: GatewayFactory, background_loop: BackgroundLoop
) -> None:
    """A client's `no-cache` is about its own answer. The headers that check an
    eth_getLogs range under `proofs` (each block's logsBloom), final and cached by the first
    call, are not fetched again by the second, and neither is the range's anchor."""
    _, proxies = devnet
    proxies[0].set_fault(Fault.HEALTHY)
    gateway = _gateway(start_gateway, proxies, "proofs")
    logs = ("eth_getLogs", [{"fromBlock": "0x1", "toBlock": hex(300)}])
    counts = []
    for _ in range(2):
        for proxy in proxies:
            proxy.reset_counts()
        (reply,) = background_loop.run(ask_all(gateway.url, [logs]))
        assert reply["result"] == [] and reply["verified"] == "proof", reply
        asked = [m for p in proxies for m in p.methods]
        counts.append((asked.count("eth_getBlockByNumber"), asked.count("eth_getProof")))
    (first_headers, first_proofs), (again_headers, again_proofs) = counts
    assert first_headers >= 300 and first_proofs >= 1, counts
    assert again_headers < 30 and again_proofs == 0, counts  # head polls only


@pytest.mark.parametrize("depth", ["within the walk", "beyond the walk"])
def test_without_a_history_contract_old_blocks_are_anchored_by_parent_links(
    anvil_cluster: Any,
    fault_proxy: Any,
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
    depth: str,
) -> None:
    """A chain before Prague (no history contract): an old block is anchored by walking
    the headers' parent links down from the oldest hash the consensus holds, each header's
    hash recomputed. Within the walk's bound no fake reaches a client; beyond it the block
    is checked for self-consistency only, and the fakes get through (so the test can fail)."""
    cluster = anvil_cluster(3, chain_id=CHAIN_ID, extra_args=["--hardfork", "cancun"])
    assert cluster[0].rpc("eth_getCode", [HISTORY_ADDRESS, "latest"]) == "0x"
    height = HASH_HISTORY + PARENT_WALK_MAX + 80  # room for a block beyond the walk
    cluster.mine_all(height)
    proxies = [fault_proxy(url) for url in cluster.urls]
    proxies[0].set_fault(Fault.FAKE_BLOCK, field="gasUsed")
    gateway = _gateway(start_gateway, proxies, "integrity")
    oldest_held = height - HASH_HISTORY
    deep = oldest_held - PARENT_WALK_MAX - 20
    numbers = (
        list(range(oldest_held - 60, oldest_held - 10, 7)) if depth == "within the walk" else [deep]
    )
    assert all(n < height - HASH_HISTORY for n in numbers)
    honest = {n: cluster[1].block(hex(n))["hash"] for n in numbers}
    fakes = 0
    for _ in range(4):
        replies = background_loop.run(
            ask_all(gateway.url, [("eth_getBlockByNumber", [hex(n), False]) for n in numbers])
        )
        for number, reply in zip(numbers, replies, strict=True):
            assert "error" not in reply, reply
            fakes += reply["result"]["hash"] != honest[number]
    assert proxies[0].tampered_answers > 0, "the liar was never asked"
    if depth == "beyond the walk":
        assert fakes > 0
        return
    assert fakes == 0, f"{fakes} fake old blocks reached the client"

    # The trace says how: down the parent links from a block whose hash was known.
    block = hex(numbers[0] - 3)
    reply = background_loop.run(traced(gateway.url, "eth_getBlockByNumber", [block, False]))
    notes = reply["trace"]["verification"]
    assert any(f"block {numbers[0] - 3} is" in n and "parentHash links" in n for n in notes), notes
