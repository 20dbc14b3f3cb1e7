"""How one HTTP exchange with an upstream becomes a result or a failure (no sockets)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpcgate.rpc.errors import ErrorClass, classify
from rpcgate.upstream.client import (
    Reply,
    _matched_by_id,
    _plain_in_order,
    interpret,
    interpret_batch,
    parse_retry_after,
)

pytestmark = pytest.mark.unit


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
    assert reply.failure is None and reply.result == "0x5"


# Answers to call id 7 that are not a JSON-RPC answer to it: each is that upstream's failure
# (retried elsewhere), and neither its result nor its error is ever handed on.
UNTRUSTED_ANSWERS = [
    pytest.param(b"<html>502 Bad Gateway</html>", "bad_json", id="not-json"),
    pytest.param(b'{"jsonrpc":"2.0","id":7,"result":"0x1"', "bad_json", id="truncated"),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": 8, "result": "0x1"}), "bad_response", id="wrong-id"
    ),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": "7", "result": "0x1"}), "bad_response", id="id-str"
    ),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": True, "result": "0x1"}), "bad_response", id="id-true"
    ),
    pytest.param(_body({"jsonrpc": "2.0", "result": "0x1"}), "bad_response", id="no-id"),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": None, "result": "0x1"}), "bad_response", id="id-null"
    ),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": 8, "error": {"code": 3, "message": "execution reverted"}}),
        "bad_response",
        id="error-wrong-id",
    ),
    pytest.param(
        _body(
            {
                "jsonrpc": "2.0",
                "id": 7,
                "result": "0x1",
                "error": {"code": -32000, "message": "header not found"},
            }
        ),
        "bad_response",
        id="result-and-error",
    ),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": 7, "result": "0x1", "error": None}),
        "bad_response",
        id="result-and-null-error",
    ),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": 7, "error": "execution reverted"}),
        "bad_response",
        id="error-a-string",
    ),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": 7, "error": None}), "bad_response", id="error-null"
    ),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": 7, "error": {"message": "no code"}}),
        "bad_response",
        id="error-without-code",
    ),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": 7, "error": {"code": "-32000", "message": "x"}}),
        "bad_response",
        id="error-code-a-string",
    ),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": 7, "error": {"code": True, "message": "x"}}),
        "bad_response",
        id="error-code-a-bool",
    ),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": 7, "error": {"code": -32000}}),
        "bad_response",
        id="error-without-message",
    ),
    pytest.param(
        _body({"jsonrpc": "2.0", "id": 7, "error": {"code": -32000, "message": ["x"]}}),
        "bad_response",
        id="error-message-a-list",
    ),
    pytest.param(b"[]", "bad_response", id="empty-batch"),
    pytest.param(
        _body(
            [
                {"jsonrpc": "2.0", "id": 7, "result": "0x1"},
                {"jsonrpc": "2.0", "id": 7, "result": "0x2"},
            ]
        ),
        "bad_response",
        id="batch-of-two",
    ),
    pytest.param(
        _body([{"jsonrpc": "2.0", "id": 8, "result": "0x1"}]),
        "bad_response",
        id="batch-of-one-wrong-id",
    ),
    pytest.param(
        _body([[{"jsonrpc": "2.0", "id": 7, "result": "0x1"}]]), "bad_response", id="nested"
    ),
    pytest.param(b"7", "bad_response", id="a-number"),
    pytest.param(b"null", "bad_response", id="null"),
]


@pytest.mark.parametrize(("body", "transport"), UNTRUSTED_ANSWERS)
def test_an_answer_that_is_not_to_this_call_is_the_upstreams_failure(
    body: bytes, transport: str
) -> None:
    reply = interpret(200, body, {}, 7)
    assert reply.failure is not None
    assert reply.failure.transport == transport
    assert reply.result is None and reply.error is None  # nothing of it is handed on
    classification = classify(reply.failure)
    assert classification.error_class is ErrorClass.TRANSIENT
    assert classification.retry_elsewhere


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (_body({"jsonrpc": "2.0", "id": 8, "result": "0x1"}), "id mismatch: asked 7, answered 8"),
        (_body({"id": 7, "result": 1, "error": {"code": 1, "message": "m"}}), "both"),
        (_body([{"id": 7, "result": 1}] * 3), "a batch of 3 answers to one call"),
        (_body({"id": 7, "error": "boom"}), "not an error object"),
        (_body({"id": [1] * 1000, "result": 1}), "answered a list"),
    ],
)
def test_the_failure_says_what_was_wrong_with_the_answer(body: bytes, problem: str) -> None:
    reply = interpret(200, body, {}, 7)
    assert reply.failure is not None and reply.failure.body_text is not None
    assert problem in reply.failure.body_text


@pytest.mark.parametrize("answer_id", [None, "absent"])
def test_an_error_with_a_null_id_is_still_this_calls_error(answer_id: object) -> None:
    # The specification's id when a server cannot read the request; one call per exchange.
    error = {"code": -32602, "message": "invalid argument 0: hex string without 0x prefix"}
    answer: dict[str, object] = {"jsonrpc": "2.0", "error": error}
    if answer_id != "absent":
        answer["id"] = answer_id
    reply = interpret(200, _body(answer), {}, 7)
    assert reply.error == error
    assert reply.failure is not None and reply.failure.transport is None
    assert classify(reply.failure).error_class is ErrorClass.CLIENT


def test_a_malformed_body_behind_an_error_status_is_judged_by_the_status() -> None:
    # A 429 whose body answers another id is still a rate limit (and still not handed on).
    body = _body({"jsonrpc": "2.0", "id": 99, "error": {"code": -32005, "message": "slow down"}})
    reply = interpret(429, body, {"retry-after": "3"}, 7)
    assert reply.error is None and reply.failure is not None
    classification = classify(reply.failure)
    assert classification.error_class is ErrorClass.RATE_LIMITED
    assert classification.cooldown_s == 3.0


def test_a_result_behind_an_error_status_is_not_taken() -> None:
    reply = interpret(500, _body({"jsonrpc": "2.0", "id": 7, "result": "0x1"}), {}, 7)
    assert reply.failure is not None and reply.result is None


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


# --- an upstream batch: one Reply per call, each answer judged alone -----------------------

CALLS = [7, 8, 9]


def _answer(request_id: object, result: object = None, **rest: object) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result, **rest}


def _what_each_got(replies: list[Reply]) -> list[object]:
    """Per call: its result, or the transport of its failure, or its error's code."""
    return [
        reply.result
        if reply.failure is None
        else reply.failure.transport or (reply.error or {}).get("code") or reply.failure.http_status
        for reply in replies
    ]


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        pytest.param(
            [_answer(7, "0x7"), _answer(8, "0x8"), _answer(9, "0x9")],
            ["0x7", "0x8", "0x9"],
            id="in-order",
        ),
        pytest.param(
            [_answer(9, "0x9"), _answer(7, "0x7"), _answer(8, "0x8")],
            ["0x7", "0x8", "0x9"],
            id="any-order",
        ),
        pytest.param(
            [_answer(7, "0x7"), _answer(9, "0x9")], ["0x7", "bad_response", "0x9"], id="missing"
        ),
        pytest.param(
            [_answer(7, "0x7"), _answer(80, "0x8"), _answer(9, "0x9")],
            ["0x7", "bad_response", "0x9"],
            id="wrong-id",
        ),
        pytest.param(
            [_answer(7, "0x7"), _answer("8", "0x8"), _answer(9, "0x9")],
            ["0x7", "bad_response", "0x9"],
            id="id-as-string",
        ),
        pytest.param(
            [_answer(7, "0x7"), _answer(8, "0x8"), _answer(8, "0x88"), _answer(9, "0x9")],
            ["0x7", "bad_response", "0x9"],
            id="answered-twice",
        ),
        pytest.param(
            [
                _answer(7, "0x7"),
                {"jsonrpc": "2.0", "id": 8, "error": {"code": -32603, "message": "internal"}},
                _answer(9, "0x9"),
            ],
            ["0x7", -32603, "0x9"],
            id="error-for-one",
        ),
        pytest.param(
            [
                _answer(7, "0x7"),
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "bad"}},
                _answer(9, "0x9"),
            ],
            ["0x7", "bad_response", "0x9"],
            id="null-id-error-is-nobodys",
        ),
        pytest.param(
            [_answer(7, "0x7"), "0x8", _answer(9, "0x9")],
            ["0x7", "bad_response", "0x9"],
            id="not-an-object",
        ),
        pytest.param(
            [_answer(7, "0x7"), {"jsonrpc": "2.0", "id": 8}, _answer(9, "0x9")],
            ["0x7", "bad_response", "0x9"],
            id="neither-result-nor-error",
        ),
        pytest.param(
            [_answer(7, "0x7"), _answer(8, "0x8"), _answer(9, "0x9"), _answer(10, "0xa")],
            ["0x7", "0x8", "0x9"],
            id="an-extra-answer-is-ignored",
        ),
    ],
)
def test_each_call_of_a_batch_gets_its_own_answer(
    answers: list[object], expected: list[object]
) -> None:
    assert _what_each_got(interpret_batch(200, _body(answers), {}, CALLS)) == expected


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(200, b"\x00garbage<html>", "bad_json", id="not-json"),
        pytest.param(200, b"", "bad_response", id="empty"),
        pytest.param(
            200,
            _body({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "too big"}}),
            "bad_response",
            id="one-error-object-for-the-batch",
        ),
        pytest.param(200, _body(_answer(7, "0x7")), "bad_response", id="one-answer-not-a-list"),
        pytest.param(503, b"upstream unavailable", 503, id="http-503"),
    ],
)
def test_a_batch_failing_as_a_whole_fails_every_call_alike(
    status: int, body: bytes, expected: object
) -> None:
    replies = interpret_batch(status, body, {}, CALLS)
    assert _what_each_got(replies) == [expected] * len(CALLS)
    for reply in replies:
        assert reply.failure is not None and reply.result is None and reply.error is None
        assert classify(reply.failure).retry_elsewhere


