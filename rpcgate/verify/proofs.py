"""eth_getProof answers (EIP-1186) checked against a block's stateRoot.

An account is stored in the state trie under keccak(address) as rlp([nonce, balance,
storageRoot, codeHash]); a storage slot in the account's storage trie under
keccak(slot as 32 bytes) as rlp(value). A proof is the list of trie nodes from the root to
the key; a proof that ends before the key proves the key absent (an account that does not
exist, a slot never written). The answer's own fields are what a caller reads, so each must
equal what the proof proves.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rlp
from eth_utils import keccak
from trie import HexaryTrie

from rpcgate.verify._hex import BadField, data, hex_bytes, hex_int, hex_list, quantity, short
from rpcgate.verify.tries import EMPTY_TRIE_ROOT

EMPTY_CODE_HASH = keccak(b"")  # 0xc5d246…
# Some clients answer zero hashes instead of the empty ones for an account that does not
# exist; for such an account both mean "no code, no storage".
_ZERO_HASH = bytes(32)
_HASH_LENGTH = 32
_ADDRESS_LENGTH = 20


@dataclass(frozen=True)
class AccountState:
    """An account as its proof proves it."""

    nonce: int
    balance: int
    storage_hash: bytes
    code_hash: bytes


ABSENT_ACCOUNT = AccountState(
    nonce=0, balance=0, storage_hash=EMPTY_TRIE_ROOT, code_hash=EMPTY_CODE_HASH
)


def verify_account(
    proof_answer: Mapping[str, Any], address: str, state_root: bytes
) -> AccountState | str:
    """The account the answer's accountProof proves under `state_root`, or why it does not:
    a proof that does not lead there, or a balance, nonce, codeHash or storageHash in the
    answer other than the proven one."""
    if not isinstance(proof_answer, Mapping):
        return "account proof: not an object"
    try:
        account_key = _fixed_bytes(address, _ADDRESS_LENGTH, "address")
        nodes = hex_list(proof_answer.get("accountProof"), "accountProof")
    except BadField as exc:
        return f"account proof: {exc}"
    answered_address = proof_answer.get("address")
    if answered_address is not None and not _same_bytes(answered_address, account_key):
        return f"account proof is for {short(str(answered_address))}, not {short(account_key)}"
    leaf = _proven_value(nodes, state_root, keccak(account_key))
    if isinstance(leaf, str):
        return f"account proof of {short(account_key)}: {leaf}"
    if leaf == b"":
        proven = ABSENT_ACCOUNT
    else:
        decoded = _account_leaf(leaf)
        if decoded is None:
            return f"account proof of {short(account_key)}: the leaf is not an account"
        proven = decoded
    problem = _answer_difference(proof_answer, proven, absent=leaf == b"")
    if problem is not None:
        return f"account {short(account_key)}: {problem}"
    return proven


def verify_storage(proof_item: Mapping[str, Any], storage_hash: bytes) -> int | str:
    """The slot value a storageProof item proves under the account's `storage_hash`, or why
    it does not (including a `value` in the item other than the proven one)."""
    if not isinstance(proof_item, Mapping):
        return "storage proof: not an object"
    try:
        slot = hex_int(proof_item.get("key"), "storage proof key")
        nodes = hex_list(proof_item.get("proof"), "storage proof")
        answered = quantity(proof_item, "value")
    except BadField as exc:
        return f"storage proof: {exc}"
    if slot >= 1 << 256:
        return f"storage proof: key {short(str(proof_item.get('key')))} is over 32 bytes"
    leaf = _proven_value(nodes, storage_hash, keccak(slot.to_bytes(32, "big")))
    if isinstance(leaf, str):
        return f"storage proof of slot {hex(slot)}: {leaf}"
    try:
        # The trie holds rlp(value), the value as big-endian bytes with no leading zeros.
        proven = int.from_bytes(rlp.decode(leaf), "big") if leaf else 0
    except (rlp.DecodingError, TypeError):
        return f"storage proof of slot {hex(slot)}: the leaf is not a value"
    if answered != proven:
        return f"slot {hex(slot)} is answered as {hex(answered)}, the proof says {hex(proven)}"
    return proven


def code_matches(code_hex: str, code_hash: bytes) -> bool:
    """An eth_getCode answer hashes to the account's proven codeHash."""
    try:
        return keccak(hex_bytes(code_hex, "code")) == code_hash
    except BadField:
        return False


def _proven_value(nodes: list[bytes], root: bytes, key: bytes) -> bytes | str:
    """The value under `key` in the trie of `root`, read from the proof's nodes only
    (b"" when the proof shows the key absent), or why the nodes do not prove it."""
    if not isinstance(root, bytes) or len(root) != _HASH_LENGTH:
        return "the root is not a 32-byte hash"
    # Nodes are fetched by their hash: a node not on the path is never read, a node that is
    # missing or altered breaks the walk from the root.
    by_hash = {keccak(node): node for node in nodes}
    try:
        value = HexaryTrie(by_hash, root_hash=root).get(key)
    except Exception as exc:  # a bad proof raises anything from trie or rlp, never a bug here
        return f"the proof does not lead from root {short(root)} to the key ({type(exc).__name__})"
    return bytes(value)


def _account_leaf(leaf: bytes) -> AccountState | None:
    try:
        fields = rlp.decode(leaf)
    except (rlp.DecodingError, TypeError):
        return None
    if (
        not isinstance(fields, list)
        or len(fields) != 4
        or not all(isinstance(field, bytes) for field in fields)
    ):
        return None
    nonce, balance, storage_hash, code_hash = fields
    if len(storage_hash) != _HASH_LENGTH or len(code_hash) != _HASH_LENGTH:
        return None
    return AccountState(
        nonce=int.from_bytes(nonce, "big"),
        balance=int.from_bytes(balance, "big"),
        storage_hash=storage_hash,
        code_hash=code_hash,
    )


def _answer_difference(
    answer: Mapping[str, Any], proven: AccountState, *, absent: bool
) -> str | None:
    try:
        numbers = {"balance": quantity(answer, "balance"), "nonce": quantity(answer, "nonce")}
        hashes = {"storageHash": data(answer, "storageHash"), "codeHash": data(answer, "codeHash")}
    except BadField as exc:
        return str(exc)
    for name, proven_number in (("balance", proven.balance), ("nonce", proven.nonce)):
        if numbers[name] != proven_number:
            return f"{name} is answered as {numbers[name]}, the proof says {proven_number}"
    for name, proven_hash in (
        ("storageHash", proven.storage_hash),
        ("codeHash", proven.code_hash),
    ):
        answered = hashes[name]
        if answered != proven_hash and not (absent and answered == _ZERO_HASH):
            return f"{name} is answered as {short(answered)}, the proof says {short(proven_hash)}"
    return None


def _fixed_bytes(value: Any, length: int, name: str) -> bytes:
    raw = hex_bytes(value, name)
    if len(raw) != length:
        raise BadField(f"{name} is not {length} bytes")
    return raw


def _same_bytes(value: Any, expected: bytes) -> bool:
    try:
        return hex_bytes(value) == expected
    except BadField:
        return False
