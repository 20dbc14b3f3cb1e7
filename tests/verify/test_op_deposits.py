"""OP stack deposits (type 0x7e) in the integrity checks, against a real OP stack node: anvil
started with `--network optimism`, which mines deposits beside ordinary transactions.

anvil takes a deposit two ways: eth_sendTransaction with the deposit's own fields
(`sourceHash`, `mint`, `isSystemTx`) beside the usual ones, from an account it holds, and
eth_sendRawTransaction of the deposit's encoding (0x7e || rlp([sourceHash, from, to, mint,
value, gas, isSystemTx, data])), which has no signature, so from any address. Its pool keys a
deposit by sender and nonce like any transaction: one deposit per sender per block.

The node's hashes and roots are the reference: each deposit must hash to what anvil says,
the block's transactions and receipts must recompute to its roots, and any one field of a
deposit or its receipt changed must fail.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import rlp
from eth_utils import keccak

from rpcgate.verify import (
    header_mismatch,
    receipts_root_mismatch,
    transaction_encoding,
    transaction_hash_mismatch,
    transactions_root_mismatch,
)
from tests.harness.anvil import (
    DEFAULT_GENESIS_TIMESTAMP,
    DEV_ADDRESSES,
    DEV_KEYS,
    AnvilNode,
    canonical_timestamp,
    sign_transaction,
)
from tests.harness.contract import INIT_CODE, create_address

OPTIMISM = ("--network", "optimism")
CHAIN_ID = 31337
# anvil's third default dev account: it sends the eth_sendTransaction deposit, so its
# nonce never meets the signed transactions of the first two.
DEPOSITOR = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
ONE_ETHER = 10**18
# The block below as captured once, for the unit tests (tests/verify/test_deposit_encoding.py).
CAPTURED = Path(__file__).resolve().parents[1] / "fixtures" / "chains" / "op-stack-anvil"


def _address(label: str) -> str:
    """An address no key is known for: only a deposit can come from it."""
    return "0x" + keccak(f"rpcgate.tests.verify.test_op_deposits {label}".encode())[:20].hex()


def _source_hash(label: str) -> bytes:
    return keccak(f"rpcgate.tests.verify.test_op_deposits source {label}".encode())


def raw_deposit(
    *,
    source_hash: bytes,
    sender: str,
    to: str | None,
    mint: int = 0,
    value: int = 0,
    gas: int = 200_000,
    is_system_tx: bool = False,
    data: bytes = b"",
) -> str:
    """A deposit's encoding as 0x-hex, for eth_sendRawTransaction."""
    fields = [
        source_hash,
        bytes.fromhex(sender[2:]),
        b"" if to is None else bytes.fromhex(to[2:]),
        mint,
        value,
        gas,
        b"\x01" if is_system_tx else b"",
        data,
    ]
    encoded: bytes = rlp.encode(fields)
    return "0x7e" + encoded.hex()


@dataclass
class DepositBlock:
    """One mined block holding deposits and ordinary transactions, as the node answers it."""

    block: dict[str, Any]  # eth_getBlockByNumber with full transactions
    receipts: list[dict[str, Any]]  # eth_getBlockReceipts
    sent: dict[str, str] = field(default_factory=dict)  # kind -> transaction hash

    def transaction(self, kind: str) -> tuple[int, dict[str, Any]]:
        for index, tx in enumerate(self.block["transactions"]):
            if tx["hash"] == self.sent[kind]:
                return index, copy.deepcopy(tx)
        raise LookupError(kind)


# What each kind of deposit in the block exercises.
DEPOSIT_KINDS = (
    "create",  # `to` empty: a contract creation, paid for by what it mints
    "system",  # isSystemTx set (refused since Regolith: it fails, and still counts)
    "call-with-log",  # a call whose log lands in the deposit's receipt
    "sent",  # built by anvil itself from eth_sendTransaction, with a value
)
ORDINARY_KINDS = ("eip1559-call", "eip1559-other-sender")


