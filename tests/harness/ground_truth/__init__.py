"""Ground truth for the gateway: a seeded schedule of trouble over five anvil nodes
(`schedule`), the nodes and proxies it drives (`world`), and a check of the gateway's
answers against the node that never deviates (`check`)."""

from tests.harness.ground_truth.check import Checker, WrongAnswer
from tests.harness.ground_truth.schedule import (
    DEVIATES,
    FAULTS,
    HEALS,
    MAX_DEVIANT,
    MAX_DEVIANT_STEPS,
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
