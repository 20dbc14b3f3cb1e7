"""A chain on one anvil node holding every transaction type a node answers, for the checks of
rpcgate/verify/ (tests/verify/test_verify.py): legacy transactions with and without EIP-155,
EIP-2930, EIP-1559, EIP-4844 (with a blob; alone in its block, as anvil roots it in its
network form, see tests/verify/test_verify.py) and EIP-7702 (an account delegated to a contract),
contract creations, calls that write storage and log, a call that fails, an empty block and
a block of 130 transactions (past the trie keys of one byte).

Everything is signed here with explicit nonces and fees, and blocks are mined at explicit
timestamps, so the chain is the same on every run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ckzg
import rlp
from eth_account import Account
from eth_account.typed_transactions.base import TRUSTED_SETUP
from eth_utils import keccak, to_checksum_address

from tests.harness.anvil import (
    DEFAULT_MAX_FEE_PER_GAS,
    DEFAULT_MAX_PRIORITY_FEE_PER_GAS,
    DEV_ADDRESSES,
    DEV_KEYS,
    AnvilNode,
    canonical_timestamp,
)
from tests.harness.contract import INIT_CODE, create_address

# Opcodes used below (https://www.evm.codes).
_STOP = 0x00
_CALLDATALOAD = 0x35
_CALLDATASIZE = 0x36
_CALLDATACOPY = 0x37
_CODECOPY = 0x39
_SSTORE = 0x55
_PUSH1 = 0x60
_PUSH32 = 0x7F
_DUP1 = 0x80
_DUP2 = 0x81
_LOG3 = 0xA3
_RETURN = 0xF3

STORE_TOPIC = "0x" + keccak(text="rpcgate.tests.harness.Stored(uint256,uint256)").hex()
# The storing contract, whatever the calldata (slot, value: two 32-byte words): emits
# LOG3(STORE_TOPIC, slot, value) with the calldata as data, then stores value at slot.
STORE_RUNTIME = b"".join(
    [
        bytes([_PUSH1, 0x20, _CALLDATALOAD]),  # value
        bytes([_PUSH1, 0x00, _CALLDATALOAD]),  # slot, value
        bytes([_DUP2, _DUP2]),  # slot, value, slot, value
        bytes([_PUSH32]) + bytes.fromhex(STORE_TOPIC[2:]),  # topic, slot, value, slot, value
        bytes([_CALLDATASIZE, _PUSH1, 0, _PUSH1, 0, _CALLDATACOPY]),  # memory = calldata
        bytes([_CALLDATASIZE, _PUSH1, 0]),  # offset, size, topic, slot, value, slot, value
        bytes([_LOG3]),  # slot, value
        bytes([_SSTORE, _STOP]),  # storage[slot] = value
    ]
)
# Returns the runtime that follows these 12 bytes.
STORE_INIT = (
    bytes([_PUSH1, len(STORE_RUNTIME), _DUP1, _PUSH1, 12, _PUSH1, 0, _CODECOPY])
    + bytes([_PUSH1, 0, _RETURN, _STOP])
    + STORE_RUNTIME
)

# The slots the storing contract is given, and the values (slot 2**255 + 7: a key far from
# the others in the trie).
STORED: dict[int, int] = {1: 0xABC, 2: 5, 3: 7, 2**255 + 7: 2**256 - 1}
# An account that delegates its code to tests/harness/contract.py's contract (EIP-7702).
AUTHORITY_KEY = "0x" + keccak(b"rpcgate.tests.harness.verify_chain authority").hex()
MANY_TRANSACTIONS = 130

CHAIN_ID = 31337
_GAS = 200_000
_FAILING_GAS = 40_000  # enough to start the storing call, not for its SSTORE
_BLOB_BYTES = 131_072
_KZG_VERSION = b"\x01"  # a blob's versioned hash: this byte, then sha256(commitment)[1:]
_CELL_PROOFS_WRAPPER = 1  # EIP-7594's network form (Osaka, anvil's default hardfork)


@dataclass
class VerifyChain:
    """What the chain holds, by name: the tests look blocks and transactions up here."""

    url: str
    blocks: dict[str, int] = field(default_factory=dict)  # what a block holds -> its number
    transactions: dict[str, str] = field(default_factory=dict)  # kind -> transaction hash
    store: str = ""  # the storing contract
    logger: str = ""  # tests/harness/contract.py's contract
    authority: str = ""  # the account delegated to `logger`


def store_calldata(slot: int, value: int) -> bytes:
    return slot.to_bytes(32, "big") + value.to_bytes(32, "big")


class _Sender:
    """Signs and sends one key's transactions with consecutive nonces."""

    def __init__(self, node: AnvilNode, key: str, nonce: int = 0) -> None:
        self.node = node
        self.key = key
        self.address = Account.from_key(key).address
        self.nonce = nonce

    def send(self, tx: Mapping[str, Any]) -> str:
        return self.node.send_raw_transaction("0x" + self._sign(tx).hex())

    def send_with_blob(self, tx: Mapping[str, Any], blob: bytes) -> str:
        """An EIP-4844 transaction, sent in its network form (EIP-7594: the blob, its
        commitment and its cell proofs beside the signed transaction).

        Built here rather than by `Account.sign_transaction(..., blobs=...)`, which loads
        the KZG trusted setup (over a second) three times per transaction.
        """
        setup = ckzg.load_trusted_setup(TRUSTED_SETUP, 0)
        commitment = ckzg.blob_to_kzg_commitment(blob, setup)
        _cells, cell_proofs = ckzg.compute_cells_and_kzg_proofs(blob, setup)
        versioned_hash = _KZG_VERSION + hashlib.sha256(commitment).digest()[1:]
        signed = self._sign({**tx, "blobVersionedHashes": [versioned_hash]})
        body = rlp.decode(signed[1:])
        network_form = signed[:1] + rlp.encode(
            [body, _CELL_PROOFS_WRAPPER, [blob], [commitment], list(cell_proofs)]
        )
        return self.node.send_raw_transaction("0x" + network_form.hex())

    def _sign(self, tx: Mapping[str, Any]) -> bytes:
        signed = Account.sign_transaction({**tx, "nonce": self.nonce}, self.key)
        self.nonce += 1
        return bytes(signed.raw_transaction)


