"""The admin endpoint: outage drills over HTTP, behind a bearer token.

Off unless `admin.token` is set, and then every path under /admin/ answers 404, as if it
were not there. On, every request needs `Authorization: Bearer <admin.token>`, compared in
constant time; a missing or wrong one is 401, and no token is ever echoed. The token is
registered with the secret masker, so it cannot reach a log line, a page or a metric. It is
read at each request: a reload (SIGHUP) rotates it, or turns the endpoint on or off.

    POST   /admin/drills  {"upstream": NAME} or {"domain": TAG}, "seconds": 1..86400,
                          optional "chain", "by", "reason"        -> 201, the drill
    GET    /admin/drills                                           -> 200, {"drills": [...]}
    DELETE /admin/drills  {"id": ID} or the target (body or query) -> 200, the drill ended

`parse_drill` and `parse_end` decide (pure, over the served chains as plain data); the
handler is the shell around them and `drills.Drills`.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import orjson
import structlog
from aiohttp import web

from rpcgate.consensus.drills import (
    DOMAIN,
    MAX_SECONDS,
    MIN_SECONDS,
    UPSTREAM,
    Drill,
    Drills,
    Target,
)
from rpcgate.rpc.masking import MASKER
from rpcgate.storage.shared_events import SharedEvents

if TYPE_CHECKING:
    from rpcgate.chain.runtime import ChainRuntime
    from rpcgate.config.settings import Config

log = structlog.get_logger("rpcgate.admin")

ROUTE = "/admin/{path:.*}"
_TEXT_MAX_CHARS = 200  # of `by` and `reason`
_DRILL_KEYS = ("by", "chain", DOMAIN, "reason", "seconds", UPSTREAM)
_END_KEYS = ("chain", DOMAIN, "id", UPSTREAM)
_DRILL_ID = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True, slots=True)
class ServedChain:
    """What a drill request is checked against: a chain's name, id and upstreams."""

    name: str
    chain_id: int
    upstreams: tuple[tuple[str, str], ...]  # (name, failure domain)


@dataclass(frozen=True, slots=True)
class DrillRequest:
    target: Target
    seconds: float
    by: str
    reason: str
    drill_id: str | None = None  # given by the worker that passed the drill on


class Fanout(Protocol):
    """The other processes a drill also goes to (`serve --workers N`: the sibling workers,
    edge/siblings.py): each is sent the same request once, with the drill's id."""

    def forwarded(self, request: web.Request) -> bool: ...

    async def send(self, request: web.Request, body: bytes | None, until: float) -> int: ...


class EventsFanout:
    """With Redis, a drill goes to every process of every replica (workers included) as a
    shared event (storage/shared_events.py), kept until it ends for replicas started later."""

    def __init__(self, events: SharedEvents) -> None:
        self.events = events

    def forwarded(self, request: web.Request) -> bool:
        return False  # events are applied by `apply_event`, never sent over HTTP

    async def send(self, request: web.Request, body: bytes | None, until: float) -> int:
        payload = orjson.loads(body) if body else {}
        drill_id = str(payload.get("id", ""))
        event = {"method": request.method, "body": payload}
        heard = await self.events.announce("drill", drill_id, event, until)
        return max(0, heard - 1)  # the others: this process heard its own too


def apply_event(gateway: Administered, kind: str, payload: dict[str, Any]) -> None:
    """A drill another process started or ended (a shared event): the same here, by its id,
    for what is left of it."""
    body = payload.get("body")
    if kind != "drill" or not isinstance(body, dict):
        return
    now, chains = time.monotonic(), served_chains(gateway)
    if payload.get("method") == "DELETE":
        ended = parse_end(body, chains)
        if not isinstance(ended, Problem):
            gateway.drills.end(now, drill_id=ended.drill_id, target=ended.target)
        return
    asked = parse_drill(body, chains, forwarded=True)
    if isinstance(asked, Problem):
        log.warning("shared_drill_refused", why=asked.message)
        return
    left_s = float(payload.get("until") or 0) - time.time()
    seconds = min(asked.seconds, max(MIN_SECONDS, left_s))
    gateway.drills.start(
        asked.target, seconds, now, by=asked.by, reason=asked.reason, drill_id=asked.drill_id
    )


@dataclass(frozen=True, slots=True)
class EndRequest:
    drill_id: str | None
    target: Target | None


