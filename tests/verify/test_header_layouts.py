"""Header layouts other than Ethereum's: Avalanche's C-Chain (coreth) hashes `extDataHash`
after the nonce and its own optional fields among the forks' (HeaderSerializable in coreth's
plugin/evm/customtypes/header_ext.go). Checked on a real C-Chain block
(tests/fixtures/chains/avalanche/) and on coreth's own golden header, which sets every field
up to Granite's.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from rpcgate.verify import header_hash, header_mismatch
from rpcgate.verify.headers import AVALANCHE_HEADER, ETHEREUM_HEADER, HEADER_LAYOUTS

pytestmark = pytest.mark.unit

CHAINS = Path(__file__).resolve().parents[1] / "fixtures" / "chains"
AVALANCHE_BLOCK: dict[str, Any] = json.loads(
    (CHAINS / "avalanche" / "block_30806757.json").read_text()
)
ETHEREUM_BLOCK: dict[str, Any] = json.loads(
    (CHAINS / "ethereum" / "block_24630100.json").read_text()
)


def _word(byte: int) -> str:
    """common.Hash{byte}: the byte, then 31 zero bytes."""
    return "0x" + f"{byte:02x}" + "00" * 31


# coreth's headerWithNonZeroFields (plugin/evm/customtypes/header_ext_test.go, avalanchego's
# graft/coreth, 2026) as a node would answer it, and the hash of its golden RLP ("Golden data
# from original coreth implementation"): every optional field set, Granite's included. The
# withdrawals root is set too, and coreth leaves it out of the hash.
CORETH_GOLDEN_HEADER: dict[str, Any] = {
    "parentHash": _word(1),
    "sha3Uncles": _word(2),
    "miner": "0x03" + "00" * 19,
    "stateRoot": _word(4),
    "transactionsRoot": _word(5),
    "receiptsRoot": _word(6),
    "logsBloom": "0x07" + "00" * 255,
    "difficulty": "0x8",
    "number": "0x9",
    "gasLimit": "0xa",
    "gasUsed": "0xb",
    "timestamp": "0xc",
    "extraData": "0x0d",
    "mixHash": _word(14),
    "nonce": "0x0f" + "00" * 7,
    "baseFeePerGas": "0x10",
    "withdrawalsRoot": _word(17),
    "blobGasUsed": "0x12",
    "excessBlobGas": "0x13",
    "parentBeaconBlockRoot": _word(20),
    "extDataHash": _word(21),
    "extDataGasUsed": "0x16",
    "blockGasCost": "0x17",
    "timestampMilliseconds": "0x18",
    "minDelayExcess": "0x19",
    "hash": "0xbe13d7b6f1242dd87477eee76a46f9fa58311bf459e0d49cac6862b187b3fe9c",
}


def _changed_hex(value: str) -> str:
    if value == "0x":
        return "0x01"
    return f"{value[:-1]}{int(value[-1], 16) ^ 1:x}"


def test_the_avalanche_block_recomputes_under_avalanches_layout_only() -> None:
    assert header_mismatch(AVALANCHE_BLOCK, "avalanche") is None
    assert "0x" + header_hash(AVALANCHE_BLOCK, "avalanche").hex() == AVALANCHE_BLOCK["hash"]
    problem = header_mismatch(AVALANCHE_BLOCK)
    assert problem is not None and "header hash" in problem
    assert header_mismatch(AVALANCHE_BLOCK, "ethereum") == problem


def test_an_ethereum_block_does_not_recompute_as_avalanches() -> None:
    assert header_mismatch(ETHEREUM_BLOCK) is None
    assert header_mismatch(ETHEREUM_BLOCK, "avalanche") == (
        "block header: field extDataHash missing or not hex"
    )


AVALANCHE_FIELDS_OF_THE_BLOCK = [
    name
    for name, _ in (*AVALANCHE_HEADER.fields, *AVALANCHE_HEADER.fork_fields)
    if name in AVALANCHE_BLOCK
]


@pytest.mark.parametrize("field_name", AVALANCHE_FIELDS_OF_THE_BLOCK)
def test_a_changed_avalanche_header_field_fails(field_name: str) -> None:
    block = copy.deepcopy(AVALANCHE_BLOCK)
    block[field_name] = _changed_hex(block[field_name])
    problem = header_mismatch(block, "avalanche")
    assert problem is not None
    assert problem.startswith("header hash") and "(avalanche layout)" in problem


def test_the_avalanche_block_carries_coreths_own_fields() -> None:
    # Guards the parametrisation above: the fields Ethereum's header lacks are changed too.
    assert {"extDataHash", "extDataGasUsed", "blockGasCost"} <= set(AVALANCHE_FIELDS_OF_THE_BLOCK)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda b: b.pop("blockGasCost"), id="last-fork-field-dropped"),
        pytest.param(lambda b: b.pop("extDataGasUsed"), id="earlier-fork-field-dropped"),
        pytest.param(lambda b: b.update(blobGasUsed="0x0"), id="a-later-fork-field-added"),
    ],
)
def test_avalanches_optional_fields_count_only_in_order(change: Any) -> None:
    block = copy.deepcopy(AVALANCHE_BLOCK)
    change(block)
    problem = header_mismatch(block, "avalanche")
    assert problem is not None and "header hash" in problem


def test_the_blocks_extra_data_is_outside_its_header() -> None:
    # blockExtraData (the atomic transactions) is the body's: extDataHash commits to it.
    block = {**AVALANCHE_BLOCK, "blockExtraData": "0x01"}
    assert header_mismatch(block, "avalanche") is None


def test_coreths_golden_header_hashes_with_every_granite_field() -> None:
    assert header_mismatch(CORETH_GOLDEN_HEADER, "avalanche") is None


@pytest.mark.parametrize("field_name", ["timestampMilliseconds", "minDelayExcess"])
def test_a_granite_field_changed_or_dropped_fails(field_name: str) -> None:
    changed = {**CORETH_GOLDEN_HEADER, field_name: "0x99"}
    assert header_mismatch(changed, "avalanche") is not None
    dropped = {k: v for k, v in CORETH_GOLDEN_HEADER.items() if k != field_name}
    assert header_mismatch(dropped, "avalanche") is not None


def test_the_withdrawals_root_is_not_in_an_avalanche_header() -> None:
    without = {k: v for k, v in CORETH_GOLDEN_HEADER.items() if k != "withdrawalsRoot"}
    assert header_mismatch(without, "avalanche") is None


def test_the_default_layout_is_ethereums_as_before() -> None:
    assert HEADER_LAYOUTS["ethereum"] is ETHEREUM_HEADER
    assert header_hash(ETHEREUM_BLOCK) == header_hash(ETHEREUM_BLOCK, "ethereum")
    assert ETHEREUM_HEADER.fork_fields[-1] == ("requestsHash", False)


def test_an_unknown_layout_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="header layout 'polygon' is not one of avalanche"):
        header_mismatch(ETHEREUM_BLOCK, "polygon")
    with pytest.raises(ValueError, match="not one of"):
        header_mismatch({}, "polygon")  # whatever the answer
