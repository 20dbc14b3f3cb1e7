"""Prometheus metrics (`GET /metrics`), read from what the gateway already holds.

Two kinds of numbers, kept apart so that the call path stays cheap:

- **Per call**, recorded on the call path by `call_metrics.CallRecorder` (which
  `GatewayMetrics` is): plain counts, no lock, no prometheus_client on the path
  (its `Counter.inc` and `Histogram.observe` take a lock per increment).
- **State.** Upstream heads, lag, states and breakers, the consensus, the cache counters,
  memory and Redis: the gateway holds them as plain data (what `/status.json` reads), and
  `state_families` reads them when Prometheus scrapes, so the call path updates nothing.

Each gateway has its own registry, never the process-wide default one, so two gateways in
one process do not collide. No label carries a secret (upstreams are labelled by their
configured name, passed through the masker; a URL is never a label) and no label grows
without bound (see `call_metrics`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry
from prometheus_client.utils import floatToGoString

from rpcgate import __version__
from rpcgate.chain.runtime import ChainRuntime
from rpcgate.consensus.heads import State
from rpcgate.consensus.standing import lag_blocks, standing
from rpcgate.ops.call_metrics import (
    LATENCY_BUCKETS_S,
    CallRecorder,
    Latencies,
)
from rpcgate.rpc.masking import MASKER
from rpcgate.storage.response_cache import ResponseCache, resident_bytes

CONTENT_TYPE = CONTENT_TYPE_LATEST

_BUCKET_LABELS = (*(floatToGoString(b) for b in LATENCY_BUCKETS_S), "+Inf")


class ClientSide(Protocol):
    """What the metrics read of the edge in front of a gateway (`edge.ingress`): its plain
    `status()`: `refusals` by reason, where rate limits are counted
    (`rate_limits_counted_in`), `websocket_connections` and `websocket_subscriptions`."""

    def status(self) -> dict[str, Any]: ...


class Served(Protocol):
    """What the metrics read of a gateway at scrape time (a reload swaps its chains)."""

    chains: list[ChainRuntime]
    cache: ResponseCache


class GatewayMetrics(CallRecorder):
    """One gateway's metrics: per-call counts recorded on the call path (`call_metrics`),
    state read at scrape."""

    def __init__(self, gateway: Served) -> None:
        super().__init__()
        self._gateway = gateway
        # Set by the edge in front (edge.ingress); a gateway with none (no HTTP) has no
        # client refusals or sockets to report.
        self.clients: ClientSide | None = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    # -- the scrape --

    def exposition(self) -> bytes:
        """The text exposition format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """Called by the registry on every scrape."""
        yield from self._call_families()
        yield from state_families(self._gateway.chains, self._gateway.cache, time.monotonic())
        yield from self._refusal_families()

    def _call_families(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "rpcgate_requests_total",
            "JSON-RPC calls answered (a batch item counts as one), by chain, method "
            "(`other`: not in the method table, or not a valid call) and outcome "
            "(local: from the cache or the consensus head; upstream; error: a JSON-RPC error)",
            labels=["chain", "method", "outcome"],
        )
        durations = HistogramMetricFamily(
            "rpcgate_request_duration_seconds",
            "Seconds from a request reaching the gateway to a call's answer being ready",
            labels=["chain", "method", "outcome"],
        )
        for (chain, method, outcome), series in sorted(self._calls.items()):
            labels = [MASKER.mask(chain), method, outcome]
            requests.add_metric(labels, sum(series.counts))
            durations.add_metric(labels, _cumulative(series), series.total_s)
        attempts = CounterMetricFamily(
            "rpcgate_upstream_attempts_total",
            "Attempts of client calls on upstreams, by the class of their failure "
            "(`none`: answered); head polls are not counted",
            labels=["chain", "upstream", "error_class"],
        )
        attempt_durations = HistogramMetricFamily(
            "rpcgate_upstream_attempt_duration_seconds",
            "Seconds an upstream took to answer or fail one attempt",
            labels=["chain", "upstream", "error_class"],
        )
        for (chain, upstream, error_class), series in sorted(self._attempts.items()):
            labels = [MASKER.mask(chain), MASKER.mask(upstream), str(error_class)]
            attempts.add_metric(labels, sum(series.counts))
            attempt_durations.add_metric(labels, _cumulative(series), series.total_s)
        in_flight = GaugeMetricFamily(
            "rpcgate_requests_in_flight",
            "JSON-RPC calls waiting for an answer (from an upstream, Redis or a held head)",
            labels=["chain"],
        )
        chains = {c.config.name: 0 for c in self._gateway.chains} | dict(self.in_flight)
        for chain, count in sorted(chains.items()):
            in_flight.add_metric([MASKER.mask(chain)], count)
        yield from (requests, durations, attempts, attempt_durations, in_flight)

    def _refusal_families(self) -> Iterator[Metric]:
        gateway = self._gateway
        refused = _counter(
            "rpcgate_client_refusals_total",
            "Calls refused before reaching a chain (reason: rate_limit, in_flight, "
            "batch_over_burst, no_key, unknown_key, chain_not_allowed)",
            ["reason"],
        )
        clients = self.clients.status() if self.clients is not None else _NO_CLIENTS
        for reason, count in sorted(clients["refusals"].items()):
            refused.add_metric([reason], count)
        denied = _counter(
            "rpcgate_method_denials_total",
            "Calls refused by a chain's method policy, by the rule that refused them",
            ["chain", "rule"],
        )
        for runtime in gateway.chains:
            for rule, count in sorted(runtime.denied.items()):
                denied.add_metric([runtime.config.name, rule], count)
        shared = GaugeMetricFamily(
            "rpcgate_rate_limits_shared",
            "1 while rate limits are counted in Redis (every replica together), 0 in process",
            value=1.0 if clients["rate_limits_counted_in"] == "redis" else 0.0,
        )
        connections = GaugeMetricFamily(
            "rpcgate_websocket_connections",
            "Client WebSocket connections open",
            value=clients["websocket_connections"],
        )
        subscriptions = GaugeMetricFamily(
            "rpcgate_websocket_subscriptions",
            "Subscriptions held by client WebSocket connections",
            value=clients["websocket_subscriptions"],
        )
        yield from (refused, denied, shared, connections, subscriptions)