def test_a_batch_answered_as_one_error_says_so() -> None:
    error = {"code": -32005, "message": "Number of requests exceeds max batch size"}
    (reply, *_) = interpret_batch(
        200, _body({"jsonrpc": "2.0", "id": None, "error": error}), {}, CALLS
    )
    assert reply.failure is not None and reply.failure.body_text is not None
    assert "one object for a batch of 3 calls" in reply.failure.body_text
    assert "Number of requests exceeds max batch size" in reply.failure.body_text


def test_a_rate_limited_batch_rests_the_upstream_for_each_call() -> None:
    errors = [
        {"jsonrpc": "2.0", "id": i, "error": {"code": -32005, "message": "Too Many Requests"}}
        for i in CALLS
    ]
    for reply in interpret_batch(429, _body(errors), {"retry-after": "2"}, CALLS):
        assert reply.failure is not None and reply.error is not None
        classification = classify(reply.failure)
        assert classification.error_class is ErrorClass.RATE_LIMITED
        assert classification.cooldown_s == 2.0


def test_a_result_in_a_batch_behind_an_error_status_is_not_taken() -> None:
    answers = [_answer(i, "0x1") for i in CALLS]
    replies = interpret_batch(500, _body(answers), {}, CALLS)
    assert all(r.failure is not None and r.result is None for r in replies)


