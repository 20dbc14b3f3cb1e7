"""Transactions re-encoded from their JSON-RPC fields: each one's hash, and the block's
transactionsRoot.

A legacy transaction is rlp([nonce, gasPrice, gas, to, value, input, v, r, s]); a typed one
(EIP-2718) is its type byte followed by the RLP list of its type's fields. The encoding is
what the hash and the trie are over, so a field changed anywhere in an answer shows.

Besides Ethereum's types, the OP stack's deposit (0x7e, https://specs.optimism.io/protocol/
deposits.html, op-geth's core/types/deposit_tx.go): an L1 message with no signature, so its
v, r and s (answered as 0) are in neither its hash nor the trie.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from eth_utils import keccak

from rpcgate.verify import _rlp
from rpcgate.verify._hex import (
    BadField,
    data,
    hex_bytes,
    hex_int,
    optional_data,
    quantity,
    same_quantity,
    short,
)
from rpcgate.verify.tries import ordered_trie_root

Encoded = int | bytes | list[Any]
FieldEncoder = Callable[[Mapping[str, Any], str], Encoded]


DEPOSIT_TRANSACTION_TYPE = 0x7E  # OP stack (op-geth DepositTxType)


class UnknownTransactionType(BadField):
    """A transaction type this module cannot encode (an L2's own, such as Arbitrum's)."""


def _input(tx: Mapping[str, Any], _name: str) -> bytes:
    # geth answers `input`; some older clients said `data`.
    return data(tx, "input" if tx.get("input") is not None else "data")


def _y_parity(tx: Mapping[str, Any], _name: str) -> int:
    # Typed transactions carry `yParity`; clients before it answered `v` (also 0 or 1).
    return quantity(tx, "yParity" if tx.get("yParity") is not None else "v")


def _access_list(tx: Mapping[str, Any], name: str) -> list[Any]:
    entries = tx.get(name)
    if not isinstance(entries, list):
        raise BadField(f"field {name} missing or not a list")
    encoded: list[Any] = []
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("storageKeys"), list):
            raise BadField(f"an entry of {name} is not {{address, storageKeys}}")
        keys = [hex_bytes(key, f"a storage key in {name}") for key in entry["storageKeys"]]
        encoded.append([data(entry, "address"), keys])
    return encoded


def _mint(tx: Mapping[str, Any], name: str) -> int:
    # A deposit that mints nothing may leave `mint` out; the encoding has 0 (empty) then.
    return 0 if tx.get(name) is None else quantity(tx, name)


def _flag(tx: Mapping[str, Any], name: str) -> int:
    """A boolean field (a deposit's isSystemTx): 1 or 0 (empty), as RLP encodes a bool.
    op-geth answers a JSON bool, anvil "0x1" or nothing when false."""
    value = tx.get(name)
    if value is None or value is False:
        return 0
    if value is True:
        return 1
    flag = hex_int(value, f"field {name}")
    if flag not in (0, 1):
        raise BadField(f"field {name} is neither true nor false")
    return flag


def _hashes(tx: Mapping[str, Any], name: str) -> list[Any]:
    hashes = tx.get(name)
    if not isinstance(hashes, list):
        raise BadField(f"field {name} missing or not a list")
    return [hex_bytes(item, f"an item of {name}") for item in hashes]


def _authorizations(tx: Mapping[str, Any], name: str) -> list[Any]:
    authorizations = tx.get(name)
    if not isinstance(authorizations, list):
        raise BadField(f"field {name} missing or not a list")
    encoded: list[Any] = []
    for auth in authorizations:
        if not isinstance(auth, Mapping):
            raise BadField(f"an entry of {name} is not an object")
        encoded.append(
            [
                quantity(auth, "chainId"),
                data(auth, "address"),
                quantity(auth, "nonce"),
                _y_parity(auth, "yParity"),
                quantity(auth, "r"),
                quantity(auth, "s"),
            ]
        )
    return encoded


_Q: FieldEncoder = quantity
_TO: FieldEncoder = optional_data

_LEGACY = (
    ("nonce", _Q),
    ("gasPrice", _Q),
    ("gas", _Q),
    ("to", _TO),
    ("value", _Q),
    ("input", _input),
    ("v", _Q),
    ("r", _Q),
    ("s", _Q),
)
_SIGNATURE = (("yParity", _y_parity), ("r", _Q), ("s", _Q))
_DYNAMIC_FEE_HEAD = (
    ("chainId", _Q),
    ("nonce", _Q),
    ("maxPriorityFeePerGas", _Q),
    ("maxFeePerGas", _Q),
    ("gas", _Q),
    ("to", _TO),
    ("value", _Q),
    ("input", _input),
    ("accessList", _access_list),
)
# Each typed transaction's fields in consensus order, by type byte.
TYPED_FIELDS: dict[int, tuple[tuple[str, FieldEncoder], ...]] = {
    0x01: (  # EIP-2930
        ("chainId", _Q),
        ("nonce", _Q),
        ("gasPrice", _Q),
        ("gas", _Q),
        ("to", _TO),
        ("value", _Q),
        ("input", _input),
        ("accessList", _access_list),
        *_SIGNATURE,
    ),
    0x02: (*_DYNAMIC_FEE_HEAD, *_SIGNATURE),  # EIP-1559
    0x03: (  # EIP-4844
        *_DYNAMIC_FEE_HEAD,
        ("maxFeePerBlobGas", _Q),
        ("blobVersionedHashes", _hashes),
        *_SIGNATURE,
    ),
    0x04: (*_DYNAMIC_FEE_HEAD, ("authorizationList", _authorizations), *_SIGNATURE),  # EIP-7702
    DEPOSIT_TRANSACTION_TYPE: (  # OP stack deposit: no nonce, no fee, no signature
        ("sourceHash", data),
        ("from", data),
        ("to", _TO),  # empty: a contract creation
        ("mint", _mint),
        ("value", _Q),
        ("gas", _Q),
        ("isSystemTx", _flag),
        ("input", _input),
    ),
}
# The types `transaction_encoding` and `receipt_encoding` encode; any other raises
# UnknownTransactionType (a caller may leave such a block unchecked rather than fail it).
ENCODED_TRANSACTION_TYPES: frozenset[int] = frozenset({0, *TYPED_FIELDS})


def transaction_type(tx: Mapping[str, Any]) -> int:
    """The type byte (0 for legacy; a missing `type` is legacy). Raises BadField."""
    return 0 if tx.get("type") is None else hex_int(tx.get("type"), "field type")


def is_encodable(item: Any) -> bool:
    """Whether `transaction_encoding` (or `receipt_encoding`, for a receipt) knows how this
    transaction or receipt is encoded: its type is one of ENCODED_TRANSACTION_TYPES, and a
    0x7e transaction is an OP stack deposit (it has a sourceHash), not Scroll's L1 message.
    (A 0x7e receipt encodes the same on both chains.) A malformed item is encodable: the
    check itself says what is wrong with it."""
    if not isinstance(item, Mapping):
        return True
    try:
        kind = transaction_type(item)
    except BadField:
        return True
    if kind not in ENCODED_TRANSACTION_TYPES:
        return False
    is_receipt = item.get("cumulativeGasUsed") is not None
    return kind != DEPOSIT_TRANSACTION_TYPE or is_receipt or item.get("sourceHash") is not None


def transaction_encoding(tx: Mapping[str, Any]) -> bytes:
    """The transaction's consensus encoding, as hashed and stored in the block's trie.

    Raises BadField (a ValueError) for a missing or malformed field, and its subclass
    UnknownTransactionType for a type outside ENCODED_TRANSACTION_TYPES (legacy, 0x1 to
    0x4, the OP stack's deposit 0x7e) and for a 0x7e that is not a deposit.
    """
    kind = transaction_type(tx)
    fields = _LEGACY if kind == 0 else TYPED_FIELDS.get(kind)
    if fields is None:
        raise UnknownTransactionType(f"transaction type {hex(kind)} is not known")
    if kind == DEPOSIT_TRANSACTION_TYPE and tx.get("sourceHash") is None:
        # Scroll's L1 message is 0x7e too (queueIndex, sender, no sourceHash): another
        # encoding, so not a deposit to fail but a type this module does not encode.
        raise UnknownTransactionType("transaction type 0x7e without sourceHash: not a deposit")
    encoded = _rlp.encode([encode(tx, name) for name, encode in fields])
    return encoded if kind == 0 else bytes([kind]) + encoded


def transaction_hash_mismatch(tx: Mapping[str, Any]) -> str | None:
    """None when a transaction's `hash` is the hash of its fields; else what differs."""
    if not isinstance(tx, Mapping):
        return "transaction: not an object"
    encoding = _encoding_with_its_hash(tx)
    return f"transaction: {encoding}" if isinstance(encoding, str) else None


def _encoding_with_its_hash(tx: Mapping[str, Any]) -> bytes | str:
    """The transaction's encoding when it hashes to its `hash`; else what differs."""
    try:
        encoding = transaction_encoding(tx)
        claimed = hex_bytes(tx.get("hash"), "field hash")
    except BadField as exc:
        return str(exc)
    recomputed = keccak(encoding)
    if recomputed != claimed:
        return f"hash {short(recomputed)} recomputed from the fields, it says {short(claimed)}"
    return encoding


def transactions_root_mismatch(block: Mapping[str, Any]) -> str | None:
    """None when a full block's transactions hash to their `hash` and to its
    transactionsRoot, and say they belong where they are; else what differs.

    A block with transaction hashes only has nothing to recompute: None.
    """
    if not isinstance(block, Mapping):
        return "block: not an object"
    transactions = block.get("transactions")
    if not isinstance(transactions, list):
        return "block transactions missing or not a list"
    hashes_only = [isinstance(tx, str) for tx in transactions]
    if transactions and all(hashes_only):
        return None
    if any(hashes_only):
        return "block transactions mix hashes and objects"
    encodings: list[bytes] = []
    for index, tx in enumerate(transactions):
        if not isinstance(tx, Mapping):
            return f"transaction {index} is not an object"
        encoding = _encoding_with_its_hash(tx)
        if isinstance(encoding, str):
            return f"transaction {index}: {encoding}"
        problem = _placement_mismatch(tx, index, block)
        if problem is not None:
            return problem
        encodings.append(encoding)
    try:
        root = hex_bytes(block.get("transactionsRoot"), "field transactionsRoot")
    except BadField as exc:
        return f"block header: {exc}"
    recomputed_root = ordered_trie_root(encodings)
    if recomputed_root != root:
        return (
            f"transactions root {short(recomputed_root)} recomputed from "
            f"{len(encodings)} transactions, the block says {short(root)}"
        )
    return None


def _placement_mismatch(tx: Mapping[str, Any], index: int, block: Mapping[str, Any]) -> str | None:
    """The block fields a transaction repeats (outside its hash) must be the block's."""
    for field, expected in (
        ("blockHash", block.get("hash")),
        ("blockNumber", block.get("number")),
        ("transactionIndex", hex(index)),
    ):
        given = tx.get(field)
        if given is None or expected is None:
            continue
        if not same_quantity(given, expected):
            return (
                f"transaction {index} has {field} {short(str(given))}, "
                f"the block has {short(str(expected))}"
            )
    return None
