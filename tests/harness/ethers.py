"""ethers v6, a real JavaScript client, subscribed over a WebSocket in a Node subprocess.

`EthersSubscriber` runs tests/js/ws_subscriber.mjs and collects the JSON lines it prints
(see the script for their kinds) on a reader thread, so a synchronous test can mine blocks,
then wait for what ethers saw. ethers comes from .tools/js/node_modules, where ./scripts/test
installs the exact version that tests/js/package.json pins.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

from tests.harness.tools import REPO_ROOT

T = TypeVar("T")

JS_DIR = REPO_ROOT / "tests" / "js"
SUBSCRIBER_SCRIPT = JS_DIR / "ws_subscriber.mjs"
JS_MODULES = REPO_ROOT / ".tools" / "js" / "node_modules"
NODE_BIN_ENV = "NODE_BIN"
ETHERS_VERSION: str = json.loads((JS_DIR / "package.json").read_text())["dependencies"]["ethers"]
ETHERS_INSTALL_HINT = (
    f"run ./scripts/test (it installs ethers {ETHERS_VERSION} from tests/js/package.json into "
    ".tools/js) or: mkdir -p .tools/js && cp tests/js/package*.json .tools/js/ && "
    "npm ci --prefix .tools/js"
)

_POLL_SECONDS = 0.02
_STOP_TIMEOUT_SECONDS = 5.0
_PR_SET_PDEATHSIG = 1


def node_binary() -> str:
    """Path of node: $NODE_BIN, else the one on PATH."""
    path = os.environ.get(NODE_BIN_ENV) or shutil.which("node")
    if not path or not Path(path).is_file():
        raise RuntimeError(
            "node not found: install Node.js 20+ (Debian: apt-get install nodejs npm) "
            f"or set ${NODE_BIN_ENV}"
        )
    return path


def installed_ethers_version() -> str:
    """The ethers version in .tools/js; raises with the install command when it is not the
    pinned one."""
    manifest = JS_MODULES / "ethers" / "package.json"
    if not manifest.is_file():
        raise RuntimeError(f"ethers not found in {JS_MODULES}: {ETHERS_INSTALL_HINT}")
    version: str = json.loads(manifest.read_text())["version"]
    if version != ETHERS_VERSION:
        raise RuntimeError(
            f"ethers {version} is in {JS_MODULES}, tests/js/package.json pins "
            f"{ETHERS_VERSION}: {ETHERS_INSTALL_HINT}"
        )
    return version


def _die_with_parent() -> None:
    """Runs in the forked child: node gets SIGTERM when the test process dies."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EthersSubscriber:
    """One ethers `WebSocketProvider` on `url`, subscribed to blocks and/or logs.

    `lines` holds every line the script printed, in order; `of_kind("log")` and the like
    filter them. The subprocess stops when `close()` closes its stdin (or on its own after
    `events` events or `seconds`).
    """

    def __init__(
        self,
        url: str,
        *,
        chain_id: int,
        blocks: bool = False,
        logs: dict[str, Any] | None = None,
        events: int | None = None,
        seconds: float = 60,
    ) -> None:
        installed_ethers_version()
        options: dict[str, Any] = {
            "url": url,
            "chainId": chain_id,
            "blocks": blocks,
            "seconds": seconds,
        }
        if logs is not None:
            options["logs"] = logs
        if events is not None:
            options["events"] = events
        self.lines: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as node
        self._process = subprocess.Popen(
            [node_binary(), str(SUBSCRIBER_SCRIPT), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env={**os.environ, "RPCGATE_JS_MODULES": str(JS_MODULES)},
            preexec_fn=_die_with_parent,
        )
        self._reader = threading.Thread(target=self._read, name="ethers-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            line = json.loads(raw)
            with self._lock:
                self.lines.append(line)

    # -- what ethers saw --

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self._lock:
            return [line for line in self.lines if line["kind"] == kind]

    def frames(self, subscription: str) -> list[Any]:
        """The `result` of each eth_subscription message for `subscription`, as it came."""
        return [f["result"] for f in self.of_kind("frame") if f["subscription"] == subscription]

    def wait(self, condition: Callable[[], T], what: str, timeout: float = 15) -> T:
        """Polls `condition` until it is truthy; fails saying what was awaited and what came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self._process.poll() is not None and not self._reader.is_alive():
                value = condition()  # it exited: what it printed is all there is
                if value:
                    return value
                break
            time.sleep(_POLL_SECONDS)
        raise AssertionError(f"ethers: timed out waiting for {what}; {self.describe()}")

    def wait_ready(self, timeout: float = 15) -> list[str]:
        """The subscription ids, once every eth_subscribe was answered."""
        ready = self.wait(lambda: self.of_kind("ready"), "its subscriptions", timeout)
        subscriptions: list[str] = ready[0]["subscriptions"]
        return subscriptions

    def describe(self) -> str:
        with self._lock:
            kinds: dict[str, int] = {}
            for line in self.lines:
                kinds[line["kind"]] = kinds.get(line["kind"], 0) + 1
            errors = [line["message"] for line in self.lines if line["kind"] == "error"]
            done = [line["reason"] for line in self.lines if line["kind"] == "done"]
        return f"lines by kind {kinds}, errors {errors}, done {done}, stderr: {self.stderr()!r}"

    def stderr(self) -> str:
        if self._stderr.closed:
            return "(closed)"
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    # -- lifecycle --

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            try:
                self._process.stdin.close()  # the script exits when its stdin ends
                self._process.wait(_STOP_TIMEOUT_SECONDS)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(_STOP_TIMEOUT_SECONDS)
        self._reader.join(_STOP_TIMEOUT_SECONDS)
        self._stderr.close()

    def __enter__(self) -> EthersSubscriber:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
