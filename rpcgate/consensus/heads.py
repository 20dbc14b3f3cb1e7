"""Block-height agreement: the consensus head and each upstream's state. Pure functions.

The agreement rule
------------------
An upstream *votes* when its chain id is verified, it is not syncing and its last poll
succeeded. Each voter has a weight (`upstreams[].weight`, default 1). A block (number,
hash) is agreed when voters holding more than half of the voters' total weight have that
hash at that height. The consensus head is the highest agreed block, found by walking
down from the voters' heads; an upstream above it votes for it when its own hash at that
height matches (fetched on demand). So:

- one upstream far ahead, or on a fork, holds less than half the weight: it cannot move
  the head, and since the head is what the others have, they are not lagging;
- with one voter, its head is the consensus;
- with two, both must agree: the head is the highest block the two share;
- with none (every upstream down), the last consensus is kept.

The head never goes backwards between two decisions, except across a real reorg: when a
lower block wins while a voter still holds the previous head block, the previous head is
kept; when a majority now has another hash at that height, or no voter holds that block
any more, the lower head is accepted.

What an upstream holds
----------------------
One URL is often a load balancer over replicas a block or two apart, and a node can step
back (a rewind, `evm_revert`, a restart from an older snapshot). An upstream votes with its
*consistent height*: the height it has shown, or, once it has shown heights that went back
while the higher block was still there (replicas behind one URL: `uneven`), the lowest
height it showed over its last HEIGHT_WINDOW polls, never closer to the highest height it
showed than the widest gap seen between its replicas (`spread`: a run of polls that all
reach the replica ahead does not make the one behind catch up), and below any block it was
seen to lack when asked for it. So the consensus head is one every replica behind a URL
can answer at; the highest block it showed stays routable as a last resort. A height that
went back with the higher block gone is a rewind: the hashes above it are forgotten at once
(they are no longer known to be held, let alone canonical).

`safe` and `finalized` are the highest numbers that a weighted majority of voters has
reached (capped at the head), with the hash the majority reports there; they never go
backwards.

The serving rule
----------------
The canonical chain below the head is what the holders of the head block have there (each
block commits to its parent, so two nodes with the same head hash share every block below
it), or what a weighted majority has at that height. An upstream may serve a block only at
or below its *agreed height*: the highest height where its hash is known to equal the
canonical one. Agreement is never assumed from a height nobody fetched: a fork that began
below the height where it was noticed is treated as starting just above the last known
agreement, until the common ancestor is found by a bounded search (`agreement_lookups`).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# How far below the lowest voter head the walk looks for agreement.
MAX_WALK_BACK = 64
# Hashes remembered per upstream (by height), enough for the walk and fork checks.
HASH_HISTORY = 256
# How far below the consensus head the common ancestor of a fork is searched for; an
# upstream forked deeper than this serves no block by number at all.
MAX_FORK_SEARCH_DEPTH = 128
# Consecutive failed polls after which an upstream is `down`.
DOWN_AFTER_POLL_FAILURES = 2
# Polls whose heights an uneven upstream (replicas at different heights) votes the lowest of.
HEIGHT_WINDOW = 8
# Polls for which an upstream that showed replicas at different heights is held to be uneven.
UNEVEN_MEMORY_POLLS = 200
# How far apart replicas behind one URL may be: a block this close below the head that one
# lacks is a replica behind (not pruned history, not a node that went back).
REPLICA_SPREAD_BLOCKS = 8


class State(enum.StrEnum):
    STARTING = "starting"  # not polled yet: serves nothing until its chain id is verified
    OK = "ok"
    LAGGING = "lagging"
    FORKED = "forked"
    WRONG_CHAIN = "wrong-chain"
    SYNCING = "syncing"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Block:
    number: int
    hash: str
    parent_hash: str

    @staticmethod
    def from_json(value: Any) -> Block | None:
        """A block (or header) object as a node sends it, or None when it is not one."""
        if not isinstance(value, dict):
            return None
        number, block_hash, parent = value.get("number"), value.get("hash"), value.get("parentHash")
        if not isinstance(number, str) or not number.startswith("0x"):
            return None
        try:
            height = int(number, 16)
        except ValueError:
            return None
        if not isinstance(block_hash, str) or not isinstance(parent, str):
            return None
        return Block(height, block_hash, parent)


@dataclass(frozen=True, slots=True)
class Tagged:
    """A safe or finalized block as an upstream reported it."""

    number: int
    hash: str


@dataclass
class UpstreamView:
    """What the head tracker knows of one upstream; plain data, updated by the tracker."""

    name: str
    weight: float = 1.0
    chain_id: int | None = None  # as the upstream reported it
    chain_id_ok: bool | None = None  # None: not verified yet
    syncing: bool = False
    poll_failures: int = 0  # consecutive
    last_poll_error: str = ""
    head: Block | None = None
    safe: Tagged | None = None
    finalized: Tagged | None = None
    hashes: dict[int, str] = field(default_factory=dict)
    state: State = State.STARTING
    reason: str = "not polled yet"
    since: float = 0.0  # wall-clock seconds of the last state change
    fork_height: int | None = None  # forked: the lowest height it may differ from the consensus
    # The highest height where its hash is known to equal the canonical one: it may serve
    # blocks at or below it (by hash chaining, its whole chain below agrees too).
    agreed_height: int | None = None
    last_poll_at: float | None = None
    genesis: str | None = None  # the hash of its block 0, as it reported it
    # The heights its polls (and answers that lacked a block) showed, oldest first.
    seen: list[int] = field(default_factory=list)
    uneven: int = 0  # polls left during which it counts as replicas at different heights
    # How far below the highest height it showed a replica behind it was seen (while uneven).
    spread: int = 0

    def hash_at(self, number: int) -> str | None:
        return self.hashes.get(number)

    @property
    def consistent_height(self) -> int | None:
        """The height it can answer at whichever replica a call reaches (module docstring)."""
        if self.head is None:
            return None
        if not self.uneven or not self.seen:
            return self.head.number
        return min(self.head.number - self.spread, *self.seen)

    @property
    def votes(self) -> bool:
        return (
            self.chain_id_ok is True
            and not self.syncing
            and self.head is not None
            and self.poll_failures == 0
        )


def record_head(view: UpstreamView, block: Block) -> bool:
    """Remembers a new head. A parent that contradicts what we knew means the upstream
    reorganised, from a height we do not know: its whole history is forgotten (heights
    are learnt again as needed), so no abandoned hash can pass for canonical. Whether it
    was forgotten (a chain that restarted looks exactly like that)."""
    known_parent = view.hashes.get(block.number - 1)
    reorganised = (known_parent is not None and known_parent != block.parent_hash) or (
        view.head is not None
        and block.number <= view.head.number
        and view.hashes.get(block.number) != block.hash
    )
    if reorganised:
        forget_history(view)
    view.head = block
    record_hash(view, block.number, block.hash)
    record_hash(view, block.number - 1, block.parent_hash)
    return reorganised


def forget_history(view: UpstreamView) -> None:
    view.hashes = {}


def observe_height(view: UpstreamView, number: int) -> None:
    """A poll showed this head height (one poll, one observation)."""
    view.seen.append(number)
    del view.seen[:-HEIGHT_WINDOW]
    if view.uneven:
        view.uneven -= 1
        if not view.uneven:
            view.spread = 0


def record_uneven(view: UpstreamView, lower: int) -> None:
    """It showed `lower` while a higher block it showed is still there: replicas at
    different heights behind one URL."""
    view.seen.append(lower)
    del view.seen[:-HEIGHT_WINDOW]
    view.uneven = UNEVEN_MEMORY_POLLS
    if view.head is not None:
        view.spread = max(view.spread, view.head.number - lower)


def record_missing(view: UpstreamView, number: int) -> bool:
    """It was asked for block `number` at or below the head it showed and had none: some
    replica behind it is lower. Whether that changed what it is held to (the tracker
    learns from answers this way between polls)."""
    if view.head is None or number > view.head.number:
        return False
    height = view.consistent_height
    if height is not None and number > height:
        return False  # already held below it
    record_uneven(view, number - 1)
    return True


def rewind(view: UpstreamView, block: Block) -> None:
    """It went back to `block`, and the head it showed before is gone: nothing above
    `block` is known to be held any more (nor, where `block` is not the one we knew there,
    anything at all)."""
    if view.hashes.get(block.number) != block.hash:
        forget_history(view)
    else:
        view.hashes = {n: h for n, h in view.hashes.items() if n <= block.number}
    view.head = block
    view.seen = [block.number]
    view.spread = 0
    record_hash(view, block.number, block.hash)
    record_hash(view, block.number - 1, block.parent_hash)


def record_hash(view: UpstreamView, number: int, block_hash: str) -> None:
    if number < 0:
        return
    view.hashes[number] = block_hash
    if len(view.hashes) > HASH_HISTORY:
        for old in sorted(view.hashes)[: len(view.hashes) - HASH_HISTORY]:
            del view.hashes[old]


@dataclass(frozen=True, slots=True)
class Consensus:
    head: Block | None = None
    safe: Tagged | None = None
    finalized: Tagged | None = None
    voters: tuple[str, ...] = ()  # upstreams holding the head block
    # Hashes the decision needs and no one has fetched: (upstream, height).
    needs: tuple[tuple[str, int], ...] = ()
    # The genesis hash of the chain the head holders are on (None: not known yet): which
    # life of the chain id this is, for what outlives a head (the cache, the shared head).
    genesis: str | None = None


def _majority_hash(voters: Sequence[UpstreamView], number: int) -> tuple[str | None, float, float]:
    """The hash with the most weight at a height, its weight, and the weight not known."""
    weights: dict[str, float] = {}
    unknown = 0.0
    for view in voters:
        height = view.consistent_height
        assert height is not None
        if height < number:
            continue
        block_hash = view.hash_at(number)
        if block_hash is None:
            unknown += view.weight
        else:
            weights[block_hash] = weights.get(block_hash, 0.0) + view.weight
    if not weights:
        return None, 0.0, unknown
    best = max(weights, key=lambda h: weights[h])
    return best, weights[best], unknown


def canonical_hash(views: Iterable[UpstreamView], number: int) -> str | None:
    """The hash a weighted majority of voters has at a height, if there is one."""
    voters = [v for v in views if v.votes]
    total = sum(v.weight for v in voters)
    block_hash, weight, _ = _majority_hash(voters, number)
    return block_hash if weight > total / 2 else None


def _tag_consensus(
    voters: Sequence[UpstreamView], total: float, head: Block, pick: str, previous: Tagged | None
) -> Tagged | None:
    reported = [(getattr(v, pick), v.weight) for v in voters if getattr(v, pick) is not None]
    reached = 0.0
    chosen: int | None = None
    for number in sorted({t.number for t, _ in reported}, reverse=True):
        reached = sum(w for t, w in reported if t.number >= number)
        if reached > total / 2:
            chosen = min(number, head.number)
            break
    if chosen is None:
        return previous
    at_chosen: dict[str, float] = {}
    for tagged, weight in reported:
        if tagged.number == chosen:
            at_chosen[tagged.hash] = at_chosen.get(tagged.hash, 0.0) + weight
    block_hash = max(at_chosen, key=lambda h: at_chosen[h]) if at_chosen else ""
    result = Tagged(chosen, block_hash)
    if previous is not None and head.number >= previous.number > result.number:
        return previous  # never backwards, unless the head itself went below it
    return result


def compute_consensus(views: Sequence[UpstreamView], previous: Consensus) -> Consensus:
    voters = [v for v in views if v.votes]
    if not voters:
        return Consensus(
            previous.head, previous.safe, previous.finalized, (), genesis=previous.genesis
        )
    total = sum(v.weight for v in voters)
    heads = sorted({h for v in voters if (h := v.consistent_height) is not None}, reverse=True)
    heights = heads + list(range(heads[-1] - 1, max(heads[-1] - MAX_WALK_BACK, 0) - 1, -1))
    needs: list[tuple[str, int]] = []
    winner: Block | None = None
    for number in heights:
        block_hash, weight, unknown = _majority_hash(voters, number)
        if block_hash is not None and weight > total / 2:
            winner = _block_at(voters, number, block_hash)
            break
        if weight + unknown > total / 2:
            # Undecided: the upstreams that could tip it have not told us their hash here.
            needs.extend(
                (v.name, number)
                for v in voters
                if (v.consistent_height or 0) >= number and v.hash_at(number) is None
            )
    if winner is None:
        return Consensus(
            previous.head,
            previous.safe,
            previous.finalized,
            (),
            tuple(needs),
            genesis=previous.genesis,
        )
    winner = _never_backwards(voters, total, winner, previous.head)
    holding = [v for v in voters if v.hash_at(winner.number) == winner.hash]
    holders = tuple(v.name for v in holding)
    geneses = {v.genesis for v in holding if v.genesis is not None}
    # Upstreams above the head whose hash at the head is unknown: needed to tell whether
    # they are ahead on the same chain or on a fork.
    needs.extend(
        (v.name, winner.number)
        for v in voters
        if v.head is not None and v.head.number > winner.number and v.hash_at(winner.number) is None
    )
    return Consensus(
        winner,
        _tag_consensus(voters, total, winner, "safe", previous.safe),
        _tag_consensus(voters, total, winner, "finalized", previous.finalized),
        holders,
        tuple(dict.fromkeys(needs)),
        geneses.pop() if len(geneses) == 1 else previous.genesis,
    )


def raised_to_shared(
    consensus: Consensus, views: Sequence[UpstreamView], shared: Block | None
) -> Consensus:
    """The consensus, raised to a head another replica served when a voter of ours holds
    that very block (so `eth_blockNumber` does not go back between replicas); as it is
    otherwise: a shared head none of our upstreams holds is never served here."""
    if shared is None or (consensus.head is not None and shared.number <= consensus.head.number):
        return consensus
    holders = tuple(
        v.name
        for v in views
        if v.votes
        and v.hash_at(shared.number) == shared.hash
        and (v.consistent_height or 0) >= shared.number
    )
    if not holders:
        return consensus
    return dataclasses.replace(consensus, head=shared, voters=holders)


def _block_at(voters: Sequence[UpstreamView], number: int, block_hash: str) -> Block:
    for view in voters:
        if view.head is not None and view.head.number == number and view.head.hash == block_hash:
            return view.head
    parent = next(
        (
            v.hash_at(number - 1)
            for v in voters
            if v.hash_at(number) == block_hash and v.hash_at(number - 1)
        ),
        "",
    )
    return Block(number, block_hash, parent or "")


def _never_backwards(
    voters: Sequence[UpstreamView], total: float, winner: Block, previous: Block | None
) -> Block:
    if previous is None or winner.number >= previous.number:
        return winner
    majority_hash, weight, _ = _majority_hash(voters, previous.number)
    if majority_hash is not None and majority_hash != previous.hash and weight > total / 2:
        return winner  # a real reorg: the majority has replaced the previous head block
    if any(v.hash_at(previous.number) == previous.hash for v in voters):
        return previous  # someone still serves it: a voter dropped out, nothing reorganised
    return winner


def agreed_height(view: UpstreamView, canonical: Mapping[int, str]) -> int | None:
    """The highest height where the upstream's hash is known to equal the canonical one,
    below any height where it is known to differ (a contradiction means stale history:
    the lower, proven agreement is the one to trust)."""
    differs = lowest_difference(view, canonical)
    agreeing = [
        number
        for number, block_hash in view.hashes.items()
        if (differs is None or number < differs) and canonical.get(number) == block_hash
    ]
    return max(agreeing, default=None)


def lowest_difference(view: UpstreamView, canonical: Mapping[int, str]) -> int | None:
    lowest = None
    for number, block_hash in view.hashes.items():
        theirs = canonical.get(number)
        if theirs is not None and theirs != block_hash and (lowest is None or number < lowest):
            lowest = number
    return lowest


def upstream_state(
    view: UpstreamView,
    consensus: Consensus,
    canonical: Mapping[int, str],
    expected_chain_id: int,
    max_lag_blocks: int,
) -> tuple[State, str, int | None]:
    """An upstream's state, the reason for it, and the height its fork starts at (just
    above its last known agreement with the consensus: nothing above that is trusted)."""
    if view.chain_id_ok is False:
        return State.WRONG_CHAIN, (f"chain id {view.chain_id}, expected {expected_chain_id}"), None
    if view.chain_id_ok is None and view.poll_failures == 0:
        return State.STARTING, "chain id not verified yet", None
    if view.poll_failures >= DOWN_AFTER_POLL_FAILURES or view.head is None:
        return State.DOWN, view.last_poll_error or "no head yet", None
    if view.syncing:
        return State.SYNCING, "eth_syncing reports it is syncing", None
    if view.genesis is not None and consensus.genesis not in (None, view.genesis):
        return (
            State.WRONG_CHAIN,
            f"genesis {view.genesis[:10]}…, the consensus chain's is {consensus.genesis[:10]}…",
            None,
        )
    head = consensus.head
    if head is None:
        return State.OK, "no consensus yet", None
    differs = lowest_difference(view, canonical)
    if differs is not None:
        agreed = agreed_height(view, canonical)
        fork_height = 0 if agreed is None else agreed + 1
        mine, theirs = view.hashes[differs], canonical[differs]
        return (
            State.FORKED,
            (f"its block {differs} is {mine[:10]}…, the consensus has {theirs[:10]}…"),
            fork_height,
        )
    height = view.consistent_height
    assert height is not None
    lag = head.number - height
    if lag > max_lag_blocks:
        return State.LAGGING, f"{lag} blocks behind the consensus head", None
    if lag < 0:
        return State.OK, f"{-lag} blocks ahead of the consensus head", None
    reason = "in sync" if lag == 0 else f"{lag} blocks behind the consensus head"
    if height < view.head.number:
        reason += f" (replicas behind it are at {height} to {view.head.number})"
    return State.OK, reason, None


def canonical_hashes(views: Sequence[UpstreamView], consensus: Consensus) -> dict[int, str]:
    """The consensus chain's hashes at the heights some upstream reported: what a weighted
    majority has there, else what the voters holding the head block have there (when they
    all say the same)."""
    if consensus.head is None:
        return {}
    head = consensus.head
    holders = [v for v in views if v.votes and v.hash_at(head.number) == head.hash]
    heights = {n for v in views for n in v.hashes if n <= head.number}
    result = {}
    for number in heights:
        block_hash = canonical_hash(views, number)
        if block_hash is None:
            known = {v.hashes[number] for v in holders if number in v.hashes}
            block_hash = known.pop() if len(known) == 1 else None
        if block_hash is not None:
            result[number] = block_hash
    result[head.number] = head.hash
    return result


def agreement_lookups(
    views: Sequence[UpstreamView], consensus: Consensus, canonical: Mapping[int, str]
) -> list[tuple[str, int]]:
    """The block look-ups (upstream, height) that would tell how far each upstream agrees
    with the consensus chain: its hash at the height it would serve from, or, for a fork,
    the next probe of a binary search for the common ancestor. Each look-up also gives the
    parent's hash, so a search step settles two heights."""
    head = consensus.head
    if head is None:
        return []
    holder = next((v for v in views if v.votes and v.hash_at(head.number) == head.hash), None)
    floor = max(0, head.number - MAX_FORK_SEARCH_DEPTH)
    needs: list[tuple[str, int]] = []
    for view in views:
        if view.head is None or view.chain_id_ok is not True or view.poll_failures:
            continue
        top = min(view.head.number, head.number)
        agreed = agreed_height(view, canonical)
        if agreed == top:
            continue
        differs = lowest_difference(view, canonical)
        if differs is None:
            probe = top  # nothing known to differ: is its top block the canonical one?
        else:
            low = floor - 1 if agreed is None else agreed
            if differs - low <= 1 or differs <= floor:
                continue  # the common ancestor is known, or deeper than worth searching
            probe = (low + differs + 1) // 2
        if view.hash_at(probe) is None:
            needs.append((view.name, probe))
        if probe not in canonical and holder is not None and holder is not view:
            needs.append((holder.name, probe))
    return list(dict.fromkeys(needs))
