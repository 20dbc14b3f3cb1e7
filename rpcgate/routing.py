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


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    domain: str
    available: bool  # not in cooldown


def attempt_order(
    candidates: Sequence[Candidate], rotation: int, sticky: bool = False
) -> list[Candidate]:
    """Available upstreams first (rotated to spread load), then those in cooldown.

    `sticky` keeps the configured order, for calls whose state lives on one node
    (filters): the same healthy node keeps getting them.
    """
    available = [c for c in candidates if c.available]
    cooling = [c for c in candidates if not c.available]
    if available and not sticky:
        start = rotation % len(available)
        available = available[start:] + available[:start]
    return available + cooling


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
