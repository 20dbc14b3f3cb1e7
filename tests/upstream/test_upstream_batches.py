"""A client batch reaches each upstream as upstream batches (bounded by its `max_batch`),
while every item keeps its own failover; against real anvil nodes behind fault proxies."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rpcgate.config.settings import DEFAULT_MAX_BATCH, ConfigError, parse_config
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import AnvilCluster
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.loop import BackgroundLoop
from tests.harness.tools import serve_posts

ITEMS = 50
# Distinct accounts with distinct balances: each answer says which call it belongs to.
ACCOUNTS = [f"0x{0xBA7C4000 + i:040x}" for i in range(ITEMS)]
BALANCES = [hex(10**15 * (i + 1)) for i in range(ITEMS)]
NO_CACHE = {"Cache-Control": "no-cache"}
# Exact attempt counts: no hedge may add one (a hang test below lets them).
NO_HEDGES = {"hedge_budget": 0, "attempt_timeout_s": 1.0, "deadline_s": 10.0, "max_attempts": 5}


def funded(
    proxied_cluster: ProxiedClusterFactory, size: int
) -> tuple[AnvilCluster, list[FaultProxy]]:
    """`size` lock-step nodes whose block 1 holds the balances of ACCOUNTS."""
    cluster, proxies = proxied_cluster(size)
    for node in cluster:
        for account, balance in zip(ACCOUNTS, BALANCES, strict=True):
            node.rpc("anvil_setBalance", [account, balance])
    cluster.mine_all(1)
    return cluster, proxies


def balance_batch(ids: list[Any]) -> list[dict[str, Any]]:
    return [
        {"jsonrpc": "2.0", "id": request_id, "method": "eth_getBalance", "params": [a, "latest"]}
        for request_id, a in zip(ids, ACCOUNTS, strict=True)
    ]


def client_ids() -> list[Any]:
    """Ids a client may send: strings, large and small numbers, in no order."""
    return [f"call-{i}" if i % 3 == 0 else 10_000 - 7 * i for i in range(ITEMS)]


def balance_items(requests: list[str | list[str] | None]) -> list[str | list[str] | None]:
    """The HTTP requests that carried eth_getBalance calls."""
    return [r for r in requests if r == "eth_getBalance" or (isinstance(r, list) and r)]


def assert_every_balance_answered(reply_body: list[dict[str, Any]], ids: list[Any]) -> None:
    assert [answer["id"] for answer in reply_body] == ids  # the client's order, its ids
    assert [answer.get("result") for answer in reply_body] == BALANCES, reply_body


def total_attempts(reply: Any) -> int:
    """X-Rpcgate-Attempts of a batch, one value per answer, added up."""
    return sum(int(n) for n in reply.headers["X-Rpcgate-Attempts"].split(","))


def answered_by(reply: Any) -> set[str]:
    """Who answered the items of a batch (X-Rpcgate-Upstream, one value per answer)."""
    return set(reply.headers["X-Rpcgate-Upstream"].split(","))


def one_node_gateway(
    start_gateway: GatewayFactory, proxy: FaultProxy, **upstream: Any
) -> RunningGateway:
    gateway = start_gateway(
        [],
        upstreams=[{"name": "node0", "url": proxy.url, **upstream}],
        head_poll_interval=60,
        failover=NO_HEDGES,
    )
    gateway.sync()
    proxy.reset_counts()
    return gateway


# --- how many requests reach the upstream ------------------------------------------------


def test_a_50_item_batch_reaches_the_upstream_as_one_batch_request(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    cluster, (proxy,) = funded(proxied_cluster, 1)
    gateway = one_node_gateway(start_gateway, proxy)
    ids = client_ids()
    direct = [cluster[0].rpc("eth_getBalance", [a, "0x1"]) for a in ACCOUNTS]
    assert direct == BALANCES

    reply = gateway.post(balance_batch(ids), headers=NO_CACHE)

    assert_every_balance_answered(reply.json(), ids)
    assert proxy.requests == [["eth_getBalance"] * ITEMS]
    assert total_attempts(reply) == ITEMS
    assert answered_by(reply) == {"node0"}


def test_an_upstream_batch_weighs_in_health_and_metrics_as_its_calls_in_one_request(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    """Each call of the batch counts as a success and an attempt; its one request is one
    latency observation (the request's time)."""
    _, (proxy,) = funded(proxied_cluster, 1)
    gateway = one_node_gateway(start_gateway, proxy)
    chain = gateway.gateway.chains[0]
    health = chain.upstreams["node0"].health
    before = health.successes
    latency_before = health.latency_ewma_s

    reply = gateway.post(balance_batch(client_ids()), headers=NO_CACHE)

    assert reply.status == 200 and proxy.requests == [["eth_getBalance"] * ITEMS]
    assert health.successes - before == ITEMS
    assert health.latency_ewma_s is not None and health.latency_ewma_s != latency_before
    series = gateway.gateway.metrics._attempts[("devnet", "node0", "none")]
    assert sum(series.counts) >= ITEMS  # every call's attempt, the head polls' not among them
    history = gateway.gateway.metrics.history.of("devnet", "node0")
    assert sum(slot.calls for slot in history.slots) >= ITEMS


@pytest.mark.parametrize("max_batch", [3, 7, DEFAULT_MAX_BATCH])
def test_an_upstream_batch_holds_at_most_max_batch_calls(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory, max_batch: int
) -> None:
    _, (proxy,) = funded(proxied_cluster, 1)
    gateway = one_node_gateway(start_gateway, proxy, max_batch=max_batch)
    ids = client_ids()

    reply = gateway.post(balance_batch(ids), headers=NO_CACHE)

    assert_every_balance_answered(reply.json(), ids)
    sent = balance_items(proxy.requests)
    assert len(sent) == math.ceil(ITEMS / max_batch)  # 17 for dRPC's free tier (3)
    assert all(isinstance(request, list) and len(request) <= max_batch for request in sent)
    assert sum(len(request) for request in sent) == ITEMS


def test_max_batch_1_sends_every_item_alone(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, (proxy,) = funded(proxied_cluster, 1)
    gateway = one_node_gateway(start_gateway, proxy, max_batch=1)
    ids = client_ids()

    reply = gateway.post(balance_batch(ids), headers=NO_CACHE)

    assert_every_balance_answered(reply.json(), ids)
    assert proxy.requests == ["eth_getBalance"] * ITEMS


def test_single_calls_and_head_polls_are_sent_alone(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, (proxy,) = funded(proxied_cluster, 1)
    gateway = one_node_gateway(start_gateway, proxy)

    for account, balance in zip(ACCOUNTS[:3], BALANCES, strict=False):
        assert gateway.rpc("eth_getBalance", [account, "latest"], fresh=True).json()["result"] == (
            balance
        )
    single_item_batch = gateway.post(balance_batch(client_ids())[:1], headers=NO_CACHE)
    assert single_item_batch.json()[0]["result"] == BALANCES[0]
    gateway.sync()  # a head poll

    assert proxy.requests, "nothing reached the upstream"
    assert all(isinstance(request, str) for request in proxy.requests), proxy.requests


def test_a_mixed_batch_answers_in_the_clients_order(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    """Upstream items, an invalid item, a notification and a gateway answer, interleaved."""
    _, (proxy,) = funded(proxied_cluster, 1)
    gateway = one_node_gateway(start_gateway, proxy)
    batch: list[Any] = []
    for i, item in enumerate(balance_batch(client_ids())[:6]):
        batch.append(item)
        if i == 1:
            batch.append({"jsonrpc": "2.0", "id": "bad", "method": 7})
        if i == 3:
            batch.append({"jsonrpc": "2.0", "method": "eth_getBalance", "params": [ACCOUNTS[9]]})
        if i == 4:
            batch.append({"jsonrpc": "2.0", "id": "head", "method": "eth_blockNumber"})

    answers = gateway.post(batch, headers=NO_CACHE).json()

    assert [a["id"] for a in answers] == [b["id"] for b in batch if "id" in b]
    by_id = {a["id"]: a for a in answers}
    assert by_id["bad"]["error"]["code"] == -32600
    assert by_id["head"]["result"] == "0x1"
    assert [a["result"] for a in answers if a["id"] not in ("bad", "head")] == BALANCES[:6]
    assert [len(r) for r in proxy.requests if isinstance(r, list)] == [7]  # + notification


# --- per-item failover ---------------------------------------------------------------------


def spoil_missing(answer: dict[str, Any]) -> dict[str, Any] | None:
    return None


def spoil_id(answer: dict[str, Any]) -> dict[str, Any] | None:
    return {**answer, "id": answer["id"] + 100_000}


def spoil_with_error(answer: dict[str, Any]) -> dict[str, Any] | None:
    error = {"code": -32603, "message": "internal error"}
    return {"jsonrpc": "2.0", "id": answer["id"], "error": error}


class BatchSpoiler:
    """In front of a node's fault proxy: in an upstream batch, the answer to the call about
    `account` is spoiled, the first time any spoiler sharing `spoiled` sees that call."""

    def __init__(
        self,
        target: str,
        account: str,
        spoil: Callable[[dict[str, Any]], dict[str, Any] | None],
        spoiled: list[str],
    ) -> None:
        self.target, self.account, self.spoil, self.spoiled = target, account, spoil, spoiled
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> BatchSpoiler:
        self._runner, self.url = await serve_posts(self._handle)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.target, data=body, headers={"Content-Type": "application/json"}
            ) as upstream,
        ):
            status, answer_body = upstream.status, await upstream.read()
        calls = json.loads(body)
        if isinstance(calls, list) and not self.spoiled:
            mine = [c["id"] for c in calls if c.get("params", [None])[0] == self.account]
            if mine:
                self.spoiled.append(self.account)
                answers = []
                for answer in json.loads(answer_body):
                    kept = self.spoil(answer) if answer.get("id") in mine else answer
                    if kept is not None:
                        answers.append(kept)
                answer_body = json.dumps(answers).encode()
        return web.Response(status=status, body=answer_body, content_type="application/json")


@pytest.fixture
def spoilers(background_loop: BackgroundLoop) -> Iterator[Callable[..., list[BatchSpoiler]]]:
    started: list[BatchSpoiler] = []

    def start(
        proxies: list[FaultProxy], account: str, spoil: Callable[..., Any]
    ) -> list[BatchSpoiler]:
        spoiled: list[str] = []
        for proxy in proxies:
            spoiler = BatchSpoiler(proxy.url, account, spoil, spoiled)
            started.append(background_loop.run(spoiler.start()))
        return started[-len(proxies) :]

    yield start
    for spoiler in started:
        background_loop.run(spoiler.stop())


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(spoil_missing, id="answer-missing"),
        pytest.param(spoil_id, id="wrong-id"),
        pytest.param(spoil_with_error, id="error-object"),
    ],
)
def test_a_spoiled_answer_in_a_batch_retries_only_that_item_elsewhere(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
    spoilers: Callable[..., list[BatchSpoiler]],
    spoil: Callable[[dict[str, Any]], dict[str, Any] | None],
) -> None:
    _, proxies = funded(proxied_cluster, 2)
    victim = ACCOUNTS[17]
    fronts = spoilers(proxies, victim, spoil)
    gateway = start_gateway(
        [],
        upstreams=[{"name": f"node{i}", "url": f.url} for i, f in enumerate(fronts)],
        head_poll_interval=60,
        failover=NO_HEDGES,
    )
    gateway.sync()
    for proxy in proxies:
        proxy.reset_counts()
    ids = client_ids()

    reply = gateway.post(balance_batch(ids), headers=NO_CACHE)

    assert_every_balance_answered(reply.json(), ids)
    assert total_attempts(reply) == ITEMS + 1  # the spoiled item, again
    sent = [m for p in proxies for m in p.methods if m == "eth_getBalance"]
    assert len(sent) == ITEMS + 1
    batches = [r for p in proxies for r in p.requests if isinstance(r, list)]
    assert batches and sum(len(b) for b in batches) >= ITEMS - 1  # the items went in batches


