"""The live status page (`GET /status`), in a real headless Chromium against a live gateway
over anvil nodes: it shows what status.json says and follows it without a reload."""

from __future__ import annotations

import importlib.resources
import itertools
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.browser import Browser, png_size
from tests.harness.faultproxy import Fault
from tests.harness.loop import BackgroundLoop

ARTIFACTS_ENV = "RPCGATE_TEST_ARTIFACTS"
KEY = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"  # a provider key in an upstream's URL path

# What the page shows, read the way an operator reads it: the text of its cells.
PAGE_SHOWS = r"""(() => {
  const chain = document.querySelector('[data-chain="devnet"]');
  if (!chain) return null;
  const text = (root, field) => {
    const node = root.querySelector(`[data-field="${field}"]`);
    return node ? node.textContent.trim() : null;
  };
  const upstreams = {};
  for (const row of chain.querySelectorAll("tr[data-upstream]")) {
    const fields = ["state", "reason", "lag", "latency", "error-rate", "domain", "kind",
                    "cooldown", "url"];
    upstreams[row.dataset.upstream] = Object.fromEntries(fields.map((f) => [f, text(row, f)]));
    upstreams[row.dataset.upstream].visible = row.checkVisibility();
  }
  const banner = document.querySelector('[data-field="refresh-error"]');
  return {
    head: text(chain, "head"), safe: text(chain, "safe"), finalized: text(chain, "finalized"),
    hitRate: text(chain, "hit-rate"), upstreams,
    refreshError: banner.hidden ? null : banner.textContent,
    refreshes: window.rpcgateStatusPage.refreshes,
  };
})()"""


def page_shows(browser: Browser) -> dict[str, Any]:
    shown: dict[str, Any] | None = browser.evaluate(PAGE_SHOWS)
    return shown or {"upstreams": {}, "head": None, "refreshError": None}


def wait_for_page(
    browser: Browser, shows: Callable[[dict[str, Any]], Any], what: str
) -> dict[str, Any]:
    """What the page shows, once `shows` holds for it (it refreshes by itself)."""

    def check() -> dict[str, Any] | None:
        shown = page_shows(browser)
        return shown if shows(shown) else None

    return browser.wait_until(check, what=what)


def save_artifact(screenshot: Path) -> None:
    """Screenshots go to tmp_path; also to $RPCGATE_TEST_ARTIFACTS when it names a folder."""
    width, height = png_size(screenshot)
    assert width >= 800 and height >= 300, (width, height)
    folder = os.environ.get(ARTIFACTS_ENV)
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(folder) / screenshot.name)


