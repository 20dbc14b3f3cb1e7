"""Ground truth for the gateway: a seeded schedule of trouble over five anvil nodes
(`schedule`), the nodes, their load balancers and proxies and a spare replica it drives
(`world`), and a check of the gateway's answers against the node that never deviates
(`check`)."""

from tests.harness.ground_truth.check import Checker, WrongAnswer
from tests.harness.ground_truth.schedule import (
    DEVIATES,
    FAULTS,
    HEALS,
    MAX_DEVIANT,
    MAX_DEVIANT_STEPS,
    MAX_REWIND_BRANCH,
    MAX_REWIND_DEPTH,
    NODES,
    TRUTH,
    Settle,
    Step,
    StepKind,
    describe,
    schedule,
)
from tests.harness.ground_truth.world import ANVIL_ARGS, HarnessError, World

__all__ = [
    "ANVIL_ARGS",
    "DEVIATES",
    "FAULTS",
    "HEALS",
    "MAX_DEVIANT",
    "MAX_DEVIANT_STEPS",
    "MAX_REWIND_BRANCH",
    "MAX_REWIND_DEPTH",
    "NODES",
    "TRUTH",
    "Checker",
    "HarnessError",
    "Settle",
    "Step",
    "StepKind",
    "World",
    "WrongAnswer",
    "describe",
    "schedule",
]
