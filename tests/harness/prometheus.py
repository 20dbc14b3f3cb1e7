"""A throwaway Prometheus for one test: Debian's `prometheus` binary with a config of its
own scraping the given targets every second, its TSDB in a temporary directory, on a free
loopback port; killed after. Its HTTP API answers the queries a Grafana panel would send."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.harness.tools import free_port

PROMETHEUS_INSTALL_HINT = (
    "{tool} not found: install Prometheus (Debian: apt-get install prometheus, which brings "
    "prometheus and promtool); ./scripts/test installs it when it can"
)

SCRAPE_INTERVAL_S = 1


def prometheus_tool(tool: str = "prometheus") -> str:
    """Path of `prometheus` or `promtool` (the Debian package puts both in /usr/bin)."""
    found = shutil.which(tool) or (
        f"/usr/bin/{tool}" if os.path.exists(f"/usr/bin/{tool}") else None
    )
    if found is None:
        raise RuntimeError(PROMETHEUS_INSTALL_HINT.format(tool=tool))
    return found


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    """`promtool ARGS`, its output kept (the caller asserts on `returncode`)."""
    return subprocess.run(
        [prometheus_tool("promtool"), *args], capture_output=True, text=True, timeout=60
    )


class PrometheusServer:
    """Scrapes `targets` (host:port, path /metrics) as job `rpcgate` every second."""

    JOB = "rpcgate"

    def __init__(self, targets: Sequence[str]) -> None:
        self.port = free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="rpcgate-prometheus-")
        self.config_path = Path(self._dir.name) / "prometheus.yml"
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                "evaluation_interval": f"{SCRAPE_INTERVAL_S}s",
            },
            "scrape_configs": [
                {
                    "job_name": self.JOB,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": list(targets)}],
                }
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None
        self._log = Path(self._dir.name) / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        with self._log.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    prometheus_tool(),
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={Path(self._dir.name) / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self._log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus did not become ready on port {self.port}")

    def api(self, endpoint: str, **params: str) -> Any:
        """The `data` of one answer of the HTTP API (`/api/v1/ENDPOINT`); errors raise."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{endpoint}?{query}", timeout=10) as resp:
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise AssertionError(f"prometheus answered {body} to {endpoint} {params}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one item) `expr` gives now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def scrapes(self) -> int:
        """Successful scrapes of the gateway within the last five minutes."""
        found = self.query(f'sum_over_time(up{{job="{self.JOB}"}}[5m])')
        return int(float(found[0]["value"][1])) if found else 0

    def wait_for_scrapes(self, count: int, timeout: float = 20) -> None:
        """Returns once `count` more successful scrapes than now have been stored."""
        target = self.scrapes() + count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.scrapes() >= target:
                return
            time.sleep(0.2)
        targets = self.api("targets")["activeTargets"]
        raise AssertionError(f"fewer than {count} scrapes in {timeout} s; targets: {targets}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(5)
            self._process = None
        self._dir.cleanup()
