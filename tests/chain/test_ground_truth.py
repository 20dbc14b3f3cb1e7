"""Randomized ground truth: seeded schedules of lag, forks, rewinds, faults, load balancing
with a lagging replica and restarts over five anvil nodes, every answer of the gateway
compared with a node that never deviates.

CI runs a few seeds of a few steps. Longer or other runs (the schedule is a pure function
of seed and steps, so a failure replays from the seed it prints):

    RPCGATE_GROUND_TRUTH_SEEDS=7,100-119 RPCGATE_GROUND_TRUTH_STEPS=200 \\
        .venv/bin/python -m pytest tests/chain/test_ground_truth.py -k end_to_end
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.harness.faultproxy import Fault
from tests.harness.fixtures import AnvilClusterFactory, FaultProxyFactory, LoadBalancerFactory
from tests.harness.ground_truth import (
    ANVIL_ARGS,
    DEVIATES,
    FAULTS,
    HEALS,
    MAX_DEVIANT,
    MAX_DEVIANT_STEPS,
    MAX_REWIND_BRANCH,
    MAX_REWIND_DEPTH,
    NODES,
    TRUTH,
    Checker,
    Settle,
    Step,
    StepKind,
    World,
    describe,
    schedule,
)
from tests.harness.loop import BackgroundLoop
from tests.harness.redis_server import RedisServer

SEEDS_ENV = "RPCGATE_GROUND_TRUTH_SEEDS"
STEPS_ENV = "RPCGATE_GROUND_TRUTH_STEPS"
CI_SEEDS = (7, 9, 11, 12)
CI_STEPS = 25
POLL_INTERVAL_S = 0.15


def _seeds(text: str | None) -> tuple[int, ...]:
    """`7`, `7,9`, `100-119` or a mix, from the environment; the CI seeds without it."""
    if not text:
        return CI_SEEDS
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return tuple(seeds)


SEEDS = _seeds(os.environ.get(SEEDS_ENV))
STEPS = int(os.environ.get(STEPS_ENV, CI_STEPS))


# -- the schedule, pure --


def deviance_over_time(steps: list[Step]) -> list[dict[int, tuple[StepKind, int]]]:
    """After each step: which node deviates, how, and since which step. Re-derived here
    from the steps alone, failing on a heal that does not match the deviance."""
    deviant: dict[int, tuple[StepKind, int]] = {}
    states = []
    for index, step in enumerate(steps):
        if step.kind in DEVIATES:
            assert step.node not in deviant, f"step {index}: node{step.node} deviates already"
            assert step.node is not None
            deviant[step.node] = (step.kind, index)
        elif step.kind in HEALS.values():
            assert step.node in deviant, f"step {index}: {step} heals a node that is fine"
            assert HEALS[deviant[step.node][0]] is step.kind, f"step {index}: {step}"
            del deviant[step.node]
        else:
            assert step.node is None
        states.append(dict(deviant))
    return states


MANY_SEEDS = range(300)


@pytest.mark.unit
def test_schedule_is_a_pure_function_of_seed_and_steps() -> None:
    assert schedule(7, 40) == schedule(7, 40)
    assert schedule(7, 40) != schedule(8, 40)
    assert all(len(schedule(seed, 17)) == 17 for seed in range(20))


@pytest.mark.unit
def test_schedule_never_lets_the_truth_or_more_than_two_nodes_deviate() -> None:
    for seed in MANY_SEEDS:
        steps = schedule(seed, 40)
        assert all(step.node != TRUTH for step in steps), seed
        for deviant in deviance_over_time(steps):
            assert len(deviant) <= MAX_DEVIANT, (seed, describe(steps))
            assert set(deviant) <= set(range(NODES - 1))


@pytest.mark.unit
def test_schedule_heals_every_deviance_with_its_own_step_soon_and_by_the_end() -> None:
    for seed in MANY_SEEDS:
        for length in (1, 2, 5, 40):
            steps = schedule(seed, length)
            over_time = deviance_over_time(steps)  # fails on a mismatched heal
            assert over_time[-1] == {}, (seed, length, describe(steps))
            for index, deviant in enumerate(over_time):
                for node, (_, began) in deviant.items():
                    assert index - began < MAX_DEVIANT_STEPS, (seed, node, describe(steps))


@pytest.mark.unit
def test_schedule_steps_carry_what_they_need() -> None:
    for seed in MANY_SEEDS:
        for step in schedule(seed, 40):
            if step.kind is StepKind.MINE:
                assert 1 <= step.count <= 3
            if step.kind is StepKind.FORK:
                assert step.count >= 2  # several blocks between two head polls
            if step.kind is StepKind.REWIND:
                assert 1 <= step.depth <= MAX_REWIND_DEPTH
                assert 0 <= step.count <= MAX_REWIND_BRANCH  # shorter, as long or longer
                # Blocks replaced under the gateway are checked once it has looked again.
                assert step.count == 0 or step.settle is Settle.SYNC
            else:
                assert step.depth == 0
            assert (step.fault is not None) == (step.kind is StepKind.FAULT)
            assert step.fault in (None, *FAULTS)


@pytest.mark.unit
def test_schedules_use_every_step_fault_and_settle_and_favour_the_first_upstream() -> None:
    steps = [step for seed in MANY_SEEDS for step in schedule(seed, 40)]
    assert {step.kind for step in steps} == set(StepKind)
    assert {step.fault for step in steps if step.fault} == set(FAULTS)
    assert {step.settle for step in steps} == set(Settle)
    started = Counter(step.node for step in steps if step.kind in DEVIATES)
    assert started[0] > max(started[1], started[2], started[3])


@pytest.mark.unit
def test_schedules_rewind_to_every_depth_with_branches_of_every_length() -> None:
    rewinds = [
        step for seed in MANY_SEEDS for step in schedule(seed, 40) if step.kind is StepKind.REWIND
    ]
    assert {step.depth for step in rewinds} == set(range(1, MAX_REWIND_DEPTH + 1))
    assert {step.count for step in rewinds} == set(range(MAX_REWIND_BRANCH + 1))


@pytest.mark.unit
def test_ci_seeds_each_use_every_step_kind() -> None:
    for seed in CI_SEEDS:
        kinds = {step.kind for step in schedule(seed, CI_STEPS)}
        assert kinds == set(StepKind), (seed, describe(schedule(seed, CI_STEPS)))


@pytest.mark.unit
def test_seeds_from_the_environment() -> None:
    assert _seeds(None) == CI_SEEDS
    assert _seeds("7") == (7,)
    assert _seeds("7, 9,100-102") == (7, 9, 100, 101, 102)


# -- end to end --


class RunSchedule(Protocol):
    def __call__(
        self, seed: int, steps: list[Step], upstreams: Callable[[list[str]], list[str]] = ...
    ) -> Checker: ...


def _failure_report(seed: int, steps: list[Step], checker: Checker) -> str:
    wrong = "\n".join(f"  {answer}" for answer in checker.wrong)
    return (
        f"seed {seed}, {len(steps)} steps ({checker.rounds} checked); {checker.describe()}\n"
        f"replay: {SEEDS_ENV}={seed} {STEPS_ENV}={len(steps)} "
        ".venv/bin/python -m pytest tests/chain/test_ground_truth.py -k end_to_end\n"
        f"steps (schedule({seed}, {len(steps)})):\n{describe(steps)}\n"
        f"wrong answers:\n{wrong}"
    )


def _all(proxy_urls: list[str]) -> list[str]:
    # node4, the truth, last: a gateway that trusts its first upstream fails.
    return proxy_urls


@pytest.fixture
def run_schedule(
    anvil_cluster: AnvilClusterFactory,
    fault_proxy: FaultProxyFactory,
    load_balancer: LoadBalancerFactory,
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
    redis_server: RedisServer,
) -> RunSchedule:
    """Five nodes, each behind a load balancer behind a fault proxy, and the spare replica;
    a gateway over `upstreams(proxy URLs)` on a fresh Redis; applies the steps, checking
    after each, and returns the checker."""

    def run(
        seed: int, steps: list[Step], upstreams: Callable[[list[str]], list[str]] = _all
    ) -> Checker:
        cluster = anvil_cluster(NODES + 1, extra_args=ANVIL_ARGS)  # the last: the spare
        balancers = [load_balancer([url], seed=seed) for url in cluster.urls[:NODES]]
        proxies = [fault_proxy(balancer.url) for balancer in balancers]
        settings: dict[str, Any] = {
            "head_poll_interval": POLL_INTERVAL_S,
            "max_lag_blocks": 2,
            "failover": {"attempt_timeout_s": 0.5, "deadline_s": 5.0},
            "cache": {"redis_url": redis_server.url},
        }

        def start() -> RunningGateway:
            return start_gateway(upstreams([proxy.url for proxy in proxies]), **settings)

        def stop(gateway: RunningGateway) -> None:
            background_loop.run(gateway.runner.cleanup())

        spare = fault_proxy(cluster.urls[NODES], Fault.GETH_LOG_RANGES)
        world = World(cluster, balancers, proxies, start, stop, POLL_INTERVAL_S, spare.url)
        world.start()
        checker = Checker(cluster[TRUTH].url, seed)
        try:
            for index, step in enumerate(steps):
                world.apply(step)
                assert world.gateway is not None
                checker.check(world.gateway, world, index)
        except Exception as error:
            error.add_note(_failure_report(seed, steps, checker))
            raise
        finally:
            checker.close()
        counts = world.cache_counts()
        print(f"seed {seed}: {checker.describe()}; {world.restarts} restarts; cache {counts}")
        return checker

    return run


@pytest.mark.timeout(60 + 5 * STEPS)
@pytest.mark.parametrize("seed", SEEDS)
def test_end_to_end_every_answer_matches_the_truth_node(
    seed: int, run_schedule: RunSchedule
) -> None:
    steps = schedule(seed, STEPS)
    checker = run_schedule(seed, steps)
    assert not checker.wrong, _failure_report(seed, steps, checker)


def test_the_check_catches_a_gateway_that_trusts_its_first_upstream(
    run_schedule: RunSchedule,
) -> None:
    """The control: the same checks against a gateway over node0 alone, which forks."""
    steps = [
        Step(StepKind.MINE, count=2),
        Step(StepKind.FORK, 0, count=3),
        Step(StepKind.MINE, count=2),
        Step(StepKind.REJOIN, 0),
        Step(StepKind.MINE, count=1),
    ]
    checker = run_schedule(0, steps, upstreams=lambda urls: urls[:1])
    report = _failure_report(0, steps, checker)
    while_forked = {answer.why for answer in checker.wrong if answer.step in (1, 2)}
    assert {"above the truth's head", "differs"} <= while_forked, report
    rejoined = {answer.why for answer in checker.wrong if answer.step == 3}
    assert "the head went back from 8" in rejoined, report


def test_the_check_catches_a_gateway_over_one_upstream_that_rewinds(
    run_schedule: RunSchedule,
) -> None:
    """The control for rewinds: a gateway over node0 alone, which goes back from block 5
    to block 3, then mines a block 4 of its own."""
    steps = [
        Step(StepKind.MINE, count=2),
        Step(StepKind.REWIND, 0, count=1, depth=2),
        Step(StepKind.MINE, count=1),
        Step(StepKind.REJOIN, 0),
        Step(StepKind.MINE, count=1),
    ]
    checker = run_schedule(0, steps, upstreams=lambda urls: urls[:1])
    report = _failure_report(0, steps, checker)
    # Whether such a gateway goes back with it or not, its answers about block 4 are the
    # branch's.
    rewound = {answer.why for answer in checker.wrong if answer.step == 1}
    assert "differs" in rewound, report
