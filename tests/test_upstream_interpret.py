"""How one HTTP exchange with an upstream becomes a result or a failure (no sockets)."""

from __future__ import annotations

import json

import pytest

from rpcgate.errors import ErrorClass, classify
from rpcgate.upstream import interpret, parse_retry_after


def _body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def test_result_is_taken_from_a_200() -> None:
    reply = interpret(200, _body({"jsonrpc": "2.0", "id": 7, "result": "0x1"}), {}, 7)
    assert reply.failure is None and reply.result == "0x1"


def test_null_result_is_a_result() -> None:
    reply = interpret(200, _body({"jsonrpc": "2.0", "id": 7, "result": None}), {}, 7)
    assert reply.failure is None and reply.result is None


@pytest.mark.parametrize(
    ("status", "error", "expected"),
    [
        # Pocket's PATH puts JSON-RPC errors behind HTTP statuses: the body decides.
        (
            400,
            {"code": 3, "message": "execution reverted", "data": "0x08c379a0"},
            ErrorClass.REVERT,
        ),
        (
            404,
            {"code": -32601, "message": "the method foo does not exist/is not available"},
            ErrorClass.UNSUPPORTED,
        ),
        (504, {"code": -32098, "message": "request timeout"}, ErrorClass.TRANSIENT),
        (429, {"code": -32097, "message": "rate limited"}, ErrorClass.RATE_LIMITED),
        (
            500,
            {"code": -32000, "message": "Block 19000000 not processed yet. Please try again."},
            ErrorClass.MISSING_DATA,
        ),
        (200, {"code": -32000, "message": "header not found"}, ErrorClass.MISSING_DATA),
    ],
)
def test_error_bodies_behind_any_status_are_read(
    status: int, error: dict, expected: ErrorClass
) -> None:
    reply = interpret(status, _body({"jsonrpc": "2.0", "id": 1, "error": error}), {}, 1)
    assert reply.error == error  # kept verbatim for the caller, data included
    assert reply.failure is not None
    assert classify(reply.failure).error_class is expected


@pytest.mark.parametrize(
    ("status", "body", "transport"),
    [
        (200, b"\x00garbage<html>", "bad_json"),
        (200, b"", "bad_response"),
        (200, b'"just a string"', "bad_response"),
        (200, b'{"jsonrpc":"2.0","id":1}', "bad_response"),
        (502, b"<html>Bad Gateway</html>", None),
    ],
)
def test_unusable_bodies_are_transient(status: int, body: bytes, transport: str | None) -> None:
    reply = interpret(status, body, {}, 1)
    assert reply.failure is not None
    assert reply.failure.transport == transport
    assert classify(reply.failure).error_class is ErrorClass.TRANSIENT


def test_an_answer_to_another_request_is_not_accepted() -> None:
    reply = interpret(200, _body({"jsonrpc": "2.0", "id": 8, "result": "0x1"}), {}, 7)
    assert reply.failure is not None and reply.failure.transport == "bad_response"


def test_single_item_batch_reply_to_a_single_call_is_unwrapped() -> None:
    reply = interpret(200, _body([{"jsonrpc": "2.0", "id": 3, "result": "0x5"}]), {}, 3)
    assert reply.result == "0x5"


def test_retry_after_header_reaches_the_classifier() -> None:
    reply = interpret(429, b"Too Many Requests", {"retry-after": "12"}, 1)
    assert reply.failure is not None
    classification = classify(reply.failure)
    assert classification.error_class is ErrorClass.RATE_LIMITED
    assert classification.cooldown_s == 12.0


def test_retry_after_as_http_date() -> None:
    assert parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now=1792567670.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("1.5") == 1.5
