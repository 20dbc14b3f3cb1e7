"""Fixtures shared by the gateway tests: real anvil nodes, fault proxies, a live gateway."""

from __future__ import annotations

import io
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import yaml
from aiohttp import web

from rpcgate.config.settings import Config, parse_config
from rpcgate.edge.fast_http import rpc_runner
from rpcgate.edge.http_server import GATEWAY, INGRESS, Gateway, Ingress, build_app
from rpcgate.rpc import logs
from rpcgate.rpc.logs import configure_logging
from tests.harness.anvil import AnvilCluster, JsonRpcError
from tests.harness.faultproxy import FaultProxy
from tests.harness.fixtures import *  # noqa: F403 - the harness fixtures, shared
from tests.harness.fixtures import AnvilClusterFactory, FaultProxyFactory
from tests.harness.loop import BackgroundLoop
from tests.harness.tools import free_port, rpcgate_command, wait_for_http

pytest_plugins = ["tests.harness.unit_guard"]  # the `unit` mark kept honest

# Loggers re-read the configuration: tests capture log lines after others configured it.
logs.CACHE_ALLOWED = False


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        import json

        return json.loads(self.body)


@dataclass
class RunningGateway:
    url: str
    gateway: Gateway
    config: Config
    runner: web.AppRunner
    loop: BackgroundLoop
    ingress: Ingress  # keys, rate limits, CORS and the open WebSockets in front of it

    def post(
        self, body: bytes | Any, path: str = "/", headers: dict[str, str] | None = None
    ) -> HttpReply:
        """Raw HTTP POST to the gateway (bytes as is, anything else as JSON)."""
        return self.loop.run(_post(self.url + path, body, headers))

    def rpc(
        self, method: str, params: Sequence[Any] = (), path: str = "/", fresh: bool = False
    ) -> HttpReply:
        """One call; `fresh` skips the cache read (to watch routing, not the cache)."""
        headers = {"Cache-Control": "no-cache"} if fresh else None
        return self.post(
            {"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, path, headers
        )

    def sync(self) -> None:
        """One head-poll round on every chain now, instead of waiting for the next one."""
        for chain in self.gateway.chains:
            self.loop.run(chain.tracker.poll_once())

    def result(self, method: str, params: Sequence[Any] = ()) -> Any:
        reply = self.rpc(method, params).json()
        assert "error" not in reply, reply
        return reply["result"]


async def _post(url: str, body: bytes | Any, headers: dict[str, str] | None) -> HttpReply:
    async with aiohttp.ClientSession() as session:
        kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with session.post(url, headers=headers, **kwargs) as resp:
            return HttpReply(resp.status, dict(resp.headers), await resp.read())


def gateway_config(
    upstream_urls: Sequence[str],
    *,
    chain_id: int = 31337,
    upstreams: Sequence[dict[str, Any]] | None = None,
    head_poll_interval: float = 0.2,
    max_lag_blocks: int = 3,
    chain: dict[str, Any] | None = None,
    **overrides: Any,
) -> Config:
    """A config serving one chain over the given URLs (or `upstreams` as written), with
    test-friendly timeouts; `chain` adds chain settings, other keyword arguments override
    top-level sections."""
    raw: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "failover": {"attempt_timeout_s": 1.0, "deadline_s": 10.0, "max_attempts": 5},
        "chains": [
            {
                "name": "devnet",
                "chain_id": chain_id,
                "head_poll_interval": head_poll_interval,
                "max_lag_blocks": max_lag_blocks,
                "upstreams": list(upstreams)
                if upstreams is not None
                else [{"name": f"node{i}", "url": url} for i, url in enumerate(upstream_urls)],
                **(chain or {}),
            }
        ],
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return parse_config(yaml.safe_dump(raw))


class GatewayFactory(Protocol):
    def __call__(self, upstream_urls: Sequence[str], **overrides: Any) -> RunningGateway: ...


async def _start(config: Config, loop: BackgroundLoop) -> RunningGateway:
    app = build_app(config)
    runner = rpc_runner(app, config, access_log=None)  # the fast path, as `rpcgate serve`
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return RunningGateway(f"http://{host}:{port}", app[GATEWAY], config, runner, loop, app[INGRESS])


class ConfigFactory(Protocol):
    def __call__(self, config: Config | dict[str, Any]) -> RunningGateway: ...


@pytest.fixture
def start_config(background_loop: BackgroundLoop) -> Iterator[ConfigFactory]:
    """Starts gateways in the background loop from a config, or a config as written (the
    YAML's structure, listening on a free port unless it says); all stopped after the test."""
    running: list[RunningGateway] = []

    def start(config: Config | dict[str, Any]) -> RunningGateway:
        if isinstance(config, dict):
            raw = {"listen": "127.0.0.1:0", **config}
            config = parse_config(yaml.safe_dump(raw), env={})
        gateway = background_loop.run(_start(config, background_loop))
        running.append(gateway)
        return gateway

    yield start
    for gateway in running:
        background_loop.run(gateway.runner.cleanup())


@pytest.fixture
def start_gateway(start_config: ConfigFactory) -> Iterator[GatewayFactory]:
    """Starts gateways over the given upstream URLs (`gateway_config`), stopped after."""

    def start(upstream_urls: Sequence[str], **overrides: Any) -> RunningGateway:
        return start_config(gateway_config(upstream_urls, **overrides))

    yield start


class ProxiedClusterFactory(Protocol):
    def __call__(
        self, size: int, *, chain_id: int = 31337, mined: int = 0
    ) -> tuple[AnvilCluster, list[FaultProxy]]: ...


@pytest.fixture
def proxied_cluster(
    anvil_cluster: AnvilClusterFactory, fault_proxy: FaultProxyFactory
) -> ProxiedClusterFactory:
    """A lock-step anvil cluster, `mined` blocks high, each node behind a fault proxy."""

    def start(
        size: int, *, chain_id: int = 31337, mined: int = 0
    ) -> tuple[AnvilCluster, list[FaultProxy]]:
        cluster = anvil_cluster(size, chain_id=chain_id)
        if mined:
            cluster.mine_all(mined)
        return cluster, [fault_proxy(url) for url in cluster.urls]

    return start


def gossip(cluster: AnvilCluster, raw_transaction: str) -> None:
    """What the p2p network does: every node learns the transaction (anvil nodes don't peer)."""
    for node in cluster:
        try:
            node.send_raw_transaction(raw_transaction)
        except JsonRpcError as exc:
            if "already" not in exc.error_message.lower():
                raise


class ServeProcess(Protocol):
    def __call__(self, upstream: str, **sections: Any) -> tuple[str, subprocess.Popen[bytes]]: ...


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[ServeProcess]:
    """`rpcgate serve` in a process of its own (its memory measured alone) over one
    upstream, on a free port: chain `devnet`, warnings only (loopback clients are not
    rate limited at the defaults); keyword arguments add or replace top-level sections."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(upstream: str, **sections: Any) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        config: dict[str, Any] = {
            "listen": f"127.0.0.1:{port}",
            "log_level": "warning",
            "chains": [
                {
                    "name": "devnet",
                    "chain_id": 31337,
                    "head_poll_interval": 0.1,
                    "upstreams": [{"name": "node0", "url": upstream}],
                }
            ],
            **sections,
        }
        path = tmp_path / f"serve-{port}.yaml"
        path.write_text(yaml.safe_dump(config))
        process = subprocess.Popen(
            [*rpcgate_command(), "serve", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/healthz")
        return url, process

    yield start
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def replica_process(tmp_path: Path) -> Iterator[Callable[..., str]]:
    """A second gateway in a process of its own, polling its upstreams once a minute."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(
        upstream_urls: Sequence[str | tuple[str, str]],
        redis_url: str | None,
        head_poll_interval: float = 60,
    ) -> str:
        port = free_port()
        config: dict[str, Any] = {
            "listen": f"127.0.0.1:{port}",
            "chains": [
                {
                    "name": "devnet",
                    "chain_id": 31337,
                    "head_poll_interval": head_poll_interval,
                    "upstreams": [  # (name, url) pairs, or URLs named node0, node1, ...
                        {"name": u[0], "url": u[1]}
                        if isinstance(u, tuple)
                        else {"name": f"node{i}", "url": u}
                        for i, u in enumerate(upstream_urls)
                    ],
                }
            ],
        }
        if redis_url:
            config["cache"] = {"redis_url": redis_url}
        path = tmp_path / f"replica-{port}.yaml"
        path.write_text(yaml.safe_dump(config))
        processes.append(
            subprocess.Popen(
                [*rpcgate_command(), "serve", "--config", str(path)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/healthz")
        return url

    yield start
    for process in processes:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The JSON log lines written while the test runs (info and above)."""
    captured = io.StringIO()
    configure_logging("info", stream=captured, cache=False)
    try:
        yield captured
    finally:
        configure_logging("info", cache=False)
