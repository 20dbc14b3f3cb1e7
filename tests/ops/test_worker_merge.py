"""`serve --workers N` looks like one process: the workers' expositions merged (pure), and a
drill passed on between workers keeps its id."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from rpcgate.ops.admin import Problem, ServedChain, parse_drill
from rpcgate.ops.metrics import merged_exposition

pytestmark = pytest.mark.unit

WORKER = """# HELP rpcgate_requests_total JSON-RPC calls answered
# TYPE rpcgate_requests_total counter
rpcgate_requests_total{{chain="devnet",method="eth_call"}} {calls}
# HELP rpcgate_request_duration_seconds Call latency
# TYPE rpcgate_request_duration_seconds histogram
rpcgate_request_duration_seconds_bucket{{chain="devnet",le="0.1"}} {calls}
rpcgate_request_duration_seconds_bucket{{chain="devnet",le="+Inf"}} {calls}
rpcgate_request_duration_seconds_sum{{chain="devnet"}} 0.5
rpcgate_request_duration_seconds_count{{chain="devnet"}} {calls}
# HELP rpcgate_upstream_up 1 while the upstream serves
# TYPE rpcgate_upstream_up gauge
rpcgate_upstream_up{{upstream="node0"}} 1.0
"""


def test_every_workers_series_is_kept_with_a_worker_label_and_totals_add_up() -> None:
    merged = merged_exposition(
        [(1, WORKER.format(calls=7).encode()), (0, WORKER.format(calls=5).encode())]
    ).decode()
    families = {f.name: f for f in text_string_to_metric_families(merged)}
    requests = families["rpcgate_requests"]
    assert requests.type == "counter"
    by_worker = {s.labels["worker"]: s.value for s in requests.samples if s.name.endswith("_total")}
    assert by_worker == {"0": 5.0, "1": 7.0}
    histogram = families["rpcgate_request_duration_seconds"]
    counts = [s.value for s in histogram.samples if s.name.endswith("_count")]
    assert sum(counts) == 12
    assert [s.labels["worker"] for s in families["rpcgate_upstream_up"].samples] == ["0", "1"]
    assert merged.count("# TYPE rpcgate_requests_total counter") == 1  # each family once


def test_one_worker_alone_is_labelled_too() -> None:
    merged = merged_exposition([(0, WORKER.format(calls=3).encode())]).decode()
    assert 'rpcgate_requests_total{chain="devnet",method="eth_call",worker="0"} 3.0' in merged


CHAINS = [ServedChain("devnet", 31337, (("node0", "d0"), ("node1", "d1")))]


def test_a_drill_passed_on_by_a_worker_keeps_its_id_and_a_client_cannot_set_one() -> None:
    asked = parse_drill(
        {"upstream": "node0", "seconds": 5, "id": "0a1b2c3d"}, CHAINS, forwarded=True
    )
    assert not isinstance(asked, Problem) and asked.drill_id == "0a1b2c3d"
    refused = parse_drill({"upstream": "node0", "seconds": 5, "id": "0a1b2c3d"}, CHAINS)
    assert isinstance(refused, Problem) and "unknown key 'id'" in refused.message
    bad = parse_drill({"upstream": "node0", "seconds": 5, "id": "zz"}, CHAINS, forwarded=True)
    assert isinstance(bad, Problem) and "8 hexadecimal digits" in bad.message