def build_deposit_block(node: AnvilNode) -> DepositBlock:
    """Block 1 deploys tests/harness/contract.py's logging contract; block 2 holds four
    deposits and two signed transactions. Both are mined at explicit timestamps, so the
    chain is the same on every run."""
    logger = create_address(DEV_ADDRESSES[0], 0)
    node.send_raw_transaction(sign_transaction(chain_id=CHAIN_ID, nonce=0, data=INIT_CODE))
    node.mine(canonical_timestamp(node.genesis_timestamp, 1))
    sent = {
        "create": node.send_raw_transaction(
            raw_deposit(
                source_hash=_source_hash("create"),
                sender=_address("creator"),
                to=None,
                mint=ONE_ETHER,
                gas=500_000,
                data=bytes.fromhex(INIT_CODE[2:]),
            )
        ),
        "system": node.send_raw_transaction(
            raw_deposit(
                source_hash=_source_hash("system"),
                sender=_address("system"),
                to=DEV_ADDRESSES[1],
                mint=5,
                gas=100_000,
                is_system_tx=True,
                data=b"\x12\x34",
            )
        ),
        "call-with-log": node.send_raw_transaction(
            raw_deposit(
                source_hash=_source_hash("call"),
                sender=_address("caller"),
                to=logger,
                gas=100_000,
                data=b"deposited",
            )
        ),
        "sent": node.rpc(
            "eth_sendTransaction",
            [
                {
                    "from": DEPOSITOR,
                    "to": logger,
                    "value": "0x3",
                    "input": "0xbeef",
                    "sourceHash": "0x" + _source_hash("sent").hex(),
                    "mint": "0x7",
                    "isSystemTx": False,
                }
            ],
        ),
        "eip1559-call": node.send_raw_transaction(
            sign_transaction(chain_id=CHAIN_ID, nonce=1, to=logger, data="0xabcd")
        ),
        "eip1559-other-sender": node.send_raw_transaction(
            sign_transaction(chain_id=CHAIN_ID, nonce=0, to=DEPOSITOR, value=9, key=DEV_KEYS[1])
        ),
    }
    node.mine(canonical_timestamp(node.genesis_timestamp, 2))
    block = node.rpc("eth_getBlockByNumber", ["0x2", True])
    receipts = node.rpc("eth_getBlockReceipts", ["0x2"])
    return DepositBlock(block, receipts, sent)


@pytest.fixture(scope="module")
def deposits() -> Iterator[DepositBlock]:
    with AnvilNode(genesis_timestamp=DEFAULT_GENESIS_TIMESTAMP, extra_args=OPTIMISM) as node:
        yield build_deposit_block(node)


def test_the_block_holds_deposits_and_ordinary_transactions(deposits: DepositBlock) -> None:
    # Guards the tests below: every transaction sent was mined, with the type it was sent as.
    types = {kind: deposits.transaction(kind)[1]["type"] for kind in deposits.sent}
    assert types == {**dict.fromkeys(DEPOSIT_KINDS, "0x7e"), **dict.fromkeys(ORDINARY_KINDS, "0x2")}
    assert len(deposits.block["transactions"]) == len(deposits.sent)
    receipt_types = {int(receipt["type"], 16) for receipt in deposits.receipts}
    assert receipt_types == {0x2, 0x7E}


def test_the_captured_fixture_is_this_nodes_block(deposits: DepositBlock) -> None:
    recapture = (
        f"anvil now answers another block 2: capture it again into {CAPTURED} "
        "(json.dump of build_deposit_block's block and receipts, indent=2)"
    )
    assert json.loads((CAPTURED / "deposits_block.json").read_text()) == deposits.block, recapture
    captured_receipts = json.loads((CAPTURED / "deposits_receipts.json").read_text())
    assert captured_receipts == deposits.receipts, recapture


def test_a_block_with_deposits_recomputes_to_its_roots(deposits: DepositBlock) -> None:
    assert header_mismatch(deposits.block) is None
    assert transactions_root_mismatch(deposits.block) is None
    assert receipts_root_mismatch(deposits.receipts, deposits.block) is None


@pytest.mark.parametrize("kind", DEPOSIT_KINDS)
def test_each_deposit_hashes_to_the_nodes_hash(deposits: DepositBlock, kind: str) -> None:
    _, tx = deposits.transaction(kind)
    assert "0x" + keccak(transaction_encoding(tx)).hex() == tx["hash"]
    assert transaction_hash_mismatch(tx) is None