async def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def start_devnet(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> tuple[Any, list[Any], RunningGateway]:
    cluster, proxies = proxied_cluster(3, mined=70)
    gateway = start_gateway(
        [],
        upstreams=[
            {"name": "node0", "url": f"{proxies[0].url}/v3/{KEY}", "domain": "aws"},
            {"name": "node1", "url": proxies[1].url, "domain": "gcp"},
            {"name": "node2", "url": proxies[2].url, "kind": "decentralized"},
        ],
        head_poll_interval=0.2,
    )
    return cluster, proxies, gateway


def test_status_page_is_one_html_file_from_the_package(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, _, gateway = start_devnet(proxied_cluster, start_gateway)
    status, headers, body = gateway.loop.run(_get(gateway.url + "/status"))
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert "connect-src 'self'" in headers["Content-Security-Policy"]
    assert body == importlib.resources.files("rpcgate.ops").joinpath("status.html").read_bytes()
    assert b"http://" not in body and b"https://" not in body  # nothing from the internet


def test_status_page_follows_an_upstream_going_down_without_a_reload(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    cluster, proxies, gateway = start_devnet(proxied_cluster, start_gateway)
    # The same finalized block twice: one miss, one hit.
    block = gateway.result("eth_getBlockByNumber", ["0x5", False])
    assert gateway.result("eth_getBlockByNumber", ["0x5", False]) == block
    counters = gateway.gateway.chains[0].cache_counters
    assert (counters.hits, counters.misses) == (1, 1)

    with Browser(background_loop) as browser:
        browser.navigate(gateway.url + "/status")
        # A reload would wipe this; the page must stay the very same document throughout.
        marker = browser.evaluate("window.testMarker = Math.random()")

        head = cluster[0].block_number()
        shown = wait_for_page(
            browser,
            lambda s: (
                s["head"] == str(head)
                and s["upstreams"]
                and all(u["state"] == "ok" for u in s["upstreams"].values())
            ),
            f"all three upstreams ok at head {head}",
        )
        assert sorted(shown["upstreams"]) == ["node0", "node1", "node2"]
        assert all(u["visible"] for u in shown["upstreams"].values())
        assert (shown["safe"], shown["finalized"]) == ("38", "6")  # anvil: head - 32, - 64
        assert shown["hitRate"] == "50.0 %"
        node0, node2 = shown["upstreams"]["node0"], shown["upstreams"]["node2"]
        assert node0["url"].endswith("/v3/***") and node0["domain"] == "aws"
        assert (node2["kind"], node0["kind"]) == ("decentralized", "centralized")
        assert node0["lag"] == "0"
        # Whichever upstream answered the cache miss has a latency now.
        assert any(u["latency"].endswith(" ms") for u in shown["upstreams"].values())
        assert node0["cooldown"] == "no"
        assert shown["refreshError"] is None
        save_artifact(browser.screenshot(tmp_path / "status-page-all-ok.png"))

        proxies[1].set_fault(Fault.REFUSE)
        shown = wait_for_page(
            browser, lambda s: s["upstreams"]["node1"]["state"] == "down", "node1 shown down"
        )
        down = shown["upstreams"]["node1"]
        assert down["reason"] and down["reason"] != "\u2014", down
        assert float(down["error-rate"].removesuffix(" %")) > 0, down
        assert shown["upstreams"]["node0"]["state"] == "ok"
        wait_for_page(
            browser,
            lambda s: (
                "connection refused" in s["upstreams"]["node1"]["cooldown"]
                and " s left" in s["upstreams"]["node1"]["cooldown"]
            ),
            "node1 cooling down after refused connections, with the reason",
        )

        # Two of three still agree, so the head moves on, and the page follows it.
        cluster.mine_all()
        shown = wait_for_page(
            browser, lambda s: s["head"] == str(head + 1), f"the consensus head at {head + 1}"
        )
        assert shown["upstreams"]["node1"]["state"] == "down"
        save_artifact(browser.screenshot(tmp_path / "status-page-node1-down.png"))

        assert browser.evaluate("window.testMarker") == marker
        assert browser.evaluate("performance.getEntriesByType('navigation').length") == 1
        assert shown["refreshes"] >= 3
        assert browser.errors == []
        # Only the gateway's origin: the page and status.json, nothing from anywhere else.
        origin = gateway.url + "/"
        loaded = browser.evaluate("performance.getEntriesByType('resource').map((e) => e.name)")
        assert loaded and all(url.startswith(origin) for url in loaded), loaded
        assert all(url.startswith(origin) for url in browser.requests), browser.requests
        assert set(browser.requests) == {origin + "status", origin + "status.json"}
        html = browser.evaluate("document.documentElement.outerHTML")
        assert KEY not in html

        # status.json out of reach: the page says so, keeps the last data, then recovers.
        browser.send("Network.setBlockedURLs", {"urls": ["*/status.json"]})
        shown = wait_for_page(browser, lambda s: s["refreshError"], "the refresh-failed banner")
        assert shown["refreshError"].startswith("Refresh failed"), shown["refreshError"]
        assert shown["head"] == str(head + 1)
        save_artifact(browser.screenshot(tmp_path / "status-page-refresh-failed.png"))
        browser.send("Network.setBlockedURLs", {"urls": []})
        wait_for_page(
            browser,
            lambda s: s["refreshError"] is None,
            "the banner gone once status.json answers again",
        )
        assert browser.evaluate("window.testMarker") == marker


# How the page lays out at the browser's width: whether anything is cut off at the right,
# and what each upstream's row and charts show.
PAGE_LAYOUT = r"""(() => {
  const width = window.innerWidth;
  const cut = [];
  const upstreams = {};
  for (const wrap of document.querySelectorAll(".table-wrap")) {
    if (wrap.scrollWidth > wrap.clientWidth + 1) {
      cut.push(`table scrolls: ${wrap.scrollWidth} > ${wrap.clientWidth}`);
    }
  }
  for (const row of document.querySelectorAll("tr[data-upstream], tr[data-charts-for]")) {
    const name = row.dataset.upstream || row.dataset.chartsFor;
    const wrap = row.closest(".table-wrap").getBoundingClientRect();
    for (const cell of row.querySelectorAll(":scope > td")) {
      const box = cell.getBoundingClientRect();
      if (box.width < 1 || box.height < 1 || box.left < -0.5 || box.right > width + 0.5
          || box.left < wrap.left - 0.5 || box.right > wrap.right + 0.5) {
        cut.push(`${name} ${cell.dataset.field}: ${box.left}..${box.right} of ${width}`);
      }
    }
    const shown = upstreams[name] = upstreams[name] || {};
    if (row.dataset.upstream) {
      shown.state = row.querySelector('[data-field="state"]').textContent.trim();
      shown.cooldown = row.querySelector('[data-field="cooldown"]').textContent.trim();
    } else {
      shown.charts = {};
      for (const svg of row.querySelectorAll("svg[data-chart]")) {
        const box = svg.getBoundingClientRect();
        shown.charts[svg.dataset.chart] = {
          points: Number(svg.dataset.points),
          drawn: svg.querySelector("path").getAttribute("d") || "",
          width: box.width, height: box.height,
        };
      }
    }
  }
  return {
    width, scrollWidth: document.documentElement.scrollWidth, cut, upstreams,
    refreshes: window.rpcgateStatusPage.refreshes,
  };
})()"""

# Also kept at a stable path for a person to look at: /tmp/rpcgate-status-{width}.png
SCREENSHOTS = Path(tempfile.gettempdir())


def test_status_page_fits_900_and_1400_px_with_charts_and_a_cooling_upstream(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
    tmp_path: Path,
) -> None:
    _, proxies, gateway = start_devnet(proxied_cluster, start_gateway)
    addresses = (f"0x{n:040x}" for n in itertools.count(1))  # a new one: no cache hit
    for _ in range(30):
        gateway.result("eth_getBalance", [next(addresses), "latest"])
    # node1's head polls stay fine, but it rejects the key on balance calls: its head is ok,
    # and routing leaves it out for minutes (an AUTH cooldown).
    proxies[1].set_fault(
        Fault.RPC_ERROR, error_message="invalid project id", methods=["eth_getBalance"]
    )

    def node1_cooling() -> bool:
        gateway.result("eth_getBalance", [next(addresses), "latest"])
        status = gateway.loop.run(_get(gateway.url + "/status.json"))[2]
        node1 = next(
            u for u in json.loads(status)["chains"][0]["upstreams"] if u["name"] == "node1"
        )
        return node1["rotation"] == "cooling_down" and node1["state"] == "ok"

    wait_until(node1_cooling, "node1 cooling down after rejecting the key, its head ok")
    shots = []
    # 1210: the narrowest width that shows a table; 900: one card per upstream.
    for width in (1400, 1210, 900):
        with Browser(background_loop, width=width, height=1000) as browser:
            browser.navigate(gateway.url + "/status")

            def laid_out() -> dict[str, Any] | None:
                layout: dict[str, Any] = browser.evaluate(PAGE_LAYOUT)
                upstreams = layout["upstreams"]
                ready = (
                    layout["refreshes"] >= 2
                    and sorted(upstreams) == ["node0", "node1", "node2"]
                    and upstreams["node1"]["state"] == "cooling down"
                    and all(u["charts"]["lag"]["points"] > 0 for u in upstreams.values())
                )
                return layout if ready else None

            layout = browser.wait_until(laid_out, what=f"the page laid out at {width} px")
            assert layout["width"] == width
            assert layout["scrollWidth"] <= width, layout  # no sideways scrolling
            assert layout["cut"] == [], layout["cut"]  # every cell of every row in view
            upstreams = layout["upstreams"]
            # Cooling down is not "ok", though its head is, and the cooldown says why.
            assert "invalid project id" in upstreams["node1"]["cooldown"], upstreams["node1"]
            assert "s left" in upstreams["node1"]["cooldown"]
            assert {upstreams[n]["state"] for n in ("node0", "node2")} == {"ok"}
            for name, shown in upstreams.items():
                assert set(shown["charts"]) == {"calls", "latency", "errors", "lag"}, name
                for chart in shown["charts"].values():
                    assert chart["width"] >= 100 and chart["height"] >= 20, (name, chart)
            # 30 balance calls and more went somewhere: calls and latencies are drawn.
            served = [u["charts"] for u in upstreams.values() if u["charts"]["calls"]["points"]]
            assert served and all(c["latency"]["points"] and c["latency"]["drawn"] for c in served)
            assert all(c["calls"]["drawn"].startswith("M") for c in served)
            # node1's rejections are its errors.
            assert upstreams["node1"]["charts"]["errors"]["points"] >= 1
            assert upstreams["node1"]["charts"]["errors"]["drawn"]
            assert upstreams["node0"]["charts"]["errors"]["points"] == 0
            assert browser.errors == []
            shot = browser.screenshot(tmp_path / f"rpcgate-status-{width}.png")
            save_artifact(shot)
            shutil.copy(shot, SCREENSHOTS / shot.name)
            shots.append(SCREENSHOTS / shot.name)
    assert [png_size(shot)[0] for shot in shots] == [1400, 1210, 900]


def test_status_json_carries_each_upstreams_history(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, _, gateway = start_devnet(proxied_cluster, start_gateway)
    gateway.result("eth_getBalance", ["0x" + "11" * 20, "latest"])
    status = json.loads(gateway.loop.run(_get(gateway.url + "/status.json"))[2])
    histories = [u["history"] for u in status["chains"][0]["upstreams"]]
    assert all(h is not None and len(h["calls"]) == 90 for h in histories), histories
    assert sum(sum(h["calls"]) for h in histories) == 1


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
