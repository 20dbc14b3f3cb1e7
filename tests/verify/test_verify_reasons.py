"""What each check of rpcgate/verify/ says, word for word, for each way an answer can be
wrong (the words an operator reads in the log and in the refusal), and the corners of the
encodings that the recorded chain (tests/fixtures/verify/) does not reach: a transaction
answered without its type or its yParity, a receipt order other than the block's, an
absent account answered with zero hashes, trie leaves that are no account or no value.
Found by mutation testing (docs/mutation.md)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
import rlp
from eth_utils import keccak
from trie import HexaryTrie

from rpcgate.verify import (
    EMPTY_TRIE_ROOT,
    AccountState,
    bloom_may_contain,
    header_mismatch,
    logs_matching,
    ordered_trie_root,
    receipts_root_mismatch,
    transaction_hash_mismatch,
    transactions_root_mismatch,
    verify_account,
    verify_storage,
)
from rpcgate.verify._hex import hex_bytes, hex_int, hex_list, same_quantity, short
from rpcgate.verify._rlp import encode as rlp_encode
from rpcgate.verify.headers import header_layout
from rpcgate.verify.proofs import ABSENT_ACCOUNT
from tests.harness.anvil import DEV_ADDRESSES
from tests.harness.verify_chain import STORE_TOPIC
from tests.verify.recorded_chain import ABSENT_ADDRESS, CHAIN_FILE, FIXTURES, Recording, word

pytestmark = pytest.mark.unit

EOA = DEV_ADDRESSES[0]
ZERO_HASH = "0x" + "00" * 32
NOT_AN_OBJECT: Any = 5  # what no check is typed to take, and each must refuse in words


@cache
def _recording() -> Recording:
    return Recording.load(FIXTURES / CHAIN_FILE)


def block(name: str = "calls") -> dict[str, Any]:
    recording = _recording()
    answer: dict[str, Any] = recording.rpc("eth_getBlockByNumber", recording.chain.tag(name), True)
    return answer


def receipts(name: str = "calls") -> list[dict[str, Any]]:
    recording = _recording()
    answer: list[dict[str, Any]] = recording.rpc("eth_getBlockReceipts", recording.chain.tag(name))
    return answer


def transaction(kind: str) -> dict[str, Any]:
    recording = _recording()
    answer: dict[str, Any] = recording.rpc(
        "eth_getTransactionByHash", recording.chain.transactions[kind]
    )
    return answer


def proof(address: str = EOA, slots: tuple[int, ...] = ()) -> dict[str, Any]:
    recording = _recording()
    keys = [word(slot) for slot in slots]
    answer: dict[str, Any] = recording.rpc(
        "eth_getProof", address, keys, recording.chain.tag("calls")
    )
    return answer


def state_root() -> bytes:
    return hex_bytes(block()["stateRoot"])


def storage_item(index: int = 0) -> dict[str, Any]:
    item: dict[str, Any] = proof(_recording().chain.store, (1, 4))["storageProof"][index]
    return item


def store_storage_hash() -> bytes:
    return hex_bytes(proof(_recording().chain.store)["storageHash"])


def _changed(answer: dict[str, Any], **fields: Any) -> dict[str, Any]:
    changed = copy.deepcopy(answer)
    for name, value in fields.items():
        if value is None:
            changed.pop(name, None)
        else:
            changed[name] = value
    return changed


def _tx_with(kind: str, change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    tx = transaction(kind)
    change(tx)
    return tx


def _block_with(change: Callable[[dict[str, Any]], Any], name: str = "calls") -> dict[str, Any]:
    answer = block(name)
    change(answer)
    return answer


def _receipts_with(change: Callable[[list[dict[str, Any]]], Any]) -> str | None:
    answers = receipts()
    change(answers)
    return receipts_root_mismatch(answers, block())


# --- each check's words -------------------------------------------------------------------

REASONS: dict[str, tuple[Callable[[], Any], str]] = {
    # headers
    "header-5": (lambda: header_mismatch(NOT_AN_OBJECT), "block header: not an object"),
    "header-no-hash": (
        lambda: header_mismatch(_changed(block(), hash=None)),
        "block header: field hash is not hex",
    ),
    "header-changed": (
        lambda: header_mismatch(_changed(block(), extraData="0x00")),
        "header hash 0xdb767b138f… recomputed from the fields, the block says 0x6c5db11710…",
    ),
    "header-changed-avalanche": (
        lambda: header_mismatch(_changed(block(), extDataHash=ZERO_HASH), "avalanche"),
        "header hash 0x3750b03977… recomputed from the fields (avalanche layout), "
        "the block says 0x6c5db11710…",
    ),
    # transactions
    "tx-5": (lambda: transaction_hash_mismatch(NOT_AN_OBJECT), "transaction: not an object"),
    "tx-no-hash": (
        lambda: transaction_hash_mismatch(_changed(transaction("eip1559"), hash=None)),
        "transaction: field hash is not hex",
    ),
    "tx-type-words": (
        lambda: transaction_hash_mismatch(_changed(transaction("eip1559"), type="two")),
        "transaction: field type missing or not hex",
    ),
    "tx-type-not-a-number": (
        lambda: transaction_hash_mismatch(_changed(transaction("eip1559"), type="0xzz")),
        "transaction: field type is not a hex number",
    ),
    "tx-changed": (
        lambda: transaction_hash_mismatch(_changed(transaction("eip1559"), value="0x5")),
        "transaction: hash 0xe475752e04… recomputed from the fields, it says 0x567030e1a3…",
    ),
    "access-list-entry-a-string": (
        lambda: transaction_hash_mismatch(_changed(transaction("eip2930"), accessList=["x"])),
        "transaction: an entry of accessList is not {address, storageKeys}",
    ),
    "access-list-an-object": (
        lambda: transaction_hash_mismatch(_changed(transaction("eip2930"), accessList={})),
        "transaction: field accessList missing or not a list",
    ),
    "access-list-key": (
        lambda: transaction_hash_mismatch(
            _tx_with("eip2930", lambda tx: tx["accessList"][0].update(storageKeys=["0xzz"]))
        ),
        "transaction: a storage key in accessList is not hex",
    ),
    "blob-hashes-5": (
        lambda: transaction_hash_mismatch(_changed(transaction("eip4844"), blobVersionedHashes=5)),
        "transaction: field blobVersionedHashes missing or not a list",
    ),
    "blob-hash-not-hex": (
        lambda: transaction_hash_mismatch(
            _changed(transaction("eip4844"), blobVersionedHashes=["0xzz"])
        ),
        "transaction: an item of blobVersionedHashes is not hex",
    ),
    "authorizations-5": (
        lambda: transaction_hash_mismatch(_changed(transaction("eip7702"), authorizationList=5)),
        "transaction: field authorizationList missing or not a list",
    ),
    "authorization-5": (
        lambda: transaction_hash_mismatch(_changed(transaction("eip7702"), authorizationList=[5])),
        "transaction: an entry of authorizationList is not an object",
    ),
    "authorization-no-y-parity": (
        lambda: transaction_hash_mismatch(
            _tx_with("eip7702", lambda tx: tx["authorizationList"][0].pop("yParity"))
        ),
        "transaction: field v missing or not hex",
    ),
    "block-5": (lambda: transactions_root_mismatch(NOT_AN_OBJECT), "block: not an object"),
    "block-transactions-5": (
        lambda: transactions_root_mismatch({"transactions": 5}),
        "block transactions missing or not a list",
    ),
    "block-mixed": (
        lambda: transactions_root_mismatch(
            _block_with(lambda b: b["transactions"].__setitem__(0, b["transactions"][0]["hash"]))
        ),
        "block transactions mix hashes and objects",
    ),
    "block-no-root": (
        lambda: transactions_root_mismatch(_changed(block(), transactionsRoot=None)),
        "block header: field transactionsRoot is not hex",
    ),
    "block-root": (
        lambda: transactions_root_mismatch(_block_with(lambda b: b["transactions"].pop())),
        "transactions root 0x81ea20564a… recomputed from 5 transactions, "
        "the block says 0x4ec33c3d64…",
    ),
    "tx-block-number": (
        lambda: transactions_root_mismatch(
            _block_with(lambda b: b["transactions"][1].update(blockNumber="0x2"))
        ),
        "transaction 1 has blockNumber 0x2, the block has 0x3",
    ),
    "tx-block-hash": (
        lambda: transactions_root_mismatch(
            _block_with(lambda b: b["transactions"][1].update(blockHash="0x" + "11" * 32))
        ),
        "transaction 1 has blockHash 0x1111111111…, the block has 0x6c5db11710…",
    ),
    "tx-index-without-block-hash": (
        lambda: transactions_root_mismatch(
            _block_with(
                lambda b: b["transactions"][1].update(blockHash=None, transactionIndex="0x7")
            )
        ),
        "transaction 1 has transactionIndex 0x7, the block has 0x1",
    ),
    # receipts
    "r-str": (lambda: receipts_root_mismatch("0x", block()), "receipts are not a list"),
    "receipts-5": (
        lambda: receipts_root_mismatch(NOT_AN_OBJECT, block()),
        "receipts are not a list",
    ),
    "r-header": (
        lambda: receipts_root_mismatch(receipts(), NOT_AN_OBJECT),
        "block header: not an object",
    ),
    "header-no-receipts-root": (
        lambda: receipts_root_mismatch(receipts(), _changed(block(), receiptsRoot=None)),
        "block header: field receiptsRoot is not hex",
    ),
    "header-no-hash-for-receipts": (
        lambda: receipts_root_mismatch(receipts(), _changed(block(), hash=None)),
        "block header: field hash is not hex",
    ),
    "receipt-5": (
        lambda: _receipts_with(lambda rs: rs.__setitem__(0, NOT_AN_OBJECT)),
        "receipt 0 is not an object",
    ),
    "receipt-no-index": (
        lambda: _receipts_with(lambda rs: rs[2].pop("transactionIndex")),
        "receipt 2: field transactionIndex missing or not hex",
    ),
    "receipt-index-twice": (
        lambda: _receipts_with(lambda rs: rs[1].update(transactionIndex="0x0")),
        "receipt indexes are not 0 to 5 (0 in place 1)",
    ),
    "receipt-no-block-hash": (
        lambda: _receipts_with(lambda rs: rs[1].pop("blockHash")),
        "receipt 1: field blockHash is not hex",
    ),
    "receipt-block-hash": (
        lambda: _receipts_with(lambda rs: rs[3].update(blockHash="0x" + "22" * 32)),
        "receipt 3 is of block 0x2222222222…, not 0x6c5db11710…",
    ),
    "receipt-block-number": (
        lambda: _receipts_with(lambda rs: rs[3].update(blockNumber="0x2")),
        "receipt 3 is of block number 0x2, not 0x3",
    ),
    "receipt-no-status": (
        lambda: _receipts_with(lambda rs: rs[0].pop("status")),
        "receipt 0: receipt has neither status nor root",
    ),
    "receipt-logs-5": (
        lambda: _receipts_with(lambda rs: rs[0].update(logs=5)),
        "receipt 0: field logs missing or not a list",
    ),
    "receipt-log-5": (
        lambda: _receipts_with(lambda rs: rs[0]["logs"].__setitem__(0, 5)),
        "receipt 0: a log is not an object",
    ),
    "receipt-log-topics-5": (
        lambda: _receipts_with(lambda rs: rs[0]["logs"][0].update(topics=5)),
        "receipt 0: field topics of a log missing or not a list",
    ),
    "receipt-log-topic": (
        lambda: _receipts_with(lambda rs: rs[0]["logs"][0].update(topics=["0xzz"])),
        "receipt 0: a log topic is not hex",
    ),
    "receipt-type": (
        lambda: _receipts_with(lambda rs: rs[0].update(type="0x64")),
        "receipt 0: receipt type 0x64 is not known",
    ),
    "receipts-root": (
        lambda: _receipts_with(lambda rs: rs.pop()),
        "receipts root 0xe5b492af76… recomputed from 5 receipts, the block says 0x1f74150095…",
    ),
    # accounts
    "acct-5": (
        lambda: verify_account(NOT_AN_OBJECT, EOA, state_root()),
        "account proof: not an object",
    ),
    "account-address-short": (
        lambda: verify_account(proof(), "0x12", state_root()),
        "account proof: address is not 20 bytes",
    ),
    "account-address-not-hex": (
        lambda: verify_account(proof(), "zz", state_root()),
        "account proof: address is not hex",
    ),
    "account-no-proof": (
        lambda: verify_account(_changed(proof(), accountProof=None), EOA, state_root()),
        "account proof: accountProof missing or not a list",
    ),
    "account-node-not-hex": (
        lambda: verify_account(_changed(proof(), accountProof=["0xzz"]), EOA, state_root()),
        "account proof: an item of accountProof is not hex",
    ),
    "account-other-address": (
        lambda: verify_account(_changed(proof(), address=DEV_ADDRESSES[1]), EOA, state_root()),
        "account proof is for 0x70997970C5…, not 0xf39fd6e51a…",
    ),
    "account-address-answered-not-hex": (
        lambda: verify_account(_changed(proof(), address="0xzz"), EOA, state_root()),
        "account proof is for 0xzz, not 0xf39fd6e51a…",
    ),
    "account-short-root": (
        lambda: verify_account(proof(), EOA, bytes(5)),
        "account proof of 0xf39fd6e51a…: the root is not a 32-byte hash",
    ),
    "account-other-root": (
        lambda: verify_account(proof(), EOA, keccak(b"another root")),
        "account proof of 0xf39fd6e51a…: the proof does not lead from root 0xafac874d59… "
        "to the key (MissingTrieNode)",
    ),
    "account-balance": (
        lambda: verify_account(_changed(proof(), balance="0x1"), EOA, state_root()),
        "account 0xf39fd6e51a…: balance is answered as 1, the proof says 9999997850516999999990",
    ),
    "account-no-balance": (
        lambda: verify_account(_changed(proof(), balance=None), EOA, state_root()),
        "account 0xf39fd6e51a…: field balance missing or not hex",
    ),
    "account-zero-storage-hash": (
        lambda: verify_account(_changed(proof(), storageHash=ZERO_HASH), EOA, state_root()),
        "account 0xf39fd6e51a…: storageHash is answered as 0x0000000000…, "
        "the proof says 0x56e81f171b…",
    ),
    # storage
    "s-5": (
        lambda: verify_storage(NOT_AN_OBJECT, store_storage_hash()),
        "storage proof: not an object",
    ),
    "storage-no-key": (
        lambda: verify_storage(_changed(storage_item(), key=None), store_storage_hash()),
        "storage proof: storage proof key missing or not hex",
    ),
    "storage-no-proof": (
        lambda: verify_storage(_changed(storage_item(), proof=None), store_storage_hash()),
        "storage proof: storage proof missing or not a list",
    ),
    "storage-value-not-hex": (
        lambda: verify_storage(_changed(storage_item(), value="7"), store_storage_hash()),
        "storage proof: field value missing or not hex",
    ),
    "storage-key-2**256": (
        lambda: verify_storage(_changed(storage_item(), key=hex(2**256)), store_storage_hash()),
        "storage proof: key 0x1000000000… is over 32 bytes",
    ),
    "storage-value": (
        lambda: verify_storage(_changed(storage_item(), value="0xabd"), store_storage_hash()),
        "slot 0x1 is answered as 0xabd, the proof says 0xabc",
    ),
}


def test_each_refusal_says_what_differs() -> None:
    said = {case: reason() for case, (reason, _) in REASONS.items()}
    assert said == {case: words for case, (_, words) in REASONS.items()}


# --- what the recorded answers do not show --------------------------------------------------


def test_a_typed_transaction_answered_with_v_instead_of_y_parity_hashes() -> None:
    # Clients before yParity answered a typed transaction's parity as `v`.
    tx = transaction("eip1559")
    tx["v"] = tx.pop("yParity")
    assert transaction_hash_mismatch(tx) is None


def test_a_legacy_transaction_answered_without_its_type_hashes() -> None:
    tx = transaction("legacy-eip155")
    del tx["type"]
    assert transaction_hash_mismatch(tx) is None


def test_transactions_that_do_not_say_their_block_still_root() -> None:
    answer = block()
    for tx in answer["transactions"]:
        del tx["blockHash"], tx["blockNumber"]
    assert transactions_root_mismatch(answer) is None


def test_an_absent_account_answered_with_zero_hashes_is_absent() -> None:
    # Some clients answer zero hashes, not the empty ones, for an account that does not exist.
    answer = _changed(proof(ABSENT_ADDRESS), storageHash=ZERO_HASH, codeHash=ZERO_HASH)
    assert verify_account(answer, ABSENT_ADDRESS, state_root()) == ABSENT_ACCOUNT


def _one_leaf_proof(key: bytes, value: bytes) -> tuple[list[str], bytes]:
    """A trie holding `value` under keccak(key) and a few others, and the proof of it."""
    trie = HexaryTrie({})
    for other in range(3):
        trie[keccak(bytes([other]))] = rlp.encode(b"other")
    trie[keccak(key)] = value
    nodes = trie.get_proof(keccak(key))
    return ["0x" + rlp.encode(node).hex() for node in nodes], trie.root_hash


ACCOUNT_LEAVES = [
    pytest.param(rlp.encode([b"\x01"]), id="one-field"),
    pytest.param(rlp.encode([[b""], b"", bytes(32), bytes(32)]), id="a-list-among-fields"),
    pytest.param(rlp.encode([b"", b"", bytes(31), bytes(32)]), id="short-storage-hash"),
    pytest.param(rlp.encode([b"", b"", bytes(32), bytes(31)]), id="short-code-hash"),
    pytest.param(b"\xb8", id="not-rlp"),
]


@pytest.mark.parametrize("leaf", ACCOUNT_LEAVES)
def test_a_leaf_that_is_no_account_is_refused(leaf: bytes) -> None:
    address = bytes.fromhex(EOA[2:])
    nodes, root = _one_leaf_proof(address, leaf)
    answer = _changed(proof(), accountProof=nodes)
    assert verify_account(answer, EOA, root) == (
        "account proof of 0xf39fd6e51a…: the leaf is not an account"
    )


def test_an_account_leaf_proves_its_nonce_and_balance() -> None:
    address = bytes.fromhex(EOA[2:])
    leaf = rlp.encode([300, 2**70 + 5, EMPTY_TRIE_ROOT, keccak(b"")])
    nodes, root = _one_leaf_proof(address, leaf)
    answer = _changed(
        proof(),
        accountProof=nodes,
        nonce=hex(300),
        balance=hex(2**70 + 5),
        storageHash="0x" + EMPTY_TRIE_ROOT.hex(),
        codeHash="0x" + keccak(b"").hex(),
    )
    assert verify_account(answer, EOA, root) == AccountState(
        300, 2**70 + 5, EMPTY_TRIE_ROOT, keccak(b"")
    )


def test_a_storage_leaf_that_is_no_value_is_refused() -> None:
    nodes, root = _one_leaf_proof((1).to_bytes(32, "big"), b"\xb8")
    item = {"key": "0x1", "proof": nodes, "value": "0x0"}
    assert verify_storage(item, root) == "storage proof of slot 0x1: the leaf is not a value"


def test_logs_are_listed_in_the_blocks_order_whatever_the_receipts_order() -> None:
    in_order = logs_matching(receipts(), {})
    assert len(in_order) > 1
    assert logs_matching(receipts()[::-1], {}) == in_order


def test_a_receipt_without_an_index_lists_its_logs_first() -> None:
    answers = receipts()
    del answers[4]["transactionIndex"]  # the fifth call's: it logs, like the four before it
    listed = logs_matching(answers, {})
    assert listed[0]["data"] == answers[4]["logs"][0]["data"]
    assert listed[0]["transactionIndex"] is None


def test_an_absent_address_rules_a_block_out_even_with_a_topic_in_it() -> None:
    bloom = block()["logsBloom"]
    assert bloom_may_contain(bloom, _recording().chain.store, [STORE_TOPIC])
    assert not bloom_may_contain(bloom, ABSENT_ADDRESS, [STORE_TOPIC])


def test_a_filter_value_that_is_no_string_compares_as_its_lowercased_text() -> None:
    entry = {"address": "true", "topics": [], "data": "0x"}
    receipt = {"transactionIndex": "0x0", "logs": [entry]}
    assert len(logs_matching([receipt], {"address": True})) == 1
    no_address = {"transactionIndex": "0x0", "logs": [{"topics": [], "data": "0x"}]}
    assert logs_matching([no_address], {"address": 5}) == []


# --- hex and RLP ----------------------------------------------------------------------------


def test_hex_takes_either_prefix_and_an_odd_digit_count() -> None:
    assert hex_int("0X1a") == 26
    assert hex_bytes("0Xabc") == b"\x0a\xbc"
    assert not same_quantity("0xzz", "0xzz")


@pytest.mark.parametrize(
    ("call", "words"),
    [
        pytest.param(lambda: hex_int(None), "value missing or not hex", id="int"),
        pytest.param(lambda: hex_bytes(None), "value is not hex", id="bytes"),
        pytest.param(lambda: hex_list(["0x1", 5], "nodes"), "an item of nodes is not hex", id="l"),
        pytest.param(lambda: header_layout("nope"), "is not one of avalanche, ethereum", id="h"),
        pytest.param(lambda: rlp_encode(-1), "RLP encodes no negative number", id="negative"),
        pytest.param(lambda: rlp_encode(1.5), "RLP encodes no float", id="float"),
    ],
)
def test_what_cannot_be_read_or_encoded_says_so(call: Callable[[], Any], words: str) -> None:
    with pytest.raises((ValueError, TypeError)) as raised:
        call()
    assert str(raised.value).endswith(words)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (b"\x01" * 5, "0x0101010101"),
        ("0x" + "ab" * 5, "0xababababab"),
        ("0x" + "ab" * 5 + "c", "0xababababab…"),
        (b"\xab" * 32, "0xababababab…"),
    ],
)
def test_a_hash_in_a_message_is_cut_after_ten_digits(value: bytes | str, shown: str) -> None:
    assert short(value) == shown


def test_trie_nodes_of_about_32_bytes_are_referenced_as_py_trie_does() -> None:
    # A node is inlined below 32 bytes and hashed from 32 on: leaves around that size.
    for count in (2, 3, 17):
        for size in range(26, 34):
            items = [bytes([index]) * size for index in range(count)]
            reference = HexaryTrie({})
            for index, item in enumerate(items):
                reference[rlp.encode(index)] = item
            assert ordered_trie_root(items) == reference.root_hash, (count, size)
