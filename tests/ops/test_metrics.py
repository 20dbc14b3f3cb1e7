"""`GET /metrics` against a real gateway over anvil nodes behind fault proxies: every family
with sensible values after a mix of calls, bounded labels, no secret, and a Grafana
dashboard that asks only for metrics the gateway exposes."""

from __future__ import annotations

import json
import random
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from rpcgate import __version__
from rpcgate.consensus.heads import State
from rpcgate.edge.http_server import Gateway
from rpcgate.ops.call_metrics import OTHER_METHOD
from rpcgate.rpc.methods import METHODS
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway, gateway_config
from tests.harness.anvil import DEV_ADDRESSES
from tests.harness.faultproxy import Fault
from tests.harness.redis_server import RedisServer

CHAIN_ID = 31337
ADDR = DEV_ADDRESSES[0]
REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "deploy" / "grafana" / "rpcgate.json"
HELM_DASHBOARD = REPO / "helm" / "rpcgate" / "dashboards" / "rpcgate.json"


class Scrape:
    """One scrape of /metrics, parsed by prometheus_client's own parser."""

    def __init__(self, text: str, content_type: str) -> None:
        self.text = text
        self.content_type = content_type
        self.families = {f.name: f for f in text_string_to_metric_families(text)}

    def samples(self, name: str, **labels: str) -> list[Sample]:
        return [
            s
            for family in self.families.values()
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        """The value of the one sample with these labels (0 when there is none)."""
        found = self.samples(name, **labels)
        assert len(found) <= 1, found
        return found[0].value if found else 0.0

    def total(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.samples(name, **labels))

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples(name)}


def scrape(gateway: RunningGateway) -> Scrape:
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=10) as resp:
        assert resp.status == 200
        return Scrape(resp.read().decode(), resp.headers["Content-Type"])


@pytest.fixture
def devnet(proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory):  # type: ignore[no-untyped-def]
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=5)
    # Polls only when the test says so (gateway.sync()), so states change on cue.
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60)
    return cluster, proxies, gateway


def test_metrics_are_served_in_the_prometheus_text_format(devnet) -> None:  # type: ignore[no-untyped-def]
    _, _, gateway = devnet
    result = scrape(gateway)
    assert result.content_type.startswith("text/plain; version=")
    assert result.value("rpcgate_build_info", version=__version__) == 1
    # POST /metrics is still a JSON-RPC path (a chain named so), not the metrics.
    assert gateway.rpc("eth_chainId", path="/metrics").status == 404


