"""The pure decisions of rpcgate/chain/verifier.py, as tables: what each mode checks, what level
an answer is given, how an eth_getLogs answer or a receipt is compared with what the
verified receipts hold. The checks against real answers are in test_verified_answers.py
(end to end) and test_verify.py (recomputation and proofs)."""

from __future__ import annotations

from typing import Any

import pytest

from rpcgate.chain.verifier import (
    _known_types,
    _logs_difference,
    _receipt_difference,
    anchored,
    anchored_unpinned,
    answer_level,
    checked_methods,
    logs_range,
    proof_call,
    state_from_proof,
    unpinned_anchor,
)
from rpcgate.config.settings import parse_config
from rpcgate.rpc.methods import METHODS

pytestmark = pytest.mark.unit

BLOCK_HASH = "0x" + "ab" * 32
TX = "0x" + "cd" * 32


@pytest.mark.parametrize(
    ("method", "mode", "is_anchored", "level"),
    [
        ("eth_getBalance", "proofs", True, "proof"),
        ("eth_getBalance", "integrity", True, "consensus"),
        ("eth_getBalance", "off", True, "consensus"),
        ("eth_getBalance", "proofs", False, "none"),  # `pending`
        ("eth_getStorageAt", "proofs", True, "proof"),
        ("eth_getLogs", "proofs", True, "proof"),
        ("eth_getBlockByNumber", "integrity", True, "integrity"),
        ("eth_getBlockByNumber", "proofs", True, "integrity"),
        ("eth_getBlockByNumber", "off", True, "consensus"),
        ("eth_getTransactionReceipt", "integrity", True, "integrity"),
        ("eth_call", "proofs", True, "proof"),  # executed (the verifier downgrades others)
        ("eth_call", "integrity", True, "consensus"),
        ("eth_chainId", "integrity", True, "consensus"),
        ("eth_sendRawTransaction", "proofs", True, "none"),
        ("eth_gasPrice", "proofs", True, "none"),
        ("web3_clientVersion", "integrity", True, "none"),
        ("some_unknownMethod", "proofs", True, "none"),
    ],
)
def test_answer_level(method: str, mode: Any, is_anchored: bool, level: str) -> None:
    assert answer_level(method, mode, is_anchored) == level


def test_an_error_or_a_log_range_beyond_the_bound_is_not_proven() -> None:
    assert answer_level("eth_getBalance", "proofs", True, error=True) == "none"
    assert answer_level("eth_getLogs", "proofs", True, logs_in_bound=False) == "consensus"


def test_each_mode_checks_more_than_the_one_before() -> None:
    off, integrity, proofs = (checked_methods(m) for m in ("off", "integrity", "proofs"))
    assert off == frozenset()
    assert {"eth_getBlockByNumber", "eth_getBlockReceipts", "eth_getTransactionReceipt"} <= (
        integrity
    )
    assert integrity < proofs
    assert "eth_getProof" in integrity  # a proof is walked to its root whatever the mode
    assert "eth_getCode" in proofs - integrity


@pytest.mark.parametrize(
    ("method", "block", "params", "expected"),
    [
        ("eth_getBalance", 5, ["0x1", "0x5"], True),
        ("eth_getBalance", None, ["0x1", "pending"], False),
        ("eth_getBalance", None, ["0x1", {"blockHash": BLOCK_HASH}], True),
        ("eth_getTransactionReceipt", None, [TX], True),
        ("eth_chainId", None, [], True),
        ("eth_getLogs", None, [{"blockHash": BLOCK_HASH}], True),
        ("eth_getLogs", None, [{"fromBlock": "pending"}], False),
        ("eth_gasPrice", None, [], False),
    ],
)
def test_anchored(method: str, block: int | None, params: list[Any], expected: bool) -> None:
    assert anchored(method, block, params) is expected


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"eth_getLogs"} | {"no_such_method"}))
def test_the_anchor_worked_out_once_per_method_is_what_anchored_says(method: str) -> None:
    anchor = unpinned_anchor(method)
    for params in (
        None,
        [],
        ["0x1"],
        ["0x1", "pending"],
        ["0x1", {"blockHash": BLOCK_HASH}],
        [{"blockHash": BLOCK_HASH}],
        [{"to": "0x1"}, {"blockNumber": "0x5"}],
        ["0x1", "0x2", {"blockHash": BLOCK_HASH}],
        {"blockHash": BLOCK_HASH},
    ):
        assert anchored_unpinned(anchor, params) is anchored(method, None, params), params


