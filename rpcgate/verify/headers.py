"""A block header's hash, recomputed from the fields of a JSON-RPC block answer.

The hash is keccak of the RLP list of the header fields in consensus order; each fork
appended fields (London the base fee, Shanghai the withdrawals root, Cancun blob gas and the
parent beacon root, Prague the requests hash), present in a block only from their fork on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eth_utils import keccak

from rpcgate.verify import _rlp
from rpcgate.verify._hex import BadField, data, hex_bytes, quantity, short

# (field, is a number): numbers encode as minimal big-endian integers, the rest as bytes.
BASE_FIELDS: tuple[tuple[str, bool], ...] = (
    ("parentHash", False),
    ("sha3Uncles", False),
    ("miner", False),
    ("stateRoot", False),
    ("transactionsRoot", False),
    ("receiptsRoot", False),
    ("logsBloom", False),
    ("difficulty", True),
    ("number", True),
    ("gasLimit", True),
    ("gasUsed", True),
    ("timestamp", True),
    ("extraData", False),
    ("mixHash", False),
    ("nonce", False),
)
FORK_FIELDS: tuple[tuple[str, bool], ...] = (
    ("baseFeePerGas", True),  # London
    ("withdrawalsRoot", False),  # Shanghai
    ("blobGasUsed", True),  # Cancun
    ("excessBlobGas", True),
    ("parentBeaconBlockRoot", False),
    ("requestsHash", False),  # Prague
)


def header_fields(block: Mapping[str, Any]) -> list[int | bytes]:
    """The header's fields as RLP encodes them. Raises BadField."""
    fields: list[int | bytes] = [
        quantity(block, name) if number else data(block, name) for name, number in BASE_FIELDS
    ]
    for name, number in FORK_FIELDS:
        if block.get(name) is None:
            break  # a fork's fields come only after all earlier forks' fields
        fields.append(quantity(block, name) if number else data(block, name))
    return fields


def header_hash(block: Mapping[str, Any]) -> bytes:
    """keccak(rlp(header)). Raises BadField when a field is missing or not hex."""
    return keccak(_rlp.encode(header_fields(block)))


def header_mismatch(block: Mapping[str, Any]) -> str | None:
    """None when the block's `hash` is the hash of its header fields; else what differs."""
    if not isinstance(block, Mapping):
        return "block header: not an object"
    try:
        claimed = hex_bytes(block.get("hash"), "field hash")
        recomputed = header_hash(block)
    except BadField as exc:
        return f"block header: {exc}"
    if recomputed != claimed:
        return (
            f"header hash {short(recomputed)} recomputed from the fields, "
            f"the block says {short(claimed)}"
        )
    return None
