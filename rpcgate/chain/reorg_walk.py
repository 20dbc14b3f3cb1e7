"""The walk that follows the canonical chain for everything that delivers blocks and logs
over time: the WebSocket feeds (`feeds.py`) and the HTTP filters (`filters.py`).

Each remembers the last blocks it delivered (their hashes, oldest first). At a new head it
walks back from that head by parent hash (`eth_getBlockByHash`, through the cache and
failover, so an upstream's failure only makes another one answer) until it meets a block it
delivered. The blocks walked are the new canonical ones, from the fork point up; the
delivered blocks after the meeting point were dropped by a reorg, and their logs go out
again with `removed: true`, oldest first (as geth sends them), before the new ones. A head
that is itself a delivered block is a rollback: the blocks after it are dropped and nothing
is new yet. Nothing depends on which upstream answered: the chain of hashes is the truth,
checked link by link.

`follow` is the decision (pure); `walk_back` fetches the blocks it decides over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import dataclass
from typing import Any

from rpcgate.consensus.heads import Block
from rpcgate.rpc.jsonrpc import Call

# A call through the chain's usual path (cache, failover): (result, error).
Fetch = Callable[[Call], Awaitable[tuple[Any, dict[str, Any] | None]]]


@dataclass(frozen=True, slots=True)
class Followed:
    """What a new head means for the blocks delivered."""

    kept: int  # delivered[:kept] are still canonical; delivered[kept:] were dropped
    new: tuple[Block, ...]  # the new canonical blocks, oldest first
    linked: bool  # False: the walk met no delivered block (a gap): none is known dropped


def follow(delivered: Sequence[str], head_hash: str, walked: Sequence[Block]) -> Followed:
    """Where the chain walked back from the head (`walked`, newest first, each block the
    parent of the one before) meets the blocks delivered (their hashes, oldest first)."""
    meeting = walked[-1].parent_hash if walked else head_hash
    new = tuple(reversed(walked))
    for index in range(len(delivered) - 1, -1, -1):
        if delivered[index] == meeting:
            return Followed(index + 1, new, True)
    return Followed(len(delivered), new, False)


async def walk_back(
    fetch: Fetch, head_hash: str, delivered: Container[str], limit: int
) -> list[tuple[Block, dict[str, Any]]] | None:
    """The blocks from the head back (newest first, with the block objects the nodes sent)
    to the first whose parent was delivered, at most `limit` of them; nothing when the head
    itself was delivered. None when one could not be fetched (the next walk tries again)."""
    walked: list[tuple[Block, dict[str, Any]]] = []
    block_hash = head_hash
    while block_hash not in delivered and len(walked) < limit:
        result, error = await fetch(Call("eth_getBlockByHash", [block_hash, False], None, False))
        block = Block.from_json(result)
        if error is not None or block is None or block.hash != block_hash:
            return None
        walked.append((block, result))
        block_hash = block.parent_hash
    return walked
