"""A real headless Chromium for tests, driven over the DevTools protocol.

Debian's `chromium` package (or `$CHROMIUM_BIN`), started with a fresh profile and without
any background networking (a test machine's network may be closed), one page, driven over
the DevTools WebSocket with aiohttp's client on a `BackgroundLoop`, so synchronous tests can
navigate, evaluate JavaScript, wait for what the page shows, and take screenshots. Every
request the page makes and every error it logs are recorded. `close()` kills the browser's
whole process group.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from tests.harness.loop import BackgroundLoop

T = TypeVar("T")

CHROMIUM_BIN_ENV = "CHROMIUM_BIN"
CHROMIUM_INSTALL_HINT = (
    "chromium not found: install it (Debian: apt-get install chromium) or set "
    f"${CHROMIUM_BIN_ENV}; ./scripts/test installs it when it can"
)
# Headless as root in a container, and quiet on a closed network: without the
# background-networking flags Chromium keeps dialling Google's services.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_STARTUP_TIMEOUT_SECONDS = 30.0
_COMMAND_TIMEOUT_SECONDS = 30.0
_PR_SET_PDEATHSIG = 1


def chromium_binary() -> str:
    from_env = os.environ.get(CHROMIUM_BIN_ENV)
    if from_env:
        if not Path(from_env).is_file():
            raise RuntimeError(
                f"${CHROMIUM_BIN_ENV}={from_env} is not a file; {CHROMIUM_INSTALL_HINT}"
            )
        return from_env
    found = shutil.which("chromium")
    if found is None:
        raise RuntimeError(CHROMIUM_INSTALL_HINT)
    return found


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file; raises if it is not one."""
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError(f"{path} is not a PNG file")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _die_with_parent() -> None:
    """Runs in the forked child: the browser gets SIGTERM when the test process dies."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class CdpError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page; every method blocks until done."""

    def __init__(self, loop: BackgroundLoop, *, width: int = 1440, height: int = 900) -> None:
        self.loop = loop
        self.width = width
        self.height = height
        self.requests: list[str] = []  # every URL the page asked for, in order
        self.errors: list[str] = []  # uncaught exceptions, console errors, logged errors
        self._dir = tempfile.TemporaryDirectory(prefix="rpcgate-chromium-")
        self._log_path = Path(self._dir.name) / "chromium.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._socket: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._event_waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}

    # -- lifecycle --

    def start(self) -> Browser:
        binary = chromium_binary()
        profile = Path(self._dir.name) / "profile"
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={profile}",
                    f"--window-size={self.width},{self.height}",
                    "about:blank",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,  # its own process group: close() kills it whole
                preexec_fn=_die_with_parent,
            )
        try:
            port = self._wait_for_devtools_port(profile / "DevToolsActivePort")
            self.loop.run(self._connect(port))
        except BaseException:
            self.close()
            raise
        return self

    def _wait_for_devtools_port(self, port_file: Path) -> int:
        assert self._process is not None
        deadline = time.monotonic() + _STARTUP_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"chromium exited with {self._process.returncode}: {self._log_tail()}"
                )
            with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
                return int(port_file.read_text().splitlines()[0])
            time.sleep(0.05)
        raise RuntimeError(
            f"chromium did not open its DevTools port in {_STARTUP_TIMEOUT_SECONDS} s: "
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        try:
            return self._log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"

    def close(self) -> None:
        if self._session is not None and self.loop.is_running:
            with contextlib.suppress(Exception):
                self.loop.run(self._disconnect(), timeout=5)
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        self._dir.cleanup()

    def __enter__(self) -> Browser:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the page --

    def navigate(self, url: str, timeout: float = 15.0) -> None:
        """Open `url` and return once its load event has fired."""
        self.loop.run(self._navigate(url, timeout), timeout=timeout + 5)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited), as JSON."""
        reply = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in reply:
            details = reply["exceptionDetails"]
            description = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"JavaScript failed: {description}\n{expression}")
        return reply["result"].get("value")

    def wait_until(
        self,
        condition: Callable[[], T | None],
        *,
        what: str,
        timeout: float = 15.0,
        interval: float = 0.1,
    ) -> T:
        """Polls `condition` until it returns something truthy, and returns that; on timeout,
        fails saying what was awaited, the last value and the text the page shows."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                shown = self.evaluate("document.body ? document.body.innerText : ''")
                raise AssertionError(
                    f"timed out after {timeout} s waiting for {what}; last value: {value!r}; "
                    f"the page shows:\n{shown}"
                )
            time.sleep(interval)

    def screenshot(self, path: Path) -> Path:
        """The whole page (not only the window) as a PNG file."""
        metrics = self.send("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        clip = {
            "x": 0,
            "y": 0,
            "width": max(self.width, size["width"]),
            "height": size["height"],
            "scale": 1,
        }
        shot = self.send(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True, "clip": clip},
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One DevTools protocol command, its result."""
        return self.loop.run(self._send(method, params), timeout=_COMMAND_TIMEOUT_SECONDS + 5)

    # -- the protocol, on the loop --

    async def _connect(self, port: int) -> None:
        self._session = aiohttp.ClientSession()
        async with self._session.get(f"http://127.0.0.1:{port}/json/list") as resp:
            targets = await resp.json()
        page = next(t for t in targets if t["type"] == "page")
        # max_msg_size=0: a full-page screenshot is one message of several megabytes.
        self._socket = await self._session.ws_connect(
            page["webSocketDebuggerUrl"], max_msg_size=0, autoping=True
        )
        self._reader = asyncio.create_task(self._read(), name="chromium-devtools-reader")
        for domain in ("Page", "Runtime", "Network", "Log"):
            await self._send(f"{domain}.enable")

    async def _disconnect(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._socket is not None:
            await self._socket.close()
        if self._session is not None:
            await self._session.close()
        self._session = self._socket = self._reader = None

    async def _send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        if self._socket is None:
            raise CdpError("the browser is not connected")
        message_id = next(self._ids)
        reply = asyncio.get_running_loop().create_future()
        self._pending[message_id] = reply
        await self._socket.send_json({"id": message_id, "method": method, "params": params or {}})
        try:
            message = await asyncio.wait_for(reply, _COMMAND_TIMEOUT_SECONDS)
        finally:
            self._pending.pop(message_id, None)
        if "error" in message:
            raise CdpError(f"{method} failed: {message['error']}")
        result: dict[str, Any] = message.get("result", {})
        return result

    async def _navigate(self, url: str, timeout: float) -> None:
        loaded = self._next_event("Page.loadEventFired")
        reply = await self._send("Page.navigate", {"url": url})
        if reply.get("errorText"):
            raise CdpError(f"navigating to {url} failed: {reply['errorText']}")
        await asyncio.wait_for(loaded, timeout)

    def _next_event(self, method: str) -> asyncio.Future[dict[str, Any]]:
        waiter = asyncio.get_running_loop().create_future()
        self._event_waiters.setdefault(method, []).append(waiter)
        return waiter

    async def _read(self) -> None:
        assert self._socket is not None
        async for frame in self._socket:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                break
            message = frame.json()
            if "id" in message:
                reply = self._pending.get(message["id"])
                if reply is not None and not reply.done():
                    reply.set_result(message)
            else:
                self._on_event(message["method"], message.get("params", {}))
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(CdpError("the browser closed the DevTools connection"))

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(
                "exception: "
                + (details.get("exception", {}).get("description") or details.get("text", ""))
            )
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            texts = [str(arg.get("value", arg.get("description", ""))) for arg in params["args"]]
            self.errors.append("console.error: " + " ".join(texts))
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}")
        for waiter in self._event_waiters.pop(method, []):
            if not waiter.done():
                waiter.set_result(params)
