"""The schedule: a pure function of seed and length, so a failing run replays from its seed.

It keeps the invariants the comparison relies on: node 4 (the truth, listed last in the
gateway's config, so that a gateway trusting its first upstream fails) never deviates; at
most two nodes deviate at once (three honest voters stay a majority); every deviance heals
with its own step, soon, and at the latest by the end.

A node deviates by lagging, forking, rewinding (going back to a block the gateway may have
seen as its head, then on a branch of its own), failing at its proxy, or being load
balanced with a replica one block behind it.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace

from tests.harness.faultproxy import Fault

NODES = 5
TRUTH = NODES - 1
MAX_DEVIANT = 2
# A deviance is healed at most this many steps after it began.
MAX_DEVIANT_STEPS = 6
MAX_REWIND_DEPTH = 3  # a rewind goes back 1 to this many blocks below the node's head
MAX_REWIND_BRANCH = 3  # then mines 0 to this many blocks of its own
FAULTS = (Fault.HANG, Fault.HTTP_5XX, Fault.RPC_ERROR, Fault.GARBAGE, Fault.REFUSE, Fault.LATENCY)


class StepKind(enum.StrEnum):
    MINE = "mine"  # `count` canonical blocks on every node neither lagging nor branched off
    LAG = "lag"  # the node stops mining
    CATCH_UP = "catch_up"  # it mines the blocks it missed: the same blocks, late
    FORK = "fork"  # it mines `count` blocks of its own at once (skewed timestamps)
    REWIND = "rewind"  # back to its head of `depth` blocks ago, it mines `count` of its own
    REJOIN = "rejoin"  # reverted to before its fork or rewind, it mines the canonical blocks
    FAULT = "fault"  # its proxy fails in mode `fault`
    HEAL = "heal"  # its proxy forwards again
    LOAD_BALANCE = "load_balance"  # its URL: a load balancer over it and a replica 1 behind
    UNBALANCE = "unbalance"  # its URL: the node alone again
    RESTART = "restart"  # a new gateway on the same Redis: a warm cache


class Settle(enum.StrEnum):
    """What the gateway gets between a step and its check."""

    SYNC = "sync"  # a head poll now: it has seen the step
    POLL = "poll"  # one poll interval of time: maybe
    NONE = "none"  # nothing: checked mid-poll, its view possibly stale


HEALS = {
    StepKind.LAG: StepKind.CATCH_UP,
    StepKind.FORK: StepKind.REJOIN,
    StepKind.REWIND: StepKind.REJOIN,
    StepKind.FAULT: StepKind.HEAL,
    StepKind.LOAD_BALANCE: StepKind.UNBALANCE,
}
DEVIATES = tuple(HEALS)


@dataclass(frozen=True)
class Step:
    kind: StepKind
    node: int | None = None
    count: int = 0
    depth: int = 0
    fault: Fault | None = None
    settle: Settle = Settle.SYNC

    def __str__(self) -> str:
        words = [str(self.kind)]
        if self.node is not None:
            words.append(f"node{self.node}")
        blocks = f"{self.count} block{'' if self.count == 1 else 's'}"
        if self.depth:
            words.append(f"back {self.depth}, then {blocks}")
        elif self.count:
            words.append(blocks)
        if self.fault is not None:
            words.append(self.fault.value)
        return " ".join(words) + f" (then {self.settle})"


def schedule(seed: int, steps: int) -> list[Step]:
    """`steps` steps from `seed`, keeping the invariants in the module docstring."""
    rng = random.Random(seed)
    deviant: dict[int, tuple[StepKind, int]] = {}  # node -> (its deviance, step it began)
    result = []
    for index in range(steps):
        step = _next_step(rng, index, steps - index, deviant)
        settle = rng.choices(list(Settle), weights=(2, 1, 1))[0]
        if step.kind is StepKind.REWIND and step.count:
            # A node that replaced blocks the gateway saw as canonical answers about its
            # branch at those heights until the gateway looks again: no gateway can know
            # sooner. What must hold is every answer after its next look at the node.
            settle = Settle.SYNC
        step = replace(step, settle=settle)
        if step.kind in DEVIATES:
            assert step.node is not None
            deviant[step.node] = (step.kind, index)
        elif step.node is not None:
            del deviant[step.node]
        result.append(step)
    return result


def _next_step(
    rng: random.Random, index: int, remaining: int, deviant: dict[int, tuple[StepKind, int]]
) -> Step:
    overdue = [n for n, (_, began) in deviant.items() if index - began >= MAX_DEVIANT_STEPS]
    if deviant and (remaining <= len(deviant) or overdue):
        node = overdue[0] if overdue else min(deviant, key=lambda n: deviant[n][1])
        return Step(HEALS[deviant[node][0]], node)
    free = [n for n in range(TRUTH) if n not in deviant]
    # A new deviance needs a step to heal it, and each deviance already running one too.
    may_deviate = len(deviant) < MAX_DEVIANT and remaining >= len(deviant) + 2
    options: list[tuple[float, StepKind]] = [(4.0, StepKind.MINE), (0.6, StepKind.RESTART)]
    if may_deviate:
        options += [(1.0, StepKind.LAG), (1.0, StepKind.FORK), (1.0, StepKind.REWIND)]
        options += [(1.2, StepKind.FAULT), (1.0, StepKind.LOAD_BALANCE)]
    if deviant:
        options.append((1.5, StepKind.HEAL))  # the matching heal of one deviant node
    kind = rng.choices([k for _, k in options], weights=[w for w, _ in options])[0]
    if kind is StepKind.MINE:
        return Step(kind, count=rng.randint(1, 3))
    if kind is StepKind.RESTART:
        return Step(kind)
    if kind is StepKind.HEAL:
        node = rng.choice(sorted(deviant))
        return Step(HEALS[deviant[node][0]], node)
    # node0 is listed first in the gateway's config: the one a naive gateway trusts.
    node = rng.choices(free, weights=[2 if n == 0 else 1 for n in free])[0]
    if kind is StepKind.FORK:
        return Step(kind, node, count=rng.randint(2, 4))
    if kind is StepKind.REWIND:
        depth = rng.randint(1, MAX_REWIND_DEPTH)
        return Step(kind, node, count=rng.randint(0, MAX_REWIND_BRANCH), depth=depth)
    if kind is StepKind.FAULT:
        return Step(kind, node, fault=rng.choice(FAULTS))
    return Step(kind, node)


def describe(steps: Iterable[Step]) -> str:
    return "\n".join(f"  {i:3d}. {step}" for i, step in enumerate(steps))