_ANSWERS_IN_A_BATCH = st.one_of(
    st.builds(
        _answer,
        st.sampled_from([7, 8, 9, 10, "8", True, None]),
        st.sampled_from(["0x7", "0x8", "0x9", None]),
    ),
    st.builds(
        lambda answer_id: {
            "jsonrpc": "2.0",
            "id": answer_id,
            "error": {"code": -1, "message": "x"},
        },
        st.sampled_from([7, 8, 9, None]),
    ),
    st.builds(lambda answer_id: {"jsonrpc": "2.0", "id": answer_id}, st.sampled_from([7, 8, 9])),
    st.sampled_from(["0x8", None, 8]),
)


@settings(max_examples=500, deadline=None)
@given(answers=st.lists(_ANSWERS_IN_A_BATCH, min_size=3, max_size=3))
def test_a_batch_answered_in_order_is_read_as_matching_each_answer_by_id_reads_it(
    answers: list[object],
) -> None:
    """The one-pass reading of a batch answered in order (`_plain_in_order`) takes only
    what matching by id takes, and the same."""
    in_order = _plain_in_order(answers, CALLS)
    if in_order is not None:
        careful = _matched_by_id(200, _body(answers), None, answers, CALLS)
        assert _what_each_got(in_order) == _what_each_got(careful)
        assert [r.result for r in in_order] == [r.result for r in careful]


def test_a_batch_answered_in_order_takes_the_one_pass_reading() -> None:
    answers = [_answer(7, "0x7"), _answer(8, "0x8"), _answer(9, None)]
    in_order = _plain_in_order(answers, CALLS)
    assert in_order is not None and [r.result for r in in_order] == ["0x7", "0x8", None]
    assert _plain_in_order([answers[1], answers[0], answers[2]], CALLS) is None  # by id, then