def test_the_deposits_say_what_they_were_sent_with(deposits: DepositBlock) -> None:
    # The fields the encoding reads are the ones anvil answers, under these names.
    _, created = deposits.transaction("create")
    _, system = deposits.transaction("system")
    _, sent = deposits.transaction("sent")
    assert created.get("to") is None and int(created["mint"], 16) == ONE_ETHER  # anvil: no `to`
    assert system["isSystemTx"] in ("0x1", True)
    assert sent["sourceHash"] == "0x" + _source_hash("sent").hex()
    assert (int(sent["mint"], 16), int(sent["value"], 16)) == (7, 3)


def _changed_hex(value: str) -> str:
    """The same hex with its last digit changed; an empty value becomes 0x01."""
    if value in ("0x", "0x0"):
        return "0x1"
    return f"{value[:-1]}{int(value[-1], 16) ^ 1:x}"


# A field of a deposit, and how it is changed.
DEPOSIT_CHANGES = [
    ("create", "sourceHash", _changed_hex),
    ("create", "mint", _changed_hex),
    ("create", "from", _changed_hex),
    ("create", "to", lambda _: DEV_ADDRESSES[1]),
    ("create", "input", lambda value: value + "00"),
    ("system", "isSystemTx", lambda _: False),
    ("system", "mint", lambda _: None),
    ("call-with-log", "mint", _changed_hex),
    ("call-with-log", "gas", _changed_hex),
    ("call-with-log", "isSystemTx", lambda _: "0x1"),
    ("sent", "sourceHash", _changed_hex),
    ("sent", "value", _changed_hex),
    ("sent", "mint", lambda _: "0x0"),
]


@pytest.mark.parametrize(
    ("kind", "field_name", "change"),
    DEPOSIT_CHANGES,
    ids=[f"{kind}-{name}" for kind, name, _ in DEPOSIT_CHANGES],
)
def test_a_changed_deposit_fails(
    deposits: DepositBlock, kind: str, field_name: str, change: Any
) -> None:
    index, tx = deposits.transaction(kind)
    tx[field_name] = change(tx.get(field_name))
    problem = transaction_hash_mismatch(tx)
    assert problem is not None and "recomputed from the fields" in problem
    block = copy.deepcopy(deposits.block)
    block["transactions"][index] = tx
    problem = transactions_root_mismatch(block)
    assert problem is not None and f"transaction {index}" in problem


# A change to a deposit's receipt, by the field the receipts root covers.
RECEIPT_CHANGES = [
    ("depositNonce", lambda r: r.update(depositNonce=_changed_hex(r["depositNonce"]))),
    ("depositReceiptVersion", lambda r: r.update(depositReceiptVersion="0x2")),
    ("version-dropped", lambda r: r.pop("depositReceiptVersion")),
    ("status", lambda r: r.update(status=_changed_hex(r["status"]))),
    (
        "cumulativeGasUsed",
        lambda r: r.update(cumulativeGasUsed=_changed_hex(r["cumulativeGasUsed"])),
    ),
    ("log-data", lambda r: r["logs"][0].update(data=r["logs"][0]["data"] + "00")),
]


@pytest.mark.parametrize(("what", "change"), RECEIPT_CHANGES, ids=[w for w, _ in RECEIPT_CHANGES])
def test_a_changed_deposit_receipt_fails(deposits: DepositBlock, what: str, change: Any) -> None:
    index, _ = deposits.transaction("call-with-log")
    receipts = copy.deepcopy(deposits.receipts)
    receipt = next(r for r in receipts if int(r["transactionIndex"], 16) == index)
    assert receipt["depositReceiptVersion"] is not None and receipt["logs"]
    change(receipt)
    problem = receipts_root_mismatch(receipts, deposits.block)
    assert problem is not None and "receipts root" in problem


@pytest.mark.parametrize("hardfork", ["bedrock", "canyon", "isthmus"])
def test_deposit_blocks_of_op_hardforks_recompute(hardfork: str) -> None:
    # Bedrock's header has no withdrawals root, Isthmus's every Prague field. (anvil answers
    # depositReceiptVersion under every OP hardfork, so the receipt before Canyon, whose
    # nonce the trie leaves out, is pinned by tests/verify/test_deposit_encoding.py.)
    with AnvilNode(extra_args=[*OPTIMISM, "--hardfork", hardfork]) as node:
        built = build_deposit_block(node)
        assert header_mismatch(built.block) is None
        assert transactions_root_mismatch(built.block) is None
        assert receipts_root_mismatch(built.receipts, built.block) is None
        if hardfork == "bedrock":
            assert "withdrawalsRoot" not in built.block
