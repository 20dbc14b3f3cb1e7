"""Outage drills: the registry's bookkeeping (tables), the admin endpoint over HTTP (off,
auth, validation, listing, ending early), what status.json, the status page, logs and
metrics show, and a whole failure domain drained under load without a failed call."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import requests
import structlog

from rpcgate.config.settings import AdminConfig, ConfigError, parse_config
from rpcgate.consensus.drills import Drills, Target
from rpcgate.ops.admin import (
    DrillRequest,
    EndRequest,
    Problem,
    ServedChain,
    bearer_matches,
    parse_drill,
    parse_end,
)
from rpcgate.rpc.logs import configure_logging
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES
from tests.harness.browser import Browser
from tests.harness.faultproxy import FaultProxy
from tests.harness.loop import BackgroundLoop

TOKEN = "drill-token-0123456789abcdef"
DRILLS = "/admin/drills"

# --- the registry -----------------------------------------------------------------------

A = Target("upstream", "a")
AWS = Target("domain", "aws")
A_ON_MAIN = Target("upstream", "a", chain="main")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("target", "upstream", "domain", "chain", "drained"),
    [
        (A, "a", "aws", None, True),
        (A, "b", "aws", None, False),
        (A, "a", "gcp", "main", True),  # an upstream drill follows the name, any domain
        (AWS, "a", "aws", None, True),
        (AWS, "b", "aws", "test", True),  # a domain drill without a chain: every chain
        (AWS, "c", "gcp", None, False),
        (Target("upstream", "aws"), "c", "aws", None, False),  # names and domains apart
        (Target("domain", "a"), "a", "gcp", None, False),
        (A_ON_MAIN, "a", "aws", "main", True),
        (A_ON_MAIN, "a", "aws", "test", False),  # another chain's upstream of that name
        (A_ON_MAIN, "a", "aws", None, True),  # the caller does not say: it counts
    ],
)
def test_a_drill_drains_its_upstream_or_every_upstream_of_its_domain(
    target: Target, upstream: str, domain: str, chain: str | None, drained: bool
) -> None:
    drills = Drills()
    drills.start(target, 30, now=100.0)
    assert drills.drained_for(upstream, domain, 110.0, chain) == (20.0 if drained else 0.0)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("now", "left"),
    [(100.0, 10.0), (105.0, 5.0), (109.75, 0.25), (110.0, 0.0), (500.0, 0.0)],
)
def test_a_drill_counts_down_and_ends_by_itself(now: float, left: float) -> None:
    drills = Drills()
    drills.start(AWS, 10, now=100.0)
    assert drills.drained_for("a", "aws", now) == left
    assert [d.target for d in drills.active(now)] == ([AWS] if left else [])


@pytest.mark.unit
def test_no_drill_drains_nothing() -> None:
    drills = Drills()
    assert drills.drained_for("a", "aws", 0.0) == 0.0
    assert drills.active(0.0) == [] and drills.next_end() is None


@pytest.mark.unit
def test_overlapping_drills_keep_an_upstream_out_for_the_longest() -> None:
    drills = Drills()
    drills.start(A, 5, now=0.0)
    domain = drills.start(AWS, 20, now=0.0)
    assert drills.drained_for("a", "aws", 1.0) == 19.0
    assert drills.drill_for("a", "aws", 1.0) == domain
    assert drills.drained_for("b", "aws", 1.0) == 19.0
    assert drills.end(2.0, target=AWS) == domain  # the domain's drill ended early
    assert drills.drained_for("a", "aws", 2.0) == 3.0  # its own still runs
    assert drills.drained_for("b", "aws", 2.0) == 0.0
    assert drills.next_end() == 5.0


@pytest.mark.unit
def test_draining_a_target_again_replaces_its_drill() -> None:
    drills = Drills()
    first = drills.start(AWS, 60, now=0.0)
    second = drills.start(AWS, 5, now=1.0, by="ops", reason="shorter")
    assert first.id != second.id
    assert drills.active(1.0) == [second]
    assert drills.drained_for("a", "aws", 1.0) == 5.0


@pytest.mark.unit
@pytest.mark.parametrize("by", ["id", "target"])
def test_a_drill_ends_early_by_its_id_or_its_target(by: str) -> None:
    drills = Drills()
    drill = drills.start(A_ON_MAIN, 60, now=0.0)
    drills.start(AWS, 60, now=0.0)
    named: dict[str, Any] = {"drill_id": drill.id} if by == "id" else {"target": A_ON_MAIN}
    assert drills.end(1.0, **named) == drill
    assert drills.end(1.0, **named) is None  # once
    assert drills.end(1.0, target=A) is None  # a target is matched exactly, chain included
    assert [d.target for d in drills.active(1.0)] == [AWS]


@pytest.mark.unit
@pytest.mark.parametrize("seconds", [1, 86400])
def test_the_registry_takes_one_second_to_a_day(seconds: float) -> None:
    assert Drills().start(A, seconds, now=0.0).seconds == seconds


@pytest.mark.unit
@pytest.mark.parametrize("seconds", [0, 0.5, 86400.5, -1])
def test_the_registry_refuses_durations_out_of_bounds(seconds: float) -> None:
    with pytest.raises(ValueError, match="seconds must be 1 to 86400"):
        Drills().start(A, seconds, now=0.0)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    captured = io.StringIO()
    # Put back as it was: configuring again would bind the stderr of this moment (pytest's
    # capture, or mutmut's), closed by the time a later test logs.
    previous, handlers = structlog.get_config(), logging.getLogger().handlers
    configure_logging("info", stream=captured, cache=False)
    try:
        yield captured
    finally:
        structlog.configure(**previous)
        logging.getLogger().handlers = handlers


def events(captured: io.StringIO, *names: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in captured.getvalue().splitlines() if line.startswith("{")]
    return [e for e in lines if e.get("event") in names]


@pytest.mark.unit
def test_each_drill_start_and_end_is_logged_once(log_lines: io.StringIO) -> None:
    drills = Drills()
    expired = drills.start(AWS, 10, now=0.0, by="ops", reason="game day")
    early = drills.start(A, 60, now=0.0)
    replaced = drills.start(A_ON_MAIN, 60, now=0.0)
    drills.start(A_ON_MAIN, 30, now=1.0)
    drills.end(2.0, drill_id=early.id)
    for now in (10.0, 11.0, 12.0):  # expiry is noticed often, and logged once
        drills.expire(now)
        drills.active(now)
    logged = events(log_lines, "drill_started", "drill_ended")
    started = [e for e in logged if e["event"] == "drill_started"]
    ended = {e["drill"]: e for e in logged if e["event"] == "drill_ended"}
    assert len(started) == 4 and len(ended) == 3
    assert started[0] | {"timestamp": None} == {
        "event": "drill_started",
        "level": "info",
        "timestamp": None,
        "drill": expired.id,
        "target": "domain aws",
        "seconds": 10,
        "by": "ops",
        "reason": "game day",
    }
    assert (ended[expired.id]["why"], ended[expired.id]["ran_s"]) == ("expired", 10.0)
    assert (ended[early.id]["why"], ended[early.id]["target"]) == ("ended early", "upstream a")
    assert ended[replaced.id]["why"] == "replaced"
    assert ended[replaced.id]["target"] == "upstream a on main"


@pytest.mark.unit
def test_a_drill_is_shown_with_its_target_its_times_and_who_started_it() -> None:
    drills = Drills()
    drill = drills.start(A, 30, now=100.0, by="ops", reason="game day", wall=86400.0)
    before = time.time()
    shown = drill.as_dict(110.12345)
    after = time.time()
    ends = shown.pop("ends")
    assert shown == {
        "id": drill.id,
        "upstream": "a",
        "chain": None,
        "target": "upstream a",
        "seconds": 30,
        "seconds_left": 19.877,
        "started": "1970-01-02T00:00:00Z",
        "by": "ops",
        "reason": "game day",
    }
    left = {time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t + 19.87655)) for t in (before, after)}
    assert ends in left  # to the second, in UTC
    assert re.fullmatch(r"[0-9a-f]{8}", drill.id)
    plain = drills.start(AWS, 10, now=100.0)
    assert (plain.by, plain.reason) == ("", "")
    assert abs(plain.started_wall - time.time()) < 60  # the wall clock when not given


@pytest.mark.unit
def test_active_drills_come_in_the_order_they_end() -> None:
    drills = Drills()
    longer = drills.start(A, 60, now=0.0)
    shorter = drills.start(AWS, 10, now=5.0)
    assert drills.active(6.0) == [shorter, longer]


@pytest.mark.unit
def test_a_drill_at_its_end_keeps_nothing_out() -> None:
    drills = Drills()
    drills.start(A, 10, now=0.0)
    assert drills.drill_for("a", "aws", 10.0) is None


@pytest.mark.unit
def test_a_drill_ended_early_logs_how_long_it_ran(log_lines: io.StringIO) -> None:
    drills = Drills()
    drill = drills.start(A, 30, now=100.0)
    drills.end(110.12345, drill_id=drill.id)
    (ended,) = events(log_lines, "drill_ended")
    assert (ended["seconds"], ended["ran_s"]) == (30, 10.123)


# --- what the admin endpoint accepts (pure) ---------------------------------------------

CHAINS = [
    ServedChain("main", 1, (("infura", "aws"), ("alchemy", "aws"), ("pokt", "pokt"))),
    ServedChain("test", 11155111, (("infura", "aws"), ("drpc", "drpc"))),
]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("payload", "accepted"),
    [
        ({"upstream": "pokt", "seconds": 60}, DrillRequest(Target("upstream", "pokt"), 60, "", "")),
        (
            {"domain": "aws", "seconds": 1.5, "by": "ana", "reason": "game day"},
            DrillRequest(Target("domain", "aws"), 1.5, "ana", "game day"),
        ),
        (
            {"upstream": "infura", "chain": "test", "seconds": 86400},
            DrillRequest(Target("upstream", "infura", "test"), 86400, "", ""),
        ),
        (  # a chain by its id, as in the URL
            {"domain": "drpc", "chain": 11155111, "seconds": 5},
            DrillRequest(Target("domain", "drpc", "test"), 5, "", ""),
        ),
    ],
)
def test_drill_requests_accepted(payload: Any, accepted: DrillRequest) -> None:
    assert parse_drill(payload, CHAINS) == accepted


@pytest.mark.unit
@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (None, Problem("the body must be a JSON object")),
        ([{"upstream": "pokt"}], Problem("the body must be a JSON object")),
        ({"seconds": 5}, Problem("name exactly one of `upstream` or `domain`")),
        (
            {"upstream": "pokt", "domain": "aws", "seconds": 5},
            Problem("name exactly one of `upstream` or `domain`"),
        ),
        (
            {"upstream": "", "seconds": 5},
            Problem("`upstream` must be a non-empty string, not ''"),
        ),
        (
            {"upstream": "nope", "seconds": 5},
            Problem("unknown upstream 'nope'", ("alchemy", "drpc", "infura", "pokt")),
        ),
        (
            {"upstream": "pokt", "chain": "test", "seconds": 5},
            Problem("unknown upstream 'pokt' on test", ("drpc", "infura")),
        ),
        (
            {"domain": "cloudflare", "seconds": 5},
            Problem("unknown domain 'cloudflare'", ("aws", "drpc", "pokt")),
        ),
        (
            {"domain": "aws", "chain": "polygon", "seconds": 5},
            Problem("unknown chain 'polygon'", ("main", "test")),
        ),
        (
            {"domain": "aws", "secs": 5},
            Problem(
                "unknown key 'secs'", ("by", "chain", "domain", "reason", "seconds", "upstream")
            ),
        ),
        *(
            (
                {"domain": "aws", "seconds": seconds},
                Problem(f"`seconds` must be a number from 1 to 86400, not {shown}"),
            )
            for seconds, shown in (
                (None, "None"),
                (0, "0"),
                (0.5, "0.5"),
                (86401, "86401"),
                (-5, "-5"),
                ("60", "'60'"),
                (True, "True"),
                (float("inf"), "inf"),
            )
        ),
        (
            {"domain": "aws", "seconds": 5, "reason": "x" * 201},
            Problem("`reason` must be a string of at most 200 characters"),
        ),
        (
            {"domain": "aws", "seconds": 5, "by": 7},
            Problem("`by` must be a string of at most 200 characters"),
        ),
    ],
)
def test_drill_requests_refused_say_why(payload: Any, problem: Problem) -> None:
    assert parse_drill(payload, CHAINS) == problem


@pytest.mark.unit
@pytest.mark.parametrize(
    ("payload", "asked"),
    [
        ({"id": "1a2b3c4d"}, EndRequest("1a2b3c4d", None)),
        ({"domain": "aws"}, EndRequest(None, Target("domain", "aws"))),
        (
            {"upstream": "infura", "chain": "1"},
            EndRequest(None, Target("upstream", "infura", "main")),
        ),
        # A target a reload removed may still be drilled: ending it is not refused.
        (
            {"upstream": "gone", "chain": "gone"},
            EndRequest(None, Target("upstream", "gone", "gone")),
        ),
        ({}, Problem("name exactly one of `upstream` or `domain` (or give the drill's `id`)")),
        (
            {"id": "1a2b3c4d", "domain": "aws"},
            Problem("name a drill by its `id` (a string) alone, or by its target"),
        ),
        ({"seconds": 5}, Problem("unknown key 'seconds'", ("chain", "domain", "id", "upstream"))),
    ],
)
def test_what_ends_a_drill(payload: Any, asked: EndRequest | Problem) -> None:
    assert parse_end(payload, CHAINS) == asked


@pytest.mark.unit
@pytest.mark.parametrize(
    ("authorization", "ok"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),  # the scheme is case-insensitive (RFC 9110)
        (f"  Bearer   {TOKEN}  ", True),
        (None, False),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        (TOKEN, False),  # no scheme
        (f"Basic {TOKEN}", False),
        (f"Bearer {TOKEN[:-1]}", False),
        (f"Bearer {TOKEN}x", False),
        (f"Bearer {TOKEN.upper()}", False),
        (f"Bearer {TOKEN[:-1]}\udcff", False),  # undecodable bytes as aiohttp hands them over
    ],
)
def test_the_bearer_token_must_match_exactly(authorization: str | None, ok: bool) -> None:
    assert bearer_matches(authorization, TOKEN) is ok


ONE_CHAIN = "chains: [{name: a, chain_id: 1, upstreams: [{preset: pokt}]}]\n"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("short-token", True),
        ("0123456789abcde", True),  # 15
        ("with spaces in the token", True),
        ("tökentökentökentöken", True),
        ("0123456789abcdef", False),  # 16
        ("", False),  # empty: the endpoint is off (as `${RPCGATE_ADMIN_TOKEN:-}` unset gives)
    ],
)
def test_admin_token_must_be_long_and_plain(token: str, problem: bool) -> None:
    text = "admin:\n  token: ${RPCGATE_ADMIN_TOKEN}\n" + ONE_CHAIN
    env = {"RPCGATE_ADMIN_TOKEN": token}
    if not problem:
        assert parse_config(text, env).admin == AdminConfig(token=token)
        return
    with pytest.raises(ConfigError) as raised:
        parse_config(text, env)
    assert raised.value.problems == [
        "admin.token: must be at least 16 characters, printable ASCII without spaces"
    ]
    assert token not in str(raised.value)


@pytest.mark.unit
def test_admin_is_off_by_default() -> None:
    assert parse_config(ONE_CHAIN, {}).admin.token is None


# --- the admin endpoint over HTTP -------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def call(
    gateway: RunningGateway,
    method: str,
    path: str = DRILLS,
    body: Any = None,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> Reply:
    async def send() -> Reply:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {}
        if isinstance(body, bytes):
            kwargs["data"] = body
        elif body is not None:
            kwargs["json"] = body
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, gateway.url + path, headers=sent, **kwargs) as resp,
        ):
            return Reply(resp.status, dict(resp.headers), await resp.text())

    return gateway.loop.run(send())


def get(gateway: RunningGateway, path: str) -> Reply:
    return call(gateway, "GET", path, token=None)


DOMAINS = ("d0", "d0", "d1")


@pytest.fixture
def devnet(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> tuple[list[FaultProxy], RunningGateway]:
    """Three anvil nodes behind fault proxies, node0 and node1 in domain d0, node2 in d1."""
    _, proxies = proxied_cluster(3, mined=2)
    gateway = start_gateway(
        [],
        upstreams=[
            {"name": f"node{i}", "url": p.url, "domain": DOMAINS[i]} for i, p in enumerate(proxies)
        ],
        admin={"token": TOKEN},
    )
    return proxies, gateway


def test_admin_off_answers_404_as_if_absent(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, proxies = proxied_cluster(1)
    gateway = start_gateway([p.url for p in proxies])  # no admin.token
    absent = get(gateway, "/no/such/path")
    assert absent.status == 404
    for method in ("GET", "POST", "DELETE", "PUT", "OPTIONS"):
        for path in (DRILLS, "/admin/", "/admin/anything/else"):
            reply = call(gateway, method, path, body={"domain": "x", "seconds": 5})
            assert (reply.status, reply.text) == (404, absent.text), (method, path)
    assert gateway.gateway.drills.active(time.monotonic()) == []


def test_admin_needs_the_token(devnet: tuple[list[FaultProxy], RunningGateway]) -> None:
    _, gateway = devnet
    drill = {"domain": "d0", "seconds": 30}
    wrong = "wrong-token-0123456789abcdef"
    for token, headers in (
        (None, None),
        (wrong, None),
        (None, {"Authorization": f"Basic {TOKEN}"}),
        (None, {"Authorization": TOKEN}),
        (TOKEN[:-1], None),
    ):
        for method in ("GET", "POST", "DELETE"):
            reply = call(gateway, method, body=drill, token=token, headers=headers)
            assert reply.status == 401, (token, headers, method)
            assert reply.headers["WWW-Authenticate"].startswith("Bearer")
            assert "Authorization: Bearer" in reply.json()["error"]
            assert TOKEN not in reply.text and wrong not in reply.text
            assert TOKEN[:-1] not in reply.text
    assert call(gateway, "GET", "/admin/nothing-here", token=None).status == 401  # auth first
    assert gateway.gateway.drills.active(time.monotonic()) == []
    assert call(gateway, "POST", body=drill).status == 201
    assert call(gateway, "GET", "/admin/nothing-here").status == 404
    assert call(gateway, "PUT", body=drill).status == 405


def test_a_new_token_counts_from_the_next_request(
    devnet: tuple[list[FaultProxy], RunningGateway],
) -> None:
    """A reload swaps `gateway.config`: the admin endpoint reads its token at each request."""
    _, gateway = devnet
    assert call(gateway, "GET").status == 200
    rotated = "rotated-token-0123456789abcdef"
    config = gateway.gateway.config
    gateway.gateway.config = dataclasses.replace(config, admin=AdminConfig(token=rotated))
    assert call(gateway, "GET").status == 401
    assert call(gateway, "GET", token=rotated).status == 200
    gateway.gateway.config = dataclasses.replace(config, admin=AdminConfig(token=None))
    assert call(gateway, "GET", token=rotated).status == 404


def test_drill_requests_refused_over_http_say_why(
    devnet: tuple[list[FaultProxy], RunningGateway],
) -> None:
    _, gateway = devnet
    unknown = call(gateway, "POST", body={"upstream": "node9", "seconds": 5})
    assert unknown.status == 400
    assert unknown.json() == {
        "error": "unknown upstream 'node9'",
        "known": ["node0", "node1", "node2"],
    }
    domain = call(gateway, "POST", body={"domain": "aws", "seconds": 5}).json()
    assert domain == {"error": "unknown domain 'aws'", "known": ["d0", "d1"]}
    too_long = call(gateway, "POST", body={"domain": "d0", "seconds": 86401})
    assert too_long.status == 400 and "from 1 to 86400" in too_long.json()["error"]
    not_json = call(gateway, "POST", body=b"{domain: d0")
    assert (not_json.status, not_json.json()) == (400, {"error": "the body is not JSON"})
    empty = call(gateway, "POST", body=b"")
    assert (empty.status, empty.json()) == (400, {"error": "the body must be a JSON object"})
    assert call(gateway, "GET").json() == {"drills": []}


def test_drills_are_listed_with_their_time_left_and_end_early(
    devnet: tuple[list[FaultProxy], RunningGateway],
) -> None:
    _, gateway = devnet
    started = call(
        gateway,
        "POST",
        body={"domain": "d0", "seconds": 60, "by": "ana", "reason": "game day"},
    )
    assert started.status == 201
    drill = started.json()
    assert drill["domain"] == "d0" and drill["chain"] is None
    assert (drill["by"], drill["reason"], drill["seconds"]) == ("ana", "game day", 60)
    assert drill["drained"] == {"devnet": ["node0", "node1"]}
    assert 59 < drill["seconds_left"] <= 60 and "warning" not in drill
    upstream = call(gateway, "POST", body={"upstream": "node2", "chain": "devnet", "seconds": 5})
    assert upstream.json()["by"] == "127.0.0.1"  # who, when the request does not say
    # Every upstream drained: they all serve on as last resorts; the answer says so.
    assert "every upstream of devnet is drained" in upstream.json()["warning"]

    time.sleep(0.3)
    listed = call(gateway, "GET").json()["drills"]
    assert [d["target"] for d in listed] == ["upstream node2 on devnet", "domain d0"]  # ends first
    assert listed[1]["id"] == drill["id"]
    assert listed[1]["seconds_left"] < drill["seconds_left"]
    assert 4 < listed[0]["seconds_left"] < 5

    by_query = call(gateway, "DELETE", "/admin/drills?upstream=node2&chain=devnet")
    assert (by_query.status, by_query.json()["seconds_left"]) == (200, 0.0)
    by_id = call(gateway, "DELETE", body={"id": drill["id"]})
    assert (by_id.status, by_id.json()["id"]) == (200, drill["id"])
    again = call(gateway, "DELETE", body={"id": drill["id"]})
    assert (again.status, again.json()) == (
        404,
        {"error": f"no drill is running for id {drill['id']}"},
    )
    assert call(gateway, "GET").json() == {"drills": []}


def test_status_shows_a_drained_upstream_and_it_comes_back_by_itself(
    devnet: tuple[list[FaultProxy], RunningGateway], log_lines: io.StringIO
) -> None:
    _, gateway = devnet
    drill = call(
        gateway, "POST", body={"upstream": "node1", "seconds": 1, "by": "ana", "reason": "why"}
    ).json()
    status = get(gateway, "/status.json").json()
    upstreams = {u["name"]: u for u in status["chains"][0]["upstreams"]}
    assert 0 < upstreams["node1"]["drained_s"] <= 1
    assert upstreams["node1"]["drill"] == {
        "id": drill["id"],
        "target": "upstream node1",
        "seconds": 1.0,
        "by": "ana",
        "reason": "why",
    }
    assert (upstreams["node0"]["drained_s"], upstreams["node0"]["drill"]) == (0.0, None)
    assert [d["id"] for d in status["drills"]] == [drill["id"]]

    time.sleep(1.2)  # nothing reads the drills meanwhile: the end is logged on time anyway
    assert [e["drill"] for e in events(log_lines, "drill_ended")] == [drill["id"]]
    status = get(gateway, "/status.json").json()
    assert status["drills"] == []
    assert all(u["drained_s"] == 0.0 for u in status["chains"][0]["upstreams"])
    assert call(gateway, "GET").json() == {"drills": []}
    assert len(events(log_lines, "drill_started", "drill_ended")) == 2


def test_the_admin_token_never_leaves_the_gateway(
    devnet: tuple[list[FaultProxy], RunningGateway], log_lines: io.StringIO
) -> None:
    _, gateway = devnet
    # Even where an operator pastes it by mistake: the masker knows it.
    drill = call(gateway, "POST", body={"domain": "d0", "seconds": 5, "reason": f"x {TOKEN}"})
    assert drill.status == 201 and drill.json()["reason"] == "x ***"
    call(gateway, "GET", token="not-the-token-0123456789")
    seen = [
        drill.text,
        call(gateway, "GET").text,
        get(gateway, "/status.json").text,
        get(gateway, "/metrics").text,
        get(gateway, "/status").text,
        log_lines.getvalue(),
    ]
    assert all(TOKEN not in text for text in seen)
    assert events(log_lines, "drill_started")[0]["reason"] == "x ***"


STATUS_PAGE_DRILLS = r"""(() => {
  const rows = document.querySelectorAll('[data-chain="devnet"] tr[data-upstream]');
  return Object.fromEntries([...rows].map((row) => {
    const cell = row.querySelector('[data-field="drill"]');
    return [row.dataset.upstream, {
      text: cell.firstChild.textContent, why: cell.lastChild.textContent,
      drained: cell.dataset.drained,
    }];
  }));
})()"""


def test_the_status_page_shows_a_drill_with_its_time_left_and_who_and_why(
    devnet: tuple[list[FaultProxy], RunningGateway], background_loop: BackgroundLoop
) -> None:
    _, gateway = devnet
    call(gateway, "POST", body={"domain": "d0", "seconds": 600, "by": "ana", "reason": "game day"})
    with Browser(background_loop) as browser:
        browser.navigate(gateway.url + "/status")

        def drills_shown() -> dict[str, Any] | None:
            shown = browser.evaluate(STATUS_PAGE_DRILLS)
            return shown if shown and shown["node0"]["drained"] == "true" else None

        shown = browser.wait_until(drills_shown, what="node0 and node1 shown drained")
        for name in ("node0", "node1"):
            assert shown[name]["text"].startswith("drained, 59") and shown[name]["text"].endswith(
                " s left"
            ), shown
            assert shown[name]["why"] == "domain d0 \u00b7 by ana \u00b7 game day"
        assert shown["node2"] == {"text": "no", "why": "", "drained": "false"}

        call(gateway, "DELETE", body={"domain": "d0"})
        browser.wait_until(
            lambda: browser.evaluate(STATUS_PAGE_DRILLS)["node0"]["text"] == "no",
            what="the drill gone from the page once ended",
        )
        assert browser.errors == []


# --- a whole domain drained under load ----------------------------------------------------
# Needs the failover to treat an upstream with `gateway.drills.drained_for(...) > 0` like one
# in cooldown: tried only when nothing else is left.

CLIENT_METHOD = "eth_getBalance"  # head polls never ask it: any seen is a client's call


@dataclass
class Answered:
    started: float  # monotonic
    ended: float
    ok: bool
    upstream: str
    detail: str


class Load:
    """One thread sending fresh calls (no cache read) one after another until stopped."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[Answered] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="drill-load", daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with requests.Session() as session:
            i = 0
            while not self._stop.is_set():
                i += 1
                body = {
                    "jsonrpc": "2.0",
                    "id": i,
                    "method": CLIENT_METHOD,
                    "params": [DEV_ADDRESSES[i % len(DEV_ADDRESSES)], "latest"],
                }
                started = time.monotonic()
                try:
                    resp = session.post(
                        self.url, json=body, headers={"Cache-Control": "no-cache"}, timeout=15
                    )
                    ok = resp.status_code == 200 and "result" in resp.json()
                    upstream, detail = resp.headers.get("X-Rpcgate-Upstream", ""), resp.text
                except (requests.RequestException, ValueError) as exc:
                    ok, upstream, detail = False, "", repr(exc)
                self.answers.append(Answered(started, time.monotonic(), ok, upstream, detail))

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answers) < count:
            assert self._thread.is_alive(), "the load thread died"
            assert time.monotonic() < deadline, f"only {len(self.answers)} answers"
            time.sleep(0.02)


