"""Locating the external tools the harness drives, and grabbing free local ports."""

from __future__ import annotations

import os
import platform
import random
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_VERSION = "1.7.1"
ANVIL_BIN_ENV = "ANVIL_BIN"

# npm ships anvil as one package per platform; the wrapper package @foundry-rs/anvil only
# pulls in the one matching the machine it was installed on.
_ANVIL_PLATFORM_PACKAGES = {
    "x86_64": "anvil-linux-amd64",
    "amd64": "anvil-linux-amd64",
    "aarch64": "anvil-linux-arm64",
    "arm64": "anvil-linux-arm64",
}

ANVIL_INSTALL_HINT = (
    f"run ./scripts/test (it installs @foundry-rs/anvil@{ANVIL_VERSION} into .tools/) or "
    f"`npm install --prefix .tools @foundry-rs/anvil@{ANVIL_VERSION}`"
)


def anvil_binary() -> str:
    """Path of the anvil executable: $ANVIL_BIN, else the copy npm installed into .tools/."""
    from_env = os.environ.get(ANVIL_BIN_ENV)
    if from_env:
        if not Path(from_env).is_file():
            raise RuntimeError(
                f"anvil not found at ${ANVIL_BIN_ENV}={from_env}: {ANVIL_INSTALL_HINT}"
            )
        return from_env

    machine = platform.machine().lower()
    package = _ANVIL_PLATFORM_PACKAGES.get(machine)
    if package is None:
        raise RuntimeError(
            f"anvil not found: no @foundry-rs package known for machine {machine!r}; "
            f"install anvil {ANVIL_VERSION} yourself and set ${ANVIL_BIN_ENV}"
        )
    installed = REPO_ROOT / ".tools" / "node_modules" / "@foundry-rs" / package / "bin" / "anvil"
    if not installed.is_file():
        raise RuntimeError(f"anvil not found: {ANVIL_INSTALL_HINT}")
    return str(installed)


def _ephemeral_low() -> int:
    """Where the kernel's ephemeral ports start (what `bind(0)` and outgoing connections
    get): 32768 unless the machine says otherwise."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_PORTS_LOW = 10000
_given_ports: set[int] = set()


def _port_slice() -> range:
    """This process's ports: below the ephemeral range, one slice per xdist worker. A port a
    test lets go of for a while (a proxy refusing connections, a Redis killed to be started
    again) is then taken meanwhile by no other worker and by no `bind(0)` anywhere."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    count = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    size = (min(_ephemeral_low(), 32768) - _PORTS_LOW) // count
    start = _PORTS_LOW + index * size
    return range(start, start + size)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, from this process's own slice
    (`_port_slice`), never handed out twice by it.

    The port is released before returning, so another process may grab it first; callers
    that spawn servers should retry on "address in use".
    """
    ports = _port_slice()
    for _ in range(1000):
        port = random.choice(ports)
        if port in _given_ports:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _given_ports.add(port)
        return port
    raise RuntimeError(f"no free port in {ports}")


def wait_for_http(url: str, timeout: float = 30.0) -> None:
    """Returns once something answers HTTP at `url` (any status), else raises."""
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # an HTTP error is an answer: the server is up
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered HTTP at {url} within {timeout} s")


def rpcgate_command() -> list[str]:
    """The installed console script when there is one (as `pip install .` gives)."""
    import shutil
    import sys

    script = shutil.which("rpcgate", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "rpcgate.cli"]


def process_memory(pid: int, field: str = "VmRSS") -> int:
    """A process's memory figure from /proc/PID/status, in bytes (VmRSS: now; VmHWM: peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def status_json(url: str, timeout: float = 10.0) -> dict[str, Any]:
    """A gateway's /status.json."""
    import json
    import urllib.request

    with urllib.request.urlopen(url + "/status.json", timeout=timeout) as resp:
        status: dict[str, Any] = json.loads(resp.read())
    return status


async def serve_posts(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> tuple[web.AppRunner, str]:
    """A small aiohttp server on a free loopback port answering `POST /` with `handler` (a
    test's upstream that records or spoils what it is sent): its runner (`cleanup()` stops
    it) and its URL."""
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


def admin_drills(
    url: str, token: str, method: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    """One call to a gateway's /admin/drills (status, JSON body), with its bearer token."""
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url + "/admin/drills",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def host_port(url: str) -> tuple[str, int]:
    """The host and port a URL names (to open a raw connection to a gateway)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port