@dataclass(frozen=True, slots=True)
class Problem:
    """A request refused: HTTP 400 with this message (and what would have been accepted)."""

    message: str
    known: tuple[str, ...] | None = None


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether `Authorization` carries the token; constant time in the token's content."""
    scheme, _, given = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not given.isascii():  # a token is printable ASCII
        given = ""
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _target(
    payload: dict[str, Any], chains: list[ServedChain], check_known: bool
) -> Target | Problem:
    named = [kind for kind in (UPSTREAM, DOMAIN) if kind in payload]
    if len(named) != 1:
        return Problem("name exactly one of `upstream` or `domain`")
    kind = named[0]
    name = payload[kind]
    if not isinstance(name, str) or not name:
        return Problem(f"`{kind}` must be a non-empty string, not {_shown(name)}")
    chain_name = None
    scope = chains
    if payload.get("chain") is not None:
        wanted = str(payload["chain"])
        found = [c for c in chains if wanted in (c.name, str(c.chain_id))]
        if not found:
            if check_known:
                return Problem(f"unknown chain {wanted!r}", tuple(c.name for c in chains))
            chain_name = wanted
        else:
            chain_name, scope = found[0].name, found[:1]
    if check_known:
        index = 0 if kind == UPSTREAM else 1
        known = sorted({up[index] for chain in scope for up in chain.upstreams})
        if name not in known:
            where = "" if chain_name is None else f" on {chain_name}"
            return Problem(f"unknown {kind} {name!r}{where}", tuple(known))
    return Target(kind, name, chain_name)  # type: ignore[arg-type]


def _unknown_keys(payload: dict[str, Any], allowed: tuple[str, ...]) -> Problem | None:
    unknown = sorted(set(payload) - set(allowed))
    if unknown:
        return Problem(f"unknown key {unknown[0]!r}", allowed)
    return None


def parse_drill(
    payload: Any, chains: list[ServedChain], *, forwarded: bool = False
) -> DrillRequest | Problem:
    """A POST body: what to drain, for how long, by whom and why (and, passed on by another
    worker, the drill's id there)."""
    if not isinstance(payload, dict):
        return Problem("the body must be a JSON object")
    problem = _unknown_keys(payload, (*_DRILL_KEYS, "id") if forwarded else _DRILL_KEYS)
    if problem is not None:
        return problem
    target = _target(payload, chains, check_known=True)
    if isinstance(target, Problem):
        return target
    seconds = payload.get("seconds")
    if (
        not isinstance(seconds, int | float)
        or isinstance(seconds, bool)
        or not math.isfinite(seconds)
        or not MIN_SECONDS <= seconds <= MAX_SECONDS
    ):
        return Problem(
            f"`seconds` must be a number from {MIN_SECONDS:g} to {MAX_SECONDS:g}, "
            f"not {_shown(seconds)}"
        )
    texts = {}
    for key in ("by", "reason"):
        value = payload.get(key, "")
        if not isinstance(value, str) or len(value) > _TEXT_MAX_CHARS:
            return Problem(f"`{key}` must be a string of at most {_TEXT_MAX_CHARS} characters")
        texts[key] = value
    drill_id = payload.get("id")
    if drill_id is not None and not (isinstance(drill_id, str) and _DRILL_ID.fullmatch(drill_id)):
        return Problem("`id` must be 8 hexadecimal digits")
    return DrillRequest(target, float(seconds), texts["by"], texts["reason"], drill_id)


def parse_end(payload: Any, chains: list[ServedChain]) -> EndRequest | Problem:
    """A DELETE body or query: the drill's id, or its target as it was given."""
    if not isinstance(payload, dict):
        return Problem("the body must be a JSON object")
    problem = _unknown_keys(payload, _END_KEYS)
    if problem is not None:
        return problem
    if "id" in payload:
        if len(payload) > 1 or not isinstance(payload["id"], str):
            return Problem("name a drill by its `id` (a string) alone, or by its target")
        return EndRequest(payload["id"], None)
    # An upstream a reload removed may still be drilled: the target need not be served.
    target = _target(payload, chains, check_known=False)
    if isinstance(target, Problem):
        return Problem(target.message + " (or give the drill's `id`)")
    return EndRequest(None, target)


def drained_upstreams(target: Target, chains: list[ServedChain]) -> dict[str, list[str]]:
    """Per chain, the upstreams a target covers."""
    covered = {}
    for chain in chains:
        names = [
            name for name, domain in chain.upstreams if target.covers(name, domain, chain.name)
        ]
        if names:
            covered[chain.name] = names
    return covered


class Administered(Protocol):
    """What the admin endpoint reads of a gateway (a reload swaps its config and chains)."""

    config: Config
    drills: Drills
    chains: list[ChainRuntime]


def served_chains(gateway: Administered) -> list[ServedChain]:
    return [
        ServedChain(
            runtime.config.name,
            runtime.config.chain_id,
            tuple((up.name, up.domain) for up in runtime.upstreams.values()),
        )
        for runtime in gateway.chains
    ]


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(MASKER.mask_any(payload)),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _refused(problem: Problem) -> web.Response:
    body: dict[str, Any] = {"error": problem.message}
    if problem.known is not None:
        body["known"] = list(problem.known)
    return _json(body, 400)


