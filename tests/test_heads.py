"""The agreement rule and upstream states, as tables over plain data (no nodes)."""

from __future__ import annotations

import pytest

from rpcgate.heads import (
    Block,
    Consensus,
    State,
    Tagged,
    UpstreamView,
    canonical_hashes,
    compute_consensus,
    record_head,
    upstream_state,
)


def h(label: str, number: int) -> str:
    return f"0x{label}{number:04d}"


def view(
    name: str,
    head: int,
    chain: str = "a",
    *,
    history: int = 5,
    weight: float = 1.0,
    fork_from: int | None = None,
    safe: int | None = None,
) -> UpstreamView:
    """An upstream whose blocks are labelled `chain` (from `fork_from` on, if given)."""
    v = UpstreamView(name, weight=weight, chain_id=1, chain_id_ok=True)

    def label(n: int) -> str:
        return chain if fork_from is None or n >= fork_from else "a"

    for n in range(max(0, head - history), head + 1):
        record_head(v, Block(n, h(label(n), n), h(label(n - 1), n - 1)))
    if safe is not None:
        v.safe = Tagged(safe, h("a", safe))
    return v


def test_one_rogue_far_ahead_moves_nothing() -> None:
    views = [view("a", 100), view("b", 100), view("rogue", 150, history=2)]
    consensus = compute_consensus(views, Consensus())
    assert consensus.head is not None and consensus.head.number == 100
    assert set(consensus.voters) == {"a", "b"}
    # Whether the rogue is on the same chain at 100 is not known yet: ask it.
    assert ("rogue", 100) in consensus.needs


def test_one_forked_node_ahead_cannot_win() -> None:
    views = [view("a", 100), view("b", 100), view("forked", 103, "f", fork_from=99)]
    consensus = compute_consensus(views, Consensus())
    assert consensus.head == views[0].head
    canonical = canonical_hashes(views, consensus)
    state, _reason, fork_height = upstream_state(views[2], consensus, canonical, 1, 3)
    assert state is State.FORKED and fork_height == 99
    assert upstream_state(views[0], consensus, canonical, 1, 3)[0] is State.OK


def test_majority_of_weight_decides() -> None:
    heavy = view("own-node", 50, "x", weight=3, fork_from=48)
    views = [heavy, view("b", 50), view("c", 50)]
    consensus = compute_consensus(views, Consensus())
    assert consensus.head is not None and consensus.head.hash == h("x", 50)


@pytest.mark.parametrize(
    ("heads", "expected"),
    [
        ([100], 100),  # one upstream: its head
        ([100, 98], 98),  # two: the highest block both have
        ([100, 100, 98], 100),  # three: the majority
        ([100, 99, 98], 99),  # the middle one is held by two of three
    ],
)
def test_consensus_is_the_highest_block_a_majority_holds(heads: list[int], expected: int) -> None:
    views = [view(f"u{i}", n) for i, n in enumerate(heads)]
    consensus = compute_consensus(views, Consensus())
    assert consensus.head is not None and consensus.head.number == expected


def test_head_does_not_go_backwards_when_a_voter_drops_out() -> None:
    views = [view("a", 100), view("b", 100), view("c", 98)]
    first = compute_consensus(views, Consensus())
    assert first.head is not None and first.head.number == 100
    views[0].poll_failures = 1  # a stops voting; b and c agree only up to 98
    second = compute_consensus(views, first)
    assert second.head == first.head


def test_head_goes_back_across_a_real_reorg() -> None:
    views = [view("a", 100), view("b", 100), view("c", 100)]
    first = compute_consensus(views, Consensus())
    # Every node replaced blocks 99 and 100 and, for now, reports the new 99 as its head.
    reorged = [view(name, 99, "r", fork_from=99) for name in ("a", "b", "c")]
    second = compute_consensus(reorged, first)
    assert second.head is not None and second.head.number == 99


def test_nothing_votes_keeps_the_last_consensus() -> None:
    views = [view("a", 10)]
    first = compute_consensus(views, Consensus())
    views[0].poll_failures = 3
    assert compute_consensus(views, first).head == first.head


def test_unverified_wrong_chain_and_syncing_upstreams_do_not_vote() -> None:
    unverified = view("unverified", 500)
    unverified.chain_id_ok = None
    wrong = view("wrong", 500)
    wrong.chain_id_ok = False
    syncing = view("syncing", 500)
    syncing.syncing = True
    consensus = compute_consensus([unverified, wrong, syncing, view("ok", 10)], Consensus())
    assert consensus.head is not None and consensus.head.number == 10
    assert consensus.voters == ("ok",)


def test_safe_and_finalized_follow_the_weighted_majority_and_never_go_back() -> None:
    views = [view("a", 100, safe=68), view("b", 100, safe=60), view("c", 100, safe=90)]
    consensus = compute_consensus(views, Consensus())
    assert consensus.safe == Tagged(68, h("a", 68))  # two of three have reached 68
    views[2].safe = Tagged(50, h("a", 50))
    views[0].safe = Tagged(50, h("a", 50))
    again = compute_consensus(views, consensus)
    assert again.safe == consensus.safe


@pytest.mark.parametrize(
    ("setup", "state"),
    [
        (lambda v: setattr(v, "chain_id_ok", False), State.WRONG_CHAIN),
        (lambda v: setattr(v, "syncing", True), State.SYNCING),
        (lambda v: setattr(v, "poll_failures", 2), State.DOWN),
        (
            lambda v: setattr(v, "chain_id_ok", None) or setattr(v, "poll_failures", 0),
            State.STARTING,
        ),
    ],
)
def test_states_with_reasons(setup, state: State) -> None:  # type: ignore[no-untyped-def]
    views = [view("a", 10), view("b", 10)]
    consensus = compute_consensus(views, Consensus())
    setup(views[1])
    got, reason, _ = upstream_state(views[1], consensus, canonical_hashes(views, consensus), 1, 3)
    assert got is state
    assert reason


@pytest.mark.parametrize(
    ("head", "state", "reason"),
    [
        (10, State.OK, "in sync"),
        (8, State.OK, "2 blocks behind the consensus head"),
        (7, State.OK, "3 blocks behind the consensus head"),
        (6, State.LAGGING, "4 blocks behind the consensus head"),
    ],
)
def test_lagging_is_more_than_max_lag_blocks_behind(head: int, state: State, reason: str) -> None:
    views = [view("a", 10), view("b", 10), view("c", head)]
    consensus = compute_consensus(views, Consensus())
    assert upstream_state(views[2], consensus, canonical_hashes(views, consensus), 1, 3)[:2] == (
        state,
        reason,
    )


def test_a_reorganised_upstream_forgets_the_blocks_it_abandoned() -> None:
    v = view("a", 10)
    record_head(v, Block(11, h("b", 11), h("b", 10)))  # its parent is not the 10 we knew
    assert v.hash_at(10) == h("b", 10)
    # Where the fork began is unknown: no older hash may pass for canonical any more.
    assert v.hash_at(9) is None and v.hash_at(8) is None
