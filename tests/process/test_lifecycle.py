"""The process as an operator runs it: a port already taken, a drain on SIGTERM with calls in
flight, and a reload on SIGHUP under load (a good file, then a broken one)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from rpcgate.process.reload import plan_reload
from tests.cli.test_cli import _rpcgate
from tests.conftest import ProxiedClusterFactory, gateway_config
from tests.harness.anvil import DEV_ADDRESSES
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.tools import free_port, wait_for_http

CHAIN_ID = 31337


def _get(url: str, timeout: float = 10) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _call(url: str, method: str, params: list[Any], timeout: float = 30) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", "Cache-Control": "no-cache"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        return json.loads(resp.read())


def _config(proxies: list[FaultProxy], port: int, **extra: Any) -> dict[str, Any]:
    return {
        "listen": f"127.0.0.1:{port}",
        "log_level": "info",
        "shutdown": {"grace_s": 0.5, "timeout_s": 10},
        "chains": [
            {
                "name": "devnet",
                "chain_id": CHAIN_ID,
                "head_poll_interval": 0.2,
                "upstreams": [
                    {"name": f"node{i}", "url": p.url, "domain": f"d{i}"}
                    for i, p in enumerate(proxies)
                ],
            }
        ],
        **extra,
    }


@pytest.fixture
def gateway_process(
    tmp_path: Path,
) -> Iterator[Callable[[dict[str, Any]], tuple[str, subprocess.Popen[str], Path]]]:
    processes: list[subprocess.Popen[str]] = []

    def start(config: dict[str, Any]) -> tuple[str, subprocess.Popen[str], Path]:
        path = tmp_path / "rpcgate.yaml"
        path.write_text(yaml.safe_dump(config))
        process = subprocess.Popen(
            [*_rpcgate(), "serve", "--config", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=os.environ.copy(),
        )
        processes.append(process)
        url = "http://" + config["listen"]
        wait_for_http(url + "/healthz", timeout=20)
        return url, process, path

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _log_events(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = subprocess.run(
            [*_rpcgate(), "serve", "--listen", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "RPCGATE_CONFIG": ""},
        )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    errors = [e for e in _log_events(done.stderr) if e["level"] == "error"]
    assert [e["error"] for e in errors] == [
        f"cannot listen on 127.0.0.1:{port}: the port is already in use (another rpcgate?)"
    ]


def test_sigterm_drains_eight_slow_calls_and_exits_0(
    proxied_cluster: ProxiedClusterFactory, gateway_process: Any
) -> None:
    _, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    url, process, _ = gateway_process(_config(proxies, free_port()))
    for proxy in proxies:
        proxy.set_fault(Fault.LATENCY, delay=1.5)  # every call takes 1.5 s from now on
    with ThreadPoolExecutor(8) as pool:
        calls = [
            pool.submit(_call, url, "eth_getBalance", [DEV_ADDRESSES[i % 2], hex(i % 3)])
            for i in range(8)
        ]
        time.sleep(0.5)  # all eight are in flight
        process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        status, body = _get(url + "/readyz")  # within the grace: still listening, not ready
        assert (status, body["status"]) == (503, "draining")
        answers = [call.result(timeout=30) for call in calls]
    assert all("result" in answer for answer in answers), answers
    assert process.wait(20) == 0
    events = [e["event"] for e in _log_events(process.stderr.read())]  # type: ignore[union-attr]
    assert "draining" in events and events[-1] == "stopped"
    with pytest.raises(OSError):  # the listener is closed
        _get(url + "/healthz", timeout=2)


def test_sighup_under_load_swaps_upstreams_and_refuses_a_broken_file(
    proxied_cluster: ProxiedClusterFactory, gateway_process: Any
) -> None:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    config = _config(proxies, free_port())
    url, process, path = gateway_process(config)
    failures: list[Any] = []
    answered = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal answered
        while not stop.is_set():
            for method, params in (
                ("eth_getBalance", [DEV_ADDRESSES[0], "latest"]),
                ("eth_blockNumber", []),
                ("eth_getBlockByNumber", ["latest", False]),
            ):
                try:
                    answer = _call(url, method, params)
                except OSError as exc:
                    failures.append(repr(exc))
                    continue
                if "result" not in answer or answer["result"] is None:
                    failures.append(answer)
                answered += 1

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(0.5)
        only_last = {**config}
        only_last["chains"] = [{**config["chains"][0]}]
        only_last["chains"][0]["upstreams"] = config["chains"][0]["upstreams"][2:]
        path.write_text(yaml.safe_dump(only_last))
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        names: list[str] = []
        while time.monotonic() < deadline:
            _, status = _get(url + "/status.json")
            names = [u["name"] for u in status["chains"][0]["upstreams"]]
            if names == ["node2"]:
                break
            time.sleep(0.1)
        assert names == ["node2"]
        cluster.mine_all()  # the new runtime follows the chain
        time.sleep(0.6)
        before = answered
        for proxy in proxies[:2]:
            proxy.reset_counts()
        time.sleep(0.5)
        assert answered > before  # still serving...
        assert proxies[0].request_count == proxies[1].request_count == 0  # ...without them
        path.write_text("chains:\n  - name: devnet\n    chain_id: -5\n    upstreams: nope\n")
        process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        assert process.poll() is None
        _, status = _get(url + "/status.json")
        assert [u["name"] for u in status["chains"][0]["upstreams"]] == ["node2"]
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert not failures, failures[:5]
    assert answered > 50
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    events = _log_events(process.stderr.read())  # type: ignore[union-attr]
    refused = [e for e in events if e["event"] == "reload_refused"]
    validate = subprocess.run(
        [*_rpcgate(), "config", "validate", str(path)], capture_output=True, text=True
    )
    expected = [line for line in validate.stderr.splitlines() if not line.endswith("problem(s)")]
    assert len(refused) == 1 and refused[0]["problems"] == expected
    reloaded = [e for e in events if e["event"] == "config_reloaded"]
    assert reloaded[0]["upstreams"] == {"devnet": ["node2"]}


@pytest.mark.unit
def test_a_reload_plan_replaces_only_what_changed() -> None:
    base = gateway_config(["http://127.0.0.1:1", "http://127.0.0.1:2"])
    same = plan_reload(base, base)
    assert (same.start, same.stop, same.keep) == ((), (), ("devnet",))
    fewer = gateway_config(["http://127.0.0.1:2"])
    changed = plan_reload(base, fewer)
    assert [c.name for c in changed.start] == ["devnet"] and changed.stop == ("devnet",)
    moved = gateway_config(["http://127.0.0.1:1", "http://127.0.0.1:2"], listen="127.0.0.1:9")
    assert plan_reload(base, moved).needs_restart == ("listen",)
    slower = gateway_config(
        ["http://127.0.0.1:1", "http://127.0.0.1:2"], failover={"deadline_s": 20.0}
    )
    assert plan_reload(base, slower).stop == ("devnet",)  # runtimes are built with it


def _status_of(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_operator_paths_live_on_the_operations_listener_only(
    proxied_cluster: ProxiedClusterFactory,
    gateway_process: Callable[[dict[str, Any]], tuple[str, subprocess.Popen[str], Path]],
) -> None:
    """With `ops.listen`, /metrics, /status, /status.json and /admin answer there and the RPC
    listener answers them 404 (clients cannot read them even with auth.keys set); the RPC
    is not served on the operations listener; the probes answer on both."""
    _, proxies = proxied_cluster(1, mined=1)
    token = "t" * 24
    ops_port = free_port()
    url, process, _ = gateway_process(
        _config(
            proxies,
            free_port(),
            ops={"listen": f"127.0.0.1:{ops_port}"},
            admin={"token": token},
        )
    )
    ops = f"http://127.0.0.1:{ops_port}"
    admin = {"Authorization": f"Bearer {token}"}
    wait_for_http(ops + "/healthz")
    for path in ("/metrics", "/status", "/status.json"):
        assert _status_of(ops + path) == 200, path
        assert _status_of(url + path) == 404, path
    assert _status_of(ops + "/admin/drills", admin) == 200
    assert _status_of(url + "/admin/drills", admin) == 404
    assert _status_of(url + "/admin", admin) == 404
    for probe in ("/healthz", "/readyz"):
        assert _status_of(url + probe) == 200
        assert _status_of(ops + probe) == 200
    assert _call(url, "eth_chainId", [])["result"] == hex(CHAIN_ID)
    with pytest.raises(urllib.error.HTTPError) as refused:
        _call(ops, "eth_chainId", [])
    assert refused.value.code in (404, 405)
    _, metrics = _get_text(ops + "/metrics")
    assert "# TYPE rpcgate_" in metrics
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0


def _get_text(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return int(resp.status), resp.read().decode()


def test_the_operations_port_taken_is_one_line_and_exit_2(
    proxied_cluster: ProxiedClusterFactory, tmp_path: Path
) -> None:
    _, proxies = proxied_cluster(1, mined=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "rpcgate.yaml"
        path.write_text(
            yaml.safe_dump(_config(proxies, free_port(), ops={"listen": f"127.0.0.1:{port}"}))
        )
        result = subprocess.run(
            [*_rpcgate(), "serve", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in result.stderr


def test_a_call_stuck_on_a_hung_upstream_does_not_hold_the_exit_past_grace_and_timeout(
    proxied_cluster: ProxiedClusterFactory, gateway_process: Any
) -> None:
    """aiohttp waits `timeout` for a handler, then cancels it and waits `timeout` again: the
    process must still be gone within grace + timeout (Kubernetes kills it at 30 s)."""
    _, proxies = proxied_cluster(1, chain_id=CHAIN_ID, mined=2)
    config = _config(proxies, free_port())
    config["shutdown"] = {"grace_s": 0.5, "timeout_s": 2}
    config["failover"] = {"attempt_timeout_s": 60, "deadline_s": 60}
    url, process, _ = gateway_process(config)
    proxies[0].set_fault(Fault.LATENCY, delay=60)  # hangs every call
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(_call, url, "eth_getBalance", [DEV_ADDRESSES[0], "0x1"], 30)
        time.sleep(0.5)
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
        took = time.monotonic() - started
        with pytest.raises(Exception):  # noqa: B017 - the connection ends without an answer
            stuck.result(timeout=5)
    assert took < 0.5 + 2 + 1.0, took
