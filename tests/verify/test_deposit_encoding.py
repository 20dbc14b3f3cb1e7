"""OP stack deposits (0x7e) and their receipts encoded from JSON, without a node: over the
block an OP stack anvil answered (tests/fixtures/chains/op-stack-anvil/, captured and kept
honest by tests/verify/test_op_deposits.py), a Base mainnet deposit, and op-geth's own test
vectors for the receipts of the forks anvil does not answer (Bedrock, Regolith).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from eth_utils import keccak

from rpcgate.verify import (
    ENCODED_TRANSACTION_TYPES,
    UnknownTransactionType,
    header_mismatch,
    is_encodable,
    receipt_encoding,
    receipts_root_mismatch,
    transaction_encoding,
    transaction_hash_mismatch,
    transactions_root_mismatch,
)

pytestmark = pytest.mark.unit

CHAINS = Path(__file__).resolve().parents[1] / "fixtures" / "chains"
BLOCK: dict[str, Any] = json.loads((CHAINS / "op-stack-anvil" / "deposits_block.json").read_text())
RECEIPTS: list[dict[str, Any]] = json.loads(
    (CHAINS / "op-stack-anvil" / "deposits_receipts.json").read_text()
)
BASE_DEPOSIT: dict[str, Any] = json.loads(
    (CHAINS / "base" / "deposit_transaction_52158111.json").read_text()
)
DEPOSIT_INDEXES = [i for i, tx in enumerate(BLOCK["transactions"]) if tx["type"] == "0x7e"]
EMPTY_BLOOM = "0x" + "00" * 256


def _deposit(index: int) -> dict[str, Any]:
    return copy.deepcopy(BLOCK["transactions"][index])


def _receipt(index: int) -> dict[str, Any]:
    return copy.deepcopy(next(r for r in RECEIPTS if int(r["transactionIndex"], 16) == index))


def test_the_captured_block_holds_deposits_beside_ordinary_transactions() -> None:
    types = sorted({tx["type"] for tx in BLOCK["transactions"]})
    assert types == ["0x2", "0x7e"] and len(DEPOSIT_INDEXES) == 4


def test_the_captured_block_recomputes_to_its_hash_and_roots() -> None:
    assert header_mismatch(BLOCK) is None
    assert transactions_root_mismatch(BLOCK) is None
    assert receipts_root_mismatch(RECEIPTS, BLOCK) is None


@pytest.mark.parametrize("index", DEPOSIT_INDEXES)
def test_each_captured_deposit_hashes_to_its_hash(index: int) -> None:
    tx = _deposit(index)
    assert "0x" + keccak(transaction_encoding(tx)).hex() == tx["hash"]
    assert transaction_hash_mismatch(tx) is None


def test_a_base_mainnet_deposit_hashes_to_its_hash() -> None:
    # The L1-attributes deposit opening a Base block: no isSystemTx, yParity beside v.
    assert "isSystemTx" not in BASE_DEPOSIT
    assert transaction_hash_mismatch(BASE_DEPOSIT) is None


def _changed_hex(value: str) -> str:
    if value in ("0x", "0x0"):
        return "0x1"
    return f"{value[:-1]}{int(value[-1], 16) ^ 1:x}"


DEPOSIT_FIELDS = ["sourceHash", "from", "to", "mint", "value", "gas", "isSystemTx", "input"]


@pytest.mark.parametrize("field_name", DEPOSIT_FIELDS)
def test_every_field_of_a_deposit_is_in_its_hash(field_name: str) -> None:
    tx = copy.deepcopy(BASE_DEPOSIT)
    tx[field_name] = "0x1" if field_name == "isSystemTx" else _changed_hex(tx[field_name])
    problem = transaction_hash_mismatch(tx)
    assert problem is not None and "recomputed from the fields" in problem


@pytest.mark.parametrize("field_name", ["sourceHash", "mint"])
def test_a_tampered_deposit_fails_its_blocks_transactions_root(field_name: str) -> None:
    block = copy.deepcopy(BLOCK)
    index = DEPOSIT_INDEXES[0]
    tx = block["transactions"][index]
    tx[field_name] = _changed_hex(tx[field_name])
    assert transactions_root_mismatch(block) == (
        f"transaction {index}: " + str(transaction_hash_mismatch(tx)).removeprefix("transaction: ")
    )
    tx["hash"] = "0x" + keccak(transaction_encoding(tx)).hex()  # a liar that rehashes it
    problem = transactions_root_mismatch(block)
    assert problem is not None and "transactions root" in problem


@pytest.mark.parametrize(
    ("field_name", "value"), [("v", "0x1b"), ("r", "0x5"), ("s", "0x5"), ("nonce", "0x9")]
)
def test_a_deposits_signature_and_nonce_are_outside_its_hash(field_name: str, value: str) -> None:
    # A deposit is not signed: v, r, s (answered as 0) and the nonce it was given at
    # execution are not fields of its encoding, so no check can catch them changed.
    tx = copy.deepcopy(BASE_DEPOSIT)
    tx[field_name] = value
    assert transaction_hash_mismatch(tx) is None


@pytest.mark.parametrize(
    ("answered", "same_as"),
    [
        pytest.param({"mint": None}, {"mint": "0x0"}, id="mint-absent-is-zero"),
        pytest.param({"isSystemTx": True}, {"isSystemTx": "0x1"}, id="system-json-bool"),
        pytest.param({"isSystemTx": False}, {"isSystemTx": None}, id="not-system-json-bool"),
        pytest.param({"isSystemTx": "0x0"}, {"isSystemTx": None}, id="not-system-hex"),
        pytest.param({"to": None}, {}, id="creation-to-null-or-absent"),
        pytest.param({"data": "0x1234", "input": None}, {"input": "0x1234"}, id="data-for-input"),
    ],
)
def test_the_spellings_nodes_answer_encode_alike(
    answered: dict[str, Any], same_as: dict[str, Any]
) -> None:
    def encoded(fields: dict[str, Any]) -> bytes:
        tx = {**BASE_DEPOSIT, **fields}
        if fields == {}:
            tx.pop("to")
        return transaction_encoding({k: v for k, v in tx.items() if v is not None})

    assert encoded(answered) == encoded(same_as)


@pytest.mark.parametrize(
    ("field_name", "value", "words"),
    [
        ("isSystemTx", "0x2", "neither true nor false"),
        ("isSystemTx", "yes", "isSystemTx"),
        ("mint", "12", "mint"),
        ("sourceHash", "0xzz", "sourceHash"),
        ("from", None, "from"),
    ],
)
def test_a_malformed_deposit_is_a_reason_not_an_error(
    field_name: str, value: Any, words: str
) -> None:
    tx = {**BASE_DEPOSIT, field_name: value}
    problem = transaction_hash_mismatch(tx)
    assert problem is not None and words in problem


# --- which 0x7e is a deposit ------------------------------------------------------------

# Scroll's L1 message is type 0x7e too, with another encoding (queueIndex, gas, to, value,
# data, sender): not a deposit, so "cannot check", never "fails".
SCROLL_L1_MESSAGE: dict[str, Any] = {
    "type": "0x7e",
    "queueIndex": "0x1",
    "sender": "0x7885bcbd5cecef1336b5300fb5186a12ddd8c478",
    "from": "0x7885bcbd5cecef1336b5300fb5186a12ddd8c478",
    "to": "0x781e90f1c8fc4611c9b7497c3b47f99ef6969cbc",
    "gas": "0x2dc6c0",
    "value": "0x0",
    "input": "0x8ef1332e",
    "nonce": "0x1",
    "hash": "0x" + "ab" * 32,
}


def test_a_0x7e_without_source_hash_is_not_encoded_as_a_deposit() -> None:
    with pytest.raises(UnknownTransactionType, match="not a deposit"):
        transaction_encoding(SCROLL_L1_MESSAGE)
    assert transaction_hash_mismatch(SCROLL_L1_MESSAGE) == (
        "transaction: transaction type 0x7e without sourceHash: not a deposit"
    )


@pytest.mark.parametrize(
    ("item", "encodable"),
    [
        pytest.param(BASE_DEPOSIT, True, id="op-deposit"),
        pytest.param(SCROLL_L1_MESSAGE, False, id="scroll-l1-message"),
        pytest.param({"type": "0x7E", "cumulativeGasUsed": "0x1"}, True, id="0x7e-receipt"),
        pytest.param({"type": "0x64"}, False, id="arbitrum-deposit"),
        pytest.param({"type": "0x2"}, True, id="eip1559"),
        pytest.param({}, True, id="no-type-is-legacy"),
        pytest.param({"type": "two"}, True, id="malformed-the-check-says"),
        pytest.param("0x" + "ab" * 32, True, id="a-hash"),
    ],
)
def test_which_items_can_be_encoded(item: Any, encodable: bool) -> None:
    assert is_encodable(item) is encodable


def test_the_encoded_types_are_ethereums_and_the_deposit() -> None:
    assert frozenset({0, 1, 2, 3, 4, 0x7E}) == ENCODED_TRANSACTION_TYPES


# --- receipts ---------------------------------------------------------------------------


@pytest.mark.parametrize("index", DEPOSIT_INDEXES)
def test_a_canyon_deposit_receipt_carries_its_nonce_and_version_into_the_trie(index: int) -> None:
    receipt = _receipt(index)
    assert receipt["type"] == "0x7E"  # anvil's spelling of the type
    with_nonce = receipt_encoding(receipt)
    receipt["depositNonce"] = _changed_hex(receipt["depositNonce"])
    assert receipt_encoding(receipt) != with_nonce
    receipts = [_receipt(int(r["transactionIndex"], 16)) for r in RECEIPTS]
    receipts[index] = receipt
    problem = receipts_root_mismatch(receipts, BLOCK)
    assert problem is not None and "receipts root" in problem


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: r.pop("depositReceiptVersion"), id="version-dropped"),
        pytest.param(lambda r: r.update(depositReceiptVersion="0x2"), id="version-changed"),
        pytest.param(lambda r: r.update(status="0x0"), id="status"),
        pytest.param(lambda r: r["logs"][0]["topics"].pop(), id="log-topic-dropped"),
    ],
)
def test_a_changed_deposit_receipt_fails_the_receipts_root(change: Any) -> None:
    receipts = copy.deepcopy(RECEIPTS)
    receipt = next(r for r in receipts if r["type"] == "0x7E" and r["logs"])
    change(receipt)
    problem = receipts_root_mismatch(receipts, BLOCK)
    assert problem is not None and "receipts root" in problem


def test_a_version_without_a_nonce_is_a_reason_not_an_error() -> None:
    receipts = copy.deepcopy(RECEIPTS)
    receipt = next(r for r in receipts if r["type"] == "0x7E")
    receipt.pop("depositNonce")
    problem = receipts_root_mismatch(receipts, BLOCK)
    assert problem is not None and "depositNonce" in problem


# op-geth core/types/receipt_test.go, TestBedrockDepositReceiptUnchanged: a deposit receipt
# of Bedrock (no nonce) with a post-state root, its consensus encoding byte for byte.
BEDROCK_RECEIPT: dict[str, Any] = {
    "type": "0x7e",
    "root": "0x" + "03" + "00" * 31,
    "cumulativeGasUsed": "0xa",
    "logsBloom": EMPTY_BLOOM,
    "logs": [
        {"address": "0x" + "00" * 19 + "33", "topics": [], "data": "0x01"},
        {"address": "0x" + "00" * 18 + "0333", "topics": [], "data": "0x02"},
    ],
}
BEDROCK_RECEIPT_ENCODING = (  # op-geth's expectedRlp, its runs of zeros written as such
    "7EF90156A0"  # type, list header, a 32-byte string: the root
    + "03"
    + "00" * 31
    + "0A"  # cumulativeGasUsed
    + "B90100"
    + "00" * 256  # the bloom
    + "F0D7940000000000000000000000000000000000000033C001"  # the logs
    + "D7940000000000000000000000000000000000000333C002"
)


def test_a_bedrock_deposit_receipt_is_op_geths_encoding() -> None:
    assert receipt_encoding(BEDROCK_RECEIPT) == bytes.fromhex(BEDROCK_RECEIPT_ENCODING)


def test_a_regolith_deposit_receipt_leaves_its_nonce_out_of_the_trie() -> None:
    # op-geth's TestReceiptEncodeIndexBugIsEnshrined: from Regolith to Canyon a deposit's
    # receipt answers its depositNonce, but the receipts trie has it as if it had none
    # (Receipts.EncodeIndex), the same as an EIP-1559 receipt but for the type byte.
    regolith = {**BEDROCK_RECEIPT, "depositNonce": "0x4"}
    encoded = receipt_encoding(regolith)
    assert encoded == receipt_encoding(BEDROCK_RECEIPT)
    assert encoded == receipt_encoding({**regolith, "depositNonce": "0x5"})
    assert encoded[1:] == receipt_encoding({**BEDROCK_RECEIPT, "type": "0x2"})[1:]
    canyon = {**regolith, "depositReceiptVersion": "0x1"}
    assert receipt_encoding(canyon) != encoded
    assert receipt_encoding(canyon) != receipt_encoding({**canyon, "depositNonce": "0x5"})