_NO_CLIENTS: dict[str, Any] = {
    "refusals": {},
    "rate_limits_counted_in": "process",
    "websocket_connections": 0,
    "websocket_subscriptions": 0,
}


def _cumulative(series: Latencies) -> list[tuple[str, float]]:
    running, buckets = 0, []
    for label, count in zip(_BUCKET_LABELS, series.counts, strict=True):
        running += count
        buckets.append((label, float(running)))
    return buckets


def _counter(name: str, documentation: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, documentation, labels=labels)


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, labels=labels)


# The cache counters of a chain (`store.CacheCounters` field -> metric).
_CACHE_COUNTERS = (
    ("hits", "rpcgate_cache_hits_total", "Calls answered from the cache (either tier)"),
    ("misses", "rpcgate_cache_misses_total", "Cacheable calls the cache could not answer"),
    ("bypass", "rpcgate_cache_bypasses_total", "Calls the cache does not keep (method policy)"),
    ("redis_hits", "rpcgate_cache_redis_hits_total", "Cache hits found in Redis"),
    ("stores", "rpcgate_cache_stores_total", "Answers stored in the cache"),
    ("stale_dropped", "rpcgate_cache_stale_dropped_total", "Entries dropped as no longer fresh"),
    ("coalesced", "rpcgate_cache_coalesced_total", "Calls that shared an identical call"),
)


