"""Which blocks may hold a filter's logs (the header's 2048-bit logsBloom), and which logs of
a block's receipts a filter selects, as eth_getLogs selects them.

Filter semantics are geth's: `address` is one address or a list of alternatives; `topics`
lists positions, each None (anything), one topic, or a list of alternatives (an empty list,
or one holding None, matches anything). Hex is compared without regard to case.

Clients differ on a log with fewer topics than the filter has positions: geth and Erigon
never list it, anvil and reth (alloy's filter) list it when the positions past its topics are
all wildcards. `logs_matching` follows geth unless told `lenient_positions=True`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eth_utils import keccak

from rpcgate.verify._hex import BadField, hex_bytes, hex_int

BLOOM_BYTES = 256
_BLOOM_BITS = BLOOM_BYTES * 8


def bloom_bits(value: bytes) -> tuple[int, int, int]:
    """The three bits an address or topic sets: the low 11 bits of the first three byte
    pairs of its keccak (bit 0 is the last bit of the 256-byte bloom)."""
    digest = keccak(value)
    return (
        ((digest[0] << 8) | digest[1]) % _BLOOM_BITS,
        ((digest[2] << 8) | digest[3]) % _BLOOM_BITS,
        ((digest[4] << 8) | digest[5]) % _BLOOM_BITS,
    )


def bloom_may_contain(bloom_hex: str, address: Any = None, topics: Any = None) -> bool:
    """False only when the bloom proves that no log of the block matches the filter
    (address and topics as in eth_getLogs). A bloom or a filter value that is not hex
    cannot rule a block out: True."""
    try:
        bloom = int.from_bytes(hex_bytes(bloom_hex, "logsBloom"), "big")
    except BadField:
        return True
    if len(bloom_hex) != 2 + 2 * BLOOM_BYTES:
        return True
    positions = [_alternatives(address)]
    if isinstance(topics, list):
        positions += [_alternatives(position) for position in topics]
    for wanted in positions:
        if wanted is not None and not any(_in_bloom(bloom, value) for value in wanted):
            return False
    return True


def _in_bloom(bloom: int, value: str) -> bool:
    try:
        raw = hex_bytes(value)
    except BadField:
        return True
    return all(bloom >> bit & 1 for bit in bloom_bits(raw))


def _alternatives(position: Any) -> list[str] | None:
    """A filter position's accepted values, lowercased; None: anything."""
    if position is None:
        return None
    if isinstance(position, str):
        return [position.lower()]
    if isinstance(position, list):
        if not position or any(value is None for value in position):
            return None
        return [str(value).lower() for value in position]
    return [str(position).lower()]  # matches nothing a node answers


def logs_matching(
    receipts: Sequence[Mapping[str, Any]],
    criteria: Mapping[str, Any],
    *,
    lenient_positions: bool = False,
) -> list[dict[str, Any]]:
    """The logs of one block's receipts (all of them, as eth_getBlockReceipts answers) that
    the filter's address and topics select, as eth_getLogs lists them.

    With `lenient_positions`, a log with fewer topics than the filter has positions matches
    when those past its topics are wildcards (anvil, reth); without, never (geth).

    The block range of the filter is the caller's: these receipts are of a block in it.
    Each log's logIndex is its position among the block's logs, as the consensus orders
    them, whatever the receipt says.
    """
    addresses = _alternatives(criteria.get("address"))
    topics = criteria.get("topics")
    positions = [_alternatives(p) for p in topics] if isinstance(topics, list) else []
    matching: list[dict[str, Any]] = []
    log_index = 0
    in_block = [receipt for receipt in receipts if isinstance(receipt, Mapping)]
    for receipt in sorted(in_block, key=_transaction_index):
        logs = receipt.get("logs")
        for entry in logs if isinstance(logs, list) else []:
            if isinstance(entry, Mapping) and _selects(
                addresses, positions, entry, lenient_positions
            ):
                matching.append(_as_listed(receipt, entry, log_index))
            log_index += 1
    return matching


def _transaction_index(receipt: Mapping[str, Any]) -> int:
    try:
        return hex_int(receipt.get("transactionIndex"))
    except BadField:
        return -1  # receipts_root_mismatch rejects these; keep them first here


def _selects(
    addresses: list[str] | None,
    positions: list[list[str] | None],
    entry: Mapping[str, Any],
    lenient_positions: bool,
) -> bool:
    if addresses is not None and str(entry.get("address")).lower() not in addresses:
        return False
    topics = entry.get("topics")
    if not isinstance(topics, list):
        return False
    past_its_topics = positions[len(topics) :]
    if past_its_topics and (not lenient_positions or any(p is not None for p in past_its_topics)):
        return False
    return all(
        wanted is None or str(topic).lower() in wanted
        for wanted, topic in zip(positions, topics, strict=False)
    )


def _as_listed(
    receipt: Mapping[str, Any], entry: Mapping[str, Any], log_index: int
) -> dict[str, Any]:
    listed = {
        "address": entry.get("address"),
        "topics": list(entry.get("topics") or []),
        "data": entry.get("data"),
        "blockNumber": receipt.get("blockNumber"),
        "blockHash": receipt.get("blockHash"),
        "transactionHash": receipt.get("transactionHash"),
        "transactionIndex": receipt.get("transactionIndex"),
        "logIndex": hex(log_index),
        "removed": False,
    }
    if entry.get("blockTimestamp") is not None:  # geth 1.16 and anvil add it to logs
        listed["blockTimestamp"] = entry["blockTimestamp"]
    return listed
