"""The `rpcgate` command as a user runs it: a real process, real ports, real anvil nodes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.tools import free_port, rpcgate_command


def _rpcgate() -> list[str]:
    return rpcgate_command()


def _post(url: str, payload: object, timeout: float = 20) -> tuple[int, dict, object]:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


@pytest.fixture
def serve() -> Iterator:  # type: ignore[type-arg]
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen[str]]:
        port = free_port()
        process = subprocess.Popen(
            [*_rpcgate(), "serve", "--listen", f"127.0.0.1:{port}", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"rpcgate serve exited: {process.stderr.read()}")  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1):
                    return url, process
            except OSError:
                time.sleep(0.1)
        raise AssertionError("rpcgate serve did not start listening")

    yield start
    for process in processes:
        process.send_signal(signal.SIGINT)  # stops without the drain grace
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_serve_without_config_starts_with_the_embedded_mainnet_default(serve) -> None:  # type: ignore[no-untyped-def]
    url, process = serve(env={"RPCGATE_CONFIG": ""})
    with urllib.request.urlopen(url + "/", timeout=5) as resp:
        info = json.loads(resp.read())
    chain = info["chains"][0]
    assert (chain["name"], chain["chain_id"]) == ("ethereum", 1)
    assert len(chain["upstreams"]) >= 4
    # No internet here: the public endpoints are unreachable, and the gateway says so
    # as a JSON-RPC error instead of failing.
    status, _, body = _post(
        url + "/1", {"jsonrpc": "2.0", "id": 5, "method": "eth_chainId"}, timeout=60
    )
    assert status == 200
    assert body["id"] == 5  # type: ignore[index]
    assert "error" in body or body["result"] == "0x1"  # type: ignore[operator,index]
    assert process.poll() is None


def test_serve_with_a_config_file_serves_anvil(
    serve,
    anvil_cluster: AnvilClusterFactory,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    cluster = anvil_cluster(2, chain_id=1337, automine=True)
    config = {
        "chains": [
            {
                "name": "local",
                "chain_id": 1337,
                "upstreams": [{"name": f"anvil{i}", "url": u} for i, u in enumerate(cluster.urls)],
            }
        ]
    }
    path = tmp_path / "rpcgate.yaml"
    path.write_text(yaml.safe_dump(config))
    url, process = serve(env={"RPCGATE_CONFIG": str(path)})
    status, headers, body = _post(
        url + "/local", {"jsonrpc": "2.0", "id": "x", "method": "eth_chainId"}
    )
    assert (status, body) == (200, {"jsonrpc": "2.0", "id": "x", "result": hex(1337)})
    assert headers["X-Rpcgate-Upstream"] in ("anvil0", "anvil1")
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=10)
    first = json.loads(stderr.splitlines()[0])  # structlog JSON lines
    assert first["event"] == "starting" and first["level"] == "info"


def test_check_prints_a_table_and_fails_when_a_chain_has_no_working_upstream(
    anvil_cluster: AnvilClusterFactory, tmp_path: Path
) -> None:
    good = anvil_cluster(1, chain_id=1337)
    wrong_chain = anvil_cluster(1, chain_id=5)
    config = {
        "chains": [
            {
                "name": "local",
                "chain_id": 1337,
                "upstreams": [
                    {"name": "good", "url": good.urls[0]},
                    {"name": "wrong", "url": wrong_chain.urls[0]},
                ],
            },
        ]
    }
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [*_rpcgate(), "check", "--config", str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = {line.split()[1]: line for line in done.stdout.splitlines()[1:]}
    assert lines["good"].rstrip().endswith("ok")
    assert "1337" in lines["good"] and "anvil" in lines["good"].lower()
    assert "wrong chain: chain id 5, expected 1337" in lines["wrong"]

    dead_port = free_port()
    config["chains"].append(
        {
            "name": "dead",
            "chain_id": 10,
            "upstreams": [{"name": "nothing", "url": f"http://127.0.0.1:{dead_port}"}],
        }
    )
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [*_rpcgate(), "check", "--config", str(path), "--timeout", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "no working upstream for: dead" in done.stderr
    assert "transient" in done.stdout


def _validate(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_rpcgate(), "config", "validate", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def test_config_validate_reads_the_file_rpcgate_config_names(tmp_path: Path) -> None:
    """The file `serve` and `check` would run on is the one validated."""
    broken = tmp_path / "broken.yaml"
    broken.write_text("listen: localhost\nchains: []\n")
    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump(
            {"chains": [{"name": "local", "chain_id": 1337, "upstreams": [{"url": "http://n:1"}]}]}
        )
    )

    refused = _validate(env={"RPCGATE_CONFIG": str(broken)})
    assert refused.returncode == 1
    assert "listen: must be HOST:PORT, not 'localhost'" in refused.stderr.splitlines()
    assert f"{broken}: 2 problem(s)" in refused.stderr

    accepted = _validate(env={"RPCGATE_CONFIG": str(good)})
    assert (accepted.returncode, accepted.stderr) == (0, "")
    assert accepted.stdout.strip() == f"{good}: ok (1 chain(s), 1 upstream(s))"

    named = _validate(str(good), env={"RPCGATE_CONFIG": str(broken)})  # FILE comes first
    assert (named.returncode, named.stdout.strip()) == (
        0,
        f"{good}: ok (1 chain(s), 1 upstream(s))",
    )

    default = _validate(env={"RPCGATE_CONFIG": ""})
    assert default.returncode == 0
    from rpcgate.config.chains import CHAINS

    assert default.stdout.startswith(f"the embedded default: ok ({len(CHAINS)} chain(s)")

    help_text = _validate("--help", env={}).stdout
    assert "$RPCGATE_CONFIG" in help_text


def test_config_validate_names_the_known_chains_for_a_name_it_does_not_know(
    tmp_path: Path,
) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text("chains:\n  - name: arbitrun\n")
    refused = _validate(str(typo), env={})
    assert refused.returncode == 1
    assert "chains[0].name: unknown chain 'arbitrun' (did you mean 'arbitrum'?)" in refused.stderr
    assert "known chains: ethereum, base, optimism, arbitrum" in refused.stderr
