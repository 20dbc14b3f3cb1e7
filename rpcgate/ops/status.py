"""`GET /status.json`: what the gateway believes about every chain and upstream, and why.

Built from plain data only; upstream URLs appear masked, and every string passes the
secret masker on the way out. `GET /status` is the same, for people: one HTML file in the
package that fetches status.json by itself, so it shows nothing status.json does not.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.resources
import time
from typing import Any

from aiohttp import web

from rpcgate.chain.runtime import ChainRuntime
from rpcgate.consensus.drills import Drill, Drills
from rpcgate.consensus.heads import Block, Tagged
from rpcgate.consensus.standing import Standing, lag_blocks, ms, standing
from rpcgate.ops.history import Histories, figures
from rpcgate.rpc.masking import MASKER
from rpcgate.storage.response_cache import CacheCounters, ResponseCache, resident_bytes
from rpcgate.upstream.websocket import UpstreamSocket

# Read once, at import: a package built without it fails at startup, not on first view.
STATUS_PAGE = importlib.resources.files("rpcgate.ops").joinpath("status.html").read_bytes()
# The page must work offline and inside a cluster: the browser is told to load nothing but
# the page itself and status.json from the same origin.
_STATUS_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
}


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="seconds")


def _block(block: Block | Tagged | None) -> dict[str, Any] | None:
    if block is None:
        return None
    return {"number": block.number, "hash": block.hash}


def _hit_rate(counters: CacheCounters) -> float | None:
    """Hits over cache look-ups; calls that bypass the cache never look, so do not count."""
    lookups = counters.hits + counters.misses
    return None if lookups == 0 else round(counters.hits / lookups, 4)


def chain_status(
    runtime: ChainRuntime, drills: Drills | None = None, history: Histories | None = None
) -> dict[str, Any]:
    """`history`: the per-upstream rings the call path fills (`CallRecorder.history`); each
    upstream's lag is sampled into it here, and its figures shown as `history`."""
    consensus = runtime.tracker.consensus
    head = consensus.head.number if consensus.head is not None else None
    now = time.monotonic()
    upstreams = []
    for upstream in runtime.upstreams.values():
        view = runtime.tracker.views[upstream.name]
        seen = standing(upstream.health, upstream.config.weight, now)
        drill = (
            None
            if drills is None
            else drills.drill_for(upstream.name, upstream.domain, now, runtime.config.name)
        )
        drained_s = 0.0 if drill is None else round(drill.left_s(now), 3)
        lag = lag_blocks(view, head)
        # An on-demand chain not in use has nothing to chart (14 chains at zero config).
        ring = (
            None
            if history is None or not runtime.active
            else history.of(runtime.config.name, upstream.name)
        )
        if ring is not None:
            ring.note_lag(lag, now)
        upstreams.append(
            {
                "name": upstream.name,
                "url": upstream.display_url,
                "kind": upstream.config.kind,
                "domain": upstream.domain,
                "weight": upstream.config.weight,
                "state": str(view.state),
                "reason": view.reason,
                "since": _iso(view.since),
                "head": _block(view.head),
                # What every replica behind its URL has shown (below `head` when uneven).
                "consistent_height": view.consistent_height,
                "lag": lag,
                "fork_height": view.fork_height,
                "agreed_height": view.agreed_height,
                "chain_id": view.chain_id,
                "last_poll": _iso(view.last_poll_at),
                "latency_ms": ms(seen.latency_s),
                "error_rate": round(seen.error_rate, 4),
                "score": _score(seen),
                "requests": seen.requests,
                "integrity_failures": seen.integrity_failures,
                "cooldown_s": round(seen.cooling_down_s, 3),
                "cooldown_reason": seen.cooldown_reason,
                "drained_s": drained_s,
                "rotation": rotation(seen.cooling_down_s, drained_s),
                "drill": _drill(drill),
                "websocket": _socket(runtime.sockets.get(upstream.name)),
                "history": None if ring is None else figures(ring, now).as_dict(),
            }
        )
    return {
        "name": runtime.config.name,
        "chain_id": runtime.config.chain_id,
        "aliases": list(runtime.config.aliases),
        # false: an on-demand chain not in use (its first call starts its polling)
        "active": runtime.active,
        "consensus": {
            "head": _block(consensus.head),
            "safe": _block(consensus.safe),
            "finalized": _block(consensus.finalized),
            "voters": list(consensus.voters),
        },
        "max_lag_blocks": runtime.config.max_lag_blocks,
        "verify": runtime.config.verify,
        # False once this chain's headers proved not to hash as Ethereum's (verifier.py)
        "headers_recomputed": runtime.verifier.headers_recomputed,
        "hedges": {
            "sent": runtime.hedges.sent,
            "won": runtime.hedges.won,
            "refused_by_budget": runtime.hedges.refused,
        },
        "cache": {
            **dataclasses.asdict(runtime.cache_counters),
            "hit_rate": _hit_rate(runtime.cache_counters),
        },
        "denied_by_policy": dict(runtime.denied),  # calls refused, by the rule that did
        "upstreams": upstreams,
    }


