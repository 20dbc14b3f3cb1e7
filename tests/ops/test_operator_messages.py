"""Messages an operator can act on: connect failures named for what they are, a log line for
every failed call, and `--help` that reads like a good command's."""

from __future__ import annotations

import io
import json
import subprocess

import pytest

from rpcgate.rpc.logs import configure_logging
from tests.cli.test_cli import _rpcgate
from tests.conftest import GatewayFactory, ProxiedClusterFactory
from tests.harness.anvil import DEV_ADDRESSES
from tests.harness.faultproxy import Fault
from tests.harness.tools import free_port


def test_connect_failures_say_dns_refused_or_tls(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, proxies = proxied_cluster(1)
    closed = free_port()
    gateway = start_gateway(
        [],
        upstreams=[
            {"name": "good", "url": proxies[0].url},
            {"name": "nodns", "url": "http://no-such-host.invalid:8545"},
            {"name": "closed", "url": f"http://127.0.0.1:{closed}"},
            {"name": "notls", "url": f"https://127.0.0.1:{proxies[0].port}"},
        ],
    )
    gateway.sync()
    reasons = {v.name: v.reason for v in gateway.gateway.chains[0].tracker.views.values()}
    assert "DNS: name not resolved (no-such-host.invalid)" in reasons["nodns"]
    assert f"connection refused (127.0.0.1:{closed})" in reasons["closed"]
    assert "TLS: " in reasons["notls"]


def test_every_failed_call_is_one_log_line_with_its_attempts(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, proxies = proxied_cluster(2, mined=2)
    captured = io.StringIO()
    configure_logging("info", stream=captured, cache=False)
    try:
        gateway = start_gateway([p.url for p in proxies])
        assert "result" in gateway.rpc("eth_getBalance", [DEV_ADDRESSES[0], "0x1"]).json()
        bad = gateway.rpc("eth_getBalance", ["not an address", "0x1"]).json()
        for proxy in proxies:
            proxy.set_fault(Fault.HTTP_5XX)
        failed = gateway.rpc("eth_getTransactionCount", [DEV_ADDRESSES[0], "pending"]).json()
    finally:
        configure_logging("info", cache=False)
    events = [json.loads(line) for line in captured.getvalue().splitlines()]
    calls = [e for e in events if e["event"] == "call_failed"]
    assert [e["method"] for e in calls] == ["eth_getBalance", "eth_getTransactionCount"]
    verdict, outage = calls
    assert (verdict["level"], verdict["code"]) == ("info", bad["error"]["code"])
    assert (outage["level"], outage["code"]) == ("warning", failed["error"]["code"])
    assert outage["chain"] == "devnet"
    assert len(outage["attempts"]) >= 2
    assert all("transient" in attempt for attempt in outage["attempts"])
    assert not [e for e in events if e["event"] == "call"]  # successes: debug only


@pytest.mark.parametrize(
    ("command", "must_say"),
    [
        ([], ["serve", "check", "config", "COMMAND --help"]),
        (
            ["serve"],
            ["Ethereum mainnet", "SIGTERM", "SIGHUP", "--workers", "examples:", "exit status"],
        ),
        (["check"], ["(default: 10.0)", "exit status"]),
        (["config"], ["validate"]),
        (["config", "validate"], ["key path", "exit status"]),
    ],
)
def test_help_describes_every_command(command: list[str], must_say: list[str]) -> None:
    done = subprocess.run(
        [*_rpcgate(), *command, "--help"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    for text in must_say:
        assert text in done.stdout, (command, text, done.stdout)