def client_calls(proxy: FaultProxy) -> int:
    return proxy.methods.count(CLIENT_METHOD)


def wait_until(condition: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_draining_a_whole_domain_under_load_costs_no_failed_call(
    devnet: tuple[list[FaultProxy], RunningGateway],
) -> None:
    proxies, gateway = devnet
    d0 = proxies[:2]
    with Load(gateway.url + "/") as load:
        load.wait_for(30)
        wait_until(lambda: all(client_calls(p) for p in proxies), "every node serving at first")

        started = call(gateway, "POST", body={"domain": "d0", "seconds": 2, "reason": "drill"})
        assert started.status == 201
        drained_at = time.monotonic() - 0.05  # about when the drill started (POST's latency)
        time.sleep(0.2)  # calls sent to d0 just before the drill have come back by now
        for proxy in d0:
            proxy.reset_counts()
        time.sleep(1.5)
        # Still drained: d0 got head polls, and not one client call.
        during = [client_calls(p) for p in d0]
        polled = [len(p.methods) for p in d0]
        served_during = [
            a for a in load.answers if a.started > drained_at + 0.2 and a.ended < drained_at + 1.9
        ]

        wait_until(
            lambda: call(gateway, "GET").json() == {"drills": []}, "the drill over by itself"
        )
        for proxy in d0:
            proxy.reset_counts()
        wait_until(lambda: all(client_calls(p) for p in d0), "d0 serving again after the drill")
        after = len(load.answers)
        load.wait_for(after + 30)

    failed = [a for a in load.answers if not a.ok]
    assert failed == [], failed[:3]
    assert len(load.answers) >= 200, len(load.answers)
    assert during == [0, 0], during
    assert all(count > 0 for count in polled), polled  # the node was polled, not called
    assert len(served_during) >= 20
    assert {a.upstream for a in served_during} == {"node2"}
