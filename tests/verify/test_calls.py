"""The pure side of executed eth_calls (rpcgate/verify/calls.py): which calls are executed,
the block environment, the access-list hint, and how an answer compares with an execution."""

from __future__ import annotations

from typing import Any

import pytest

from rpcgate.verify.calls import (
    ZERO_ADDRESS,
    CallRequest,
    Executed,
    access_hint,
    block_environment,
    call_request,
    outcome_difference,
    revert_difference,
)

pytestmark = pytest.mark.unit

TO = "0x" + "ab" * 20
FROM = "0x" + "cd" * 20


def test_a_plain_call_is_read_with_geths_defaults() -> None:
    request = call_request([{"to": TO, "data": "0x1234"}, "0x10"])
    assert request == CallRequest(ZERO_ADDRESS, TO, b"\x12\x34", 0, None, False)


def test_every_field_it_executes_is_read() -> None:
    tx = {"from": FROM, "to": TO, "input": "0xff", "value": "0x5", "gas": "0x5208"}
    request = call_request([{**tx, "gasPrice": "0x3b9aca00"}, "latest"])
    assert request == CallRequest(FROM, TO, b"\xff", 5, 21000, True)
    assert isinstance(call_request([{**tx, "data": "0xff"}, "0x1"]), CallRequest)


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ([{"data": "0x00"}, "0x1"], "contract creation"),
        ([{"to": TO}, "0x1", {TO: {"balance": "0x1"}}], "state overrides"),
        ([{"to": TO}, "0x1", None, {"number": "0x5"}], "block overrides"),
        ([{"to": TO, "blobVersionedHashes": []}, "0x1"], "blobVersionedHashes"),
        ([{"to": TO, "data": "0x01", "input": "0x02"}, "0x1"], "differ"),
        ([{"to": "0x1234"}, "0x1"], "20 bytes"),
        ([{"to": TO, "value": "ten"}, "0x1"], "value"),
        (["0x1"], "not an object"),
        ([], "not an object"),
    ],
)
def test_a_call_it_does_not_reproduce_is_said_so(params: list[Any], why: str) -> None:
    reason = call_request(params)
    assert isinstance(reason, str) and why in reason


def test_the_block_environment_comes_from_the_header() -> None:
    header = {
        "number": "0x10",
        "timestamp": "0x64",
        "miner": "0x" + "11" * 20,
        "gasLimit": "0x1c9c380",
        "mixHash": "0x" + "22" * 32,
        "difficulty": "0x0",
        "baseFeePerGas": "0x7",
        "excessBlobGas": "0x0",
    }
    environment = block_environment(header)
    assert not isinstance(environment, str)
    assert (environment.number, environment.timestamp, environment.gas_limit) == (
        16,
        100,
        30_000_000,
    )
    assert environment.coinbase == "0x" + "11" * 20 and environment.basefee == 7
    assert environment.prevrandao == b"\x22" * 32 and environment.excess_blob_gas == 0
    assert "number" in str(block_environment({**header, "number": None}))
    # A chain before London and Cancun: no base fee, no blob gas.
    older = {k: v for k, v in header.items() if k not in ("baseFeePerGas", "excessBlobGas")}
    old_environment = block_environment(older)
    assert not isinstance(old_environment, str)
    assert old_environment.basefee == 0 and old_environment.excess_blob_gas is None


def test_the_hint_is_read_leniently() -> None:
    answer = {
        "accessList": [
            {
                "address": TO.upper().replace("0X", "0x"),
                "storageKeys": ["0x01", "0x" + "00" * 31 + "02"],
            },
            {"address": FROM, "storageKeys": []},
            {"address": "nonsense", "storageKeys": ["0x01"]},
            "not an entry",
            {"address": TO, "storageKeys": ["0x03"]},
        ],
        "gasUsed": "0x5208",
    }
    assert access_hint(answer) == {TO: {1, 2, 3}, FROM: set()}
    assert access_hint(None) == {} and access_hint({"accessList": "x"}) == {}


def test_an_answer_is_compared_byte_for_byte() -> None:
    returned = Executed("returned", b"\x00" * 31 + b"\x2a", 21_000)
    assert outcome_difference("0x" + "00" * 31 + "2a", returned) is None
    assert outcome_difference("0x" + "00" * 31 + "2A", returned) is None  # hex case is no lie
    assert "returns" in str(outcome_difference("0x" + "00" * 31 + "2b", returned))
    assert "returns" in str(outcome_difference("0x2a", returned))  # same number, other bytes
    assert "not hex" in str(outcome_difference(42, returned))
    reverted = Executed("reverted", b"\x08\xc3\x79\xa0", 22_000)
    assert "reverts" in str(outcome_difference("0x", reverted))
    halted = Executed("halted", b"", 30_000_000, "OutOfGas")
    assert "OutOfGas" in str(outcome_difference("0x", halted))


def test_a_revert_is_compared_with_the_executions_outcome() -> None:
    reverted = Executed("reverted", b"\x08\xc3\x79\xa0", 22_000)
    assert revert_difference("0x08c379a0", reverted) is None
    assert revert_difference(None, reverted) is None  # a node that gives no data
    assert "reverts with" in str(revert_difference("0x08c379a1", reverted))
    assert "returns" in str(revert_difference("0x", Executed("returned", b"", 21_000)))
    halted = Executed("halted", b"", 100, "OutOfGas")
    assert revert_difference(None, halted) is None
    assert revert_difference("0x01", halted) is not None