def _blob(text: bytes) -> bytes:
    """A blob holding `text`: one byte in each 32-byte field element left zero, so each
    element stays below the BLS modulus."""
    blob = bytearray(_BLOB_BYTES)
    for offset in range(0, len(text), 31):
        start = offset // 31 * 32 + 1
        chunk = text[offset : offset + 31]
        blob[start : start + len(chunk)] = chunk
    return bytes(blob)


def _dynamic_fee(**fields: Any) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": CHAIN_ID,
        "gas": _GAS,
        "maxFeePerGas": DEFAULT_MAX_FEE_PER_GAS,
        "maxPriorityFeePerGas": DEFAULT_MAX_PRIORITY_FEE_PER_GAS,
        "value": 0,
        "data": b"",
        **fields,
    }


def _legacy(**fields: Any) -> dict[str, Any]:
    return {"gas": _GAS, "gasPrice": DEFAULT_MAX_FEE_PER_GAS, "value": 0, "data": b"", **fields}


def build_verify_chain(node: AnvilNode) -> VerifyChain:
    """Mine the chain on a fresh node started with chain id CHAIN_ID (AnvilNode's default)."""
    chain = VerifyChain(url=node.url)
    first, second = _Sender(node, DEV_KEYS[0]), _Sender(node, DEV_KEYS[1])
    sent = chain.transactions
    height = 0

    def mine(name: str) -> None:
        nonlocal height
        height += 1
        node.mine(canonical_timestamp(node.genesis_timestamp, height))
        chain.blocks[name] = height

    chain.blocks["genesis"] = 0
    other = DEV_ADDRESSES[1]
    sent["legacy"] = first.send(_legacy(to=other, value=1, gas=21_000))  # no chain id
    sent["legacy-eip155"] = first.send(_legacy(to=other, value=2, gas=21_000, chainId=CHAIN_ID))
    sent["eip2930"] = first.send(
        _legacy(
            type=1,
            chainId=CHAIN_ID,
            to=other,
            value=3,
            accessList=[{"address": other, "storageKeys": ["0x" + "00" * 31 + "01"]}],
        )
    )
    sent["eip1559"] = first.send(_dynamic_fee(to=other, value=4))
    mine("transfers")

    chain.store = create_address(first.address, first.nonce)
    sent["create"] = first.send(_dynamic_fee(data=STORE_INIT))
    chain.logger = create_address(first.address, first.nonce)
    sent["legacy-create"] = first.send(_legacy(chainId=CHAIN_ID, data=INIT_CODE))
    mine("deploys")

    slots = iter(STORED.items())
    slot, value = next(slots)
    sent["eip1559-call"] = first.send(
        _dynamic_fee(to=chain.store, data=store_calldata(slot, value))
    )
    slot, value = next(slots)
    sent["eip2930-call"] = first.send(
        _legacy(
            type=1,
            chainId=CHAIN_ID,
            to=chain.store,
            data=store_calldata(slot, value),
            accessList=[{"address": chain.store, "storageKeys": [f"0x{slot:064x}"]}],
        )
    )
    sent["legacy-call"] = first.send(_legacy(to=chain.logger, data=b"logged by a legacy call"))
    for slot, value in slots:
        second.send(_dynamic_fee(to=chain.store, data=store_calldata(slot, value)))
    sent["failed"] = second.send(
        _dynamic_fee(to=chain.store, data=store_calldata(9, 9), gas=_FAILING_GAS)
    )
    mine("calls")

    sent["eip4844"] = first.send_with_blob(
        {**_dynamic_fee(to=other, gas=21_000), "type": 3, "maxFeePerBlobGas": 10**9},
        blob=_blob(b"rpcgate.tests.harness.verify_chain blob"),
    )
    mine("blob")

    authority = Account.from_key(AUTHORITY_KEY)
    chain.authority = to_checksum_address(authority.address)
    authorization = Account.sign_authorization(
        {"chainId": CHAIN_ID, "address": chain.logger, "nonce": 0}, AUTHORITY_KEY
    )
    sent["eip7702"] = first.send(
        {
            **_dynamic_fee(to=chain.authority, data=b"logged as the authority"),
            "type": 4,
            "accessList": [],
            "authorizationList": [authorization],
        }
    )
    mine("set-code")

    mine("empty")

    for index in range(MANY_TRANSACTIONS):
        second.send(_dynamic_fee(to=chain.store, gas=21_000, value=index))
    mine("many")
    return chain


def build_small_chain(node: AnvilNode) -> None:
    """Block 1 on a fresh node of any hardfork from Berlin on: a legacy EIP-155 contract
    creation and a legacy call that logs (the transactions every hardfork accepts)."""
    sender = _Sender(node, DEV_KEYS[0])
    logger = create_address(sender.address, sender.nonce)
    sender.send(_legacy(chainId=CHAIN_ID, data=INIT_CODE))
    sender.send(_legacy(chainId=CHAIN_ID, to=logger, data=b"logged on an older hardfork"))
    node.mine(canonical_timestamp(node.genesis_timestamp, 1))
