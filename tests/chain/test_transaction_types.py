"""Every transaction type sent through the gateway comes back with the hash the node mines
it under: legacy (with and without EIP-155), EIP-2930, EIP-1559, EIP-4844 blob transactions
in both network forms (Cancun's and Prague's blobs with their proofs, Osaka's with cell
proofs) and EIP-7702. A blob transaction is sent with its blobs but known by the hash of the
transaction alone; a hash of the bytes as sent is a transaction no node has, and a wallet
polling its receipt waits forever.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import ckzg
import pytest
import rlp
from eth_account import Account
from eth_account.typed_transactions.base import TRUSTED_SETUP

from rpcgate.rpc.raw_transactions import transaction_hash
from tests.conftest import GatewayFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, AnvilNode

CHAIN_ID = 31337
GAS_PRICE = 10**10
PRIORITY_FEE = 10**9
TO = DEV_ADDRESSES[1]
_BLOB_BYTES = 131_072
_KZG_VERSION = b"\x01"  # a blob's versioned hash: this byte, then sha256(commitment)[1:]
_CELL_PROOFS_WRAPPER = 1  # EIP-7594's network form, from Osaka on
# A key that delegates its account (EIP-7702); not a dev account, so its nonce stays 0.
AUTHORITY_KEY = "0x" + "42" * 32


@functools.cache
def _kzg_setup() -> Any:
    return ckzg.load_trusted_setup(TRUSTED_SETUP, 0)


def _signed(tx: dict[str, Any], key: str = DEV_KEYS[0]) -> bytes:
    return bytes(Account.sign_transaction(tx, key).raw_transaction)


def _dynamic_fee(nonce: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": CHAIN_ID,
        "nonce": nonce,
        "to": TO,
        "value": 1,
        "gas": 21_000,
        "maxFeePerGas": GAS_PRICE,
        "maxPriorityFeePerGas": PRIORITY_FEE,
        **fields,
    }


def legacy_unprotected(nonce: int) -> bytes:
    return _signed({"nonce": nonce, "to": TO, "value": 1, "gas": 21_000, "gasPrice": GAS_PRICE})


def legacy_eip155(nonce: int) -> bytes:
    tx = {"chainId": CHAIN_ID, "nonce": nonce, "to": TO, "value": 1, "gas": 21_000}
    return _signed({**tx, "gasPrice": GAS_PRICE})


def access_list(nonce: int) -> bytes:
    entry = {"address": TO, "storageKeys": ["0x" + "00" * 31 + "01"]}
    tx = {"type": 1, "chainId": CHAIN_ID, "nonce": nonce, "to": TO, "value": 1}
    return _signed({**tx, "gas": 30_000, "gasPrice": GAS_PRICE, "accessList": [entry]})


def dynamic_fee(nonce: int) -> bytes:
    return _signed(_dynamic_fee(nonce))


def _blob_parts() -> tuple[bytes, bytes, bytes]:
    """A blob (its field elements below the BLS modulus: the first byte of each is 0), its
    commitment and its versioned hash."""
    blob = bytes(
        b if i % 32 else 0 for i, b in enumerate(hashlib.shake_256(b"blob").digest(_BLOB_BYTES))
    )
    commitment = ckzg.blob_to_kzg_commitment(blob, _kzg_setup())
    return blob, commitment, _KZG_VERSION + hashlib.sha256(commitment).digest()[1:]


def _blob_body(nonce: int, versioned_hash: bytes) -> list[Any]:
    tx = {**_dynamic_fee(nonce), "type": 3, "maxFeePerBlobGas": GAS_PRICE}
    signed = _signed({**tx, "blobVersionedHashes": [versioned_hash]})
    body: list[Any] = rlp.decode(signed[1:])
    return body


def blob_with_proofs(nonce: int) -> bytes:
    """EIP-4844's network form (Cancun, Prague): 0x03 || rlp([tx, blobs, commitments,
    proofs])."""
    blob, commitment, versioned_hash = _blob_parts()
    proof = ckzg.compute_blob_kzg_proof(blob, commitment, _kzg_setup())
    body = _blob_body(nonce, versioned_hash)
    return b"\x03" + rlp.encode([body, [blob], [commitment], [proof]])


def blob_with_cell_proofs(nonce: int) -> bytes:
    """EIP-7594's network form (Osaka): 0x03 || rlp([tx, 1, blobs, commitments,
    cell_proofs])."""
    blob, commitment, versioned_hash = _blob_parts()
    _cells, cell_proofs = ckzg.compute_cells_and_kzg_proofs(blob, _kzg_setup())
    body = _blob_body(nonce, versioned_hash)
    wrapped = [body, _CELL_PROOFS_WRAPPER, [blob], [commitment], list(cell_proofs)]
    return b"\x03" + rlp.encode(wrapped)


def set_code(nonce: int) -> bytes:
    authorization = Account.sign_authorization(
        {"chainId": CHAIN_ID, "address": TO, "nonce": 0}, AUTHORITY_KEY
    )
    authority = Account.from_key(AUTHORITY_KEY).address
    tx = _dynamic_fee(nonce, to=authority, gas=100_000)
    return _signed({**tx, "type": 4, "accessList": [], "authorizationList": [authorization]})


def canonical_blob_form(network_form: bytes) -> bytes:
    """A blob transaction without its blobs: 0x03 || rlp(tx)."""
    return b"\x03" + rlp.encode(rlp.decode(network_form[1:])[0])


# (name, how it is signed, the hardfork the node runs: anvil's default is Osaka)
TYPES: list[tuple[str, Callable[[int], bytes], str | None]] = [
    ("legacy", legacy_unprotected, None),
    ("legacy-eip155", legacy_eip155, None),
    ("eip2930", access_list, None),
    ("eip1559", dynamic_fee, None),
    ("eip4844-proofs", blob_with_proofs, "prague"),
    ("eip4844-cell-proofs", blob_with_cell_proofs, None),
    ("eip7702", set_code, None),
]


@pytest.fixture
def node_for() -> Iterator[Callable[[str | None], AnvilNode]]:
    nodes: list[AnvilNode] = []

    def start(hardfork: str | None) -> AnvilNode:
        args = ["--hardfork", hardfork] if hardfork else []
        node = AnvilNode(automine=True, extra_args=args)
        nodes.append(node)
        return node.start()

    yield start
    for node in nodes:
        node.stop()


def _send(gateway: RunningGateway, raw: bytes) -> str:
    reply = gateway.rpc("eth_sendRawTransaction", ["0x" + raw.hex()]).json()
    assert "result" in reply, reply
    tx_hash: str = reply["result"]
    return tx_hash


def _mined_hashes(node: AnvilNode) -> list[str]:
    """The hashes of the transactions in the node's latest block, as the node has them."""
    deadline = time.monotonic() + 5
    while not (block := node.block("latest", full_transactions=True))["transactions"]:
        assert time.monotonic() < deadline, "nothing was mined"
        time.sleep(0.01)
    return [tx["hash"] for tx in block["transactions"]]


