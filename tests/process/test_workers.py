"""`rpcgate serve --workers N` as an operator runs it: N processes listening on one port, the
supervisor's signals reaching each, a dead worker replaced, and bad counts refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from rpcgate.process.workers import (
    RESTART_FIRST_S,
    RESTART_MAX_S,
    describe_exit,
    parse_workers,
    restart_delay,
    stopped_cleanly,
)
from tests.cli.test_cli import _rpcgate
from tests.conftest import ProxiedClusterFactory
from tests.harness.anvil import DEV_ADDRESSES
from tests.harness.faultproxy import Fault
from tests.harness.redis_server import RedisServer
from tests.harness.tools import admin_drills, free_port, wait_for_http
from tests.process.test_lifecycle import CHAIN_ID, _call, _config, _get

pytestmark = pytest.mark.skipif(
    not Path("/proc/net/tcp").exists(), reason="reads listeners from /proc (Linux)"
)


class Gateway:
    """A `rpcgate serve` process whose log (its workers' too) goes to a file."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path, port: int) -> None:
        self.process = process
        self.log = log
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def events(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().split("\n")[:-1]  # complete lines only
        return [json.loads(line) for line in lines if line.startswith("{")]

    def listening(self) -> dict[int, int]:
        """Worker number -> pid of the latest process that said `listening`."""
        return {e["worker"]: e["pid"] for e in self.events() if e["event"] == "listening"}

    def wait_until(
        self, condition: Callable[[], bool], timeout: float = 20, *, running: bool = True
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if running and self.process.poll() is not None:
                raise AssertionError(f"exited; log:\n{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; log:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def start(config: dict[str, Any], *args: str, cpus: set[int] | None = None) -> Gateway:
        path = tmp_path / f"rpcgate-{len(started)}.yaml"
        path.write_text(yaml.safe_dump(config))
        log = tmp_path / f"rpcgate-{len(started)}.log"
        command = [*_rpcgate(), "serve", "--config", str(path), *args]
        if cpus is not None:  # what `taskset` or a cpuset leaves the process
            pin = (
                f"import os, sys; os.sched_setaffinity(0, {cpus!r}); "
                "os.execv(sys.argv[1], sys.argv[1:])"
            )
            command = [sys.executable, "-c", pin, *command]
        with log.open("wb") as stderr:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
        port = int(config["listen"].rpartition(":")[2])
        running = Gateway(process, log, port)
        started.append(running)
        wait_for_http(running.url + "/healthz", timeout=20)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(10)
        for event in running.events():
            if event["event"] == "worker_started" and _alive(event["pid"]):
                os.kill(event["pid"], signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is not serving anything
        return stat.read().rpartition(")")[2].split()[0] != "Z"


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rpartition(")")[2].split()[1])


def _listening_pids(port: int) -> set[int]:
    """Processes holding a listening TCP socket on `port` (IPv4), from /proc."""
    inodes = set()
    with open("/proc/net/tcp") as table:
        for row in table.read().splitlines()[1:]:
            fields = row.split()
            if int(fields[1].rpartition(":")[2], 16) == port and fields[3] == "0A":
                inodes.add(f"socket:[{fields[9]}]")
    holders = set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            links = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
        except OSError:
            continue
        if links & inodes:
            holders.add(int(pid))
    return holders


def _block_number(url: str) -> int:
    return int(_call(url, "eth_blockNumber", [])["result"], 16)


def _settled(url: str, head: int) -> bool:
    """Ten new connections in a row (landing on any worker) see every upstream at `head`."""
    for _ in range(10):
        _, status = _get(url + "/status.json")
        chain = status["chains"][0]
        if (chain["consensus"]["head"] or {}).get("number") != head or any(
            (u["state"], u["lag"]) != ("ok", 0) for u in chain["upstreams"]
        ):
            return False
    return True


def _wait_all_listening(gateway: Gateway, count: int) -> dict[int, int]:
    gateway.wait_until(lambda: len(gateway.listening()) == count)
    pids = gateway.listening()
    assert sorted(pids) == list(range(count))
    return pids


def test_two_workers_serve_one_port_agree_on_the_head_and_drain_on_sigterm(
    proxied_cluster: ProxiedClusterFactory,
    redis_server: RedisServer,
    gateway: Callable[..., Gateway],
) -> None:
    cluster, proxies = proxied_cluster(2, chain_id=CHAIN_ID, mined=2)
    config = _config(proxies, free_port(), cache={"redis_url": redis_server.url})
    running = gateway(config, "--workers", "2")
    pids = _wait_all_listening(running, 2)
    assert len(set(pids.values())) == 2
    assert all(_parent(pid) == running.process.pid for pid in pids.values())
    # Each worker holds a listener of its own on the one port; the supervisor holds none.
    running.wait_until(lambda: _listening_pids(running.port) == set(pids.values()))

    seen = []
    for i in range(30):  # urllib opens a new connection for each call
        if i % 6 == 5:
            cluster.mine_all()
        seen.append(_block_number(running.url))
    assert seen == sorted(seen), seen  # the served head, shared through Redis, never goes back
    running.wait_until(lambda: _settled(running.url, 7))

    running.process.send_signal(signal.SIGHUP)
    running.wait_until(
        lambda: {e.get("worker") for e in running.events() if e["event"] == "reloading"} == {0, 1}
    )

    for proxy in proxies:
        proxy.set_fault(Fault.LATENCY, delay=1.0)
    with ThreadPoolExecutor(6) as pool:
        calls = [
            pool.submit(_call, running.url, "eth_getBalance", [DEV_ADDRESSES[i % 2], hex(i % 3)])
            for i in range(6)
        ]
        time.sleep(0.4)  # in flight, spread over both workers
        running.process.send_signal(signal.SIGTERM)
        answers = [call.result(timeout=30) for call in calls]
    assert all("result" in answer for answer in answers), answers
    assert running.process.wait(20) == 0
    assert not any(_alive(pid) for pid in pids.values())
    events = running.events()
    stopped = [e for e in events if e["event"] == "stopped"]
    assert sorted(e["worker"] for e in stopped if "worker" in e) == [0, 1]
    assert events[-1]["event"] == "stopped" and "worker" not in events[-1]  # the supervisor
    assert not [e for e in events if e["event"] == "workers_share_nothing"]


def test_a_killed_worker_is_replaced_while_the_port_keeps_answering(
    proxied_cluster: ProxiedClusterFactory, gateway: Callable[..., Gateway]
) -> None:
    _, proxies = proxied_cluster(2, chain_id=CHAIN_ID, mined=2)
    running = gateway(_config(proxies, free_port()), "--workers", "2")
    pids = _wait_all_listening(running, 2)

    os.kill(pids[0], signal.SIGKILL)
    # Connections the kernel had queued for it when it died are reset (SO_REUSEPORT gives
    # each listener its own queue); once it is gone the other listener takes every one.
    running.wait_until(lambda: _listening_pids(running.port) == {pids[1]})
    answered = 0
    while running.listening()[0] == pids[0]:
        assert _block_number(running.url) == 2  # the other worker carries every connection
        answered += 1
    assert answered > 0
    replacement = running.listening()[0]
    assert replacement != pids[0] and _parent(replacement) == running.process.pid
    exited = [e for e in running.events() if e["event"] == "worker_exited"]
    assert [(e["worker"], e["pid"], e["exit"]) for e in exited] == [(0, pids[0], "SIGKILL")]
    assert exited[0]["level"] == "warning" and exited[0]["restart_in_s"] == RESTART_FIRST_S
    running.wait_until(lambda: _listening_pids(running.port) == {replacement, pids[1]})
    assert all(_block_number(running.url) == 2 for _ in range(10))

    # The supervisor killed outright: its workers notice and stop instead of serving on.
    running.process.kill()
    running.process.wait(5)
    running.wait_until(
        lambda: not _alive(replacement) and not _alive(pids[1]), timeout=15, running=False
    )
    assert [e.get("worker") for e in running.events() if e["event"] == "supervisor_gone"] in (
        [0, 1],
        [1, 0],
    )


def test_auto_starts_one_worker_per_usable_core_and_warns_without_redis(
    proxied_cluster: ProxiedClusterFactory, gateway: Callable[..., Gateway]
) -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip("one core: auto is a single process")
    _, proxies = proxied_cluster(1, chain_id=CHAIN_ID, mined=2)
    running = gateway(_config(proxies, free_port()), "--workers", "auto", cpus=set(cores[:2]))
    pids = _wait_all_listening(running, 2)
    events = running.events()
    assert [e["workers"] for e in events if e["event"] == "starting"] == [2]
    warning = [e for e in events if e["event"] == "workers_share_nothing"]
    assert len(warning) == 1 and warning[0]["level"] == "warning"
    assert "cache.redis_url" in warning[0]["detail"] and "go back" in warning[0]["detail"]
    running.process.send_signal(signal.SIGINT)  # Ctrl-C: forwarded once, no grace
    assert running.process.wait(15) == 0
    assert not any(_alive(pid) for pid in pids.values())
    assert not [e for e in running.events() if e["event"] == "stopping_now"]


def test_a_port_in_use_fails_at_once_before_any_worker_starts(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        started = time.monotonic()
        done = subprocess.run(
            [*_rpcgate(), "serve", "--listen", f"127.0.0.1:{port}", "--workers", "2"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "RPCGATE_CONFIG": ""},
        )
    assert done.returncode == 2 and time.monotonic() - started < 10
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [e["error"] for e in events if e["level"] == "error"] == [
        f"cannot listen on 127.0.0.1:{port}: the port is already in use (another rpcgate?)"
    ]
    assert not [e for e in events if e["event"] == "worker_started"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--workers", "0"], {}, "--workers must be a number of processes (1 or more) or auto"),
        (["--workers", "-1"], {}, "--workers must be a number of processes (1 or more) or auto"),
        (["--workers", "x"], {}, "not 'x'"),
        ([], {"RPCGATE_WORKERS": "1.5"}, "$RPCGATE_WORKERS must be a number of processes"),
        (["--workers", "2", "--listen", "127.0.0.1:0"], {}, "--workers 2 needs a fixed port"),
    ],
)
def test_a_bad_worker_count_is_refused_in_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [*_rpcgate(), "serve", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "RPCGATE_CONFIG": "", **env},
    )
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr


@pytest.mark.unit
@pytest.mark.parametrize(
    ("value", "cores", "workers"),
    [("1", 8, 1), ("4", 1, 4), (" 3 ", 8, 3), ("auto", 6, 6), ("AUTO", 1, 1), ("auto", 0, 1)],
)
def test_worker_counts(value: str, cores: int, workers: int) -> None:
    assert parse_workers(value, cores) == workers


@pytest.mark.unit
@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "", "²", "auto2"])
def test_worker_counts_refused(value: str) -> None:
    with pytest.raises(ValueError, match="1 or more"):
        parse_workers(value, 8)


@pytest.mark.unit
def test_restarts_back_off_from_half_a_second_to_thirty() -> None:
    delays = [restart_delay(n) for n in (1, 2, 3, 4, 7, 8, 1000)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 30.0, 30.0, RESTART_MAX_S]


@pytest.mark.unit
def test_a_stop_is_clean_when_each_worker_drained_or_died_of_the_stop_signal() -> None:
    assert [stopped_cleanly(code) for code in (0, -15, -2, 1, 2, -9)] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]
    assert [describe_exit(code) for code in (0, 2, -9, -15)] == [
        "exit 0",
        "exit 2",
        "SIGKILL",
        "SIGTERM",
    ]