def state_families(
    chains: Iterable[ChainRuntime], cache: ResponseCache, now: float
) -> Iterator[Metric]:
    """The gateway's state as metric families: plain data read at scrape time (`now`:
    monotonic seconds, for cooldowns)."""
    head = _gauge(
        "rpcgate_upstream_head_block",
        "Last head block number an upstream reported",
        ["chain", "upstream"],
    )
    lag = _gauge(
        "rpcgate_upstream_lag_blocks",
        "Blocks an upstream's head is behind the consensus head (negative: ahead)",
        ["chain", "upstream"],
    )
    state = _gauge(
        "rpcgate_upstream_state",
        "1 for an upstream's current state, 0 for the others",
        ["chain", "upstream", "state"],
    )
    breaker = _gauge(
        "rpcgate_upstream_breaker_open",
        "1 while an upstream rests (failures in a row, a rate limit, quota or rejected key): "
        "it is tried only when nothing else is left",
        ["chain", "upstream"],
    )
    cooldown = _gauge(
        "rpcgate_upstream_cooldown_seconds",
        "Seconds left of an upstream's rest",
        ["chain", "upstream"],
    )
    failures = _gauge(
        "rpcgate_upstream_consecutive_failures",
        "Failures in a row that count against an upstream (calls and head polls)",
        ["chain", "upstream"],
    )
    integrity = _counter(
        "rpcgate_upstream_integrity_failures_total",
        "Answers of an upstream that failed verification (chains[].verify): never served, "
        "asked elsewhere",
        ["chain", "upstream"],
    )
    consensus = _gauge(
        "rpcgate_consensus_block",
        "The block numbers the upstreams agree on (tag: head, safe, finalized)",
        ["chain", "tag"],
    )
    voters = _gauge(
        "rpcgate_consensus_voters", "Upstreams holding the consensus head block", ["chain"]
    )
    cache_counters = [
        (field, _counter(name, documentation, ["chain"]))
        for field, name, documentation in _CACHE_COUNTERS
    ]
    hedges = _counter(
        "rpcgate_hedges_total",
        "Hedged reads (result: sent; won, the hedge's answer was returned; refused by the budget)",
        ["chain", "result"],
    )
    score = _gauge(
        "rpcgate_upstream_score",
        "Routing score of an upstream (seconds-like: latency inflated by errors and calls "
        "in flight, over weight; lower is tried first)",
        ["chain", "upstream"],
    )
    for runtime in chains:
        chain = MASKER.mask(runtime.config.name)
        agreed = runtime.tracker.consensus
        for tag, block in (
            ("head", agreed.head),
            ("safe", agreed.safe),
            ("finalized", agreed.finalized),
        ):
            if block is not None:
                consensus.add_metric([chain, tag], block.number)
        voters.add_metric([chain], len(agreed.voters))
        budget = runtime.hedges
        for result, count in (
            ("sent", budget.sent),
            ("won", budget.won),
            ("refused", budget.refused),
        ):
            hedges.add_metric([chain, result], count)
        for field, family in cache_counters:
            family.add_metric([chain], getattr(runtime.cache_counters, field))
        for upstream in runtime.upstreams.values():
            view = runtime.tracker.views[upstream.name]
            seen = standing(upstream.health, upstream.config.weight, now)
            labels = [chain, MASKER.mask(upstream.name)]
            if view.head is not None:
                head.add_metric(labels, view.head.number)
                behind = lag_blocks(view, agreed.head.number if agreed.head else None)
                if behind is not None:
                    lag.add_metric(labels, behind)
            for each in State:
                state.add_metric([*labels, str(each)], 1.0 if view.state is each else 0.0)
            breaker.add_metric(labels, 1.0 if seen.resting else 0.0)
            cooldown.add_metric(labels, seen.cooling_down_s)
            failures.add_metric(labels, seen.consecutive_failures)
            integrity.add_metric(labels, seen.integrity_failures)
            score.add_metric(labels, seen.score.value)
    yield from (head, lag, state, breaker, cooldown, failures, integrity, score, consensus)
    yield from (voters, hedges)
    yield from (family for _, family in cache_counters)
    yield from _cache_families(cache)
    info = _gauge("rpcgate_build_info", "Always 1; the running version", ["version"])
    info.add_metric([__version__], 1)
    yield info


def _cache_families(cache: ResponseCache) -> Iterator[Metric]:
    memory = GaugeMetricFamily(
        "rpcgate_cache_memory_bytes",
        "What the in-process cache's entries cost the process, in bytes (keys, answers, overhead)",
        value=cache.memory.bytes,
    )
    budget = GaugeMetricFamily(
        "rpcgate_cache_memory_budget_bytes",
        "Byte budget of the in-process cache (cache.memory_bytes)",
        value=cache.memory.max_bytes,
    )
    entries = GaugeMetricFamily(
        "rpcgate_cache_memory_entries", "Entries in the in-process cache", value=len(cache.memory)
    )
    redis_up = GaugeMetricFamily(
        "rpcgate_cache_redis_up", "1 while Redis answers, 0 while it is down; absent without Redis"
    )
    if cache.redis is not None:
        redis_up.add_metric([], 1.0 if cache.redis.up else 0.0)
    # Beside the cache's count: what the process holds. (This registry has no process
    # collector, so the name is the gateway's own.)
    resident = GaugeMetricFamily(
        "rpcgate_process_resident_memory_bytes",
        "Resident memory (RSS) of the gateway process; absent where not measured (not Linux)",
    )
    rss = resident_bytes()
    if rss is not None:
        resident.add_metric([], rss)
    yield from (memory, budget, entries, redis_up, resident)


def merged_exposition(by_worker: list[tuple[int, bytes]]) -> bytes:
    """The expositions of a process's workers as one: every series of every worker, with a
    `worker` label, each family once (so `sum without (worker)` gives the process's
    totals). Pure: text in, text out."""
    families: dict[str, Metric] = {}
    for worker, text in sorted(by_worker):
        for family in text_string_to_metric_families(text.decode()):
            merged = families.get(family.name)
            if merged is None:
                merged = families[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            for sample in family.samples:
                labels = {"worker": str(worker), **sample.labels}
                merged.add_sample(sample.name, labels, sample.value, sample.timestamp)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)


class _Fixed:
    """A collector of families already made (what `merged_exposition` writes out)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families
