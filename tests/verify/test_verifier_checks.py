"""The Verifier's checks on real answers from one anvil node, with the consensus it is
anchored on given as plain data (a ChainView) and its fetches answered by the node itself.
What the end-to-end tests cannot reach is pinned here: a block that is not the consensus's
at its height, a receipt from a block the consensus does not hold, an anchor that cannot be
fetched, a log range beyond the bound."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from rpcgate.chain.verifier import Unverifiable, Verifier
from rpcgate.consensus.heads import Block
from rpcgate.storage.cache_policy import ChainView
from tests.harness.anvil import AnvilNode, sign_transaction
from tests.harness.contract import INIT_CODE, create_address
from tests.harness.fixtures import AnvilClusterFactory

OTHER_HASH = "0x" + "ee" * 32


@pytest.fixture
def node(anvil_cluster: AnvilClusterFactory) -> Iterator[AnvilNode]:
    """Blocks 1-3 hold a deployment and calls that log; 10 blocks in all."""
    (anvil,) = anvil_cluster(1)
    sender = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    contract = create_address(sender, 0)
    anvil.send_raw_transaction(sign_transaction(chain_id=31337, nonce=0, data=INIT_CODE))
    anvil.rpc("evm_mine")
    for nonce in (1, 2):
        anvil.send_raw_transaction(
            sign_transaction(chain_id=31337, nonce=nonce, to=contract, data="0xab")
        )
        anvil.rpc("evm_mine")
    for _ in range(7):
        anvil.rpc("evm_mine")
    yield anvil


def _verifier(
    node: AnvilNode,
    mode: Any = "proofs",
    canonical: dict[int, str] | None = None,
    logs_max_blocks: int = 1000,
    broken: bool = False,
) -> Verifier:
    head = node.rpc("eth_getBlockByNumber", ["latest", False])
    view = ChainView(Block.from_json(head), None, canonical or {})

    async def fetch(method: str, params: list[Any]) -> tuple[Any, dict[str, Any] | None]:
        if broken:
            return None, {"code": -32603, "message": "no upstream answered"}
        return node.rpc(method, params), None

    return Verifier(mode, lambda: view, fetch, logs_max_blocks)


def _check(verifier: Verifier, method: str, params: list[Any], result: Any) -> str | None:
    return asyncio.run(verifier.check(method, params, result))


def test_a_block_that_is_not_the_consensus_block_at_its_height_fails(node: AnvilNode) -> None:
    block = node.rpc("eth_getBlockByNumber", ["0x2", True])
    honest = _verifier(node, canonical={2: block["hash"]})
    assert _check(honest, "eth_getBlockByNumber", ["0x2", True], block) is None
    forked = _verifier(node, canonical={2: OTHER_HASH})
    problem = _check(forked, "eth_getBlockByNumber", ["0x2", True], block)
    assert problem is not None and "the consensus has " + OTHER_HASH in problem


def test_a_block_at_the_head_is_not_held_to_the_consensus_hash(node: AnvilNode) -> None:
    """At the head a reorganisation may be under way: its recomputed header is enough."""
    head = node.rpc("eth_getBlockByNumber", ["latest", False])
    number = int(head["number"], 16)
    verifier = _verifier(node, canonical={number: OTHER_HASH})
    assert _check(verifier, "eth_getBlockByNumber", [head["number"], False], head) is None


def test_a_receipt_from_a_block_the_consensus_does_not_hold_fails(node: AnvilNode) -> None:
    receipt = node.rpc("eth_getBlockReceipts", ["0x2"])[0]
    assert _check(_verifier(node), "eth_getTransactionReceipt", [], receipt) is None
    moved = {**receipt, "blockHash": OTHER_HASH}
    problem = _check(_verifier(node), "eth_getTransactionReceipt", [], moved)
    assert problem is not None and "block 2" in problem, problem


def test_a_receipt_that_differs_from_its_blocks_receipts_names_the_field(node: AnvilNode) -> None:
    receipt = node.rpc("eth_getBlockReceipts", ["0x2"])[0]
    changed = {**receipt, "cumulativeGasUsed": hex(int(receipt["cumulativeGasUsed"], 16) + 1)}
    problem = _check(_verifier(node), "eth_getTransactionReceipt", [], changed)
    assert problem is not None and problem.startswith("receipt cumulativeGasUsed")


def test_block_receipts_missing_one_fail_against_the_receipts_root(node: AnvilNode) -> None:
    receipts = node.rpc("eth_getBlockReceipts", ["0x1"])
    assert _check(_verifier(node), "eth_getBlockReceipts", ["0x1"], receipts) is None
    empty_block = node.rpc("eth_getBlockReceipts", ["0x8"])
    assert empty_block == []
    assert _check(_verifier(node), "eth_getBlockReceipts", ["0x8"], []) is None
    problem = _check(_verifier(node), "eth_getBlockReceipts", ["0x1"], [])
    assert problem is not None and "has transactions" in problem


def test_an_anchor_no_upstream_gives_leaves_the_answer_unverifiable(node: AnvilNode) -> None:
    receipts = node.rpc("eth_getBlockReceipts", ["0x1"])
    with pytest.raises(Unverifiable, match="no upstream answered"):
        _check(_verifier(node, broken=True), "eth_getBlockReceipts", ["0x1"], receipts)


def test_logs_in_a_block_the_consensus_does_not_hold_fail_even_with_integrity(
    node: AnvilNode,
) -> None:
    logs = node.rpc("eth_getLogs", [{"fromBlock": "0x1", "toBlock": "0x3"}])
    assert logs
    canonical = {int(log["blockNumber"], 16): log["blockHash"] for log in logs}
    verifier = _verifier(node, "integrity", canonical)
    assert _check(verifier, "eth_getLogs", [{"fromBlock": "0x1", "toBlock": "0x3"}], logs) is None
    canonical[int(logs[0]["blockNumber"], 16)] = OTHER_HASH
    verifier = _verifier(node, "integrity", canonical)
    problem = _check(verifier, "eth_getLogs", [{"fromBlock": "0x1", "toBlock": "0x3"}], logs)
    assert problem is not None and problem.startswith("log:")


def test_a_log_range_beyond_the_bound_is_only_held_to_the_consensus(node: AnvilNode) -> None:
    criteria = {"fromBlock": "0x1", "toBlock": "0x3"}
    logs = node.rpc("eth_getLogs", [criteria])
    fewer = logs[1:]
    assert _check(_verifier(node, logs_max_blocks=3), "eth_getLogs", [criteria], fewer)
    assert _check(_verifier(node, logs_max_blocks=2), "eth_getLogs", [criteria], fewer) is None
    assert not _verifier(node, logs_max_blocks=2).logs_in_bound([criteria])


def test_logs_with_trailing_wildcards_are_accepted_as_geth_or_anvil_list_them(
    node: AnvilNode,
) -> None:
    """A filter with more topic positions than a log has topics: geth leaves the log out,
    anvil (and reth) list it; either list is complete."""
    log = node.rpc("eth_getLogs", [{"fromBlock": "0x2", "toBlock": "0x2"}])[0]
    criteria = {"fromBlock": "0x2", "toBlock": "0x2", "topics": [log["topics"][0], None]}
    as_anvil = node.rpc("eth_getLogs", [criteria])
    assert _check(_verifier(node), "eth_getLogs", [criteria], as_anvil) is None
    assert _check(_verifier(node), "eth_getLogs", [criteria], []) is None


def _block_check(verifier: Verifier, block: dict[str, Any], upstream: str) -> str | None:
    return asyncio.run(
        verifier.check("eth_getBlockByNumber", [block["number"], False], block, upstream)
    )


def test_one_liar_keeps_failing_while_headers_of_another_shape_turn_recompute_off(
    node: AnvilNode,
) -> None:
    """A header that does not hash as Ethereum's, served alike by two upstreams, is a chain
    of another shape (zkSync's, say): headers stop being recomputed, once. One upstream's
    changed field, however often it is served, stays a failure."""
    block = node.rpc("eth_getBlockByNumber", ["0x2", False])
    lie = {**block, "gasUsed": hex(int(block["gasUsed"], 16) + 1)}
    verifier = _verifier(node)
    assert _block_check(verifier, lie, "liar") is not None
    assert _block_check(verifier, lie, "liar") is not None  # the same upstream again
    assert _block_check(verifier, block, "honest") is None
    assert verifier.headers_recomputed
    # Another liar changing another field: still no two alike.
    other = {**block, "timestamp": hex(int(block["timestamp"], 16) + 1)}
    assert _block_check(verifier, other, "second liar") is not None
    assert verifier.headers_recomputed

    shaped_otherwise = {**block, "extraData": "0x01"}  # as if its chain hashed it otherwise
    fresh = _verifier(node)
    assert _block_check(fresh, shaped_otherwise, "a") is not None
    assert _block_check(fresh, shaped_otherwise, "b") is None
    assert not fresh.headers_recomputed
    assert _block_check(fresh, lie, "liar") is None  # recomputing is off on this chain now


def test_a_pending_block_is_not_held_to_a_hash(node: AnvilNode) -> None:
    """geth answers the block being built with a null hash (and null nonce and miner):
    not an upstream's lie, and nothing to check it against."""
    pending = node.rpc("eth_getBlockByNumber", ["pending", False])
    verifier = _verifier(node)
    assert _check(verifier, "eth_getBlockByNumber", ["pending", False], pending) is None
    as_geth = {**pending, "hash": None, "nonce": None, "miner": None}
    assert _check(verifier, "eth_getBlockByNumber", ["pending", False], as_geth) is None
    assert _check(verifier, "eth_getBlockByNumber", ["latest", False], as_geth) is None
