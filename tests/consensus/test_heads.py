"""The agreement rule and upstream states, as tables over plain data (no nodes)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rpcgate.consensus.heads import (
    HEIGHT_WINDOW,
    UNEVEN_MEMORY_POLLS,
    Block,
    Consensus,
    State,
    Tagged,
    UpstreamView,
    agreed_height,
    agreement_lookups,
    canonical_hashes,
    compute_consensus,
    observe_height,
    raised_to_shared,
    record_hash,
    record_head,
    record_missing,
    record_uneven,
    rewind,
    upstream_state,
)

pytestmark = pytest.mark.unit


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


# --- where a fork starts: agreement is never assumed from a height nobody fetched -------


def chain_hash(label: str, fork_from: int | None) -> Callable[[int], str]:
    return lambda n: h(label if fork_from is not None and n >= fork_from else "a", n)


def polled(name: str, heads: list[int], blocks: Callable[[int], str]) -> UpstreamView:
    """An upstream as the tracker knows it after polling it at these heads only."""
    v = UpstreamView(name, chain_id=1, chain_id_ok=True)
    for n in heads:
        record_head(v, Block(n, blocks(n), blocks(n - 1)))
    return v


def decide(views: list[UpstreamView], chains: dict[str, Callable[[int], str]]) -> int:
    """The tracker's decision loop without I/O: look-ups answered from each upstream's
    chain (a block look-up gives the block's and its parent's hash); returns how many."""
    lookups = 0
    for _ in range(20):
        consensus = compute_consensus(views, Consensus())
        canonical = canonical_hashes(views, consensus)
        needs = list(
            dict.fromkeys([*consensus.needs, *agreement_lookups(views, consensus, canonical)])
        )
        if not needs:
            return lookups
        for name, number in needs:
            v = next(v for v in views if v.name == name)
            record_hash(v, number, chains[name](number))
            record_hash(v, number - 1, chains[name](number - 1))
            lookups += 1
    raise AssertionError("the look-ups did not converge")


def states_now(views: list[UpstreamView]) -> dict[str, tuple[State, int | None, int | None]]:
    consensus = compute_consensus(views, Consensus())
    canonical = canonical_hashes(views, consensus)
    return {
        v.name: (
            upstream_state(v, consensus, canonical, 1, 3)[0],
            upstream_state(v, consensus, canonical, 1, 3)[2],
            agreed_height(v, canonical),
        )
        for v in views
    }


def test_a_fork_longer_than_a_poll_starts_just_above_the_last_known_agreement() -> None:
    # Last poll: everyone at 10. Then node c mined 11..13 of its own, a and b the canonical
    # 11..13, all faster than the poll: the tracker sees 13 and 12 only.
    canonical, forked = chain_hash("a", None), chain_hash("f", 11)
    views = [
        polled("a", [10, 13], canonical),
        polled("b", [10, 13], canonical),
        polled("c", [10, 13], forked),
    ]
    state, fork_height, agreed = states_now(views)["c"]
    assert state is State.FORKED
    assert agreed == 10  # block 11 was never fetched: it is not assumed to agree
    assert fork_height == 11


def test_an_upstream_with_no_known_agreement_serves_no_block() -> None:
    canonical, forked = chain_hash("a", None), chain_hash("f", 5)
    views = [polled("a", [20], canonical), polled("b", [20], canonical), polled("c", [20], forked)]
    state, fork_height, agreed = states_now(views)["c"]
    assert (state, fork_height, agreed) == (State.FORKED, 0, None)


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 7, 16, 50, 127])
def test_the_common_ancestor_is_found_in_a_few_look_ups(depth: int) -> None:
    head = 300
    fork_from = head - depth + 1
    chains = {
        "a": chain_hash("a", None),
        "b": chain_hash("a", None),
        "c": chain_hash("f", fork_from),
    }
    views = [polled(name, [head], chains[name]) for name in chains]
    lookups = decide(views, chains)
    state, fork_height, agreed = states_now(views)["c"]
    assert state is State.FORKED
    assert (fork_height, agreed) == (fork_from, fork_from - 1)
    assert lookups <= 2 * 8  # a binary search: two look-ups (its hash, ours) per step
    assert decide(views, chains) == 0  # found once: nothing more to fetch


def test_a_fork_deeper_than_the_search_serves_nothing_and_costs_nothing_more() -> None:
    chains = {"a": chain_hash("a", None), "b": chain_hash("a", None), "c": chain_hash("f", 10)}
    views = [polled(name, [500], chains[name]) for name in chains]
    decide(views, chains)
    assert states_now(views)["c"] == (State.FORKED, 0, None)
    assert decide(views, chains) == 0


def test_a_lagging_upstream_is_checked_against_the_canonical_chain_where_it_is() -> None:
    # c stopped at 40 on a fork of its own, never polled before: nothing says so until its
    # block 40 is compared with the canonical one.
    chains = {"a": chain_hash("a", None), "b": chain_hash("a", None), "c": chain_hash("f", 38)}
    views = [
        polled("a", [50], chains["a"]),
        polled("b", [50], chains["b"]),
        polled("c", [40], chains["c"]),
    ]
    assert states_now(views)["c"][2] is None  # not known to agree anywhere: serves nothing
    decide(views, chains)
    assert states_now(views)["c"] == (State.FORKED, 38, 37)
    honest = {"a": chains["a"], "b": chains["a"], "c": chains["a"]}
    views = [polled(name, [50 if name != "c" else 40], honest[name]) for name in honest]
    decide(views, honest)
    assert states_now(views)["c"] == (State.LAGGING, None, 40)


# --- what an upstream holds: replicas at different heights, nodes that go back ----------


def test_an_upstream_that_showed_a_lower_head_beside_a_higher_block_votes_the_lower() -> None:
    lb = view("lb", 11)
    for number in (11, 10, 11, 11):
        observe_height(lb, number)
    assert lb.consistent_height == 11  # one node, as far as anyone can tell
    record_uneven(lb, 10)  # 10 from one replica while 11 was still there: replicas
    assert lb.consistent_height == 10
    consensus = compute_consensus([lb], Consensus())
    assert consensus.head is not None and consensus.head.number == 10
    # The highest block it showed stays routable, as a last resort.
    assert lb.head is not None and lb.head.number == 11


def test_an_uneven_upstream_votes_the_lowest_height_of_its_last_polls_only() -> None:
    lb = view("lb", 20)
    record_uneven(lb, 19)
    for number in range(20, 20 + HEIGHT_WINDOW):
        observe_height(lb, number)
    # 19 and 20 were shown more than HEIGHT_WINDOW polls ago: the lowest since is 20.
    assert lb.consistent_height == 20
    observe_height(lb, 18)
    assert lb.consistent_height == 18


def test_an_upstream_forgets_it_was_uneven_after_enough_polls() -> None:
    lb = view("lb", 20)
    record_uneven(lb, 19)
    for _ in range(UNEVEN_MEMORY_POLLS):
        observe_height(lb, 20)
    assert not lb.uneven and lb.consistent_height == 20


@pytest.mark.parametrize(
    ("asked", "changed", "height"),
    [(11, True, 10), (12, False, 11), (8, True, 7), (5, True, 4)],
)
def test_a_block_an_upstream_lacked_lowers_what_it_is_held_to(
    asked: int, changed: bool, height: int
) -> None:
    v = view("lb", 11)
    assert record_missing(v, asked) is changed  # 12: above the head it showed, nothing new
    assert v.consistent_height == height


def test_a_block_lacked_above_what_it_is_held_to_changes_nothing() -> None:
    v = view("lb", 11)
    record_uneven(v, 8)
    assert record_missing(v, 10) is False
    assert v.consistent_height == 8


def test_a_node_that_went_back_forgets_every_hash_above_where_it_is() -> None:
    v = view("a", 22, history=10)
    rewind(v, Block(20, h("a", 20), h("a", 19)))
    assert v.head is not None and v.head.number == 20
    assert v.hash_at(21) is None and v.hash_at(22) is None
    assert v.hash_at(19) == h("a", 19)  # below it, still its chain
    assert v.consistent_height == 20


def test_a_node_that_went_back_to_another_block_forgets_everything() -> None:
    v = view("a", 22, history=10)
    rewind(v, Block(20, h("b", 20), h("b", 19)))
    assert set(v.hashes) == {19, 20}


def test_the_head_goes_back_when_no_voter_holds_it_any_more() -> None:
    v = view("a", 22, history=10)
    first = compute_consensus([v], Consensus())
    assert first.head is not None and first.head.number == 22
    rewind(v, Block(20, h("a", 20), h("a", 19)))
    second = compute_consensus([v], first)
    assert second.head is not None and second.head.number == 20


def test_safe_and_finalized_follow_a_head_that_went_below_them() -> None:
    v = view("a", 22, history=10, safe=21)
    first = compute_consensus([v], Consensus())
    assert first.safe is not None and first.safe.number == 21
    rewind(v, Block(20, h("a", 20), h("a", 19)))
    v.safe = Tagged(18, h("a", 18))
    second = compute_consensus([v], first)
    assert second.safe == Tagged(18, h("a", 18))


def test_the_consensus_names_the_genesis_of_the_chain_its_head_holders_are_on() -> None:
    a, b, c = view("a", 10), view("b", 10), view("c", 10, "x", fork_from=0)
    a.genesis = b.genesis = "0xgenesis-a"
    c.genesis = "0xgenesis-x"
    consensus = compute_consensus([a, b, c], Consensus())
    assert consensus.genesis == "0xgenesis-a"
    canonical = canonical_hashes([a, b, c], consensus)
    state, reason, _ = upstream_state(c, consensus, canonical, 1, 3)
    assert state is State.WRONG_CHAIN and reason.startswith("genesis 0xgenesis")


def test_a_shared_head_is_served_only_where_a_voter_holds_that_very_block() -> None:
    mine = view("a", 10, history=10)
    consensus = compute_consensus([mine], Consensus())
    theirs = Block(12, h("a", 12), h("a", 11))
    assert raised_to_shared(consensus, [mine], theirs) is consensus  # nobody here has 12
    record_head(mine, Block(11, h("a", 11), h("a", 10)))
    record_head(mine, theirs)
    mine.poll_failures = 1  # not voting (its last poll failed): it cannot raise the head
    assert raised_to_shared(consensus, [mine], theirs) is consensus
    mine.poll_failures = 0
    raised = raised_to_shared(consensus, [mine], theirs)
    assert raised.head == theirs and raised.voters == ("a",)


def test_a_tie_at_the_head_height_is_no_reorg_the_head_stays() -> None:
    """Two equal voters hold block 100; the first moves to a fork at 100 and mines 101.
    Half the weight on another hash is no majority: block 100 is still held by a voter,
    so the head stays (not back to 99, the highest block both share)."""
    a, b = view("a", 100), view("b", 100)
    first = compute_consensus([a, b], Consensus())
    assert first.head is not None and first.head.number == 100
    record_head(a, Block(100, h("f", 100), h("a", 99)))
    record_head(a, Block(101, h("f", 101), h("f", 100)))
    second = compute_consensus([a, b], first)
    assert second.head == first.head


def test_the_head_stays_where_a_majority_holds_it_while_its_holders_split_above_it() -> None:
    """Two of three voters hold block 100, then each mines a block of its own on top (a
    split); the third lags far below. The walk down from the voters' heads passes 100 by
    (no voter is at 100 any more) and finds only the laggard's height: the majority still
    holding the previous head keeps it."""
    views = [view("a", 100, history=20), view("b", 100, history=20), view("c", 90, history=20)]
    first = compute_consensus(views, Consensus())
    assert first.head is not None and first.head.number == 100
    record_head(views[0], Block(101, h("x", 101), h("a", 100)))
    record_head(views[1], Block(101, h("y", 101), h("a", 100)))
    second = compute_consensus(views, first)
    assert second.head == first.head
