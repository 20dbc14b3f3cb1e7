"""Which upstream gets the next attempt of a call: pure functions over plain data.

Load is spread by rotating the start of the order from call to call. Upstreams in cooldown
go last: they are tried only when every other one has failed, so a gateway whose every
upstream is cooling down still tries rather than refusing. After a failure, the next
attempt prefers an upstream in another failure domain: when AWS is down, the second try
should not go to another AWS-hosted provider.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rpcgate.heads import State


@dataclass(slots=True)
class Candidate:
    name: str
    domain: str
    available: bool  # not in cooldown
    last_resort: bool = False  # polls say it is down: tried only when all else failed


def block_fit(
    state: State,
    chain_verified: bool,
    head: int | None,
    agreed_height: int | None,
    block: int | None,
) -> bool | None:
    """May this upstream answer a call about `block`? True, False, or None (last resort).

    A wrong-chain, syncing or unverified upstream never answers. Any other answers about
    blocks it has and is known to share with the consensus chain: at or below its agreed
    height (so a lagging one serves what it has, a forked one what lies below its fork).
    """
    if not chain_verified or state in (State.WRONG_CHAIN, State.SYNCING, State.STARTING):
        return False
    if block is not None and (
        head is None or head < block or agreed_height is None or agreed_height < block
    ):
        return False
    return None if state is State.DOWN else True


def attempt_order(
    candidates: Sequence[Candidate], rotation: int, sticky: bool = False
) -> list[Candidate]:
    """Available upstreams first (rotated to spread load), then those in cooldown, then the
    last resorts.

    `sticky` keeps the configured order, for calls whose state lives on one node
    (filters): the same healthy node keeps getting them.
    """
    available = [c for c in candidates if c.available and not c.last_resort]
    cooling = [c for c in candidates if not c.available and not c.last_resort]
    last = [c for c in candidates if c.last_resort]
    if available and not sticky:
        start = rotation % len(available)
        available = available[start:] + available[:start]
    return available + cooling + last


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
