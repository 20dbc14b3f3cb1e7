"""Receipts re-encoded from their JSON-RPC fields, and a block's receiptsRoot recomputed.

A receipt's consensus encoding is rlp([status or post-state root, cumulativeGasUsed,
logsBloom, logs]), each log rlp([address, topics, data]); a typed transaction's receipt is
prefixed by its type byte. The trie covers only these fields: a receipt's gasUsed,
effectiveGasPrice, transactionHash or contractAddress are not in it.

An OP stack deposit's receipt (0x7e) adds its depositNonce and depositReceiptVersion since
Canyon; from Regolith to Canyon the answer carries a depositNonce that the trie leaves out
(op-geth's Receipts.EncodeIndex: only a receipt with a version has the two fields).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rpcgate.verify import _rlp
from rpcgate.verify._hex import BadField, data, hex_bytes, quantity, same_quantity, short
from rpcgate.verify.transactions import (
    DEPOSIT_TRANSACTION_TYPE,
    ENCODED_TRANSACTION_TYPES,
    UnknownTransactionType,
    transaction_type,
)
from rpcgate.verify.tries import ordered_trie_root


def receipt_encoding(receipt: Mapping[str, Any]) -> bytes:
    """The receipt's consensus encoding, as stored in its block's receipts trie.

    Raises BadField (a ValueError) for a missing or malformed field, and its subclass
    UnknownTransactionType for a type outside ENCODED_TRANSACTION_TYPES.
    """
    kind = transaction_type(receipt)
    if kind not in ENCODED_TRANSACTION_TYPES:
        raise UnknownTransactionType(f"receipt type {hex(kind)} is not known")
    outcome: int | bytes
    if receipt.get("status") is not None:  # since Byzantium
        outcome = quantity(receipt, "status")
    elif receipt.get("root") is not None:
        outcome = data(receipt, "root")
    else:
        raise BadField("receipt has neither status nor root")
    logs = receipt.get("logs")
    if not isinstance(logs, list):
        raise BadField("field logs missing or not a list")
    fields: list[Any] = [
        outcome,
        quantity(receipt, "cumulativeGasUsed"),
        data(receipt, "logsBloom"),
        [_log_fields(entry) for entry in logs],
    ]
    if kind == DEPOSIT_TRANSACTION_TYPE and receipt.get("depositReceiptVersion") is not None:
        # Canyon: a version implies a nonce (op-geth); one without is not a receipt a node
        # makes, and clients would encode it differently.
        fields += [quantity(receipt, "depositNonce"), quantity(receipt, "depositReceiptVersion")]
    encoded = _rlp.encode(fields)
    return encoded if kind == 0 else bytes([kind]) + encoded


def _log_fields(entry: Any) -> list[Any]:
    if not isinstance(entry, Mapping):
        raise BadField("a log is not an object")
    topics = entry.get("topics")
    if not isinstance(topics, list):
        raise BadField("field topics of a log missing or not a list")
    return [
        data(entry, "address"),
        [hex_bytes(topic, "a log topic") for topic in topics],
        data(entry, "data"),
    ]


def receipts_root_mismatch(receipts: Sequence[Any], block_header: Mapping[str, Any]) -> str | None:
    """None when a block's receipts (eth_getBlockReceipts) recompute to its header's
    receiptsRoot and say they are that block's; else what differs.

    The receipts are put in transactionIndex order; the indexes must be 0 to n-1.
    """
    if not isinstance(receipts, Sequence) or isinstance(receipts, str | bytes):
        return "receipts are not a list"
    if not isinstance(block_header, Mapping):
        return "block header: not an object"
    try:
        root = hex_bytes(block_header.get("receiptsRoot"), "field receiptsRoot")
        block_hash = hex_bytes(block_header.get("hash"), "field hash")
    except BadField as exc:
        return f"block header: {exc}"
    indexed: list[tuple[int, Mapping[str, Any]]] = []
    for position, receipt in enumerate(receipts):
        if not isinstance(receipt, Mapping):
            return f"receipt {position} is not an object"
        try:
            indexed.append((quantity(receipt, "transactionIndex"), receipt))
        except BadField as exc:
            return f"receipt {position}: {exc}"
    indexed.sort(key=lambda pair: pair[0])
    encodings: list[bytes] = []
    for expected_index, (index, receipt) in enumerate(indexed):
        if index != expected_index:
            return (
                f"receipt indexes are not 0 to {len(indexed) - 1} "
                f"({index} in place {expected_index})"
            )
        problem = _placement_mismatch(receipt, index, block_hash, block_header)
        if problem is not None:
            return problem
        try:
            encodings.append(receipt_encoding(receipt))
        except BadField as exc:
            return f"receipt {index}: {exc}"
    recomputed = ordered_trie_root(encodings)
    if recomputed != root:
        return (
            f"receipts root {short(recomputed)} recomputed from {len(encodings)} receipts, "
            f"the block says {short(root)}"
        )
    return None


def _placement_mismatch(
    receipt: Mapping[str, Any], index: int, block_hash: bytes, block_header: Mapping[str, Any]
) -> str | None:
    try:
        said_hash = hex_bytes(receipt.get("blockHash"), "field blockHash")
    except BadField as exc:
        return f"receipt {index}: {exc}"
    if said_hash != block_hash:
        return f"receipt {index} is of block {short(said_hash)}, not {short(block_hash)}"
    said_number, number = receipt.get("blockNumber"), block_header.get("number")
    if said_number is not None and number is not None and not same_quantity(said_number, number):
        return f"receipt {index} is of block number {said_number}, not {number}"
    return None
