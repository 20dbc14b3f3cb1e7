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
    answer_block,
    cache_key,
    chain_key,
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


@pytest.mark.parametrize(
    ("method", "params", "key"),
    [
        ("eth_getBalance", ["0XABcd", "0x0010"], '1:["eth_getBalance",["0xabcd","0x10"]]'),
        (
            "eth_call",
            [{"to": "0XAB", "value": "0x01"}, "0x0010"],
            '1:["eth_call",[{"to":"0xab","value":"0x1"},"0x10"]]',
        ),
        ("web3_sha3", ["0xAB", "hello", "ABC"], '1:["web3_sha3",["0xab","hello","ABC"]]'),
        ("eth_chainId", None, '1:["eth_chainId",[]]'),
        ("eth_getBalance", ["0xAB"], '1:["eth_getBalance",["0xab"]]'),  # no block given
    ],
)
def test_the_canonical_form_of_a_key(method: str, params: Any, key: str) -> None:
    assert cache_key(1, method, params) == key


def test_plans_carry_the_key_of_the_call_as_pinned() -> None:
    assert planned("eth_chainId", []).key == '1:["eth_chainId",[]]'
    receipt_key = '1:["eth_getTransactionReceipt",["0xab"]]'
    assert planned("eth_getTransactionReceipt", ["0xAB"]).key == receipt_key
    assert planned("eth_getBalance", [ADDR, "latest"]).key == (
        f'1:["eth_getBalance",["{ADDR}","0x64"]]'
    )


def test_redis_keys_are_the_chain_the_method_and_a_40_digit_digest() -> None:
    one = redis_key("p:", cache_key(1, "eth_getBalance", [ADDR, "0x1"]))
    other = redis_key("p:", cache_key(1, "eth_getBalance", [ADDR, "0x2"]))
    assert one.startswith("p:1:eth_getBalance:") and one != other
    assert len(one.rpartition(":")[2]) == 40


def test_the_chain_key_is_the_chain_id_and_16_digits_of_its_genesis() -> None:
    assert chain_key(5, None) == "5"
    assert chain_key(5, "0x" + "AB" * 32) == "5-abababababababab"


def test_an_answer_without_its_block_hash_is_in_no_known_block() -> None:
    assert answer_block({"blockNumber": "0x5", "hash": "0xtx"}) is None  # a transaction
    assert answer_block({"blockNumber": "0x5"}) is None
    assert answer_block({"number": "0x5", "hash": "0xb5"}) == (5, "0xb5")  # a block


def test_the_finalized_block_itself_is_final() -> None:
    assert VIEW.is_final(36) and not VIEW.is_final(37)


def test_an_answer_that_only_has_a_number_field_is_not_taken_for_a_block() -> None:
    stored = entry_for(planned("eth_getBalance", [ADDR, "0x50"]), {"number": "0x50"}, VIEW, 100)
    assert stored is not None


def test_a_block_of_another_height_than_asked_is_not_kept() -> None:
    plan = planned("eth_getBlockByNumber", ["0x50", False])
    other = {"number": "0x51", "hash": "0xhash80", "parentHash": "0xhash79"}  # hash of 0x50
    assert entry_for(plan, other, VIEW, 100) is None
    unreadable = {"number": "zz", "hash": "0xhash80", "parentHash": "0xhash79"}
    assert entry_for(plan, unreadable, VIEW, 100) is None


def test_each_kind_of_entry_keeps_the_answer_and_what_it_is_checked_against() -> None:
    final, recent = receipt(20, "0xa"), receipt(90, "0xhash90")
    cases = [
        (planned("eth_chainId", []), "0x1", Entry("0x1")),
        (planned("eth_gasPrice", []), "0x3", Entry("0x3", head_hash="0xhead100")),
        (planned("eth_getBalance", [ADDR, "latest"]), "0x5", Entry("0x5", 100, "0xhead100")),
        (planned("eth_getTransactionReceipt", ["0xt"]), final, Entry(final, 20)),
        (planned("eth_getTransactionReceipt", ["0xt"]), recent, Entry(recent, 90, "0xhash90")),
    ]
    for plan, result, entry in cases:
        stored = entry_for(plan, result, VIEW, TRUSTED)
        assert stored is not None and stored[0] == entry, plan


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
    about_the_head = Entry("0x3", head_hash="0xhead100")
    assert Entry.from_bytes(about_the_head.to_bytes()) == about_the_head


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
