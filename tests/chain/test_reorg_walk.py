"""The one walk that WebSocket feeds and HTTP filters take to follow the canonical chain:
where the chain walked back from a new head meets what was delivered, what was dropped,
what is new."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rpcgate.chain.reorg_walk import Followed, follow, walk_back
from rpcgate.consensus.heads import Block
from rpcgate.rpc.jsonrpc import Call

pytestmark = pytest.mark.unit


def _b(number: int, tag: str, parent: str) -> Block:
    return Block(number, tag, parent)


DELIVERED = ["a1", "a2", "a3"]  # oldest first


def test_follow_finds_where_the_new_chain_meets_what_was_delivered() -> None:
    a4, a5 = _b(4, "a4", "a3"), _b(5, "a5", "a4")
    b2, b3, b4 = _b(2, "b2", "a1"), _b(3, "b3", "b2"), _b(4, "b4", "b3")
    cases = [
        # (head, walked newest first) -> what it means
        ("a3", [], Followed(3, (), True)),  # the same head: nothing
        ("a4", [a4], Followed(3, (a4,), True)),  # one more
        ("a5", [a5, a4], Followed(3, (a4, a5), True)),
        ("b3", [_b(3, "b3", "a2")], Followed(2, (_b(3, "b3", "a2"),), True)),  # a3 replaced
        ("b4", [b4, b3, b2], Followed(1, (b2, b3, b4), True)),  # a longer branch from a1
        ("b2", [b2], Followed(1, (b2,), True)),  # a shorter branch: a2 and a3 dropped
        ("a1", [], Followed(1, (), True)),  # back to a block delivered (a rollback)
        ("x9", [_b(9, "x9", "x8")], Followed(3, (_b(9, "x9", "x8"),), False)),  # a gap
    ]
    for head, walked, expected in cases:
        assert follow(DELIVERED, head, walked) == expected, head


def test_the_walk_goes_back_by_parent_hash_to_a_block_delivered() -> None:
    chain = [_b(1, "a1", "a0"), _b(2, "a2", "a1"), _b(2, "b2", "a1"), _b(3, "b3", "b2")]
    blocks = {b.hash: b for b in chain}
    asked: list[str] = []

    async def fetch(call: Call) -> tuple[Any, None]:
        asked.append(call.params[0])
        block = blocks.get(call.params[0])
        if block is None:
            return None, None
        return {
            "number": hex(block.number),
            "hash": block.hash,
            "parentHash": block.parent_hash,
        }, None

    def walk(head: str, limit: int = 10) -> list[str] | None:
        asked.clear()
        walked = asyncio.run(walk_back(fetch, head, {"a1", "a2"}, limit))
        return None if walked is None else [block.hash for block, _ in walked]

    assert walk("b3") == ["b3", "b2"] and asked == ["b3", "b2"]  # stops at a1, not fetched
    assert walk("a2") == [] and asked == []  # a head delivered: nothing to fetch
    assert walk("b3", limit=1) == ["b3"]  # at most `limit`: `follow` sees no link (a gap)
    assert walk("zz") is None  # unknown now: the next walk tries again