def rotation(cooling_down_s: float, drained_s: float) -> str:
    """Whether routing may pick the upstream now, whatever its head says: `in`, or out of
    rotation for a while, `drained` by an outage drill or `cooling_down` after failures."""
    if drained_s > 0:
        return "drained"
    if cooling_down_s > 0:
        return "cooling_down"
    return "in"


def _score(seen: Standing) -> dict[str, Any]:
    """The routing score (milliseconds-like, lower is better) and what it is made of."""
    parts = seen.score
    return {
        "value": round(parts.value * 1000, 3),
        "latency_ms": round(parts.latency_s * 1000, 3),
        "p95_ms": ms(seen.p95_s, 3),
        "error_rate": round(parts.error_rate, 4),
        "in_flight": parts.in_flight,
        "weight": parts.weight,
    }


def cache_status(cache: ResponseCache) -> dict[str, Any]:
    redis = cache.redis
    return {
        "memory_bytes": cache.memory.bytes,
        "memory_budget_bytes": cache.memory.max_bytes,
        "memory_entries": len(cache.memory),
        # Beside the cache's own count, what the whole process holds (None: not Linux).
        "process_rss_bytes": resident_bytes(),
        "redis": None if redis is None else ("up" if redis.up else "down"),
    }


def _drill(drill: Drill | None) -> dict[str, Any] | None:
    """The drill taking an upstream out of rotation: what, who and why."""
    if drill is None:
        return None
    return {
        "id": drill.id,
        "target": drill.target.describe(),
        "seconds": drill.seconds,
        "by": drill.by,
        "reason": drill.reason,
    }


def _socket(socket: UpstreamSocket | None) -> dict[str, Any] | None:
    """The upstream's WebSocket (ws_url), when it has one."""
    if socket is None:
        return None
    state = socket.state
    return {
        "url": socket.display_url,
        "connected": state.connected,
        "since": _iso(state.since) if state.since else None,
        "last_error": state.last_error,
        "reconnects": state.reconnects,
        "offers_pending": state.offers_pending,
    }


def gateway_status(
    chains: list[ChainRuntime],
    cache: ResponseCache,
    drills: Drills | None = None,
    clients: dict[str, Any] | None = None,
    history: Histories | None = None,
) -> dict[str, Any]:
    """`clients`: calls refused before reaching a chain, and where rate limits count;
    `history`: the per-upstream rings of the last 15 minutes (`CallRecorder.history`)."""
    now = time.monotonic()
    if history is not None:
        history.keep_only({(c.config.name, name) for c in chains for name in c.upstreams})
    status = {
        "time": _iso(time.time()),
        "cache": cache_status(cache),
        "clients": clients or {},
        "drills": [] if drills is None else [d.as_dict(now) for d in drills.active(now)],
        "chains": [chain_status(c, drills, history) for c in chains],
    }
    masked: dict[str, Any] = MASKER.mask_any(status)
    return masked


async def handle_status_page(request: web.Request) -> web.Response:
    return web.Response(
        body=STATUS_PAGE,
        content_type="text/html",
        charset="utf-8",
        headers=_STATUS_PAGE_HEADERS,
    )
