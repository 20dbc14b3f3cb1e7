"""What block a call is about, and the call with its tags pinned to numbers. Pure.

`latest`, `safe` and `finalized` become the consensus numbers before a call is routed, so
every upstream answers about the same block (and the answer can be cached); `pending` and
`earliest` pass through. The block found is what routing needs: only an upstream whose
head is at least that block, and that is not forked at or below it, may answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rpcgate.rpc.methods import method_info

PINNED_TAGS = ("latest", "safe", "finalized")


@dataclass(frozen=True, slots=True)
class Tags:
    latest: int | None = None
    safe: int | None = None
    finalized: int | None = None


@dataclass(frozen=True, slots=True)
class PinnedCall:
    params: Any
    # The block the call is about; None: the chain's head (or unknown, e.g. a block hash),
    # which routing serves from in-sync upstreams.
    block: int | None
    # The tag the call named (or stood for, by leaving the block out); None: a block named
    # by number or hash, or a method without a block parameter. An answer to a tag follows
    # the head.
    tag: str | None = None


# A block hash: 32 bytes. Quantities this long are no block number of any chain.
_HASH_CHARS = 2 + 64


def _resolve(value: Any, tags: Tags) -> tuple[Any, int | None, str | None]:
    """The parameter pinned, the block number it names, and the tag it named."""
    if isinstance(value, str):
        if value in PINNED_TAGS:
            number = getattr(tags, value)
            return (value, None, value) if number is None else (hex(number), number, value)
        if value == "pending":
            return value, None, value
        if value == "earliest":
            return value, 0, None
        if value.startswith(("0x", "0X")):
            if len(value) == _HASH_CHARS:  # a bare block hash (geth takes one): no height
                return value, None, None
            try:
                return value, int(value, 16), None
            except ValueError:
                return value, None, None  # malformed: the upstream will say so to the caller
        return value, None, None
    if isinstance(value, dict):
        if "blockNumber" in value:  # EIP-1898
            pinned, number, tag = _resolve(value["blockNumber"], tags)
            return {**value, "blockNumber": pinned}, number, tag
        return value, None, None  # {"blockHash": ...}: height unknown here
    return value, None, None


def _pin_log_filter(criteria: dict[str, Any], tags: Tags) -> PinnedCall:
    if "blockHash" in criteria:
        return PinnedCall(criteria, None)
    pinned = dict(criteria)
    from_block, _, _ = _resolve(criteria.get("fromBlock", "latest"), tags)
    to_block, to_number, tag = _resolve(criteria.get("toBlock", "latest"), tags)
    # A bound left out is "latest": written in once pinned, left out while nothing is.
    if from_block != "latest":
        pinned["fromBlock"] = from_block
    if to_block != "latest":
        pinned["toBlock"] = to_block
    return PinnedCall(pinned, to_number, tag)


def pin_call(method: str, params: Any, tags: Tags) -> PinnedCall:
    # Not eth_newFilter: a filter pinned to a number would stop following new blocks.
    if (
        method == "eth_getLogs"
        and isinstance(params, list)
        and params
        and isinstance(params[0], dict)
    ):
        pinned_filter = _pin_log_filter(params[0], tags)
        return PinnedCall(
            [pinned_filter.params, *params[1:]], pinned_filter.block, pinned_filter.tag
        )
    position = method_info(method).block_param
    if position is None:
        return PinnedCall(params, None)
    if not isinstance(params, list) or len(params) <= position:
        return PinnedCall(params, None, "latest")  # the block left out: the node's latest
    pinned, block, tag = _resolve(params[position], tags)
    new_params = list(params)
    new_params[position] = pinned
    return PinnedCall(new_params, block, tag)
