"""The JSON-RPC 2.0 specification's examples (section 7), each through the gateway."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.harness.loop import BackgroundLoop
from tests.harness.spec_server import SpecServer

NOTHING = object()  # the specification's "--> nothing" (HTTP 204, empty body)

# (id, request body as sent, expected answer)
SPEC_EXAMPLES: list[tuple[str, str, Any]] = [
    (
        "positional-params-1",
        '{"jsonrpc": "2.0", "method": "subtract", "params": [42, 23], "id": 1}',
        {"jsonrpc": "2.0", "result": 19, "id": 1},
    ),
    (
        "positional-params-2",
        '{"jsonrpc": "2.0", "method": "subtract", "params": [23, 42], "id": 2}',
        {"jsonrpc": "2.0", "result": -19, "id": 2},
    ),
    (
        "named-params-1",
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"subtrahend": 23, "minuend": 42}, '
        '"id": 3}',
        {"jsonrpc": "2.0", "result": 19, "id": 3},
    ),
    (
        "named-params-2",
        '{"jsonrpc": "2.0", "method": "subtract", "params": {"minuend": 42, "subtrahend": 23}, '
        '"id": 4}',
        {"jsonrpc": "2.0", "result": 19, "id": 4},
    ),
    (
        "notification-update",
        '{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}',
        NOTHING,
    ),
    ("notification-foobar", '{"jsonrpc": "2.0", "method": "foobar"}', NOTHING),
    (
        "non-existent-method",
        '{"jsonrpc": "2.0", "method": "foobar", "id": "1"}',
        {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "1"},
    ),
    (
        "invalid-json",
        '{"jsonrpc": "2.0", "method": "foobar, "params": "bar", "baz]',
        {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None},
    ),
    (
        "invalid-request-object",
        '{"jsonrpc": "2.0", "method": 1, "params": "bar"}',
        {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None},
    ),
    (
        "batch-invalid-json",
        '[ {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"}, '
        '{"jsonrpc": "2.0", "method" ]',
        {"jsonrpc": "2.0", "error": {"code": -32700, "message": "Parse error"}, "id": None},
    ),
    (
        "empty-array",
        "[]",
        {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None},
    ),
    (
        "invalid-batch-not-empty",
        "[1]",
        [{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}],
    ),
    (
        "invalid-batch",
        "[1,2,3]",
        [{"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None}]
        * 3,
    ),
    (
        "batch-mixed",
        """[
        {"jsonrpc": "2.0", "method": "sum", "params": [1,2,4], "id": "1"},
        {"jsonrpc": "2.0", "method": "notify_hello", "params": [7]},
        {"jsonrpc": "2.0", "method": "subtract", "params": [42,23], "id": "2"},
        {"foo": "boo"},
        {"jsonrpc": "2.0", "method": "foo.get", "params": {"name": "myself"}, "id": "5"},
        {"jsonrpc": "2.0", "method": "get_data", "id": "9"}
    ]""",
        [
            {"jsonrpc": "2.0", "result": 7, "id": "1"},
            {"jsonrpc": "2.0", "result": 19, "id": "2"},
            {"jsonrpc": "2.0", "error": {"code": -32600, "message": "Invalid Request"}, "id": None},
            {"jsonrpc": "2.0", "error": {"code": -32601, "message": "Method not found"}, "id": "5"},
            {"jsonrpc": "2.0", "result": ["hello", 5], "id": "9"},
        ],
    ),
    (
        "batch-all-notifications",
        '[{"jsonrpc": "2.0", "method": "notify_sum", "params": [1,2,4]}, '
        '{"jsonrpc": "2.0", "method": "notify_hello", "params": [7]}]',
        NOTHING,
    ),
]


@pytest.fixture
def spec_gateway(
    background_loop: BackgroundLoop, start_gateway: GatewayFactory
) -> Iterator[tuple[RunningGateway, SpecServer]]:
    server = background_loop.run(SpecServer().start())
    yield start_gateway([server.url]), server
    background_loop.run(server.stop())


def _same(answer: Any, expected: Any) -> bool:
    """Equal, except that the gateway may add detail after a spec error message."""
    if isinstance(expected, list):
        return (
            isinstance(answer, list)
            and len(answer) == len(expected)
            and all(_same(a, e) for a, e in zip(answer, expected, strict=True))
        )
    if "error" in expected:
        error, want = answer.get("error", {}), expected["error"]
        return (
            answer.get("id", NOTHING) == expected["id"]
            and answer.get("jsonrpc") == "2.0"
            and "result" not in answer
            and error.get("code") == want["code"]
            and error.get("message", "").startswith(want["message"])
        )
    return bool(answer == expected)


@pytest.mark.parametrize(
    ("body", "expected"), [pytest.param(b, e, id=i) for i, b, e in SPEC_EXAMPLES]
)
def test_spec_example(
    spec_gateway: tuple[RunningGateway, SpecServer], body: str, expected: Any
) -> None:
    gateway, _ = spec_gateway
    reply = gateway.post(body.encode())
    if expected is NOTHING:
        assert reply.status == 204
        assert reply.body == b""
        return
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert _same(json.loads(reply.body), expected), reply.body


def test_notifications_still_reach_an_upstream(
    spec_gateway: tuple[RunningGateway, SpecServer],
) -> None:
    gateway, server = spec_gateway
    gateway.post(b'{"jsonrpc": "2.0", "method": "update", "params": [1,2,3,4,5]}')
    assert [r["method"] for r in server.received] == ["update"]
    assert server.received[0]["params"] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize("request_id", ["abc", "", 0, 7, -3, 1.5, None, 2**70, "0x" + "f" * 64])
def test_ids_come_back_exactly_as_sent(
    spec_gateway: tuple[RunningGateway, SpecServer], request_id: Any
) -> None:
    gateway, _ = spec_gateway
    raw_id = json.dumps(request_id)
    body = f'{{"jsonrpc":"2.0","method":"subtract","params":[5,2],"id":{raw_id}}}'
    reply = gateway.post(body.encode())
    assert json.loads(reply.body) == {"jsonrpc": "2.0", "result": 3, "id": request_id}
    assert raw_id in reply.body.decode()  # same JSON form, not just an equal value


@pytest.mark.parametrize("bad_id", ["[1]", '{"a":1}', "true"])
def test_an_id_of_the_wrong_type_is_an_invalid_request(
    spec_gateway: tuple[RunningGateway, SpecServer], bad_id: str
) -> None:
    gateway, server = spec_gateway
    reply = gateway.post(f'{{"jsonrpc":"2.0","method":"sum","params":[1],"id":{bad_id}}}'.encode())
    answer = json.loads(reply.body)
    assert answer["error"]["code"] == -32600
    assert answer["id"] is None
    assert server.received == []


def test_batch_answers_keep_request_order_under_concurrency(
    spec_gateway: tuple[RunningGateway, SpecServer],
) -> None:
    gateway, _ = spec_gateway
    batch = [{"jsonrpc": "2.0", "method": "subtract", "params": [i, 1], "id": i} for i in range(50)]
    answers = gateway.post(batch).json()
    assert [a["id"] for a in answers] == list(range(50))
    assert [a["result"] for a in answers] == [i - 1 for i in range(50)]


def _subtract_with_extra(request_id: Any, extra_levels: int) -> dict[str, Any]:
    """subtract(42, 23), its params carrying an extra member nested `extra_levels` deep: the
    request is level 1, params 2, so the request is 2 + extra_levels deep."""
    extra: list[Any] = []
    for _ in range(extra_levels - 1):
        extra = [extra]
    params = {"minuend": 42, "subtrahend": 23, "extra": extra}
    return {"jsonrpc": "2.0", "method": "subtract", "params": params, "id": request_id}


def test_nesting_is_limited_per_batch_item_and_a_deep_item_never_reaches_the_upstream(
    spec_gateway: tuple[RunningGateway, SpecServer],
) -> None:
    gateway, server = spec_gateway
    batch = [_subtract_with_extra("at-limit", 62), _subtract_with_extra("past-limit", 63)]
    at_limit, past_limit = gateway.post(batch).json()
    assert at_limit == {"jsonrpc": "2.0", "result": 19, "id": "at-limit"}
    assert past_limit["id"] == "past-limit"
    assert past_limit["error"]["code"] == -32600
    assert past_limit["error"]["message"].startswith("Invalid Request")
    assert "limits.max_json_depth" in past_limit["error"]["message"]
    assert [r["method"] for r in server.received] == ["subtract"]  # the one within the limit