def test_a_mix_of_calls_shows_in_every_family(devnet) -> None:  # type: ignore[no-untyped-def]
    cluster, proxies, gateway = devnet
    head = cluster[0].block_number()
    # Cache: a miss then a hit; the consensus head; a batch with a hit, a miss and an
    # invalid item; an error answer (the caller's mistake, from an upstream).
    assert gateway.rpc("eth_getBalance", [ADDR, "latest"]).headers["X-Rpcgate-Cache"] == "miss"
    assert gateway.rpc("eth_getBalance", [ADDR, "latest"]).headers["X-Rpcgate-Cache"] == "hit"
    assert gateway.result("eth_blockNumber") == hex(head)
    gateway.rpc("eth_chainId")
    batch = gateway.post(
        [
            {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
            {"jsonrpc": "2.0", "id": 2, "method": "eth_gasPrice"},
            {"jsonrpc": "2.0", "id": 3},
        ]
    )
    assert batch.headers["X-Rpcgate-Cache"] == "hit,miss,bypass"
    assert "error" in gateway.rpc("eth_getBalance", ["not an address", "latest"]).json()
    # node0 answers 503 to everything: calls move on, then polls mark it down and its
    # failures in a row open its breaker.
    proxies[0].set_fault(Fault.HTTP_5XX)
    for _ in range(6):
        assert "result" in gateway.rpc("eth_getBalance", [ADDR, "latest"], fresh=True).json()
    for _ in range(3):
        gateway.sync()

    result = scrape(gateway)
    chain = {"chain": "devnet"}

    # Client calls by method and outcome, each with a latency histogram.
    def requests(method: str, outcome: str) -> float:
        return result.value("rpcgate_requests_total", **chain, method=method, outcome=outcome)

    assert requests("eth_getBalance", "upstream") == 7  # the miss and the six fresh calls
    assert requests("eth_getBalance", "local") == 1
    assert requests("eth_getBalance", "error") == 1
    assert requests("eth_blockNumber", "local") == 1
    assert requests("eth_chainId", "upstream") == 1
    assert requests("eth_chainId", "local") == 1
    assert requests("eth_gasPrice", "upstream") == 1
    assert requests(OTHER_METHOD, "error") == 1  # the invalid batch item
    assert result.total("rpcgate_requests_total") == 14
    for sample in result.samples("rpcgate_requests_total"):
        labels = sample.labels
        buckets = result.samples("rpcgate_request_duration_seconds_bucket", **labels)
        counts = [b.value for b in sorted(buckets, key=lambda b: float(b.labels["le"]))]
        assert counts == sorted(counts), "buckets are cumulative"
        assert counts[-1] == sample.value
        assert result.value("rpcgate_request_duration_seconds_count", **labels) == sample.value
        assert 0 < result.value("rpcgate_request_duration_seconds_sum", **labels) < 10
    hit = {**chain, "method": "eth_getBalance", "outcome": "local"}
    assert result.value("rpcgate_request_duration_seconds_bucket", **hit, le="0.1") == 1
    assert result.value("rpcgate_requests_in_flight", **chain) == 0

    # Upstream attempts by class, with latency: every result from an upstream was one
    # attempt that succeeded; the bad address a client error; node0's 503s transient.
    answered = result.total("rpcgate_upstream_attempts_total", error_class="none")
    assert answered == 7 + 1 + 1  # eth_getBalance, eth_chainId, eth_gasPrice
    node0_failed = result.value(
        "rpcgate_upstream_attempts_total", **chain, upstream="node0", error_class="transient"
    )
    assert node0_failed >= 1
    assert result.total("rpcgate_upstream_attempts_total", error_class="client") == 1
    assert (
        result.value(
            "rpcgate_upstream_attempt_duration_seconds_count",
            **chain,
            upstream="node0",
            error_class="transient",
        )
        == node0_failed
    )
    assert result.label_values("rpcgate_upstream_attempts_total", "upstream") <= {
        "node0",
        "node1",
        "node2",
    }

    # Upstream head, lag, one state gauge per state, breaker.
    for name in ("node1", "node2"):
        upstream = {**chain, "upstream": name}
        assert result.value("rpcgate_upstream_head_block", **upstream) == head
        assert result.value("rpcgate_upstream_lag_blocks", **upstream) == 0
        assert result.value("rpcgate_upstream_state", **upstream, state="ok") == 1
        assert result.value("rpcgate_upstream_breaker_open", **upstream) == 0
    node0 = {**chain, "upstream": "node0"}
    assert result.value("rpcgate_upstream_state", **node0, state="down") == 1
    assert result.value("rpcgate_upstream_breaker_open", **node0) == 1
    assert result.value("rpcgate_upstream_cooldown_seconds", **node0) > 0
    assert result.value("rpcgate_upstream_consecutive_failures", **node0) >= 3
    for name in ("node0", "node1", "node2"):
        states = result.samples("rpcgate_upstream_state", **chain, upstream=name)
        assert {s.labels["state"] for s in states} == {str(s) for s in State}
        assert sum(s.value for s in states) == 1

    # Consensus head, safe, finalized.
    assert result.value("rpcgate_consensus_block", **chain, tag="head") == head
    for tag in ("safe", "finalized"):
        for sample in result.samples("rpcgate_consensus_block", **chain, tag=tag):
            assert 0 <= sample.value <= head
    assert result.value("rpcgate_consensus_voters", **chain) == 2

    # Cache counters are the ones /status.json shows; memory; no Redis configured.
    counters = gateway.gateway.chains[0].cache_counters
    assert counters.hits == 2 and counters.misses >= 3
    for field, name in [
        ("hits", "rpcgate_cache_hits_total"),
        ("misses", "rpcgate_cache_misses_total"),
        ("bypass", "rpcgate_cache_bypasses_total"),
        ("coalesced", "rpcgate_cache_coalesced_total"),
        ("stores", "rpcgate_cache_stores_total"),
        ("redis_hits", "rpcgate_cache_redis_hits_total"),
        ("stale_dropped", "rpcgate_cache_stale_dropped_total"),
    ]:
        assert result.value(name, **chain) == getattr(counters, field), name
    memory = gateway.gateway.cache.memory
    assert result.value("rpcgate_cache_memory_bytes") == memory.bytes > 0
    assert result.value("rpcgate_cache_memory_budget_bytes") == memory.max_bytes
    assert result.value("rpcgate_cache_memory_entries") == len(memory)
    assert result.families["rpcgate_cache_redis_up"].samples == []


def test_callers_sharing_one_upstream_call_count_its_attempts_once(devnet) -> None:  # type: ignore[no-untyped-def]
    _, proxies, gateway = devnet
    for proxy in proxies:
        proxy.set_fault(Fault.LATENCY, delay=0.3)
    same = {"jsonrpc": "2.0", "method": "eth_getBalance", "params": [ADDR, "0x1"]}
    gateway.post([{**same, "id": i} for i in range(5)])
    result = scrape(gateway)
    assert result.value("rpcgate_cache_coalesced_total", chain="devnet") == 4
    assert result.total("rpcgate_upstream_attempts_total") == 1
    assert result.total("rpcgate_requests_total", method="eth_getBalance") == 5


def test_unknown_methods_fold_into_other_and_labels_stay_bounded(devnet) -> None:  # type: ignore[no-untyped-def]
    _, _, gateway = devnet
    gateway.rpc("eth_chainId")
    before = scrape(gateway)
    names = [f"x{random.getrandbits(64):016x}_{i}" for i in range(200)]
    for start in range(0, len(names), 100):
        batch = [
            {"jsonrpc": "2.0", "id": i, "method": name}
            for i, name in enumerate(names[start : start + 100])
        ]
        reply = gateway.post(batch).json()
        assert all("error" in item for item in reply)
    after = scrape(gateway)
    assert after.label_values("rpcgate_requests_total", "method") <= {*METHODS, OTHER_METHOD}
    assert after.value(
        "rpcgate_requests_total", chain="devnet", method=OTHER_METHOD, outcome="error"
    ) == len(names)
    # One new series for all 200 names, however many names come.
    new = len(after.samples("rpcgate_requests_total")) - len(
        before.samples("rpcgate_requests_total")
    )
    assert new == 1
    assert after.label_values("rpcgate_upstream_attempts_total", "error_class") <= {
        "none",
        "unsupported",
        "client",
    }
    assert not any(name in after.text for name in names)


def test_no_secret_reaches_the_metrics(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    path_key = "pAtHkEy0123456789abcdefXYZ"
    query_key = "qUeRyKeY9876543210zyxw"
    header_key = "hEaDeRtOkEn5555aaaa"
    upstreams = [
        # No name: it defaults to the host (and port, the host being shared), never the URL.
        {"url": f"{proxies[0].url}/v3/{path_key}?apikey={query_key}"},
        {"name": "keyed", "url": f"{proxies[1].url}/{path_key}", "headers": {"X-Key": header_key}},
        {"name": "plain", "url": f"{proxies[2].url}/?token={query_key}"},
    ]
    gateway = start_gateway([], upstreams=upstreams, head_poll_interval=60)
    proxies[1].set_fault(Fault.HTTP_5XX)
    for _ in range(4):
        gateway.rpc("eth_getBalance", [ADDR, "latest"], fresh=True)
    result = scrape(gateway)
    assert result.total("rpcgate_upstream_attempts_total") >= 4
    for secret in (path_key, query_key, header_key):
        assert secret not in result.text
    assert result.label_values("rpcgate_upstream_state", "upstream") == {
        proxies[0].url.removeprefix("http://").rstrip("/"),
        "keyed",
        "plain",
    }
    assert "http" not in " ".join(
        v for s in result.samples("rpcgate_upstream_state") for v in s.labels.values()
    )


def test_redis_up_follows_redis(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory, redis_server: RedisServer
) -> None:
    _, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=5)
    gateway = start_gateway(
        [p.url for p in proxies], head_poll_interval=60, cache={"redis_url": redis_server.url}
    )
    gateway.rpc("eth_getBalance", [ADDR, "latest"])
    assert scrape(gateway).value("rpcgate_cache_redis_up") == 1
    redis_server.kill()
    gateway.rpc("eth_getBalance", [ADDR, "0x1"])  # a miss asks Redis, which is gone
    assert scrape(gateway).value("rpcgate_cache_redis_up") == 0


def test_each_gateway_keeps_its_own_metrics(devnet, start_gateway: GatewayFactory) -> None:  # type: ignore[no-untyped-def]
    _, proxies, first = devnet
    second = start_gateway([p.url for p in proxies], head_poll_interval=60)
    for _ in range(3):
        first.rpc("eth_chainId")
    assert scrape(first).total("rpcgate_requests_total") == 3
    assert scrape(second).total("rpcgate_requests_total") == 0


# -- the Grafana dashboard --


def _exposed_names() -> set[str]:
    """Every sample name /metrics can show: families without samples still have a TYPE."""
    gateway = Gateway(gateway_config(["http://127.0.0.1:1"]))  # not started: no I/O needed
    names = set()
    for line in gateway.metrics.exposition().decode().splitlines():
        match = re.match(r"# TYPE (\S+) (\S+)", line)
        if match:
            name, kind = match.groups()
            names.add(name)
            if kind == "histogram":
                names |= {name + "_bucket", name + "_count", name + "_sum"}
    return names


def _walk(value: Any, key: str) -> list[Any]:
    if isinstance(value, dict):
        found = [value[key]] if key in value else []
        return found + [x for v in value.values() for x in _walk(v, key)]
    if isinstance(value, list):
        return [x for v in value for x in _walk(v, key)]
    return []


@pytest.mark.unit
def test_grafana_dashboard_asks_only_for_exposed_metrics() -> None:
    assert DASHBOARD.read_bytes() == HELM_DASHBOARD.read_bytes(), "the Helm chart's copy"
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = _exposed_names()
    expressions = _walk(dashboard["panels"], "expr")
    expressions += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    assert len(expressions) >= 20
    used = {name for expr in expressions for name in re.findall(r"\brpcgate_\w+", expr)}
    assert used <= exposed, used - exposed
    # And every family the gateway exposes is on some panel.
    families = {n for n in exposed if not n.endswith(("_bucket", "_count", "_sum"))}
    shown = {f for f in families if any(u == f or u.startswith(f + "_") for u in used)}
    assert shown == families, families - shown
    # The data source is a variable, never the UID of somebody's Grafana.
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    datasources = _walk(dashboard, "datasource")
    assert len(datasources) >= len(expressions)
    for datasource in datasources:
        assert datasource == {"type": "prometheus", "uid": "${datasource}"}, datasource


# -- the metrics page of the documentation --

METRICS_PAGE = REPO / "docs" / "metrics.md"


def _documented_families() -> set[str]:
    """The families docs/metrics.md's table names, its shorthands spelled out:
    `rpcgate_cache_{hits,misses}_total`, and `_lag_blocks` after `rpcgate_upstream_head_block`
    for `rpcgate_upstream_lag_blocks` (the prefix is the first name's `rpcgate_<area>`)."""
    names = set()
    for row in METRICS_PAGE.read_text().splitlines():
        if not row.startswith("| `"):
            continue
        cell = row.split(" | ")[0]
        written = re.findall(r"`([^`]+)`", cell)
        area = "_".join(written[0].split("_")[:2])
        for name in written:
            full = area + name if name.startswith("_") else name
            braces = re.fullmatch(r"(.*)\{(.*)\}(.*)", full)
            parts = braces[2].split(",") if braces else [""]
            names |= {braces[1] + p + braces[3] if braces else full for p in parts}
    return names


@pytest.mark.unit
def test_the_metrics_page_lists_every_family_the_gateway_exposes() -> None:
    exposed = {n for n in _exposed_names() if not n.endswith(("_bucket", "_count", "_sum"))}
    documented = _documented_families()
    assert exposed - documented == set(), "families missing from docs/metrics.md"
    assert documented - exposed == set(), "docs/metrics.md names families that are not exposed"


def test_the_status_the_metrics_and_a_trace_tell_one_standing(devnet) -> None:  # type: ignore[no-untyped-def]
    """One summary of each upstream (consensus/standing.py): /status.json, /metrics and the
    routing trace read the same numbers."""
    _, proxies, gateway = devnet
    proxies[1].set_fault(Fault.LATENCY, delay=0.05)
    for i in range(12):
        gateway.rpc("eth_getBalance", [f"0x{i + 1:040x}", "latest"], fresh=True)
    call = {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [ADDR, "latest"]}
    traced = gateway.post(call, headers={"X-Rpcgate-Trace": "1", "Cache-Control": "no-cache"})
    trace = traced.json()["trace"]
    with urllib.request.urlopen(gateway.url + "/status.json", timeout=10) as resp:
        status = json.loads(resp.read())
    result = scrape(gateway)
    for entry in status["chains"][0]["upstreams"]:
        name = entry["name"]
        metric = result.value("rpcgate_upstream_score", chain="devnet", upstream=name)
        assert entry["score"]["value"] == round(metric * 1000, 3), name
        if name in {a["upstream"] for a in trace["attempts"]}:
            continue  # the traced call's own attempt moved it after the trace was taken
        considered = next(c for c in trace["considered"] if c["upstream"] == name)
        assert considered["latency_ms"] == entry["latency_ms"], name
        assert considered["error_rate"] == entry["error_rate"], name
        assert considered["score"] == entry["score"]["value"], name
    slow = next(e for e in status["chains"][0]["upstreams"] if e["name"] == "node1")
    assert slow["latency_ms"] >= 50  # the fault shows in the one summary
