"""The capacity model of docs/capacity.md (`bench/capacity.py`'s `plan`): the arithmetic that
turns measured costs into cores, replicas, Redis primaries and upstream load."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_capacity() -> ModuleType:
    spec = importlib.util.spec_from_file_location("capacity", BENCH / "capacity.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("capacity", module)
    spec.loader.exec_module(module)
    return module


capacity = load_capacity()

MEASURED = capacity.Costs(
    calls_per_core_s=10_000,
    redis_commands_per_1000=1_000,
    redis_cpu_s_per_1000=0.025,
    upstream_calls_per_1000=2,
    polls_per_process_s=4,
)


def test_cores_are_planned_at_the_utilisation_and_rounded_up() -> None:
    plan = capacity.plan(10_000, MEASURED)
    assert plan.gateway_cores == 2  # 10,000 / (10,000 x 0.6) = 1.67
    assert capacity.plan(12_000, MEASURED).gateway_cores == 2
    assert capacity.plan(12_001, MEASURED).gateway_cores == 3


def test_never_fewer_than_two_replicas_and_two_cores_each() -> None:
    assert capacity.plan(100, MEASURED).replicas == 2
    assert capacity.plan(100_000, MEASURED).gateway_cores == 17
    assert capacity.plan(100_000, MEASURED).replicas == 9


def test_redis_primaries_follow_its_cpu_at_half_a_core_each() -> None:
    small = capacity.plan(10_000, MEASURED)
    assert small.redis_cores == pytest.approx(0.25) and small.redis_shards == 1
    big = capacity.plan(100_000, MEASURED)
    assert big.redis_cores == pytest.approx(2.5) and big.redis_shards == 5
    assert big.redis_commands_per_s == pytest.approx(100_000)


def test_upstream_load_is_the_calls_misses_plus_every_process_polling() -> None:
    plan = capacity.plan(10_000, MEASURED)
    # 20 from the calls, 2 replicas x 2 processes x 4 polls/s.
    assert plan.upstream_calls_per_s == pytest.approx(20 + 16)
    more_upstreams = capacity.plan(10_000, MEASURED, capacity.Assumptions(upstreams=6))
    assert more_upstreams.upstream_calls_per_s == pytest.approx(20 + 32)
