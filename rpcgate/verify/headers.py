"""A block header's hash, recomputed from the fields of a JSON-RPC block answer.

The hash is keccak of the RLP list of the header fields in consensus order; each fork
appended fields (London the base fee, Shanghai the withdrawals root, Cancun blob gas and the
parent beacon root, Prague the requests hash), present in a block only from their fork on.

Chains that kept Ethereum's hashing but not its header name their own layout here
(`HEADER_LAYOUTS`): Avalanche's C-Chain (coreth) puts `extDataHash` after the nonce and its
own fields among the optional ones. The chain table names a chain's layout; Ethereum's is
the default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class HeaderLayout:
    """A chain's header fields in consensus order: those every header has, then those each
    fork appended (present only from their fork on, so a header stops at its first absent
    one). Each field is (JSON name, is a number)."""

    fields: tuple[tuple[str, bool], ...]
    fork_fields: tuple[tuple[str, bool], ...]


ETHEREUM_HEADER = HeaderLayout(BASE_FIELDS, FORK_FIELDS)
# coreth's HeaderSerializable (plugin/evm/customtypes/header_ext.go, now in avalanchego's
# graft/coreth): no withdrawals root and no requests hash; the Granite fields are answered
# as `timestampMilliseconds` and `minDelayExcess` (tests/verify/test_header_layouts.py holds
# coreth's golden header). Fields of later upgrades (Helicon's, still moving in 2026) are not
# here: a header carrying them does not recompute.
AVALANCHE_HEADER = HeaderLayout(
    (*BASE_FIELDS, ("extDataHash", False)),
    (
        ("baseFeePerGas", True),  # Apricot Phase 3
        ("extDataGasUsed", True),  # Apricot Phase 4
        ("blockGasCost", True),
        ("blobGasUsed", True),  # Cancun (Etna)
        ("excessBlobGas", True),
        ("parentBeaconBlockRoot", False),
        ("timestampMilliseconds", True),  # Granite
        ("minDelayExcess", True),
    ),
)
HEADER_LAYOUTS: dict[str, HeaderLayout] = {
    "ethereum": ETHEREUM_HEADER,
    "avalanche": AVALANCHE_HEADER,
}
DEFAULT_HEADER_LAYOUT = "ethereum"


def header_layout(name: str) -> HeaderLayout:
    """The layout of that name. Raises ValueError for a name HEADER_LAYOUTS does not hold
    (a configuration error, not a bad answer)."""
    try:
        return HEADER_LAYOUTS[name]
    except KeyError:
        known = ", ".join(sorted(HEADER_LAYOUTS))
        raise ValueError(f"header layout {name!r} is not one of {known}") from None


def header_fields(
    block: Mapping[str, Any], layout: str = DEFAULT_HEADER_LAYOUT
) -> list[int | bytes]:
    """The header's fields as RLP encodes them. Raises BadField."""
    chosen = header_layout(layout)
    fields: list[int | bytes] = [
        quantity(block, name) if number else data(block, name) for name, number in chosen.fields
    ]
    for name, number in chosen.fork_fields:
        if block.get(name) is None:
            break  # a fork's fields come only after all earlier forks' fields
        fields.append(quantity(block, name) if number else data(block, name))
    return fields


def header_hash(block: Mapping[str, Any], layout: str = DEFAULT_HEADER_LAYOUT) -> bytes:
    """keccak(rlp(header)) under the chain's layout (HEADER_LAYOUTS). Raises BadField when a
    field is missing or not hex, ValueError for an unknown layout."""
    return keccak(_rlp.encode(header_fields(block, layout)))


def header_mismatch(block: Mapping[str, Any], layout: str = DEFAULT_HEADER_LAYOUT) -> str | None:
    """None when the block's `hash` is the hash of its header fields under the chain's
    layout; else what differs. Raises ValueError only for an unknown layout."""
    if not isinstance(block, Mapping):
        return "block header: not an object"
    chosen = header_layout(layout)  # before the answer is looked at: not the answer's fault
    try:
        claimed = hex_bytes(block.get("hash"), "field hash")
        recomputed = header_hash(block, layout)
    except BadField as exc:
        return f"block header: {exc}"
    if recomputed != claimed:
        where = "" if chosen is ETHEREUM_HEADER else f" ({layout} layout)"
        return (
            f"header hash {short(recomputed)} recomputed from the fields{where}, "
            f"the block says {short(claimed)}"
        )
    return None
