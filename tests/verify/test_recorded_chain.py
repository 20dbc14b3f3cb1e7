"""The answers recorded in tests/fixtures/verify/, which the unit tests of
tests/verify/test_verify.py check rpcgate/verify/ against, are still what anvil answers:
each chain is built again on a fresh node and asked every recorded question."""

from __future__ import annotations

import json

import pytest

from tests.verify.recorded_chain import CHAIN_FILE, FIXTURES, Recording, recorders

RECORD_AGAIN = "record them again: ANVIL_BIN=... .venv/bin/python -m tests.verify.recorded_chain"


@pytest.mark.parametrize("file_name", list(recorders()))
def test_the_recorded_answers_are_what_anvil_answers(file_name: str) -> None:
    recorded = Recording.load(FIXTURES / file_name)
    make_node, record = recorders()[file_name]
    with make_node() as node:
        answered = record(node)
    assert answered.chain == recorded.chain, f"{file_name}: the chain is another; {RECORD_AGAIN}"
    asked = [(a["method"], a["params"]) for a in answered.answers]
    assert asked == [(a["method"], a["params"]) for a in recorded.answers], (
        f"{file_name}: the questions changed; {RECORD_AGAIN}"
    )
    for now, then in zip(answered.answers, recorded.answers, strict=True):
        question = json.dumps([now["method"], now["params"]])[:200]
        assert now["result"] == then["result"], f"{file_name}: {question} differs; {RECORD_AGAIN}"


@pytest.mark.unit
def test_every_block_of_the_verify_chain_is_recorded() -> None:
    # Guards the test above against a recording that lost its questions.
    recording = Recording.load(FIXTURES / CHAIN_FILE)
    blocks = [a for a in recording.answers if a["method"] == "eth_getBlockByNumber"]
    assert len(blocks) == 2 * len(recording.chain.blocks)
    assert all(block["result"] is not None for block in blocks)
