"""EIP-2935's history contract as the verifier reads it: which slot holds a block's hash,
which state holds it, and the hops that reach a block older than one window."""

from __future__ import annotations

import itertools

import pytest

from rpcgate.verify.history import (
    HISTORY_SERVE_WINDOW,
    hash_from_word,
    history_slot,
    holds,
    hops,
)

pytestmark = pytest.mark.unit
W = HISTORY_SERVE_WINDOW


def test_a_blocks_hash_lives_in_the_slot_of_its_number_mod_the_window() -> None:
    assert history_slot(2) == "0x" + "0" * 63 + "2"
    assert history_slot(W) == "0x" + "0" * 64
    assert history_slot(W + 5) == history_slot(5)
    assert len(history_slot(123_456_789)) == 66


def test_the_state_after_a_block_holds_the_window_before_it() -> None:
    assert holds(100, 99) and holds(100, 0)
    assert not holds(100, 100)  # a block's own hash is written by the next one
    assert holds(W + 10, 10) and not holds(W + 10, 9)


def test_hops_reach_older_blocks_one_window_at_a_time() -> None:
    assert hops(99, 100) == [99]
    assert hops(100, W + 100) == [100]  # the oldest hash a state holds
    assert hops(99, W + 100) == [100, 99]  # one further: one hop
    assert hops(5, 3 * W + 20) == [2 * W + 20, W + 20, 20, 5]
    for number, anchor in ((5, 3 * W + 20), (0, W * 2), (1234, 50_000)):
        path = [anchor, *hops(number, anchor)]
        assert all(holds(a, b) for a, b in itertools.pairwise(path)), path
        assert path[-1] == number


def test_nothing_to_hop_to_at_or_above_the_anchor() -> None:
    assert hops(100, 100) == [] and hops(101, 100) == [] and hops(-1, 100) == []


def test_an_empty_slot_is_no_hash() -> None:
    assert hash_from_word(0) is None
    assert hash_from_word(0xAB) == "0x" + "0" * 62 + "ab"