class AdminEndpoint:
    """The /admin/ routes of one gateway."""

    def __init__(self, gateway: Administered, fanout: Fanout | None = None) -> None:
        self._gateway = gateway
        self._fanout = fanout
        self._masked: str | None = None
        self._token()  # masked from the start, not from the first request

    def _token(self) -> str | None:
        token = self._gateway.config.admin.token or None
        if token is not None and token != self._masked:
            MASKER.add(token)
            self._masked = token
        return token

    async def handle(self, request: web.Request) -> web.StreamResponse:
        token = self._token()
        if token is None:
            raise web.HTTPNotFound()  # off: the same answer as a path that does not exist
        if not bearer_matches(request.headers.get("Authorization"), token):
            return _json(
                {"error": "the admin endpoint needs `Authorization: Bearer <admin.token>`"},
                401,
                {"WWW-Authenticate": 'Bearer realm="rpcgate admin"'},
            )
        if request.match_info["path"].rstrip("/") != "drills":
            return _json({"error": "not found; the admin endpoint is /admin/drills"}, 404)
        if request.method == "GET":
            return self._list()
        if request.method == "POST":
            return await self._start(request)
        if request.method == "DELETE":
            return await self._end(request)
        return _json(
            {"error": f"{request.method} is not served here"},
            405,
            {"Allow": "GET, POST, DELETE"},
        )

    def _describe(self, drill: Drill, now: float, chains: list[ServedChain]) -> dict[str, Any]:
        return {**drill.as_dict(now), "drained": drained_upstreams(drill.target, chains)}

    def _list(self) -> web.Response:
        now, chains = time.monotonic(), served_chains(self._gateway)
        drills = self._gateway.drills.active(now)
        return _json({"drills": [self._describe(d, now, chains) for d in drills]})

    async def _start(self, request: web.Request) -> web.Response:
        payload = await _read_json(request)
        chains = served_chains(self._gateway)
        fanout = self._fanout
        forwarded = fanout is not None and fanout.forwarded(request)
        asked = (
            parse_drill(payload, chains, forwarded=forwarded)
            if not isinstance(payload, Problem)
            else payload
        )
        if isinstance(asked, Problem):
            return _refused(asked)
        now = time.monotonic()
        drill = self._gateway.drills.start(
            asked.target,
            asked.seconds,
            now,
            by=asked.by or str(request.remote),
            reason=asked.reason,
            drill_id=asked.drill_id,
        )
        # The end is logged on time even when nothing reads the drills then.
        asyncio.get_running_loop().call_later(asked.seconds + 0.01, self._expire)
        body = self._describe(drill, now, chains)
        emptied = [
            chain.name
            for chain in chains
            if all(
                self._gateway.drills.drained_for(name, domain, now, chain.name) > 0
                for name, domain in chain.upstreams
            )
        ]
        if emptied:
            body["warning"] = (
                "every upstream of " + ", ".join(emptied) + " is drained: they serve on as last "
                "resorts, so the drill shows nothing"
            )
        if fanout is not None and not forwarded:  # every worker drains it, by the same id
            passed_on = {**payload, "id": drill.id, "by": drill.by}
            until = drill.started_wall + drill.seconds
            body["workers"] = 1 + await fanout.send(request, orjson.dumps(passed_on), until)
        return _json(body, 201)

    async def _end(self, request: web.Request) -> web.Response:
        payload: Any = dict(request.query)
        if request.can_read_body:
            body = await _read_json(request)
            if body is not None:
                payload = body
        chains = served_chains(self._gateway)
        asked = parse_end(payload, chains) if not isinstance(payload, Problem) else payload
        if isinstance(asked, Problem):
            return _refused(asked)
        now = time.monotonic()
        drill = self._gateway.drills.end(now, drill_id=asked.drill_id, target=asked.target)
        fanout = self._fanout
        if fanout is not None and not fanout.forwarded(request):
            ended_by = {"id": drill.id} if drill is not None else payload
            await fanout.send(request, orjson.dumps(ended_by), 0.0)
        if drill is None:
            named = f"id {asked.drill_id}" if asked.target is None else asked.target.describe()
            return _json({"error": f"no drill is running for {named}"}, 404)
        return _json({**self._describe(drill, now, chains), "seconds_left": 0.0})

    def _expire(self) -> None:
        self._gateway.drills.expire(time.monotonic())


async def _read_json(request: web.Request) -> Any:
    """The body as JSON: None when empty, a Problem when it does not parse."""
    body = await request.read()
    if not body.strip():
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return Problem("the body is not JSON")


def add_admin_routes(
    app: web.Application, gateway: Administered, fanout: Fanout | None = None
) -> None:
    """Every path under /admin/ goes to one handler, so that with the endpoint off each of
    them (whatever the method) answers exactly as an absent path does."""
    app.router.add_route("*", ROUTE, AdminEndpoint(gateway, fanout).handle)
