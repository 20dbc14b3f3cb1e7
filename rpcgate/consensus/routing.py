"""Which upstream gets the next attempt of a call: pure functions over plain data.

Upstreams are ordered by a score (lower is better): their latency estimate, inflated by
their recent error rate and by the calls they already carry, divided by their `weight`.
Load is spread among the near-equal ones (within NEAR_EQUAL_RATIO of the best, plus
NEAR_EQUAL_SLACK_S) by rotating their order from call to call. Upstreams in cooldown
go last: they are tried only when every other one has failed, so a gateway whose every
upstream is cooling down still tries rather than refusing. After a failure, the next
attempt prefers an upstream in another failure domain: when AWS is down, the second try
should not go to another AWS-hosted provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rpcgate.consensus.heads import State

# An upstream without a latency estimate yet counts as this fast: as fast as can be, so new
# ones get tried (and measured) rather than starved by the first one that answered.
UNKNOWN_LATENCY_S = 0.0
ERROR_RATE_PENALTY = 4.0  # an upstream failing half its calls scores 3x worse
IN_FLIGHT_PER_DOUBLING = 8  # 8 calls under way double an upstream's score
NEAR_EQUAL_RATIO = 1.5
NEAR_EQUAL_SLACK_S = 0.025  # jitter below this is noise, not a reason to prefer one
# One call in this many is spread over every available upstream regardless of score, so a
# slow estimate (one bad sample) is measured again rather than kept forever.
EXPLORE_EVERY = 16


@dataclass(frozen=True, slots=True)
class Score:
    """An upstream's score (seconds-like, lower is better) and what it is made of."""

    latency_s: float
    error_rate: float
    in_flight: int
    weight: float

    @property
    def value(self) -> float:
        return (
            self.latency_s
            * (1 + ERROR_RATE_PENALTY * self.error_rate)
            * (1 + self.in_flight / IN_FLIGHT_PER_DOUBLING)
            / self.weight
        )


def score(latency_s: float | None, error_rate: float, in_flight: int, weight: float) -> Score:
    return Score(
        UNKNOWN_LATENCY_S if latency_s is None else latency_s, error_rate, in_flight, weight
    )


@dataclass(slots=True)
class Candidate:
    name: str
    domain: str
    available: bool  # not in cooldown
    last_resort: bool = False  # polls say it is down: tried only when all else failed
    score: float = 0.0  # lower is better (see `Score`)


def block_fit(
    state: State,
    chain_verified: bool,
    head: int | None,
    agreed_height: int | None,
    block: int | None,
    consistent_height: int | None = None,
) -> bool | None:
    """May this upstream answer a call about `block`? True, False, or None (last resort).

    A wrong-chain, syncing or unverified upstream never answers. Any other answers about
    blocks it has and is known to share with the consensus chain: at or below its agreed
    height (so a lagging one serves what it has, a forked one what lies below its fork).
    A block above its consistent height (replicas behind it are lower) only a replica
    behind it has: it is asked last.
    """
    if not chain_verified or state in (State.WRONG_CHAIN, State.SYNCING, State.STARTING):
        return False
    if block is not None and (
        head is None or head < block or agreed_height is None or agreed_height < block
    ):
        return False
    if state is State.DOWN:
        return None
    if block is not None and consistent_height is not None and consistent_height < block:
        return None
    return True


def why_unfit(
    state: State,
    chain_verified: bool,
    head: int | None,
    agreed_height: int | None,
    block: int | None,
) -> str:
    """The reason `block_fit` says no, in words (for a trace)."""
    if not chain_verified or state is State.STARTING:
        return "chain id not verified yet"
    if state in (State.WRONG_CHAIN, State.SYNCING):
        return f"state {state}"
    if head is None or (block is not None and head < block):
        return f"block {block} not available (its head is {head})"
    return f"not known to share the canonical chain at block {block} (agreed up to {agreed_height})"


def attempt_order(
    candidates: Sequence[Candidate], rotation: int, sticky: bool = False
) -> list[Candidate]:
    """Available upstreams first, best score first (the near-equal best rotated to spread
    load), then those in cooldown, then the last resorts.

    `sticky` keeps the configured order, for calls whose state lives on one node
    (filters): the same healthy node keeps getting them.
    """
    available: list[Candidate] = []
    cooling: list[Candidate] = []
    last: list[Candidate] = []
    for c in candidates:
        (last if c.last_resort else available if c.available else cooling).append(c)
    if available and not sticky:
        if rotation % EXPLORE_EVERY == EXPLORE_EVERY - 1:  # now and then, all take turns
            near, rest = available, []
        else:
            limit = min(c.score for c in available) * NEAR_EQUAL_RATIO + NEAR_EQUAL_SLACK_S
            near = [c for c in available if c.score <= limit]  # in config order
            rest = sorted((c for c in available if c.score > limit), key=_by_score)
        start = rotation % len(near)
        available = near[start:] + near[:start] + rest
    return available + cooling + last


def first_choices(candidates: Sequence[Candidate], rotations: Sequence[int]) -> list[str | None]:
    """The upstream each of several calls tries first, one call per turn of the rotation:
    for each, the first of `attempt_order(candidates, rotation)` if it is available (not
    cooling down, not a last resort), else None. The order is worked out once for them
    all: the calls of one client batch."""
    available = [c for c in candidates if c.available and not c.last_resort]
    if not available:
        return [None] * len(rotations)
    limit = min(c.score for c in available) * NEAR_EQUAL_RATIO + NEAR_EQUAL_SLACK_S
    near = [c.name for c in available if c.score <= limit]  # in config order
    every = [c.name for c in available]
    return [
        every[r % len(every)] if r % EXPLORE_EVERY == EXPLORE_EVERY - 1 else near[r % len(near)]
        for r in rotations
    ]


def _by_score(candidate: Candidate) -> float:
    return candidate.score


def next_candidate(
    order: Sequence[Candidate], tried: Sequence[str], failed_domains: set[str]
) -> Candidate | None:
    """The first untried upstream outside the failed domains, else the first untried one.

    When every upstream has been tried once, a second round starts over the same order:
    a transient failure (a timeout, a reset) may well not repeat.
    """
    untried = [c for c in order if c.name not in tried]
    if not untried:
        rounds = len(tried) // max(len(order), 1)
        already_this_round = tried[rounds * len(order) :]
        untried = [c for c in order if c.name not in already_this_round]
        if not untried:
            return None
    for candidate in untried:
        if candidate.domain not in failed_domains:
            return candidate
    return untried[0]
