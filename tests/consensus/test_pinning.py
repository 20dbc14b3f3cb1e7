"""Tags pinned to consensus numbers, and the block each call is about: a table."""

from __future__ import annotations

from typing import Any

import pytest

from rpcgate.consensus.pinning import PinnedCall, Tags, pin_call

pytestmark = pytest.mark.unit

TAGS = Tags(latest=100, safe=68, finalized=36)
ADDR = "0x00000000000000000000000000000000000000aa"

CASES = [
    ("eth_getBalance", [ADDR, "latest"], [ADDR, "0x64"], 100),
    ("eth_getBalance", [ADDR, "safe"], [ADDR, "0x44"], 68),
    ("eth_getBalance", [ADDR, "finalized"], [ADDR, "0x24"], 36),
    ("eth_getBalance", [ADDR, "pending"], [ADDR, "pending"], None),
    ("eth_getBalance", [ADDR, "earliest"], [ADDR, "earliest"], 0),
    ("eth_getBalance", [ADDR, "0x10"], [ADDR, "0x10"], 16),
    ("eth_getBalance", [ADDR], [ADDR], None),  # omitted: the node's latest
    ("eth_getBalance", [ADDR, "0xzz"], [ADDR, "0xzz"], None),  # the node will object
    ("eth_call", [{"to": ADDR}, "latest"], [{"to": ADDR}, "0x64"], 100),
    (
        "eth_call",
        [{"to": ADDR}, {"blockNumber": "safe"}],
        [{"to": ADDR}, {"blockNumber": "0x44"}],
        68,
    ),  # EIP-1898
    (
        "eth_call",
        [{"to": ADDR}, {"blockHash": "0xab"}],
        [{"to": ADDR}, {"blockHash": "0xab"}],
        None,
    ),
    ("eth_getStorageAt", [ADDR, "0x0", "latest"], [ADDR, "0x0", "0x64"], 100),
    ("eth_getProof", [ADDR, [], "0x5"], [ADDR, [], "0x5"], 5),
    ("eth_getBlockByNumber", ["latest", False], ["0x64", False], 100),
    ("eth_getBlockByNumber", ["0x63", True], ["0x63", True], 99),
    ("eth_feeHistory", ["0x4", "latest", []], ["0x4", "0x64", []], 100),
    (
        "eth_getLogs",
        [{"fromBlock": "0x1", "toBlock": "latest"}],
        [{"fromBlock": "0x1", "toBlock": "0x64"}],
        100,
    ),
    (
        "eth_getLogs",
        [{"address": ADDR}],
        [{"address": ADDR, "fromBlock": "0x64", "toBlock": "0x64"}],
        100,
    ),
    (
        "eth_getLogs",
        [{"fromBlock": "0x1", "toBlock": "0x5"}],
        [{"fromBlock": "0x1", "toBlock": "0x5"}],
        5,
    ),
    ("eth_getLogs", [{"blockHash": "0xab"}], [{"blockHash": "0xab"}], None),
    (
        "eth_getLogs",
        [{"toBlock": "0x5"}, "extra"],
        [{"fromBlock": "0x64", "toBlock": "0x5"}, "extra"],
        5,
    ),
    ("eth_getBalance", [ADDR, "0X10"], [ADDR, "0X10"], 16),  # the prefix in capitals
    ("eth_newFilter", [{"fromBlock": "latest"}], [{"fromBlock": "latest"}], None),
    ("eth_getTransactionReceipt", ["0xab"], ["0xab"], None),
    ("eth_sendRawTransaction", ["0x02"], ["0x02"], None),
    # A bare block hash where a number may stand (geth takes one): no height, not a number.
    ("eth_getBalance", [ADDR, "0x" + "ab" * 32], [ADDR, "0x" + "ab" * 32], None),
]


@pytest.mark.parametrize(
    ("method", "params", "pinned", "block"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_pin_call(method: str, params: Any, pinned: Any, block: int | None) -> None:
    result = pin_call(method, params, TAGS)
    assert (result.params, result.block) == (pinned, block)


TAG_CASES = [
    ("eth_getBalance", [ADDR, "latest"], "latest"),
    ("eth_getBalance", [ADDR, "safe"], "safe"),
    ("eth_getBalance", [ADDR, "pending"], "pending"),
    ("eth_getBalance", [ADDR], "latest"),  # left out: the node's latest
    ("eth_getBalance", [ADDR, "0x10"], None),
    ("eth_getBalance", [ADDR, "earliest"], None),
    ("eth_getBalance", [ADDR, "0x" + "ab" * 32], None),
    ("eth_call", [{"to": ADDR}, {"blockNumber": "finalized"}], "finalized"),
    ("eth_call", [{"to": ADDR}, {"blockHash": "0xab"}], None),
    ("eth_getLogs", [{"address": ADDR}], "latest"),
    ("eth_getLogs", [{"fromBlock": "0x1", "toBlock": "0x5"}], None),
    ("eth_getTransactionReceipt", ["0xab"], None),
    ("eth_chainId", [], None),
]


@pytest.mark.parametrize(("method", "params", "tag"), TAG_CASES)
def test_the_tag_a_call_named_says_whether_its_answer_follows_the_head(
    method: str, params: Any, tag: str | None
) -> None:
    assert pin_call(method, params, TAGS).tag == tag


def test_without_a_consensus_tags_pass_through() -> None:
    assert pin_call("eth_getBalance", [ADDR, "latest"], Tags()) == PinnedCall(
        [ADDR, "latest"], None, "latest"
    )


def test_the_callers_params_are_not_modified() -> None:
    params = [{"fromBlock": "latest"}]
    pin_call("eth_getLogs", params, TAGS)
    assert params == [{"fromBlock": "latest"}]


def test_a_filter_is_passed_on_as_given_while_there_is_no_head_to_pin_it_to() -> None:
    nothing = Tags(latest=None, safe=None, finalized=None)
    for criteria in ({"address": ADDR}, {"fromBlock": "latest", "toBlock": "latest"}):
        pinned = pin_call("eth_getLogs", [criteria], nothing)
        assert (pinned.params, pinned.block) == ([criteria], None)
