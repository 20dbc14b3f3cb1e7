"""Ids come back exactly as sent on every answer path: answered by the gateway itself, a
cache hit from memory or from Redis, a coalesced call, a pass-through, an upstream's error
and the gateway's own errors; single calls and batches alike."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.conftest import GatewayFactory, HttpReply, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.redis_server import RedisServer

# Every JSON form an id can take; the integers straddle the 64-bit limits of orjson.
ID_FORMS: list[Any] = [
    0,
    7,
    -3,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    123456789012345678901234567890,
    -(2**70),
    1.5,
    "abc",
    "",
    "0x" + "f" * 64,
    None,
]

Sender = Callable[[str, list[Any], Any], HttpReply]


def body(method: str, params: list[Any], request_id: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


def assert_same_id(reply: HttpReply, request_id: Any) -> dict[str, Any]:
    raw = reply.body.decode()
    assert reply.status == 200, (request_id, reply.status, raw)
    answer: dict[str, Any] = json.loads(raw)
    assert answer["id"] == request_id and type(answer["id"]) is type(request_id), (request_id, raw)
    assert f'"id":{json.dumps(request_id)}' in raw.replace(" ", ""), (request_id, raw)
    return answer


def single(gateway: RunningGateway) -> Sender:
    def send(method: str, params: list[Any], request_id: Any) -> HttpReply:
        return gateway.post(body(method, params, request_id).encode())

    return send


def check_batch(gateway: RunningGateway, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    """One batch with every id form, one call each (cycling through `calls`); returns the
    answers after checking that each id came back as sent, in order."""
    items = [body(*calls[i % len(calls)], request_id) for i, request_id in enumerate(ID_FORMS)]
    reply = gateway.post(("[" + ",".join(items) + "]").encode())
    assert reply.status == 200, reply.body
    raw = reply.body.decode().replace(" ", "")
    answers: list[Any] = json.loads(raw)
    assert [a["id"] for a in answers] == ID_FORMS
    for answer, request_id in zip(answers, ID_FORMS, strict=True):
        assert type(answer["id"]) is type(request_id), (request_id, answer)
        assert f'"id":{json.dumps(request_id)}' in raw, (request_id, raw)
    return answers


@pytest.fixture
def devnet(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory, redis_server: RedisServer
) -> Iterator[tuple[list[FaultProxy], RunningGateway, Callable[[], RunningGateway]]]:
    _, proxies = proxied_cluster(3, mined=3)

    def start() -> RunningGateway:
        # A generous Redis timeout: a replica's first read also opens its connection, and on
        # a loaded machine that takes longer than the default 0.1 s (a miss, not a bug).
        return start_gateway(
            [p.url for p in proxies],
            head_poll_interval=60,
            cache={"redis_url": redis_server.url, "redis_timeout_s": 2.0},
        )

    yield proxies, start(), start


def test_answers_the_gateway_gives_itself(devnet) -> None:  # type: ignore[no-untyped-def]
    _, gateway, _ = devnet
    for request_id in ID_FORMS:
        reply = single(gateway)("eth_blockNumber", [], request_id)
        assert assert_same_id(reply, request_id)["result"] == "0x3"
        assert reply.headers["X-Rpcgate-Upstream"] == "gateway"
    answers = check_batch(gateway, [("eth_blockNumber", [])])
    assert {a["result"] for a in answers} == {"0x3"}


def test_cache_hits_from_memory(devnet) -> None:  # type: ignore[no-untyped-def]
    _, gateway, _ = devnet
    gateway.rpc("eth_chainId")
    gateway.rpc("eth_getBalance", [DEV_ADDRESSES[0], "0x2"])
    for request_id in ID_FORMS:
        for method, params in (("eth_chainId", []), ("eth_getBalance", [DEV_ADDRESSES[0], "0x2"])):
            reply = single(gateway)(method, params, request_id)
            assert_same_id(reply, request_id)
            assert reply.headers["X-Rpcgate-Cache"] == "hit", (method, request_id)
    reply_headers = gateway.post(
        [{"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}]
    ).headers
    assert reply_headers["X-Rpcgate-Cache"] == "hit"
    check_batch(gateway, [("eth_chainId", []), ("eth_getBalance", [DEV_ADDRESSES[0], "0x2"])])


def test_cache_hits_from_redis(devnet, redis_server: RedisServer) -> None:  # type: ignore[no-untyped-def]
    _, writer, start = devnet
    calls = [("eth_chainId", []), ("eth_getBalance", [DEV_ADDRESSES[1], "0x0"])]  # final
    for method, params in calls:
        writer.rpc(method, params)
    client = redis_server.client()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the writes reach Redis after the answers
        if all(client.keys(f"*:{method}:*") for method, _ in calls):
            break
        time.sleep(0.02)
    for request_id in ID_FORMS:
        reader = start()  # a replica with an empty memory tier: the entry comes from Redis
        method, params = calls[ID_FORMS.index(request_id) % 2]
        reply = single(reader)(method, params, request_id)
        assert_same_id(reply, request_id)
        assert reply.headers["X-Rpcgate-Cache"] == "hit"
        assert reader.gateway.chains[0].cache_counters.redis_hits == 1
    reader = start()
    check_batch(reader, calls)
    assert reader.gateway.chains[0].cache_counters.redis_hits >= 2


def test_coalesced_calls(devnet) -> None:  # type: ignore[no-untyped-def]
    proxies, gateway, _ = devnet
    for proxy in proxies:
        proxy.set_fault(Fault.LATENCY, delay=0.2)  # long enough for the batch to share it
    answers = check_batch(gateway, [("eth_getCode", [DEV_ADDRESSES[0], "0x3"])])
    assert {a["result"] for a in answers} == {"0x"}
    counters = gateway.gateway.chains[0].cache_counters
    assert counters.coalesced == len(ID_FORMS) - 1


def test_pass_through_and_errors(devnet) -> None:  # type: ignore[no-untyped-def]
    proxies, gateway, _ = devnet
    send = single(gateway)
    for request_id in ID_FORMS:
        reply = send("eth_getTransactionCount", [DEV_ADDRESSES[0], "pending"], request_id)
        assert assert_same_id(reply, request_id)["result"] == "0x0"
        assert reply.headers["X-Rpcgate-Cache"] == "bypass"
        # The upstream's own error, verbatim.
        reply = send("eth_getBalance", ["not an address", "0x1"], request_id)
        assert assert_same_id(reply, request_id)["error"]["code"] == -32602
        # The gateway's own error about the request.
        bad = json.dumps({"jsonrpc": "1.0", "id": request_id, "method": "eth_chainId"})
        answer = assert_same_id(gateway.post(bad.encode()), request_id)
        assert answer["error"]["code"] == -32600
    check_batch(
        gateway,
        [
            ("eth_getTransactionCount", [DEV_ADDRESSES[0], "pending"]),
            ("eth_getBalance", ["not an address", "0x1"]),
        ],
    )
    for proxy in proxies:
        proxy.set_fault(Fault.HTTP_5XX)
    for request_id in ID_FORMS:  # every upstream failed: the gateway's error
        reply = send("eth_getTransactionCount", [DEV_ADDRESSES[1], "pending"], request_id)
        assert assert_same_id(reply, request_id)["error"]["code"] == -32050
    answers = check_batch(gateway, [("eth_getTransactionCount", [DEV_ADDRESSES[1], "pending"])])
    assert {a["error"]["code"] for a in answers} == {-32050}