def _receipt_through(gateway: RunningGateway, tx_hash: str) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while (receipt := gateway.result("eth_getTransactionReceipt", [tx_hash])) is None:
        assert time.monotonic() < deadline, f"no receipt for {tx_hash} through the gateway"
        time.sleep(0.05)
    assert isinstance(receipt, dict)
    return receipt


@pytest.mark.parametrize(("sign", "hardfork"), [t[1:] for t in TYPES], ids=[t[0] for t in TYPES])
def test_every_transaction_type_comes_back_with_the_hash_the_node_mines_it_under(
    node_for: Callable[[str | None], AnvilNode],
    start_gateway: GatewayFactory,
    sign: Callable[[int], bytes],
    hardfork: str | None,
) -> None:
    node = node_for(hardfork)
    # anvil takes seconds over its first blob (it loads the KZG setup then): no timeout.
    gateway = start_gateway([node.url], failover={"attempt_timeout_s": 30, "deadline_s": 60})
    raw = sign(0)

    returned = _send(gateway, raw)

    assert _mined_hashes(node) == [returned]
    assert node.wait_for_receipt(returned)["status"] == "0x1"
    receipt = _receipt_through(gateway, returned)
    assert receipt["transactionHash"] == returned
    # The same bytes again (the node says "nonce too low", checked by that hash): the same
    # hash, never a rejection of the caller's own transaction.
    assert _send(gateway, raw) == returned
    if raw[:1] == b"\x03":  # the blob-free form (nodes refuse it as a send) hashes alike
        assert transaction_hash("0x" + canonical_blob_form(raw).hex()) == returned


@pytest.mark.unit
@pytest.mark.parametrize(
    "raw",
    ["0x", "0x03", "0x03c0", "0x03c180", "0x03f90100", "not hex", "0x0"],
)
def test_bytes_that_are_no_transaction_get_a_hash_or_none_but_never_raise(raw: str) -> None:
    tx_hash = transaction_hash(raw)
    assert tx_hash is None or (tx_hash.startswith("0x") and len(tx_hash) == 66)
