"""A signed transaction as `eth_sendRawTransaction` takes it: the hash nodes give it (a blob
transaction hashed without its blobs, as nodes do) and its sender. Pure."""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_utils import decode_hex, keccak
from rlp.codec import consume_length_prefix
from rlp.exceptions import DecodingError


def transaction_hash(raw: Any) -> str | None:
    """The hash nodes give the transaction `raw` (0x-hex, as eth_sendRawTransaction takes
    it) carries; None when it is not hex."""
    if not isinstance(raw, str):
        return None
    try:
        encoded = decode_hex(raw)
    except ValueError:
        return None
    return "0x" + keccak(canonical_transaction(encoded)).hex()


_BLOB_TX_TYPE = b"\x03"


def canonical_transaction(encoded: bytes) -> bytes:
    """The encoding a transaction is hashed as. Every type is hashed as sent (legacy,
    0x01, 0x02, 0x04) but one: a blob transaction (EIP-4844) is sent in its network form,
    `0x03 || rlp([tx_payload_body, blobs, commitments, proofs])` (from Osaka on
    `[tx_payload_body, 1, blobs, commitments, cell_proofs]`), and nodes hash it as
    `0x03 || rlp(tx_payload_body)`, without the blobs; the hash of the bytes as sent is a
    transaction no node has. Its canonical form (the body's first field is the chain id, not
    a list) is hashed as sent. Bytes that are not well formed stay as they are: the node
    refuses them, saying why."""
    if encoded[:1] != _BLOB_TX_TYPE:
        return encoded
    try:
        _, outer, outer_length, body_at = consume_length_prefix(encoded, 1)
        _, first, first_length, first_at = consume_length_prefix(encoded, body_at)
    except (DecodingError, IndexError):
        return encoded
    body_end = first_at + first_length
    network_form = (
        outer is list
        and first is list  # in the canonical form, the first field is the chain id
        and body_at + outer_length == len(encoded)
        and body_end <= len(encoded)
    )
    return _BLOB_TX_TYPE + encoded[body_at:body_end] if network_form else encoded


def transaction_sender(raw: str) -> str | None:
    try:
        return str(Account.recover_transaction(raw)).lower()
    except Exception:  # not a valid signed transaction: the nodes will say why
        return None