ADMIN_TOKEN = "workers-admin-token-0123456789"


def _metric_total(url: str, family: str) -> tuple[float, set[str]]:
    """The sum of a family's samples in /metrics, and the workers they are labelled with."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total, workers = 0.0, set()
    for line in text.splitlines():
        if line.startswith(family + "{"):
            labels, value = line[len(family) + 1 :].rsplit("} ", 1)
            total += float(value)
            workers |= {
                part.split('"')[1] for part in labels.split(",") if part.startswith("worker=")
            }
    return total, workers


def _admin(url: str, method: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    return admin_drills(url, ADMIN_TOKEN, method, body)


def test_two_workers_report_as_one_process_and_a_drill_reaches_both(
    proxied_cluster: ProxiedClusterFactory,
    redis_server: RedisServer,
    gateway: Callable[..., Gateway],
) -> None:
    """Whichever worker a scrape reaches, /metrics has both workers' series (labelled
    `worker`): the requests counted add up to the calls made. A drill started through one
    worker drains the upstream in both, known by one id; /status.json shows both workers."""
    _, proxies = proxied_cluster(2, chain_id=CHAIN_ID, mined=2)
    config = _config(
        proxies,
        free_port(),
        cache={"redis_url": redis_server.url},
        admin={"token": ADMIN_TOKEN},
    )
    running = gateway(config, "--workers", "2")
    pids = _wait_all_listening(running, 2)
    calls = 40
    for i in range(calls):  # a new connection each: the kernel spreads them over both
        answer = _call(running.url, "eth_getBalance", [DEV_ADDRESSES[i % 2], hex(i % 3)])
        assert "result" in answer, answer
    for _ in range(6):  # each scrape may reach either worker: every one sees the whole
        total, workers = _metric_total(running.url, "rpcgate_requests_total")
        assert total == calls and workers == {"0", "1"}, (total, workers)
    # Both workers did serve some of the calls (else the test shows nothing).
    status, body = _get(running.url + "/status.json")
    assert status == 200 and {w["worker"] for w in body["workers"]} == {0, 1}

    status, started = _admin(running.url, "POST", {"upstream": "node0", "seconds": 30})
    assert status == 201 and started["workers"] == 2, started
    for _ in range(8):  # whichever worker answers, it runs the drill, by the same id
        status, listed = _admin(running.url, "GET")
        assert [d["id"] for d in listed["drills"]] == [started["id"]], listed
    proxies[0].reset_counts()
    for i in range(10):  # and routes around node0 in both: node1 answers every call
        reply = _call(running.url, "eth_getBalance", [DEV_ADDRESSES[i % 2], hex(i % 3)])
        assert "result" in reply
    assert "eth_getBalance" not in proxies[0].methods
    status, ended = _admin(running.url, "DELETE", {"id": started["id"]})
    assert status == 200, ended
    for _ in range(6):
        status, listed = _admin(running.url, "GET")
        assert listed["drills"] == [], listed
    assert len(set(pids.values())) == 2
