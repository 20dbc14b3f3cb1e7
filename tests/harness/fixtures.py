"""Reusable pytest fixtures; pull them in with `from tests.harness.fixtures import *`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import pytest

from tests.harness.anvil import DEFAULT_CHAIN_ID, DEFAULT_GENESIS_TIMESTAMP, AnvilCluster
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.loadbalancer import Gate, LoadBalancer
from tests.harness.loop import BackgroundLoop
from tests.harness.redis_server import RedisServer

__all__ = [
    "AnvilClusterFactory",
    "FaultProxyFactory",
    "LoadBalancerFactory",
    "anvil_cluster",
    "background_loop",
    "fault_proxy",
    "load_balancer",
    "redis_server",
]


class AnvilClusterFactory(Protocol):
    def __call__(
        self,
        size: int = 3,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        genesis_timestamp: int = DEFAULT_GENESIS_TIMESTAMP,
        automine: bool = False,
        extra_args: Sequence[str] = (),
    ) -> AnvilCluster: ...


class FaultProxyFactory(Protocol):
    def __call__(self, upstream_url: str, fault: Fault = Fault.HEALTHY) -> FaultProxy: ...


class LoadBalancerFactory(Protocol):
    def __call__(
        self, backends: list[str], *, seed: int | None = None, gate: Gate | None = None
    ) -> LoadBalancer: ...


@pytest.fixture(scope="session")
def background_loop() -> Iterator[BackgroundLoop]:
    """One event loop thread for the session, hosting servers that sync tests talk to."""
    loop = BackgroundLoop()
    yield loop
    loop.stop()


@pytest.fixture
def anvil_cluster() -> Iterator[AnvilClusterFactory]:
    """Factory for started anvil clusters; all of them are stopped after the test."""
    clusters: list[AnvilCluster] = []

    def start_cluster(
        size: int = 3,
        *,
        chain_id: int = DEFAULT_CHAIN_ID,
        genesis_timestamp: int = DEFAULT_GENESIS_TIMESTAMP,
        automine: bool = False,
        extra_args: Sequence[str] = (),
    ) -> AnvilCluster:
        cluster = AnvilCluster(
            size,
            chain_id=chain_id,
            genesis_timestamp=genesis_timestamp,
            automine=automine,
            extra_args=extra_args,
        )
        clusters.append(cluster)
        return cluster.start()

    yield start_cluster
    for cluster in clusters:
        cluster.stop()


@pytest.fixture
def fault_proxy(background_loop: BackgroundLoop) -> Iterator[FaultProxyFactory]:
    """Factory for fault proxies served from `background_loop`; stopped after the test.

    For synchronous tests. Async tests can equally use `async with FaultProxy(url)` on
    their own loop.
    """
    proxies: list[FaultProxy] = []

    def start_proxy(upstream_url: str, fault: Fault = Fault.HEALTHY) -> FaultProxy:
        proxy = FaultProxy(upstream_url)
        proxy.set_fault(fault)
        proxies.append(proxy)
        return background_loop.run(proxy.start())

    yield start_proxy
    for proxy in proxies:
        background_loop.run(proxy.stop())


@pytest.fixture
def load_balancer(background_loop: BackgroundLoop) -> Iterator[LoadBalancerFactory]:
    """Factory for load balancers served from `background_loop`; stopped after the test."""
    balancers: list[LoadBalancer] = []

    def start_balancer(
        backends: list[str], *, seed: int | None = None, gate: Gate | None = None
    ) -> LoadBalancer:
        balancer = LoadBalancer(backends, seed=seed, gate=gate)
        balancers.append(balancer)
        return background_loop.run(balancer.start())

    yield start_balancer
    for balancer in balancers:
        background_loop.run(balancer.stop())


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A throwaway redis-server on a free port (fails, saying how to install it, if absent)."""
    server = RedisServer().start()
    yield server
    server.stop()
