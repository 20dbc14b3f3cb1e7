"""The config schema: every setting, its default and its documentation, in one place.

Loading is validation: `load_config` returns a fully resolved `Config` (presets expanded,
environment variables substituted) or raises `ConfigError` listing every problem with its
key path, e.g. `chains[0].upstreams[2].url: not a URL`. A bad config never starts a
half-working server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import typing
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml

from rpcgate.config.chain_defaults import complete_chains
from rpcgate.config.chains import find_chain
from rpcgate.config.presets import PRESETS, PresetError, preset_url, preset_ws_url
from rpcgate.config.redis_url import RedisUrlError, parse_redis_url
from rpcgate.config.typed import load_dataclass, reference, setting, substitute_env

# Calls per upstream batch for an upstream whose provider documents no limit: geth accepts
# 1,000 by default, and a client batch holds at most limits.max_batch_items (100).
DEFAULT_MAX_BATCH = 100


@dataclass(frozen=True)
class UpstreamConfig:
    name: str = setting(
        "Name shown in logs, headers and status; default: the preset, else the host (host:port "
        "where the chain has other upstreams on that host).",
        default="",
    )
    preset: str | None = setting(
        "Provider preset that fills url, kind and domain: " + ", ".join(PRESETS) + ".", default=None
    )
    url: str = setting(
        "HTTP(S) JSON-RPC URL; `${ENV}` substitution keeps keys out of the file.", default=""
    )
    ws_url: str = setting(
        "WebSocket URL (ws:// or wss://) of the same node: its newHeads are a faster head "
        "signal than polling, and its pending transactions feed newPendingTransactions; "
        "default: from the preset where the provider has one; empty: none.",
        default="",
    )
    key: str | None = setting(
        "API key for a preset (placed where that provider expects it).", default=None
    )
    endpoint: str | None = setting(
        "Endpoint name, for presets that need one (quicknode).", default=None
    )
    node_id: str | None = setting("Node id, for presets that need one (amb).", default=None)
    region: str | None = setting("Cloud region, for presets that need one (amb).", default=None)
    kind: Literal["", "centralized", "decentralized"] = setting(
        "centralized | decentralized; default: from the preset, else centralized.", default=""
    )
    domain: str = setting(
        "Failure domain: upstreams sharing infrastructure share a tag "
        "(aws, cloudflare, ...); default: from the preset, else the host.",
        default="",
    )
    weight: float = setting(
        "Vote weight in the block-height agreement (a node you run yourself may count more).",
        default=1.0,
    )
    headers: dict[str, str] = setting(
        "Extra HTTP headers sent to this upstream (e.g. auth).", default_factory=dict
    )
    max_batch: int | None = setting(
        "Most calls in one upstream batch: the items of a client batch going to this upstream "
        "travel as batches of this size, each item still retried alone if it fails; default: "
        f"the preset's documented limit, else {DEFAULT_MAX_BATCH}; 1 sends every call alone.",
        default=None,
    )
    proxy: str | None = setting(
        "HTTP proxy the upstream's HTTP calls go through, as http://[user:password@]host:port "
        "(a CONNECT tunnel, TLS to the upstream inside it); default: HTTPS_PROXY or HTTP_PROXY "
        "from the environment, unless NO_PROXY names the host; empty or `none`: no proxy.",
        default=None,
    )


@dataclass(frozen=True)
class QuorumRule:
    method: str = setting("The JSON-RPC method this rule is for.", required=True, default="")
    mode: Literal["max", "agree"] = setting(
        "max: ask several upstreams, the highest answer wins (pending nonces); agree: their "
        "answers must be equal.",
        default="agree",
    )
    upstreams: int = setting(
        "How many upstreams to ask, in different failure domains first.", default=2
    )
    on_dispute: Literal["error", "majority"] = setting(
        "agree only: what a dispute gives, an error naming who said what (-32054), or the "
        "answer a strict majority gave.",
        default="error",
    )


@dataclass(frozen=True)
class MethodsConfig:
    allow: tuple[str, ...] = setting(
        "Methods served on top of the default policy, wildcards allowed (`debug_*`, "
        "`trace_*`, `txpool_*`): the default denies what acts with a node's own keys or "
        'administers it, and heavy namespaces (docs/methods.md, "Method policy").',
        default=(),
    )
    deny: tuple[str, ...] = setting(
        "Methods refused besides the default policy, wildcards allowed; deny beats allow.",
        default=(),
    )


@dataclass(frozen=True)
class ChainConfig:
    name: str = setting(
        "Served at /{name}; letters, digits, - and _; not all digits.", required=True, default=""
    )
    chain_id: int = setting(
        "EIP-155 chain id; the chain is also served at /{chain_id}.", required=True, default=0
    )
    upstreams: tuple[UpstreamConfig, ...] = setting(
        "The upstreams serving this chain; a chain of the chain table (docs/chains.md) named "
        "without them is served by its keyless public endpoints.",
        required=True,
        default=(),
    )
    aliases: tuple[str, ...] = setting(
        "More names the chain is served at (/{alias}); a chain of the chain table gets its "
        "row's (a name another chain has is dropped).",
        default=(),
    )
    block_time_s: float = setting(
        "Typical seconds between two blocks: the defaults of head_poll_interval, "
        "max_lag_blocks and hold_ahead_s follow it (a chain of the chain table has its own).",
        default=12.0,
    )
    on_demand: bool = setting(
        "Poll this chain's upstreams only while it is used: its first call starts head "
        "tracking (and waits up to `activation_timeout_s` for a consensus head), and "
        "`idle_after_s` without calls stops it. The zero-config default serves every chain "
        "of the table this way; false polls from the start (readiness waits for it).",
        default=False,
    )
    idle_after_s: float = setting(
        "With `on_demand`, seconds without a call after which the chain's polling stops.",
        default=600.0,
    )
    activation_timeout_s: float = setting(
        "With `on_demand`, the longest a first call waits for the chain's consensus head.",
        default=5.0,
    )
    finality_depth: int | None = setting(
        "For a chain whose nodes do not answer the `safe` and `finalized` tags: a block this "
        "many below the consensus head is taken as safe and final (pinning, the finalized "
        "cache). null: the tags are asked.",
        default=None,
    )
    header_format: Literal["ethereum", "avalanche", "none"] = setting(
        "How the chain's block hash is computed from its header fields, for `verify`: "
        "`ethereum`, `avalanche` (coreth's extra fields) or `none` (headers are not "
        "recomputed; transactions and receipts still are where their types are known). A "
        "chain of the chain table has its row's.",
        default="ethereum",
    )
    execute_calls: bool = setting(
        "With `verify: proofs`, eth_call answers are checked by executing the call locally "
        "(revm, in worker processes) over state proven against the block's stateRoot, and "
        "served at the `proof` level. Right where the chain's EVM, precompiles included, is "
        "Ethereum's; a chain of the chain table has its row's (`execution`).",
        default=True,
    )
    history_contract: bool = setting(
        "Whether old blocks are anchored by EIP-2935's history contract (the verifier "
        "also finds out by itself, proving the contract's code). A chain of the chain table "
        "has its row's (`history`).",
        default=True,
    )
    head_poll_interval: float = setting(
        "Seconds between two head polls of each upstream (one eth_blockNumber each when idle).",
        default=1.0,
    )
    max_lag_blocks: int = setting(
        "An upstream further behind the consensus head than this is `lagging`: it still "
        "serves calls about blocks it has, never `latest`.",
        default=3,
    )
    quorum: tuple[QuorumRule, ...] = setting(
        "Methods answered by several upstreams together (opt-in, one rule per method).",
        default=(),
    )
    hold_ahead_s: float = setting(
        "Longest wait for the served head to reach a block that an upstream's answer is in "
        "(a receipt from a block just mined): the answer waits until eth_blockNumber has "
        "reached its block, so no answer is newer than the head; after that it is answered "
        "as not mined yet (null). 0 answers null at once.",
        default=2.0,
    )
    methods: MethodsConfig = setting(
        "Which methods this chain serves (a denied call gets -32601 and reaches no upstream).",
        default_factory=MethodsConfig,
    )
    verify: Literal["off", "integrity", "proofs"] = setting(
        "What is checked of an upstream's answer before it is served. `integrity`: block "
        "headers, transactions and receipts are recomputed and checked against the consensus "
        "block hash; `proofs` adds balances, nonces, code and storage answered from "
        "eth_getProof checked against the consensus block's stateRoot, and eth_getLogs "
        "checked against the blocks' verified receipts; `off` checks nothing. An answer that "
        "fails is that upstream's failure (class `integrity`) and is asked elsewhere.",
        default="integrity",
    )
    verify_logs_max_blocks: int = setting(
        "With `verify: proofs`, the longest eth_getLogs range checked against receipts "
        "(each block of the range costs a header, and each block whose logsBloom may match "
        "a block's receipts); longer ranges are served as the upstream gives them.",
        default=1000,
    )


@dataclass(frozen=True)
class CacheConfig:
    redis_url: str | None = setting(
        "The Redis replicas share (the cache, rate limits, filters, accepted transactions, "
        "the served head): redis://host:6379/0 (rediss:// for TLS); "
        "redis+sentinel://host:26379,host:26379/SERVICE_NAME[/DB] for a primary Sentinel "
        "watches; redis+cluster://host:6379,host:6379 for a Redis Cluster "
        "(rediss+sentinel://, rediss+cluster:// for TLS). null keeps everything in process.",
        default=None,
    )
    memory_bytes: int = setting(
        "Budget of the in-process cache; least recently used go first.", default=64 * 1024 * 1024
    )
    shared_head_hold_s: float = setting(
        "While Redis is unreachable (a Sentinel failover), how long the head each replica "
        "serves stays where the replicas last agreed, so that none runs ahead of another; "
        "after that each replica goes on alone until Redis is back; back, it holds up to 3 s "
        "more while the other replicas find it too. 0: go on alone at once.",
        default=5.0,
    )
    redis_prefix: str = setting(
        "Prefix of every Redis key (then the chain id).", default="rpcgate:v1:"
    )
    redis_timeout_s: float = setting(
        "Longest wait for one Redis operation; then it is skipped "
        "and Redis is marked down until it answers again.",
        default=0.1,
    )
    ttl_static_s: float = setting(
        "TTL of answers fixed for a chain (eth_chainId).", default=86400.0
    )
    ttl_finalized_s: float = setting("TTL of answers about finalized blocks.", default=3600.0)
    ttl_unfinalized_s: float = setting(
        "TTL of answers about blocks not yet finalized (they are "
        "also dropped as soon as their block is reorganised).",
        default=600.0,
    )
    ttl_head_s: float = setting(
        "TTL of answers about the head (gas price); they also die with the next head.", default=60.0
    )


@dataclass(frozen=True)
class LimitsConfig:
    max_body_bytes: int = setting(
        "Largest request body accepted (HTTP 413, JSON-RPC -32600).", default=5 * 1024 * 1024
    )
    max_batch_items: int = setting("Most items in one batch (JSON-RPC -32600).", default=100)
    max_response_bytes: int = setting(
        "Largest upstream answer read; bigger is treated as too large and tried elsewhere.",
        default=64 * 1024 * 1024,
    )
    max_concurrent_upstream_calls: int = setting(
        "Most calls in flight to one upstream at once.", default=256
    )
    max_json_depth: int = setting(
        "Deepest nesting of arrays and objects in a request, 1 to 1000 (JSON-RPC -32600).",
        default=64,
    )
    header_timeout_s: float = setting(
        "Time a client has to send a request's line and headers; then the connection is "
        "closed (a client sending one byte a second costs nothing else).",
        default=10.0,
    )
    body_timeout_s: float = setting(
        "Time a client has to send a request's body after its headers (HTTP 408, JSON-RPC -32600).",
        default=30.0,
    )
    keepalive_timeout_s: float = setting(
        "An idle keep-alive connection is closed after this long.", default=75.0
    )
    max_connections: int = setting(
        "Most client connections open at once; more are closed as they arrive.", default=10000
    )
    rate_per_s: float = setting(
        "Calls per second allowed to one client (its key, or its address without keys; a "
        "batch item counts one), a token bucket shared through Redis when cache.redis_url is "
        "set; over it: HTTP 429, JSON-RPC -32005, Retry-After. 0: no limit.",
        default=200.0,
    )
    rate_burst: int = setting(
        "Calls one client may send at once above its rate (the bucket's size).", default=400
    )
    max_concurrent_per_client: int = setting(
        "Most calls of one client in flight at once (HTTP 429, JSON-RPC -32005). 0: no limit.",
        default=100,
    )
    trusted_proxies: tuple[str, ...] = setting(
        "Addresses or networks (CIDR) of proxies in front of rpcgate whose X-Forwarded-For "
        "is believed; from anyone else it is ignored.",
        default=(),
    )
    unlimited_networks: tuple[str, ...] = setting(
        "Networks (CIDR) whose clients (their address after trusted_proxies) the per-client "
        "rate and in-flight limits do not apply to: by default loopback and the private "
        "ranges, so a backend or an indexer of your own is never throttled; [] limits "
        "everyone. A key with its own rate_per_s is limited wherever it calls from.",
        default=(
            "127.0.0.0/8",
            "::1/128",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
            "169.254.0.0/16",
            "fc00::/7",
            "fe80::/10",
        ),
    )


@dataclass(frozen=True)
class ClientKey:
    name: str = setting(
        "Who the key belongs to (logs, metrics and status show this, never the key).",
        required=True,
        default="",
    )
    key: str = setting(
        "The key itself: give it as ${ENV}; 16 characters or more, letters, digits, - and _.",
        required=True,
        default="",
    )
    rate_per_s: float | None = setting(
        "Calls per second for this key; null: limits.rate_per_s; 0: no limit.", default=None
    )
    rate_burst: int | None = setting("Burst for this key; null: limits.rate_burst.", default=None)
    chains: tuple[str, ...] = setting(
        "Chains (names or ids) this key may call; empty: every chain.", default=()
    )


@dataclass(frozen=True)
class AuthConfig:
    keys: tuple[ClientKey, ...] = setting(
        "Client keys. Without any, the gateway is open (as a public RPC is); with some, every "
        "call needs one: in the path (/{chain}/{key}), the X-Api-Key header, "
        "`Authorization: Bearer {key}`, or the query (?key=).",
        default=(),
    )


@dataclass(frozen=True)
class CorsConfig:
    allowed_origins: tuple[str, ...] = setting(
        "Origins whose browser pages may call the gateway (`*`: any, as for a public RPC).",
        default=("*",),
    )


@dataclass(frozen=True)
class FailoverConfig:
    attempt_timeout_s: float = setting(
        "Time one upstream gets to answer one attempt.", default=10.0
    )
    deadline_s: float = setting(
        "Total time for a call from its arrival, whatever it does: waits for a head, holds, "
        "a quorum's asks, every attempt, the parts of a wide eth_getLogs.",
        default=30.0,
    )
    max_attempts: int = setting("Most upstream attempts per call.", default=5)
    broadcast: int = setting(
        "eth_sendRawTransaction goes at once to this many upstreams in different failure "
        "domains; the hash comes back as soon as one accepts (1: one at a time).",
        default=3,
    )
    hedge_delay_min_s: float = setting(
        "A read whose attempt has not answered within about its upstream's p95 latency is "
        "also sent to the best upstream in another failure domain (a hedge; the first good "
        "answer wins): this is the least wait before a hedge.",
        default=0.05,
    )
    hedge_delay_max_s: float = setting(
        "The most wait before a hedge (also the wait while an upstream's latency is not "
        "known yet): a hanging upstream costs a call about this much.",
        default=1.0,
    )
    hedge_budget: float = setting(
        "Hedges allowed per call over time (a token bucket; 0 turns hedging off; at most 1, "
        "so hedges never more than double the load on upstreams).",
        default=0.5,
    )


@dataclass(frozen=True)
class WebSocketConfig:
    max_subscriptions: int = setting(
        "Most subscriptions one connection may hold (JSON-RPC -32005 beyond).", default=100
    )
    max_message_bytes: int = setting(
        "Largest message a client may send (the connection is closed with 1009).",
        default=1024 * 1024,
    )
    messages_per_s: float = setting(
        "Messages per second one connection may send, bursts of twice that (-32005 beyond; "
        "the client's rate limit counts the calls too). 0: no limit.",
        default=100.0,
    )
    send_queue: int = setting(
        "Messages waiting for a client that does not read; when full, the connection is "
        "closed (1008, saying why), so a stalled client costs bounded memory.",
        default=256,
    )
    send_queue_bytes: int = setting(
        "Bytes waiting for a client that does not read: a message is queued while fewer are "
        "waiting, else the connection is closed (1008, saying why), as for send_queue.",
        default=16 * 1024 * 1024,
    )
    heartbeat_s: float = setting(
        "Seconds between pings; a client that does not answer one is disconnected.",
        default=30.0,
    )


@dataclass(frozen=True)
class FiltersConfig:
    max_criteria_bytes: int = setting(
        "Largest criteria of one eth_newFilter, in bytes of JSON (1,000 addresses, geth's "
        "most, and 1,000 topics at one position take 114 KB); bigger is refused with -32602.",
        default=128 * 1024,
    )
    max_count: int = setting(
        "Most filters kept (with cache.redis_url: in Redis, by all replicas together); "
        "beyond, the least recently polled is forgotten: its next poll gets `filter not "
        "found` (-32000), as an expired one.",
        default=10_000,
    )
    memory_bytes: int = setting(
        "Most bytes the filters take, as JSON: criteria and the blocks and logs each "
        "remembers (with cache.redis_url: in Redis, by all replicas together); beyond, the "
        "least recently polled are forgotten.",
        default=64 * 1024 * 1024,
    )


@dataclass(frozen=True)
class AdminConfig:
    token: str | None = setting(
        "Bearer token of the admin endpoint (/admin/drills: outage drills); null or empty "
        "keeps the endpoint off (404). Give it as ${RPCGATE_ADMIN_TOKEN}; 16 characters or more.",
        default=None,
    )


@dataclass(frozen=True)
class OpsConfig:
    listen: str | None = setting(
        "HOST:PORT of a second listener for the operator's paths (/metrics, /status, "
        "/status.json, /admin); when set, they are served there only and the RPC listener "
        "answers them 404. null: served on `listen` with the RPC.",
        default=None,
    )


@dataclass(frozen=True)
class ServerConfig:
    fast_path: bool = setting(
        "Answer JSON-RPC POSTs on `listen` with rpcgate's own HTTP/1.1 protocol (httptools), "
        "under the same limits, and hand every other request (WebSocket, GET, OPTIONS, "
        "`Expect`, the operator's paths) to aiohttp on the same connection; about a third "
        "less CPU per cache hit. false: aiohttp serves everything. Read at start.",
        default=True,
    )


@dataclass(frozen=True)
class ShutdownConfig:
    grace_s: float = setting(
        "On SIGTERM, seconds /readyz answers 503 before the listener closes (for a load "
        "balancer to stop sending); SIGINT skips it.",
        default=5.0,
    )
    timeout_s: float = setting(
        "Then, the longest wait for calls in flight to finish before the process exits.",
        default=20.0,
    )


@dataclass(frozen=True)
class Config:
    listen: str = setting("HOST:PORT the gateway listens on.", default="127.0.0.1:8545")
    log_level: Literal["debug", "info", "warning", "error"] = setting(
        "Lowest level logged.", default="info"
    )
    cache: CacheConfig = setting("Response cache.", default_factory=CacheConfig)
    limits: LimitsConfig = setting("Request limits.", default_factory=LimitsConfig)
    failover: FailoverConfig = setting(
        "Timeouts and retries across upstreams.", default_factory=FailoverConfig
    )
    chains: tuple[ChainConfig, ...] = setting(
        "The chains served; the first is also at /.", default=()
    )
    shutdown: ShutdownConfig = setting(
        "Draining on SIGTERM (SIGHUP reloads the config file instead).",
        default_factory=ShutdownConfig,
    )
    server: ServerConfig = setting("The HTTP server on `listen`.", default_factory=ServerConfig)
    admin: AdminConfig = setting("The admin endpoint (outage drills).", default_factory=AdminConfig)
    ops: OpsConfig = setting(
        "Where operators' paths are served (metrics, status, admin).", default_factory=OpsConfig
    )
    auth: AuthConfig = setting("Client keys (optional).", default_factory=AuthConfig)
    cors: CorsConfig = setting("Browser access (CORS).", default_factory=CorsConfig)
    websocket: WebSocketConfig = setting(
        "WebSocket connections (on the same paths as HTTP).", default_factory=WebSocketConfig
    )
    filters: FiltersConfig = setting(
        "Filters the gateway keeps (eth_newFilter, eth_newBlockFilter).",
        default_factory=FiltersConfig,
    )

    def listen_host_port(self) -> tuple[str, int]:
        return split_host_port(self.listen)


class ConfigError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- semantic validation and resolution ---------------------------------------------------

_CHAIN_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def split_host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def _check_url(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not a URL (expected http:// or https://)"
    try:
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError:
        return "not a URL (bad port)"
    return None


_KEY_CHARS = re.compile(r"^[A-Za-z0-9_-]{16,}$")


def _check_keys(config: Config, problems: list[str]) -> None:
    """Client keys: well formed, distinct, naming chains that exist (never echoing a key)."""
    chain_refs = {c.name for c in config.chains} | {str(c.chain_id) for c in config.chains}
    seen_names: set[str] = set()
    seen_keys: set[str] = set()
    for k, client in enumerate(config.auth.keys):
        path = f"auth.keys[{k}]"
        if not client.name:
            problems.append(f"{path}.name: needed")
        elif client.name in seen_names:
            problems.append(f"{path}.name: {client.name!r} is used by another key")
        seen_names.add(client.name)
        if not _KEY_CHARS.match(client.key):
            problems.append(
                f"{path}.key: must be 16 characters or more, letters, digits, - and _ "
                "(give it as ${ENV})"
            )
        elif client.key in seen_keys:
            problems.append(f"{path}.key: the same key is given twice")
        seen_keys.add(client.key)
        if client.rate_per_s is not None and client.rate_per_s < 0:
            problems.append(f"{path}.rate_per_s: must be 0 or more")
        if client.rate_burst is not None and client.rate_burst < 1:
            problems.append(f"{path}.rate_burst: must be at least 1")
        for j, chain in enumerate(client.chains):
            if str(chain) not in chain_refs:
                problems.append(f"{path}.chains[{j}]: no chain {chain!r} is configured")
    if config.cors.allowed_origins and any(
        o != "*" and not o.startswith(("http://", "https://")) for o in config.cors.allowed_origins
    ):
        problems.append(
            "cors.allowed_origins: each must be `*` or an origin like https://app.example.com"
        )


def _resolve_upstream(
    up: UpstreamConfig, chain_id: int, path: str, problems: list[str]
) -> UpstreamConfig:
    url, ws_url, kind, domain = up.url, up.ws_url, up.kind, up.domain
    max_batch = up.max_batch
    if max_batch is not None and max_batch < 1:
        problems.append(f"{path}.max_batch: must be at least 1")
    if up.proxy and up.proxy.strip().lower() != "none":
        proxy = up.proxy.strip()
        proxy = proxy if "://" in proxy else f"http://{proxy}"
        if _check_url(proxy) or not proxy.startswith("http://"):
            # Said without the URL: it may hold a password.
            problems.append(f"{path}.proxy: not an http:// proxy URL (http://host:port)")
    if up.preset is not None:
        preset = PRESETS.get(up.preset)
        if preset is None:
            problems.append(
                f"{path}.preset: unknown preset {up.preset!r} (known: {', '.join(PRESETS)})"
            )
            return up
        if not url:
            values = {
                k: v
                for k, v in (
                    ("key", up.key),
                    ("endpoint", up.endpoint),
                    ("node_id", up.node_id),
                    ("region", up.region),
                )
                if v
            }
            try:
                url = preset_url(preset, chain_id, values)
                # Only beside the preset's own URL: a `url` written in the entry may be
                # another node (a regional one), whose WebSocket the preset cannot know.
                ws_url = ws_url or preset_ws_url(preset, chain_id, values) or ""
            except PresetError as exc:
                problems.append(f"{path}: {exc}")
                return up
        kind = kind or preset.kind
        domain = domain or preset.domain
        max_batch = max_batch or preset.max_batch
    elif not url:
        problems.append(f"{path}: needs a `url` or a `preset`")
        return up
    bad = _check_url(url)
    if bad:
        problems.append(f"{path}.url: {bad}")
        return up
    if ws_url:
        parts = urlsplit(ws_url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            problems.append(f"{path}.ws_url: not a WebSocket URL (expected ws:// or wss://)")
            return up
    host = urlsplit(url).hostname or ""
    name = up.name or up.preset or host
    return dataclasses.replace(
        up,
        url=url,
        ws_url=ws_url,
        name=name,
        kind=kind or "centralized",
        domain=domain or host,
        max_batch=max_batch or DEFAULT_MAX_BATCH,
    )


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _named_apart_on_shared_hosts(
    written: tuple[UpstreamConfig, ...], resolved: list[UpstreamConfig]
) -> list[UpstreamConfig]:
    """An upstream given neither a name nor a preset is named for its host; where the chain
    has other upstreams on that host, for its host and port (three nodes on one machine are
    127.0.0.1:8545, 127.0.0.1:8546 and 127.0.0.1:8547). Names that still collide (one host
    and port) are reported, asking for names."""
    hosts = [_host_and_port(up.url) if up.name else None for up in resolved]
    named = []
    for given, up, where in zip(written, resolved, hosts, strict=True):
        if where is None or given.name or given.preset:
            named.append(up)
            continue
        host, port = where
        shared = sum(1 for other in hosts if other is not None and other[0] == host) > 1
        name = (f"[{host}]" if ":" in host else host) + f":{port}"
        named.append(dataclasses.replace(up, name=name) if shared else up)
    return named


def _host_and_port(url: str) -> tuple[str, int] | None:
    """None for a URL already reported as wrong."""
    try:
        parts = urlsplit(url)
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError:
        return None
    return (parts.hostname, port) if parts.hostname else None


def _resolve(config: Config, problems: list[str]) -> Config:
    try:
        split_host_port(config.listen)
    except ValueError as exc:
        problems.append(f"listen: {exc}")
    if config.cache.redis_url is not None:
        try:
            parse_redis_url(config.cache.redis_url)
        except RedisUrlError as exc:
            problems.append(f"cache.redis_url: {exc}")
    if config.cache.shared_head_hold_s < 0:
        problems.append("cache.shared_head_hold_s: must be 0 or more")
    if config.cache.memory_bytes < 0:
        problems.append("cache.memory_bytes: must be 0 or more")
    for key in (
        "redis_timeout_s",
        "ttl_static_s",
        "ttl_finalized_s",
        "ttl_unfinalized_s",
        "ttl_head_s",
    ):
        if getattr(config.cache, key) <= 0:
            problems.append(f"cache.{key}: must be more than 0")
    for key in (
        "max_body_bytes",
        "max_batch_items",
        "max_response_bytes",
        "max_concurrent_upstream_calls",
        "max_json_depth",
        "max_connections",
        "rate_burst",
    ):
        if getattr(config.limits, key) < 1:
            problems.append(f"limits.{key}: must be at least 1")
    if config.limits.max_json_depth > 1000:  # orjson itself stops at 1024, the batch included
        problems.append("limits.max_json_depth: must be at most 1000")
    for key in ("header_timeout_s", "body_timeout_s", "keepalive_timeout_s"):
        if getattr(config.limits, key) <= 0:
            problems.append(f"limits.{key}: must be more than 0")
    for key in ("rate_per_s", "max_concurrent_per_client"):
        if getattr(config.limits, key) < 0:
            problems.append(f"limits.{key}: must be 0 or more")
    for key in ("trusted_proxies", "unlimited_networks"):
        for k, network in enumerate(getattr(config.limits, key)):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                problems.append(f"limits.{key}[{k}]: not an address or network: {network!r}")
    if config.ops.listen is not None:
        try:
            ops_listen = split_host_port(config.ops.listen)
        except ValueError as exc:
            problems.append(f"ops.listen: {exc}")
        else:
            with contextlib.suppress(ValueError):  # `listen` is checked on its own
                if ops_listen[1] != 0 and ops_listen == split_host_port(config.listen):
                    problems.append("ops.listen: must differ from listen")
    _check_keys(config, problems)
    ws = config.websocket
    for key in ("max_subscriptions", "max_message_bytes", "send_queue", "send_queue_bytes"):
        if getattr(ws, key) < 1:
            problems.append(f"websocket.{key}: must be at least 1")
    for key in ("max_criteria_bytes", "max_count", "memory_bytes"):
        if getattr(config.filters, key) < 1:
            problems.append(f"filters.{key}: must be at least 1")
    if ws.messages_per_s < 0:
        problems.append("websocket.messages_per_s: must be 0 or more")
    if ws.heartbeat_s <= 0:
        problems.append("websocket.heartbeat_s: must be more than 0")
    fo = config.failover
    if fo.attempt_timeout_s <= 0:
        problems.append("failover.attempt_timeout_s: must be more than 0")
    if fo.deadline_s < fo.attempt_timeout_s:
        problems.append("failover.deadline_s: must be at least failover.attempt_timeout_s")
    if fo.max_attempts < 1:
        problems.append("failover.max_attempts: must be at least 1")
    if fo.broadcast < 1:
        problems.append("failover.broadcast: must be at least 1")
    if not 0 <= fo.hedge_budget <= 1:
        problems.append("failover.hedge_budget: must be between 0 and 1")
    if not 0 < fo.hedge_delay_min_s <= fo.hedge_delay_max_s:
        problems.append(
            "failover.hedge_delay_min_s: must be more than 0 and at most hedge_delay_max_s"
        )
    for key in ("grace_s", "timeout_s"):
        if getattr(config.shutdown, key) < 0:
            problems.append(f"shutdown.{key}: must be 0 or more")
    token = config.admin.token
    if token and (
        len(token) < 16 or not token.isascii() or not token.isprintable() or " " in token
    ):
        # The message never shows the token.
        problems.append(
            "admin.token: must be at least 16 characters, printable ASCII without spaces"
        )
    if not config.chains:
        problems.append("chains: at least one chain is needed")
    chains = []
    seen_names: dict[str, int] = {}
    seen_ids: dict[int, int] = {}
    for i, chain in enumerate(config.chains):
        path = f"chains[{i}]"
        if not _CHAIN_NAME.match(chain.name) or chain.name.isdigit():
            problems.append(
                f"{path}.name: must be letters, digits, - or _ and not all digits, "
                f"not {chain.name!r}"
            )
        elif chain.name in seen_names:
            problems.append(
                f"{path}.name: {chain.name!r} is already chains[{seen_names[chain.name]}]"
            )
        seen_names.setdefault(chain.name, i)
        # A chain named neither in the table nor with a chain id: `complete_chains` said so.
        unnamed = chain.chain_id == 0 and find_chain(chain.name) is None
        if not unnamed and (chain.chain_id is None or chain.chain_id < 1):
            problems.append(f"{path}.chain_id: must be a positive integer")
        elif chain.chain_id in seen_ids:
            problems.append(
                f"{path}.chain_id: {chain.chain_id} is already chains[{seen_ids[chain.chain_id]}]"
            )
        seen_ids.setdefault(chain.chain_id, i)
        if not chain.upstreams and not unnamed:
            problems.append(f"{path}.upstreams: at least one upstream is needed")
        if chain.block_time_s <= 0:
            problems.append(f"{path}.block_time_s: must be more than 0")
        if chain.idle_after_s <= 0 or chain.activation_timeout_s <= 0:
            key = "idle_after_s" if chain.idle_after_s <= 0 else "activation_timeout_s"
            problems.append(f"{path}.{key}: must be more than 0")
        if chain.finality_depth is not None and chain.finality_depth < 0:
            problems.append(f"{path}.finality_depth: must be 0 or more")
        if chain.head_poll_interval <= 0:
            problems.append(f"{path}.head_poll_interval: must be more than 0")
        if chain.max_lag_blocks < 0:
            problems.append(f"{path}.max_lag_blocks: must be 0 or more")
        if chain.hold_ahead_s < 0:
            problems.append(f"{path}.hold_ahead_s: must be 0 or more")
        if chain.verify_logs_max_blocks < 0:
            problems.append(f"{path}.verify_logs_max_blocks: must be 0 or more")
        for k, rule in enumerate(chain.quorum):
            if rule.upstreams < 2:
                problems.append(f"{path}.quorum[{k}].upstreams: must be at least 2")
            elif rule.upstreams > len(chain.upstreams):
                problems.append(
                    f"{path}.quorum[{k}].upstreams: the chain has only "
                    f"{len(chain.upstreams)} upstreams"
                )
        for j, up in enumerate(chain.upstreams):
            if up.weight <= 0:
                problems.append(f"{path}.upstreams[{j}].weight: must be more than 0")
        upstreams = [
            _resolve_upstream(up, chain.chain_id or 0, f"{path}.upstreams[{j}]", problems)
            for j, up in enumerate(chain.upstreams)
        ]
        upstreams = _named_apart_on_shared_hosts(chain.upstreams, upstreams)
        seen_up: dict[str, int] = {}
        for j, up in enumerate(upstreams):
            if not up.name:  # unresolved: its problem is already reported
                continue
            if not up.name.isprintable() or "," in up.name:
                # Names are sent in X-Rpcgate-Upstream (comma-joined for a batch).
                problems.append(
                    f"{path}.upstreams[{j}].name: must be printable and without commas, "
                    f"not {up.name!r}"
                )
            if up.name in seen_up:
                problems.append(
                    f"{path}.upstreams[{j}].name: {up.name!r} is already "
                    f"upstreams[{seen_up[up.name]}]; give each a distinct `name`"
                )
            seen_up.setdefault(up.name, j)
        chains.append(dataclasses.replace(chain, upstreams=tuple(upstreams)))
    return dataclasses.replace(config, chains=_aliases_apart(chains, problems))


def _aliases_apart(chains: list[ChainConfig], problems: list[str]) -> tuple[ChainConfig, ...]:
    """Each chain keeps the aliases no other chain is named or aliased (a name wins over an
    alias, an earlier chain's alias over a later one's); a malformed alias is a problem."""
    taken = {c.name for c in chains} | {str(c.chain_id) for c in chains}
    kept = []
    for i, chain in enumerate(chains):
        aliases = []
        for alias in chain.aliases:
            if not _CHAIN_NAME.match(alias) or alias.isdigit():
                problems.append(
                    f"chains[{i}].aliases: must be letters, digits, - or _ and not all "
                    f"digits, not {alias!r}"
                )
            elif alias not in taken:
                aliases.append(alias)
                taken.add(alias)
        kept.append(dataclasses.replace(chain, aliases=tuple(aliases)))
    return tuple(kept)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without the snippet of the file PyYAML quotes: the line
    around the problem may hold a key."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = "; ".join(part for part in (exc.context, exc.problem) if part)
        return f"{what} (line {mark.line + 1}, column {mark.column + 1})"
    return type(exc).__name__


def parse_config(
    text: str, env: typing.Mapping[str, str] | None = None, source: str = "config"
) -> Config:
    """Parses YAML text into a resolved Config, or raises ConfigError with every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {yaml_problem(exc)}"]) from None
    return config_from_data(raw, env)


def config_from_data(raw: typing.Any, env: typing.Mapping[str, str] | None = None) -> Config:
    """A configuration given as data (the YAML's structure: mappings, lists, scalars) made
    a resolved Config, or ConfigError with every problem."""
    problems: list[str] = []
    raw = substitute_env(raw, os.environ if env is None else env, "", problems)
    raw = complete_chains(raw, problems)  # a chain named in the table is a whole chain
    config = _resolve(load_dataclass(Config, raw, "", problems), problems)
    if problems:
        # One problem per key path: a value that failed to load also fails later checks.
        first_per_path = {p.split(": ", 1)[0]: p for p in reversed(problems)}
        raise ConfigError([p for p in problems if p in first_per_path.values()])
    return typing.cast(Config, config)


def load_config(path: str | Path | None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Loads FILE, or the embedded zero-config default when path is None."""
    if path is None:
        text = resources.files("rpcgate.config").joinpath("default.yaml").read_text()
        return parse_config(text, env, "embedded default")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_config(text, env, str(path))


def config_reference() -> str:
    """The config reference in docs/configuration.md, generated from the schema (a test keeps
    them equal)."""
    return reference(Config)
