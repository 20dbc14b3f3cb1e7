"""What block a call is about, and the call with its tags pinned to numbers. Pure.

`latest`, `safe` and `finalized` become the consensus numbers before a call is routed, so
every upstream answers about the same block (and the answer can be cached); `pending` and
`earliest` pass through. The block found is what routing needs: only an upstream whose
head is at least that block, and that is not forked at or below it, may answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rpcgate.methods import method_info

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


def _resolve(value: Any, tags: Tags) -> tuple[Any, int | None]:
    if isinstance(value, str):
        if value in PINNED_TAGS:
            number = getattr(tags, value)
            return (value, None) if number is None else (hex(number), number)
        if value == "pending":
            return value, None
        if value == "earliest":
            return value, 0
        if value.startswith(("0x", "0X")):
            try:
                return value, int(value, 16)
            except ValueError:
                return value, None  # malformed: the upstream will say so to the caller
        return value, None
    if isinstance(value, dict):
        if "blockNumber" in value:  # EIP-1898
            pinned, number = _resolve(value["blockNumber"], tags)
            return {**value, "blockNumber": pinned}, number
        return value, None  # {"blockHash": ...}: height unknown here
    return value, None


def _pin_log_filter(criteria: dict[str, Any], tags: Tags) -> tuple[dict[str, Any], int | None]:
    if "blockHash" in criteria:
        return criteria, None
    pinned = dict(criteria)
    from_block, _ = _resolve(criteria.get("fromBlock", "latest"), tags)
    to_block, to_number = _resolve(criteria.get("toBlock", "latest"), tags)
    if "fromBlock" in criteria or from_block != "latest":
        pinned["fromBlock"] = from_block
    if "toBlock" in criteria or to_block != "latest":
        pinned["toBlock"] = to_block
    return pinned, to_number


def pin_call(method: str, params: Any, tags: Tags) -> PinnedCall:
    # Not eth_newFilter: a filter pinned to a number would stop following new blocks.
    if (
        method == "eth_getLogs"
        and isinstance(params, list)
        and params
        and isinstance(params[0], dict)
    ):
        criteria, block = _pin_log_filter(params[0], tags)
        return PinnedCall([criteria, *params[1:]], block)
    position = method_info(method).block_param
    if position is None or not isinstance(params, list) or len(params) <= position:
        return PinnedCall(params, None)
    pinned, block = _resolve(params[position], tags)
    new_params = list(params)
    new_params[position] = pinned
    return PinnedCall(new_params, block)