@pytest.mark.parametrize(
    "fault",
    [pytest.param(Fault.HTTP_5XX, id="503"), pytest.param(Fault.GARBAGE, id="not-json")],
)
def test_a_batch_failing_as_a_whole_fails_every_item_over(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory, fault: Fault
) -> None:
    _, proxies = funded(proxied_cluster, 2)
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60, failover=NO_HEDGES)
    gateway.sync()
    proxies[0].set_fault(fault)
    for proxy in proxies:
        proxy.reset_counts()
    ids = client_ids()

    reply = gateway.post(balance_batch(ids), headers=NO_CACHE)

    assert_every_balance_answered(reply.json(), ids)
    failed = proxies[0].methods.count("eth_getBalance")
    assert failed > 0, "no item was sent to the failing upstream first"
    assert proxies[1].methods.count("eth_getBalance") == ITEMS
    assert total_attempts(reply) == ITEMS + failed
    assert answered_by(reply) == {"node1"}


def test_a_hanging_batch_is_hedged_and_given_up_once_no_item_waits(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    """Each item of the hung batch gets its hedge (12 items, half of them on the hung node:
    within the hedge burst of 10), and the hung upstream request ends as soon as none of its
    items waits for it, long before its own timeout, as a single call's request ends with
    its caller."""
    _, proxies = funded(proxied_cluster, 2)
    gateway = start_gateway(
        [p.url for p in proxies],
        head_poll_interval=60,
        failover={"attempt_timeout_s": 8.0, "deadline_s": 10.0, "hedge_budget": 1},
    )
    gateway.sync()
    proxies[0].set_fault(Fault.HANG)
    for proxy in proxies:
        proxy.reset_counts()
    items = 12
    ids = client_ids()[:items]

    started = time.monotonic()
    reply = gateway.post(balance_batch(client_ids())[:items], headers=NO_CACHE)

    answers = reply.json()
    assert [a["id"] for a in answers] == ids
    assert [a["result"] for a in answers] == BALANCES[:items]
    assert time.monotonic() - started < 2.0  # a hedge delay or so, not the 8 s timeout
    (hung,) = proxies[0].requests  # one batch, of fewer items than the hedge burst
    assert isinstance(hung, list) and 1 < len(hung) <= 10
    assert proxies[1].methods.count("eth_getBalance") == items
    deadline = time.monotonic() + 2.0
    while proxies[0].hung_requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxies[0].hung_requests == 0


def test_a_hanging_batch_fails_every_item_over_at_its_timeout(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    _, proxies = funded(proxied_cluster, 2)
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60, failover=NO_HEDGES)
    gateway.sync()
    proxies[0].set_fault(Fault.HANG)
    for proxy in proxies:
        proxy.reset_counts()
    ids = client_ids()

    started = time.monotonic()
    reply = gateway.post(balance_batch(ids), headers=NO_CACHE)

    assert_every_balance_answered(reply.json(), ids)
    assert time.monotonic() - started < 2.5  # one attempt timeout (1 s), not one per item
    failed = proxies[0].methods.count("eth_getBalance")
    assert failed > 0
    assert total_attempts(reply) == ITEMS + failed


def test_the_items_of_a_batch_go_only_to_upstreams_that_have_their_block(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    """Who may serve a block is worked out once per block for a whole batch: an item about
    an old block may go to a lagging node, one about the head may not."""
    cluster, proxies = funded(proxied_cluster, 3)
    cluster.mine_on([0, 1], 3)  # node2 stays at block 1, the others reach block 4
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60, failover=NO_HEDGES)
    gateway.sync()
    for proxy in proxies:
        proxy.reset_counts()
    old = [
        {"jsonrpc": "2.0", "id": i, "method": "eth_getBalance", "params": [a, "0x1"]}
        for i, a in enumerate(ACCOUNTS[:10])
    ]
    new = [
        {"jsonrpc": "2.0", "id": 10 + i, "method": "eth_getBalance", "params": [a, "0x4"]}
        for i, a in enumerate(ACCOUNTS[:10])
    ]

    reply = gateway.post(old + new, headers=NO_CACHE)

    assert [a.get("result") for a in reply.json()] == BALANCES[:10] * 2, reply.json()
    assert total_attempts(reply) == 20  # none asked where its block is not
    lagging = [m for m in proxies[2].methods if m == "eth_getBalance"]
    assert len(lagging) <= 10  # at most the old block's items


# --- where max_batch comes from ------------------------------------------------------------


def resolved_max_batch(upstream: dict[str, Any]) -> int | None:
    text = json.dumps({"chains": [{"name": "main", "chain_id": 1, "upstreams": [upstream]}]})
    return parse_config(text).chains[0].upstreams[0].max_batch


@pytest.mark.unit
@pytest.mark.parametrize(
    ("upstream", "expected"),
    [
        ({"preset": "drpc"}, 3),  # free tier: batches of at most 3
        ({"preset": "alchemy", "key": "k"}, 1000),
        ({"preset": "ankr", "key": "k"}, 100),  # Freemium; Premium takes 1,000
        ({"preset": "amb", "node_id": "nd-1", "region": "us-east-1", "key": "k"}, 1),
        ({"preset": "infura", "key": "k"}, DEFAULT_MAX_BATCH),  # undocumented
        ({"url": "http://127.0.0.1:8545"}, DEFAULT_MAX_BATCH),
        ({"preset": "drpc", "max_batch": 50}, 50),  # a paid plan, as its owner says
        ({"url": "http://127.0.0.1:8545", "max_batch": 1}, 1),
    ],
)
def test_max_batch_comes_from_the_entry_then_the_preset(
    upstream: dict[str, Any], expected: int
) -> None:
    assert resolved_max_batch(upstream) == expected


@pytest.mark.unit
def test_max_batch_below_1_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"upstreams\[0\]\.max_batch: must be at least 1"):
        resolved_max_batch({"url": "http://127.0.0.1:8545", "max_batch": 0})
