"""The agreement rule and upstream states, as tables over plain data (no nodes)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rpcgate.consensus.heads import (
    HASH_HISTORY,
    HEIGHT_WINDOW,
    UNEVEN_MEMORY_POLLS,
    Block,
    Consensus,
    State,
    Tagged,
    UpstreamView,
    agreed_height,
    agreement_lookups,
    canonical_hash,
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
    record_uneven(lb, 17)  # replicas 3 apart, once
    record_uneven(lb, 19)
    for number in range(20, 20 + HEIGHT_WINDOW):
        observe_height(lb, number)
    # 17 and 19 were shown more than HEIGHT_WINDOW polls ago: the lowest since is 20, but
    # never closer to the highest than the widest gap seen (3).
    assert lb.consistent_height == 17
    observe_height(lb, 16)
    assert lb.consistent_height == 16


def test_polls_that_all_reach_the_replica_ahead_do_not_lift_the_one_behind() -> None:
    """A load balancer over two replicas a block apart: a new head, then a run of polls
    that all land on the replica ahead. The replica behind is still a block lower, and a
    receipt from the head block would be null there."""
    lb = view("lb", 20)
    record_uneven(lb, 19)  # the replica behind, a block lower
    for number in range(21, 30):
        record_head(lb, Block(number, h("a", number), h("a", number - 1)))
        for _ in range(HEIGHT_WINDOW):
            observe_height(lb, number)  # every poll reached the replica ahead
        assert lb.consistent_height == number - 1
        consensus = compute_consensus([lb], Consensus())
        assert consensus.head is not None and consensus.head.number == number - 1


def test_an_upstream_forgets_it_was_uneven_after_enough_polls() -> None:
    lb = view("lb", 20)
    record_uneven(lb, 19)
    for _ in range(UNEVEN_MEMORY_POLLS - 1):
        observe_height(lb, 20)
    assert lb.uneven  # not one poll early
    assert lb.consistent_height == 19  # the gap between its replicas, still
    observe_height(lb, 20)
    assert not lb.uneven and lb.consistent_height == 20
    record_uneven(lb, 19)
    assert lb.spread == 1  # the gap is learnt again from the next one seen


def test_the_gap_between_replicas_is_forgotten_with_the_unevenness() -> None:
    lb = view("lb", 20)
    record_uneven(lb, 17)  # replicas 3 apart, once
    for _ in range(UNEVEN_MEMORY_POLLS):
        observe_height(lb, 20)
    record_uneven(lb, 19)  # uneven again, a block apart
    assert lb.consistent_height == 19  # not 17: the old gap went with the old unevenness


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
    assert v.hash_at(15) == h("a", 15)
    assert v.consistent_height == 20 and v.seen == [20]


def test_a_node_that_went_back_forgets_the_gap_its_replicas_showed() -> None:
    v = view("a", 22, history=10)
    record_uneven(v, 19)  # replicas 3 apart
    rewind(v, Block(20, h("a", 20), h("a", 19)))
    record_uneven(v, 19)  # now one a block behind
    assert v.consistent_height == 19  # held 1 below 20, not 3


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


# --- each rule's edge, as found by mutation testing (scripts/mutation, docs/mutation.md) --


def test_safe_and_finalized_need_more_than_half_of_the_weight() -> None:
    views = [view("a", 100, safe=90), view("b", 100, safe=80)]
    assert compute_consensus(views, Consensus()).safe == Tagged(80, h("a", 80))


def test_the_safe_hash_is_the_one_most_of_the_weight_reports_there() -> None:
    views = [view("odd", 100), view("b", 100, safe=80), view("c", 100, safe=80)]
    views[0].safe = Tagged(80, h("z", 80))  # listed first, and the larger string
    assert compute_consensus(views, Consensus()).safe == Tagged(80, h("a", 80))


def test_a_tag_above_a_head_that_went_back_is_capped_at_the_head() -> None:
    v = view("a", 22, history=10, safe=21)
    first = compute_consensus([v], Consensus())
    rewind(v, Block(20, h("a", 20), h("a", 19)))  # its safe block is not polled again yet
    second = compute_consensus([v], first)
    assert second.safe == Tagged(20, "")  # nobody reported a safe block at 20: hash unknown


def test_safe_and_finalized_do_not_go_back_while_the_head_is_at_or_above_them() -> None:
    views = [view("a", 100, safe=100), view("b", 100, safe=100)]
    for v in views:
        v.finalized = Tagged(100, h("a", 100))
    first = compute_consensus(views, Consensus())
    for v in views:
        v.safe = v.finalized = Tagged(90, h("a", 90))
    again = compute_consensus(views, first)
    assert (again.safe, again.finalized) == (first.safe, first.finalized)


def test_a_safe_block_replaced_at_its_height_is_followed() -> None:
    views = [view("a", 100, safe=90), view("b", 100, safe=90)]
    first = compute_consensus(views, Consensus())
    for v in views:
        v.safe = Tagged(90, h("r", 90))
    assert compute_consensus(views, first).safe == Tagged(90, h("r", 90))


def test_a_majority_that_replaced_the_head_block_moves_the_head_back_past_a_minority() -> None:
    """Three of five replaced block 100 (from 99) and then split above it; one still holds
    the old 100 and one lags at 90. The walk down from the heads finds agreement only at
    90. A majority has another block at 100: a real reorg, so the head goes back, though
    one voter still holds the old block."""
    split = []
    for name in ("x", "y", "z"):
        v = view(name, 100, "r", history=20, fork_from=99)
        record_head(v, Block(101, h(name, 101), h("r", 100)))
        split.append(v)
    views = [*split, view("d", 101, history=20), view("c", 90, history=20)]
    previous = Consensus(Block(100, h("a", 100), h("a", 99)))
    head = compute_consensus(views, previous).head
    assert head is not None and head.number == 90


def test_a_head_below_every_voter_names_its_parent() -> None:
    a, b = view("a", 100), view("b", 100)
    record_head(a, Block(100, h("f", 100), h("a", 99)))
    record_head(a, Block(101, h("f", 101), h("f", 100)))
    record_hash(a, 97, h("a", 97))  # a look-up of a's: it knows 97, not 98
    # The walk goes below the heads (100 and 101 are disputed) to the highest shared block,
    # whose parent is taken from a voter that knows it.
    assert compute_consensus([a, b], Consensus()).head == Block(99, h("a", 99), h("a", 98))


def test_the_walk_below_the_heads_goes_block_by_block() -> None:
    views = [view("a", 101, "f", fork_from=99), view("b", 100)]
    head = compute_consensus(views, Consensus()).head
    assert head is not None and head.number == 98  # 99 and up are disputed


def test_a_head_whose_parent_nobody_fetched_has_an_empty_parent() -> None:
    a, b = view("a", 100), view("b", 100, history=0)
    record_head(a, Block(100, h("f", 100), h("a", 99)))
    assert compute_consensus([a, b], Consensus()).head == Block(99, h("a", 99), "")


def test_two_upstreams_that_share_only_the_genesis_block_agree_on_it() -> None:
    views = [view("a", 5, "x", history=5, fork_from=1), view("b", 5, history=5)]
    assert compute_consensus(views, Consensus()).head == Block(0, h("a", 0), "")


def _decided_once() -> tuple[UpstreamView, Consensus]:
    v = view("a", 10, safe=8)
    v.finalized = Tagged(6, h("a", 6))
    v.genesis = "0xgenesis"
    first = compute_consensus([v], Consensus())
    assert first.safe and first.finalized and first.genesis
    return v, first


def test_with_nobody_voting_the_last_decision_stands_whole() -> None:
    v, first = _decided_once()
    v.poll_failures = 3
    kept = compute_consensus([v], first)
    assert kept == Consensus(first.head, first.safe, first.finalized, (), (), first.genesis)


def test_with_no_block_agreed_the_last_decision_stands_and_the_hashes_it_needs_are_asked() -> None:
    _, first = _decided_once()
    # Different chains wherever both are known (heights 98 to 100), unknown below.
    views = [view("a", 100, "x", history=1, fork_from=0), view("b", 100, history=1)]
    kept = compute_consensus(views, first)
    assert (kept.head, kept.safe, kept.finalized, kept.voters, kept.genesis) == (
        first.head,
        first.safe,
        first.finalized,
        (),
        first.genesis,
    )
    assert kept.needs[:2] == (("a", 97), ("b", 97))


def test_an_undecided_height_asks_the_voters_whose_hash_there_is_unknown() -> None:
    a, c = view("a", 100), view("c", 100, "f", fork_from=100)
    b = view("b", 105, history=1)
    record_uneven(b, 100)  # it votes 100, where its hash is unknown: it could tip 100
    consensus = compute_consensus([a, b, c], Consensus())
    assert consensus.head == Block(99, h("a", 99), h("a", 98))
    assert consensus.needs == (("b", 100), ("b", 99))


def test_a_height_where_the_unknown_could_make_only_half_is_not_undecided() -> None:
    a, c, d = view("a", 110, history=12), view("c", 100), view("d", 100)
    b = view("b", 112, history=0)
    record_uneven(b, 110)
    consensus = compute_consensus([a, b, c, d], Consensus())
    assert consensus.head == c.head
    assert consensus.needs == (("b", 100),)  # only whether b is ahead on the same chain


def test_a_height_only_half_could_tip_where_no_hash_is_known_is_not_undecided() -> None:
    a, b = view("a", 112, history=0), view("b", 112, history=0)
    record_uneven(a, 110)
    record_uneven(b, 110)  # both vote 110, where neither hash is known
    c, d, e = view("c", 100), view("d", 100), view("e", 100)
    consensus = compute_consensus([a, b, c, d, e], Consensus())
    assert consensus.head == c.head
    assert consensus.needs == (("a", 100), ("b", 100))


def test_the_canonical_hash_needs_more_than_half_of_the_voters() -> None:
    lagging_first = [view("low", 90), view("a", 100), view("b", 100)]
    assert canonical_hash(lagging_first, 100) == h("a", 100)
    tied = [view("a", 100), view("x", 100, "x", fork_from=100)]
    assert canonical_hash(tied, 100) is None


def test_below_a_kept_head_the_canonical_chain_is_what_the_majority_has() -> None:
    a, b = view("a", 100, history=10, weight=3), view("b", 100, history=1)
    c, d = view("c", 98, history=10), view("d", 98, history=10)
    first = compute_consensus([a, b, c, d], Consensus())
    assert first.head is not None and first.head.number == 100
    a.poll_failures = 1  # b alone holds 100 now, and never fetched block 95
    kept = compute_consensus([a, b, c, d], first)
    assert kept.head == first.head
    assert canonical_hashes([a, b, c, d], kept)[95] == h("a", 95)


def test_agreement_stops_below_a_known_difference_even_where_a_stale_hash_agrees() -> None:
    v = view("c", 100)
    v.hashes[99] = h("x", 99)
    canonical = {n: h("a", n) for n in (98, 99, 100)}
    assert agreed_height(v, canonical) == 98


def test_an_upstream_keeps_the_hashes_of_its_last_blocks_only() -> None:
    v = view("a", 300, history=300)
    assert sorted(v.hashes) == list(range(300 - HASH_HISTORY + 1, 301))


def test_a_new_block_at_the_same_height_is_a_reorganisation_and_the_same_one_is_not() -> None:
    v = view("a", 10)
    assert record_head(v, Block(10, h("a", 10), h("a", 9))) is False  # polled again
    assert v.hash_at(8) == h("a", 8)
    assert record_head(v, Block(10, h("b", 10), h("a", 9))) is True
    assert v.hash_at(8) is None


def test_a_shared_head_at_or_below_ours_changes_nothing() -> None:
    views = [view("a", 12, history=10), view("b", 12, history=10)]
    consensus = compute_consensus(views, Consensus())
    assert raised_to_shared(consensus, views, None) is consensus
    assert raised_to_shared(consensus, views, consensus.head) is consensus
    lower = Block(11, h("a", 11), h("a", 10))
    assert raised_to_shared(consensus, views, lower) is consensus


def test_a_shared_head_is_voted_by_those_that_hold_it() -> None:
    views = [view("a", 12, history=10), view("b", 11, history=10)]
    consensus = compute_consensus(views, Consensus())
    assert consensus.voters == ("a", "b")
    theirs = views[0].head
    assert raised_to_shared(consensus, views, theirs).voters == ("a",)


def test_an_upstream_whose_genesis_is_not_known_yet_is_not_on_another_chain() -> None:
    views = [view("a", 10), view("b", 10)]
    views[0].genesis = "0xgenesis-a"
    consensus = compute_consensus(views, Consensus())
    assert consensus.genesis == "0xgenesis-a"
    canonical = canonical_hashes(views, consensus)
    assert upstream_state(views[1], consensus, canonical, 1, 3)[0] is State.OK


LONG = "canonical-chain-"  # labels long enough for the 10-character hash prefixes


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda v: setattr(v, "chain_id_ok", None), "chain id not verified yet"),
        (lambda v: setattr(v, "head", None), "no head yet"),
        (lambda v: setattr(v, "syncing", True), "eth_syncing reports it is syncing"),
        (
            lambda v: record_head(v, Block(12, h(LONG, 12), h(LONG, 11))),
            "2 blocks ahead of the consensus head",
        ),
        (
            lambda v: record_uneven(v, 8),
            "2 blocks behind the consensus head (replicas behind it are at 8 to 10)",
        ),
        (
            lambda v: setattr(v, "genesis", "0x" + "b" * 64),
            "genesis 0xbbbbbbbb…, the consensus chain's is 0xaaaaaaaa…",
        ),
        (
            lambda v: v.hashes.update({10: h("forked-chain-", 10)}),
            "its block 10 is 0xforked-c…, the consensus has 0xcanonica…",
        ),
    ],
)
def test_each_state_says_why_in_words(setup: Callable[[UpstreamView], object], reason: str) -> None:
    views = [view("a", 10, LONG), view("b", 10, LONG), view("c", 10, LONG)]
    for v in views:
        v.genesis = "0x" + "a" * 64
    consensus = compute_consensus(views, Consensus())
    setup(views[2])
    assert upstream_state(views[2], consensus, canonical_hashes(views, consensus), 1, 3)[1] == (
        reason
    )


def test_no_consensus_yet_is_said_so() -> None:
    assert upstream_state(view("a", 10), Consensus(), {}, 1, 3)[:2] == (
        State.OK,
        "no consensus yet",
    )


@pytest.mark.parametrize(
    "shown",
    [
        {"number": 5, "hash": "0x01", "parentHash": "0x00"},
        {"number": "0x5", "hash": None, "parentHash": "0x00"},
        {"number": "0x5", "hash": "0x01", "parentHash": None},
    ],
)
def test_a_block_with_a_field_of_the_wrong_type_is_no_block(shown: dict[str, object]) -> None:
    assert Block.from_json(shown) is None


@pytest.mark.parametrize(("head", "probe"), [(20, 9), (21, 10)])
def test_the_search_for_a_fork_s_ancestor_starts_halfway_down_to_genesis(
    head: int, probe: int
) -> None:
    """Below a head of 20 (or 21), the fork of c is known to start at or below 19 (20), and
    nothing below is known to agree: the first probe halves the way down to block 0."""
    chains = {"a": chain_hash("a", None), "b": chain_hash("a", None), "c": chain_hash("f", 5)}
    views = [polled(name, [head], chains[name]) for name in chains]
    consensus = compute_consensus(views, Consensus())
    canonical = canonical_hashes(views, consensus)
    assert agreement_lookups(views, consensus, canonical) == [("c", probe), ("a", probe)]


def test_a_fork_probe_the_canonical_chain_already_knows_asks_only_the_fork() -> None:
    chains = {"a": chain_hash("a", None), "b": chain_hash("a", None), "c": chain_hash("f", 295)}
    views = [
        polled("a", list(range(45, 301)), chains["a"]),
        polled("b", list(range(45, 301)), chains["b"]),
        polled("c", [300], chains["c"]),
    ]
    consensus = compute_consensus(views, Consensus())
    canonical = canonical_hashes(views, consensus)
    assert agreement_lookups(views, consensus, canonical) == [("c", 235)]


def test_a_lagging_upstream_is_compared_where_it_is_by_a_holder_of_the_head() -> None:
    """c stopped at 40 on a fork; which block 40 is canonical is asked of a holder of the
    head (not of a voter listed first, nor of those that do not vote), and c itself is not
    asked for a block it told us. k's fork, whose ancestor is known, needs nothing."""
    chains = {"a": chain_hash("a", None), "b": chain_hash("a", None), "c": chain_hash("f", 38)}
    c, k = polled("c", [40], chains["c"]), polled("k", [49, 50], chain_hash("k", 50))
    down, new = polled("down", [44], chains["c"]), polled("new", [45], chains["c"])
    down.poll_failures, new.chain_id_ok = 1, None
    a, b = polled("a", [50], chains["a"]), polled("b", [50], chains["b"])
    a.weight = b.weight = 2  # k's block 50 does not move the head
    views = [down, k, c, a, b, new]
    consensus = compute_consensus(views, Consensus())
    canonical = canonical_hashes(views, consensus)
    assert agreement_lookups(views, consensus, canonical) == [("a", 40)]
    again = [a, b, c, k]  # those that agree listed first: c is still looked at
    assert agreement_lookups(again, consensus, canonical) == [("a", 40)]


def test_with_nobody_voting_no_agreement_is_looked_up() -> None:
    v, first = _decided_once()
    v.poll_failures = 3
    kept = compute_consensus([v], first)
    assert agreement_lookups([v], kept, canonical_hashes([v], kept)) == []


@pytest.mark.parametrize("differs", [300, 372])
def test_a_fork_found_deeper_than_the_search_is_not_searched_even_with_an_old_agreement(
    differs: int,
) -> None:
    """500 is the head, so the search goes down to 372. c agreed at 100 long ago and is
    known to differ at `differs`, at or below 372: its ancestor is not looked for."""
    chains = {"a": chain_hash("a", None), "b": chain_hash("a", None), "c": chain_hash("f", 101)}
    views = [polled(name, [500], chains[name]) for name in chains]
    record_hash(views[2], 100, h("a", 100))
    record_hash(views[2], differs, chains["c"](differs))
    consensus = compute_consensus(views, Consensus())
    canonical = {**canonical_hashes(views, consensus), 100: h("a", 100), differs: h("a", differs)}
    assert agreement_lookups(views, consensus, canonical) == []
