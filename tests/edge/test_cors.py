"""Browser access: preflights with the headers dApps send, allowed origins; in a real browser."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rpcgate.config.settings import CorsConfig
from rpcgate.edge.cors import CorsPolicy
from tests.conftest import GatewayFactory
from tests.harness.browser import Browser
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.loop import BackgroundLoop


@pytest.mark.unit
def test_allowed_origins_decide_the_headers() -> None:
    open_policy = CorsPolicy(CorsConfig())
    assert open_policy.headers(None) == {}  # not a browser
    assert open_policy.headers("https://anything.example")["Access-Control-Allow-Origin"] == "*"
    listed = CorsPolicy(CorsConfig(allowed_origins=("https://app.example",)))
    assert listed.headers("https://app.example")["Access-Control-Allow-Origin"] == (
        "https://app.example"
    )
    assert listed.headers("https://app.example")["Vary"] == "Origin"
    assert listed.headers("https://evil.example") == {}
    allowed = {
        h.strip().lower()
        for h in open_policy.headers("x")["Access-Control-Allow-Headers"].split(",")
    }
    assert {"content-type", "cache-control", "authorization", "x-api-key"} <= allowed


# A dApp's call as a browser makes it: a JSON body, and `Cache-Control: no-cache` (rpcgate's
# documented way to skip its cache), which makes the browser send a preflight first.
FETCH = """
fetch(%s, {method: "POST", cache: "no-store",
           headers: {"Content-Type": "application/json", "Cache-Control": "no-cache"},
           body: JSON.stringify({jsonrpc: "2.0", id: 7, method: "eth_chainId"})})
  .then(async (r) => ({status: r.status, body: await r.json(),
                       cache: r.headers.get("X-Rpcgate-Cache"),
                       upstream: r.headers.get("X-Rpcgate-Upstream")}))
  .catch((e) => ({failed: String(e)}))
"""


def test_a_browser_page_calls_with_cache_control_across_origins(
    anvil_cluster: AnvilClusterFactory,
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
) -> None:
    urls = anvil_cluster(1, automine=True).urls
    page_host = start_gateway(urls)  # serves the page's origin: http://localhost:PORT
    page_origin = page_host.url.replace("127.0.0.1", "localhost")
    open_gateway = start_gateway(urls)
    listing = start_gateway(urls, cors={"allowed_origins": [page_origin]})
    elsewhere = start_gateway(urls, cors={"allowed_origins": ["https://app.example"]})

    def fetch_from_page(browser: Browser, url: str) -> dict[str, Any]:
        result: dict[str, Any] = browser.evaluate(FETCH % json.dumps(url + "/"))
        return result

    with Browser(background_loop) as browser:
        browser.navigate(page_origin + "/healthz")  # a page of another origin (a host name)
        for gateway in (open_gateway, listing):
            answer = fetch_from_page(browser, gateway.url)
            assert answer.get("status") == 200, answer
            assert answer["body"] == {"jsonrpc": "2.0", "id": 7, "result": hex(31337)}
            assert answer["cache"] in ("bypass", "miss")  # exposed headers are readable
            assert answer["upstream"] == "node0"
        refused = fetch_from_page(browser, elsewhere.url)
        assert "failed" in refused, refused  # the browser refuses a page not allowed
