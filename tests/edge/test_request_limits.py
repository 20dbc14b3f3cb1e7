"""What a public URL gets thrown at it: oversized batches, absurd nesting, and upstreams
whose answers are not answers. Each is refused or retried with a clear word, and the
gateway keeps serving; pure parsing cases first, then a gateway over a real anvil node."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from rpcgate.rpc.jsonrpc import (
    INVALID_REQUEST,
    PARSE_ERROR,
    Call,
    Invalid,
    parse_request,
    parse_single,
)
from tests.conftest import GatewayFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES
from tests.harness.faultproxy import FaultProxy
from tests.harness.fixtures import AnvilClusterFactory, FaultProxyFactory
from tests.harness.loop import BackgroundLoop


def nested(levels: int) -> Any:
    """Arrays nested `levels` deep: nested(1) is []."""
    value: list[Any] = []
    for _ in range(levels - 1):
        value = [value]
    return value


def call_body(params: Any, request_id: Any = 1, method: str = "eth_call") -> bytes:
    call = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return json.dumps(call).encode()


def deep_body(levels: int) -> bytes:
    """A call whose params are arrays nested to `levels` in all (the request object is level
    1), written directly: json.dumps recurses and gives up far earlier."""
    inner = levels - 1  # the params array and those inside it
    return (
        b'{"jsonrpc":"2.0","id":1,"method":"eth_call","params":'
        + b"[" * inner
        + b"]" * inner
        + b"}"
    )


# -- parsing, no sockets --


@pytest.mark.unit
@pytest.mark.parametrize("levels", [2, 10, 63, 64])
def test_nesting_up_to_the_limit_is_a_call(levels: int) -> None:
    body = deep_body(levels)
    assert isinstance(parse_single(body, max_depth=64), Call)
    assert isinstance(parse_request(body, 100, max_depth=64).items[0], Call)


@pytest.mark.unit
@pytest.mark.parametrize("levels", [65, 100, 1024, 1025, 5000, 100_000])
def test_nesting_past_the_limit_is_an_invalid_request_naming_it(levels: int) -> None:
    body = deep_body(levels)
    assert parse_single(body, max_depth=64) is None
    [item] = parse_request(body, 100, max_depth=64).items
    assert isinstance(item, Invalid)
    assert item.error["code"] == INVALID_REQUEST
    assert "limits.max_json_depth" in item.error["message"]
    assert "64" in item.error["message"]
    assert item.error["data"] == {"limit": 64}


@pytest.mark.unit
def test_the_depth_limit_is_a_parameter() -> None:
    assert isinstance(parse_single(deep_body(8), max_depth=8), Call)
    assert parse_single(deep_body(9), max_depth=8) is None
    [item] = parse_request(deep_body(9), 100, max_depth=8).items
    assert isinstance(item, Invalid) and item.error["data"] == {"limit": 8}


@pytest.mark.unit
def test_objects_count_as_levels_like_arrays() -> None:
    params: Any = [{"a": {"b": {"c": 1}}}]  # params 2, then 3, 4, 5
    assert isinstance(parse_request(call_body(params), 100, max_depth=5).items[0], Call)
    [item] = parse_request(call_body(params), 100, max_depth=4).items
    assert isinstance(item, Invalid) and item.error["code"] == INVALID_REQUEST


@pytest.mark.unit
def test_in_a_batch_only_the_too_deep_item_is_refused_with_its_own_id() -> None:
    batch = [
        {"jsonrpc": "2.0", "id": "ok", "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": "deep", "method": "eth_call", "params": nested(70)},
        {"jsonrpc": "2.0", "id": 2**70, "method": "eth_call", "params": nested(70)},
        {"jsonrpc": "2.0", "id": 1.5, "method": "eth_blockNumber"},
    ]
    request = parse_request(json.dumps(batch).encode(), 100, max_depth=64)
    assert request.is_batch
    ok, deep, big_id, float_id = request.items
    assert isinstance(ok, Call) and ok.id == "ok"
    assert isinstance(deep, Invalid) and deep.id == "deep"
    assert "limits.max_json_depth" in deep.error["message"]
    assert isinstance(big_id, Invalid) and big_id.id == 2**70  # read exactly, not as a float
    assert isinstance(float_id, Call) and float_id.id == 1.5


@pytest.mark.unit
def test_a_parse_error_says_where_the_body_stops_being_json() -> None:
    [item] = parse_request(b'{"jsonrpc": "2.0",\n "id": 1,}', 100).items
    assert isinstance(item, Invalid) and item.error["code"] == PARSE_ERROR
    assert item.error["message"].startswith("Parse error: trailing comma")
    assert "(line 2, column" in item.error["message"]


# Bytes that once could, or still might, make a parser raise: every one must come back as
# JSON-RPC items, never as an exception.
HOSTILE_BODIES = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\xff\xfe\x00", id="not-utf8"),
    pytest.param(b'"\xed\xa0\x80"', id="utf8-surrogate"),
    pytest.param(b'{"id":"\\ud800","jsonrpc":"2.0","method":"m"}', id="lone-surrogate-escape"),
    pytest.param(b"\xef\xbb\xbf{}", id="bom"),
    pytest.param(b"NaN", id="nan"),
    pytest.param(b'{"jsonrpc":"2.0","id":1e400,"method":"m"}', id="float-overflow"),
    pytest.param(b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"m"}', id="5000-digits"),
    pytest.param(
        b'[{"jsonrpc":"2.0","id":1.5,"method":"m"},' + b"[" * 1020 + b"]" * 1020 + b"]",
        id="float-id-beside-deep",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":0.5,"method":"m","params":' + b"[" * 1000 + b"]" * 1000 + b"}",
        id="float-id-deep-params",
    ),
    pytest.param(b"[" * 100_000, id="unclosed-deep"),
    pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="deep-objects"),
    pytest.param(b"[]", id="empty-batch"),
    pytest.param(b"[[]]", id="batch-of-array"),
]


@pytest.mark.unit
@pytest.mark.parametrize("body", HOSTILE_BODIES)
def test_any_bytes_become_json_rpc_items(body: bytes) -> None:
    request = parse_request(body, 100, max_depth=64)
    assert request.items
    for item in request.items:
        if isinstance(item, Invalid):
            assert item.error["code"] in (PARSE_ERROR, INVALID_REQUEST)
            assert isinstance(item.error["message"], str)
    parse_single(body, max_depth=64)  # no exception either


# -- a gateway over a real anvil node --


@pytest.fixture
def devnet(
    anvil_cluster: AnvilClusterFactory,
    fault_proxy: FaultProxyFactory,
    start_gateway: GatewayFactory,
) -> Iterator[tuple[RunningGateway, FaultProxy]]:
    cluster = anvil_cluster(1)
    proxy = fault_proxy(cluster.urls[0])  # counts what reaches the node
    gateway = start_gateway([proxy.url], limits={"rate_per_s": 0, "max_concurrent_per_client": 0})
    yield gateway, proxy


def test_a_batch_of_ten_thousand_is_refused_at_once_and_reaches_no_upstream(
    devnet: tuple[RunningGateway, FaultProxy],
) -> None:
    gateway, proxy = devnet
    batch = [
        {"jsonrpc": "2.0", "id": i, "method": "eth_getBalance", "params": [DEV_ADDRESSES[0]]}
        for i in range(10_000)
    ]
    proxy.reset_counts()
    started = time.monotonic()
    reply = gateway.post(json.dumps(batch).encode())
    elapsed = time.monotonic() - started
    answer = reply.json()
    assert reply.status == 200
    assert answer["id"] is None
    assert answer["error"]["code"] == INVALID_REQUEST
    assert "limits.max_batch_items" in answer["error"]["message"]
    assert "10000" in answer["error"]["message"]
    assert answer["error"]["data"] == {"limit": 100}
    assert elapsed < 2.0  # refused on sight, not after 10,000 calls
    assert "eth_getBalance" not in proxy.methods


@pytest.mark.parametrize("as_batch", [False, True])
def test_json_nested_100000_deep_is_refused_naming_the_limit_and_the_gateway_serves_on(
    devnet: tuple[RunningGateway, FaultProxy], as_batch: bool
) -> None:
    gateway, proxy = devnet
    body = deep_body(100_000)
    if as_batch:
        body = b"[" + body + b"]"
    proxy.reset_counts()
    reply = gateway.post(body)
    answer = reply.json()
    assert reply.status == 200
    assert answer == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {
            "code": INVALID_REQUEST,
            "message": answer["error"]["message"],
            "data": {"limit": 64},
        },
    }
    assert "nested more than 64 levels" in answer["error"]["message"]
    assert "limits.max_json_depth" in answer["error"]["message"]
    assert "eth_call" not in proxy.methods
    assert gateway.result("eth_chainId") == "0x7a69"


def test_a_call_nested_just_past_the_limit_is_refused_with_its_id(
    devnet: tuple[RunningGateway, FaultProxy],
) -> None:
    gateway, proxy = devnet
    params = [{"to": DEV_ADDRESSES[1], "data": "0x", "x": nested(62)}, "latest"]  # level 65
    proxy.reset_counts()
    answer = gateway.post(call_body(params, request_id="too-deep")).json()
    assert answer["id"] == "too-deep"
    assert answer["error"]["code"] == INVALID_REQUEST
    assert "limits.max_json_depth" in answer["error"]["message"]
    assert "eth_call" not in proxy.methods


def test_deep_params_within_the_limit_still_reach_the_node(
    devnet: tuple[RunningGateway, FaultProxy],
) -> None:
    gateway, proxy = devnet
    # request 1, params 2, the call object 3, then 61 levels of arrays: 64 in all. anvil
    # ignores the unknown member, so the node's own answer comes back.
    params = [{"to": DEV_ADDRESSES[1], "data": "0x", "x": nested(61)}, "latest"]
    reply = gateway.post(call_body(params), headers={"Cache-Control": "no-cache"})
    assert reply.json() == {"jsonrpc": "2.0", "id": 1, "result": "0x"}
    assert reply.headers["X-Rpcgate-Upstream"] == "node0"
    assert "eth_call" in proxy.methods
    batch = json.loads(call_body(params))
    answers = gateway.post([batch, {**batch, "id": 2}]).json()
    assert [a.get("result") for a in answers] == ["0x", "0x"]


def test_the_configured_depth_limit_is_the_one_enforced(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    node = anvil_cluster(1)[0]
    gateway = start_gateway(
        [node.url], limits={"max_json_depth": 8, "rate_per_s": 0, "max_concurrent_per_client": 0}
    )
    within = [{"to": DEV_ADDRESSES[1], "data": "0x", "x": nested(5)}, "latest"]  # 8 levels
    assert gateway.post(call_body(within)).json()["result"] == "0x"
    past = [{"to": DEV_ADDRESSES[1], "data": "0x", "x": nested(6)}, "latest"]  # 9 levels
    for body in (call_body(past), b"[" + call_body(past) + b"]"):
        answer = gateway.post(body).json()
        error = (answer[0] if isinstance(answer, list) else answer)["error"]
        assert error["code"] == INVALID_REQUEST
        assert "nested more than 8 levels" in error["message"]
        assert error["data"] == {"limit": 8}


# -- upstream answers are not trusted --

TARGET = "eth_getBalance"  # the call the bad upstream answers badly; it forwards the rest
BOGUS = "0xdead"  # what a bad answer claims; never seen by the client
MAX_RESPONSE_BYTES = 64 * 1024


def _json(payload: Any) -> web.Response:
    return web.Response(body=json.dumps(payload).encode(), content_type="application/json")


async def _streamed_oversize(request: web.BaseRequest, request_id: int) -> web.StreamResponse:
    # No Content-Length: the limit is found while reading, not from the header.
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    await response.write(b'{"jsonrpc":"2.0","id":%d,"result":"0x' % request_id)
    for _ in range(MAX_RESPONSE_BYTES // 1024 + 2):
        await response.write(b"de" * 512)
    await response.write(b'"}')
    await response.write_eof()
    return response


# (the request, its id) -> a response, or a coroutine that streams one
BadReply = Callable[[web.BaseRequest, int], Any]
BAD_REPLIES: dict[str, BadReply] = {
    "not-json": lambda _, i: web.Response(
        body=b"<html>oops</html>", content_type="application/json"
    ),
    "wrong-id": lambda _, i: _json({"jsonrpc": "2.0", "id": i + 1, "result": BOGUS}),
    # A revert is the caller's problem and is handed on verbatim: not when it answers another id.
    "error-for-another-id": lambda _, i: _json(
        {"jsonrpc": "2.0", "id": i + 1, "error": {"code": 3, "message": "execution reverted"}}
    ),
    "result-and-error": lambda _, i: _json(
        {
            "jsonrpc": "2.0",
            "id": i,
            "result": BOGUS,
            "error": {"code": 3, "message": "execution reverted"},
        }
    ),
    "error-not-an-object": lambda _, i: _json({"jsonrpc": "2.0", "id": i, "error": BOGUS}),
    "error-without-code": lambda _, i: _json(
        {"jsonrpc": "2.0", "id": i, "error": {"message": "execution reverted"}}
    ),
    "batch-of-two": lambda _, i: _json([{"jsonrpc": "2.0", "id": i, "result": BOGUS}] * 2),
    "batch-of-one-wrong-id": lambda _, i: _json([{"jsonrpc": "2.0", "id": i + 1, "result": BOGUS}]),
    "oversize": lambda _, i: _json(
        {"jsonrpc": "2.0", "id": i, "result": "0x" + "de" * MAX_RESPONSE_BYTES}
    ),
    "oversize-streamed": _streamed_oversize,
}


class BadUpstream:
    """A real node's front that answers TARGET calls badly, in one chosen way, and forwards
    every other call (so the gateway's head tracker sees a healthy, in-sync upstream)."""

    def __init__(self, node_url: str, bad_reply: BadReply) -> None:
        self.node_url = node_url
        self.bad_reply = bad_reply
        self.bad_answers = 0
        self.url = ""
        self._runner: web.ServerRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        call = json.loads(body)
        if isinstance(call, dict) and call.get("method") == TARGET:
            self.bad_answers += 1
            return await self._bad(request, call["id"])
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        async with self._session.post(self.node_url, data=body, headers=headers) as forwarded:
            return web.Response(body=await forwarded.read(), content_type="application/json")

    async def _bad(self, request: web.BaseRequest, request_id: int) -> web.StreamResponse:
        reply = self.bad_reply(request, request_id)
        if isinstance(reply, web.StreamResponse):
            return reply
        return await reply  # one that streams its answer itself

    async def start(self) -> BadUpstream:
        self._session = aiohttp.ClientSession()
        self._runner = web.ServerRunner(web.Server(self._handle), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@pytest.mark.parametrize("kind", list(BAD_REPLIES))
def test_a_bad_upstream_answer_is_never_forwarded_and_another_upstream_answers(
    kind: str,
    anvil_cluster: AnvilClusterFactory,
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
) -> None:
    node = anvil_cluster(1)[0]
    bad = background_loop.run(BadUpstream(node.url, BAD_REPLIES[kind]).start())
    try:
        gateway = start_gateway(
            [],
            # Both new, equally scored: the first call tries them in this order.
            upstreams=[{"name": "bad", "url": bad.url}, {"name": "good", "url": node.url}],
            failover={"hedge_budget": 0},  # one attempt at a time, so the count is exact
            limits={
                "max_response_bytes": MAX_RESPONSE_BYTES,
                "rate_per_s": 0,
                "max_concurrent_per_client": 0,
            },
        )
        expected = node.rpc(TARGET, [DEV_ADDRESSES[0], "latest"])
        reply = gateway.rpc(TARGET, [DEV_ADDRESSES[0], "latest"], fresh=True)
        assert reply.json() == {"jsonrpc": "2.0", "id": 1, "result": expected}
        assert BOGUS.encode() not in reply.body
        assert bad.bad_answers == 1
        assert reply.headers["X-Rpcgate-Upstream"] == "good"
        assert reply.headers["X-Rpcgate-Attempts"] == "2"
    finally:
        background_loop.run(bad.stop())
