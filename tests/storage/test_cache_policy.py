"""What is cached, under which key, and when a cached answer is dead: pure tables."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rpcgate.consensus.heads import Block
from rpcgate.consensus.pinning import Tags, pin_call
from rpcgate.rpc.methods import METHODS, Cache
from rpcgate.storage.cache_policy import (
    ChainView,
    Entry,
    Lifetime,
    cache_key,
    entry_for,
    is_fresh,
    plan_call,
    redis_key,
)
from rpcgate.storage.response_cache import Coalescer, MemoryLRU

pytestmark = pytest.mark.unit

ADDR = "0x00000000000000000000000000000000000000aa"
HEAD = Block(100, "0xhead100", "0xhash99")
CANONICAL = {n: f"0xhash{n}" for n in range(40, 100)}
VIEW = ChainView(HEAD, finalized=36, canonical=CANONICAL)
TAGS = Tags(100, 68, 36)
TRUSTED = 100  # the answering upstream's agreed height: it holds the consensus head


def planned(method: str, params: Any, view: ChainView = VIEW):  # type: ignore[no-untyped-def]
    return plan_call(1, method, pin_call(method, params, TAGS), view)


def test_every_method_in_the_table_says_why() -> None:
    for name, info in METHODS.items():
        if info.cache is not Cache.NEVER or info.kind != "read":
            assert info.why, name


@pytest.mark.parametrize(
    "method",
    [
        "eth_sendRawTransaction",
        "eth_newFilter",
        "eth_getFilterChanges",
        "eth_subscribe",
        "eth_accounts",
        "eth_syncing",
        "web3_clientVersion",
        "eth_blockNumber",
        "eth_sign",
        "some_unknown_method",
    ],
)
def test_never_cached(method: str) -> None:
    assert planned(method, []).key is None


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("eth_getBalance", [ADDR, "pending"]),
        ("eth_getTransactionCount", [ADDR, "pending"]),
        ("eth_call", [{"to": ADDR}, {"blockHash": "0xabc"}]),
        ("eth_estimateGas", [{"to": ADDR}]),  # no block: the node's latest, not ours
        ("eth_getLogs", [{"blockHash": "0xabc"}]),
    ],
)
def test_calls_without_a_pinned_block_bypass_the_cache(method: str, params: Any) -> None:
    assert planned(method, params).key is None


def test_key_ignores_id_tag_spelling_hex_case_quantity_zeros_and_key_order() -> None:
    a = planned(
        "eth_call",
        [{"to": ADDR.upper().replace("0X", "0x"), "value": "0x01", "data": "0xABCD"}, "latest"],
    )
    b = planned("eth_call", [{"data": "0xabcd", "value": "0x1", "to": ADDR}, "0x64"])
    assert a.key is not None and a.key == b.key
    c = planned("eth_call", [{"data": "0x00abcd", "value": "0x1", "to": ADDR}, "0x64"])
    assert c.key != a.key  # calldata keeps its zeros: it is data, not a quantity


def test_keys_are_namespaced_per_chain_and_redis_keys_are_short() -> None:
    one = cache_key(1, "eth_chainId", [])
    other = cache_key(10, "eth_chainId", [])
    assert one != other
    long_params = [{"to": ADDR, "data": "0x" + "ab" * 5000}, "0x64"]
    key = redis_key("rpcgate:v1:", cache_key(1, "eth_call", long_params))
    assert key.startswith("rpcgate:v1:1:eth_call:") and len(key) < 80


def test_static_answers_are_kept() -> None:
    plan = planned("eth_chainId", [])
    stored = entry_for(plan, "0x1", VIEW, TRUSTED)
    assert stored is not None and stored[1] is Lifetime.STATIC
    assert is_fresh(stored[0], ChainView(Block(500, "0xother", "0x"), 400, {}))


def test_finalized_block_answers_are_kept_long_without_a_hash_check() -> None:
    plan = planned("eth_getBalance", [ADDR, "0x10"])
    stored = entry_for(plan, "0x5", VIEW, TRUSTED)
    assert stored == (Entry("0x5", 16), Lifetime.FINALIZED)


@pytest.mark.parametrize(
    ("trusted_to", "kept"),
    [
        (100, True),  # holds the head: its whole chain below is the canonical one
        (16, True),  # agrees up to the block asked about
        (15, False),  # forked just below it, or not known to agree that high
        (None, False),  # does not vote (unverified, syncing, failing polls)
    ],
)
def test_finalized_history_is_kept_from_an_upstream_known_to_share_the_chain_there(
    trusted_to: int | None, kept: bool
) -> None:
    # Block 16 is far below `finalized` and no hash was ever fetched there (a fresh start).
    block_16 = {"number": "0x10", "hash": "0xold16", "parentHash": "0xold15"}
    for method, params, result in (
        ("eth_getBlockByNumber", ["0x10", False], block_16),
        ("eth_getBalance", [ADDR, "0x10"], "0x5"),
        ("eth_getTransactionReceipt", ["0xt"], receipt(16, "0xold16")),
    ):
        stored = entry_for(planned(method, params), result, VIEW, trusted_to)
        assert (stored is not None) is kept, method
        assert stored is None or stored[1] is Lifetime.FINALIZED


def test_a_final_block_that_contradicts_a_known_canonical_hash_is_not_kept() -> None:
    view = ChainView(HEAD, finalized=36, canonical={**CANONICAL, 16: "0xhash16"})
    wrong = {"number": "0x10", "hash": "0xforked16", "parentHash": "0xold15"}
    assert entry_for(planned("eth_getBlockByNumber", ["0x10", False]), wrong, view, 100) is None
    right = {**wrong, "hash": "0xhash16"}
    assert entry_for(planned("eth_getBlockByNumber", ["0x10", False]), right, view, 100)


def test_unfinalized_answers_die_when_their_block_is_reorganised() -> None:
    plan = planned("eth_getBalance", [ADDR, "latest"])
    assert plan.block == 100 and plan.block_hash == "0xhead100"
    stored = entry_for(plan, "0x5", VIEW, TRUSTED)
    assert stored is not None and stored[1] is Lifetime.UNFINALIZED
    entry = stored[0]
    assert is_fresh(entry, VIEW)
    next_head = ChainView(Block(101, "0xhead101", "0xhead100"), 37, {**CANONICAL, 100: "0xhead100"})
    assert is_fresh(entry, next_head)  # a new head does not change block 100
    reorged = ChainView(Block(101, "0xnew101", "0xnew100"), 37, {**CANONICAL, 100: "0xnew100"})
    assert not is_fresh(entry, reorged)
    forgotten = ChainView(Block(400, "0xh", "0xh"), 300, {})
    assert not is_fresh(entry, forgotten)  # can't tell any more: not served


def test_an_answer_from_a_block_reorganised_during_the_call_is_not_kept() -> None:
    plan = planned("eth_getBalance", [ADDR, "0x50"])
    moved = ChainView(HEAD, 36, {**CANONICAL, 0x50: "0xother80"})
    assert entry_for(plan, "0x5", moved, TRUSTED) is None


def test_a_block_that_is_not_the_consensus_block_is_not_kept() -> None:
    plan = planned("eth_getBlockByNumber", ["0x50", False])
    good = {"number": "0x50", "hash": "0xhash80", "parentHash": "0xhash79"}
    bad = {"number": "0x50", "hash": "0xforked", "parentHash": "0xhash79"}
    assert entry_for(plan, good, VIEW, TRUSTED) is not None
    assert entry_for(plan, bad, VIEW, TRUSTED) is None
    assert entry_for(plan, None, VIEW, TRUSTED) is None  # null: not there yet


def test_head_answers_die_with_the_next_head() -> None:
    plan = planned("eth_gasPrice", [])
    stored = entry_for(plan, "0x3b9aca00", VIEW, TRUSTED)
    assert stored is not None and stored[1] is Lifetime.HEAD
    assert is_fresh(stored[0], VIEW)
    assert not is_fresh(stored[0], ChainView(Block(101, "0xhead101", "0xhead100"), 36, CANONICAL))


def receipt(number: int, block_hash: str) -> dict[str, str]:
    return {
        "transactionHash": "0xt",
        "blockNumber": hex(number),
        "blockHash": block_hash,
        "status": "0x1",
    }


def test_receipts_are_long_lived_only_once_their_block_is_final() -> None:
    plan = planned("eth_getTransactionReceipt", ["0xt"])
    final = entry_for(plan, receipt(20, "0xany"), VIEW, TRUSTED)
    assert final is not None and final[1] is Lifetime.FINALIZED
    recent = entry_for(plan, receipt(90, "0xhash90"), VIEW, TRUSTED)
    assert recent is not None and recent[1] is Lifetime.UNFINALIZED
    moved = ChainView(HEAD, 36, {**CANONICAL, 90: "0xreorged90"})
    assert not is_fresh(recent[0], moved)
    assert entry_for(plan, receipt(90, "0xstale90"), VIEW, TRUSTED) is None  # not canonical now
    assert entry_for(plan, None, VIEW, TRUSTED) is None  # not mined yet: never kept
    pending_tx = {"hash": "0xt", "blockNumber": None, "blockHash": None}
    assert (
        entry_for(planned("eth_getTransactionByHash", ["0xt"]), pending_tx, VIEW, TRUSTED) is None
    )


def test_entries_survive_the_trip_through_bytes() -> None:
    entry = Entry({"a": [1, "0x2"]}, 7, "0xh", None)
    assert Entry.from_bytes(entry.to_bytes()) == entry


def test_memory_lru_stays_within_its_byte_budget_and_evicts_the_oldest() -> None:
    lru = MemoryLRU(max_bytes=3000)
    for i in range(10):
        lru.put(f"k{i}", Entry("x" * 500), expires=100.0)
        lru.get("k0", now=1.0)  # k0 stays hot
    assert lru.bytes <= 3000
    assert lru.get("k0", 1.0) is not None
    assert lru.get("k1", 1.0) is None
    assert lru.get("k9", 1.0) is not None
    assert lru.get("k9", 100.0) is None  # expired


async def test_coalescer_shares_one_fetch_between_identical_calls() -> None:
    coalescer: Coalescer[str] = Coalescer()
    fetches = 0
    shared = 0

    async def fetch() -> str:
        nonlocal fetches
        fetches += 1
        await asyncio.sleep(0.05)
        return "answer"

    def on_shared() -> None:
        nonlocal shared
        shared += 1

    results = await asyncio.gather(*(coalescer.run("k", fetch, on_shared) for _ in range(20)))
    assert results == ["answer"] * 20
    assert (fetches, shared) == (1, 19)
    await coalescer.run("k", fetch, on_shared)
    assert fetches == 2  # once answered, the next call fetches again


async def test_coalesced_callers_survive_the_first_caller_going_away() -> None:
    coalescer: Coalescer[str] = Coalescer()

    async def fetch() -> str:
        await asyncio.sleep(0.05)
        return "answer"

    first = asyncio.create_task(coalescer.run("k", fetch, lambda: None))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(coalescer.run("k", fetch, lambda: None))
    await asyncio.sleep(0.01)
    first.cancel()
    assert await second == "answer"


def test_documented_method_table_is_generated_from_the_method_table() -> None:
    from pathlib import Path

    from rpcgate.rpc.methods import methods_reference

    page = (Path(__file__).resolve().parents[2] / "docs" / "methods.md").read_text()
    start, end = "<!-- methods-reference:start -->", "<!-- methods-reference:end -->"
    documented = page.split(start, 1)[1].split(end, 1)[0]
    assert documented.strip() == methods_reference().strip()