@pytest.mark.parametrize(
    ("criteria", "blocks"),
    [
        ({"fromBlock": "0x2", "toBlock": "0x4"}, range(2, 5)),
        ({"fromBlock": "0x4", "toBlock": "0x2"}, range(4, 3)),
        ({"fromBlock": "latest", "toBlock": "0x2"}, None),
        ({"blockHash": BLOCK_HASH}, None),
        ({"toBlock": "0x2"}, None),
        ("not a filter", None),
    ],
)
def test_logs_range(criteria: Any, blocks: range | None) -> None:
    assert logs_range(criteria) == blocks


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("eth_getBalance", ["0xa", "0x5"], ["0xa", [], "0x5"]),
        ("eth_getTransactionCount", ["0xa", "0x5"], ["0xa", [], "0x5"]),
        ("eth_getStorageAt", ["0xa", "0x1", "0x5"], ["0xa", ["0x" + "0" * 63 + "1"], "0x5"]),
        (
            "eth_getBalance",
            ["0xa", {"blockHash": BLOCK_HASH}],
            ["0xa", [], {"blockHash": BLOCK_HASH}],
        ),
        ("eth_getBalance", ["0xa", "pending"], None),
        ("eth_getBalance", ["0xa"], None),
        ("eth_getCode", ["0xa", "0x5"], None),  # checked against the proof, not answered
        ("eth_call", [{}, "0x5"], None),
    ],
)
def test_proof_call(method: str, params: list[Any], expected: list[Any] | None) -> None:
    assert proof_call(method, params) == expected


def test_state_from_proof_answers_as_the_method_does() -> None:
    proof = {
        "balance": "0x0de0b6b3a7640000",
        "nonce": "0x07",
        "storageProof": [{"key": "0x0", "value": "0x2a", "proof": []}],
    }
    assert state_from_proof("eth_getBalance", proof) == "0xde0b6b3a7640000"
    assert state_from_proof("eth_getTransactionCount", proof) == "0x7"
    assert state_from_proof("eth_getStorageAt", proof) == "0x" + "0" * 62 + "2a"


def _log(index: int, data: str = "0x01", block: str = BLOCK_HASH) -> dict[str, Any]:
    return {
        "blockHash": block,
        "logIndex": hex(index),
        "address": "0x" + "11" * 20,
        "topics": ["0x" + "22" * 32],
        "data": data,
        "transactionHash": TX,
    }


@pytest.mark.parametrize(
    ("given", "expected", "problem"),
    [
        ([_log(0), _log(1)], [_log(0), _log(1)], None),
        ([_log(1), _log(0)], [_log(0), _log(1)], None),  # order is the node's business
        ([], [], None),
        ([_log(0)], [_log(0), _log(1)], "1 log(s) missing of 2"),
        ([_log(0), _log(1), _log(2)], [_log(0), _log(1)], "1 log(s) not in the blocks' receipts"),
        ([_log(0, data="0x02")], [_log(0)], "log 0 of block"),
        ([_log(0, block="0x" + "ef" * 32)], [_log(0)], "1 log(s) missing"),
    ],
)
def test_logs_difference(
    given: list[dict[str, Any]], expected: list[dict[str, Any]], problem: str | None
) -> None:
    found = _logs_difference(given, expected)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_receipt_difference_names_the_field() -> None:
    proven = {"status": "0x1", "cumulativeGasUsed": "0x5208", "logs": [_log(0)]}
    assert _receipt_difference(dict(proven), proven) is None
    flipped = _receipt_difference({**proven, "status": "0x0"}, proven)
    assert flipped is not None and flipped.startswith("receipt status is 0x0")
    fewer = _receipt_difference({**proven, "logs": []}, proven)
    assert fewer == "receipt logs differ from its block's receipts"
    # A field only one side has (an L2's extras) is not a difference.
    assert _receipt_difference({**proven, "l1Fee": "0x1"}, proven) is None


@pytest.mark.parametrize(
    ("written", "mode"), [("off", "off"), ("'off'", "off"), ("proofs", "proofs")]
)
def test_verify_setting_reads_yaml_off(written: str, mode: str) -> None:
    config = parse_config(
        "chains:\n  - name: devnet\n    chain_id: 1\n    verify: "
        + written
        + "\n    upstreams: [{name: a, url: 'http://127.0.0.1:1'}]\n"
    )
    assert config.chains[0].verify == mode


def test_verify_defaults_to_integrity_and_refuses_other_words() -> None:
    config = parse_config(
        "chains:\n  - name: devnet\n    chain_id: 1\n"
        "    upstreams: [{name: a, url: 'http://127.0.0.1:1'}]\n"
    )
    assert config.chains[0].verify == "integrity"
    with pytest.raises(Exception, match="verify: must be one of"):
        parse_config(
            "chains:\n  - name: devnet\n    chain_id: 1\n    verify: always\n"
            "    upstreams: [{name: a, url: 'http://127.0.0.1:1'}]\n"
        )


@pytest.mark.parametrize(
    ("items", "known"),
    [
        ([{"type": "0x0"}, {"type": "0x2"}, {"type": "0x4"}], True),
        ([{"type": "0x2"}, {"type": "0x7e", "sourceHash": "0x" + "11" * 32}], True),  # OP deposit
        ([{"type": "0x2"}, {"type": "0x7e"}], False),  # Scroll's L1 message: not encoded
        ([{"type": "0x2"}, {"type": "0x6a"}], False),  # Arbitrum's internal transaction
        (["0x" + "ab" * 32], True),  # hashes only: nothing to encode
        ([{}], True),  # no type: legacy
        (None, True),
    ],
)
def test_only_known_transaction_types_are_re_encoded(items: Any, known: bool) -> None:
    assert _known_types(items) is known
