"""A request body framed once (`parse_body`, `request_of`): one valid call takes the quick
parse, anything else the full one, which says what is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpcgate.rpc.jsonrpc import (
    INVALID_REQUEST,
    PARSE_ERROR,
    Call,
    Invalid,
    _checked_item,
    _holds_float,
    _plain_calls,
    parse_body,
    parse_request,
    parse_single,
    request_of,
)

pytestmark = pytest.mark.unit


def test_one_call_is_one_item_and_no_batch() -> None:
    request = parse_body(b'{"jsonrpc":"2.0","id":7,"method":"eth_chainId"}', 10, max_depth=64)
    assert not request.is_batch
    (item,) = request.items
    assert isinstance(item, Call) and item.method == "eth_chainId" and item.id == 7


def test_a_batch_keeps_its_items_in_order() -> None:
    body = b'[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":2,"method":"b"}]'
    request = parse_body(body, 10, max_depth=64)
    assert request.is_batch
    assert [item.method for item in request.items if isinstance(item, Call)] == ["a", "b"]


def test_what_is_not_one_valid_call_gets_the_full_parse_and_its_error() -> None:
    (broken,) = parse_body(b"{not json", 10, max_depth=64).items
    assert isinstance(broken, Invalid) and broken.error["code"] == PARSE_ERROR
    body = b'[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":2,"method":"b"}]'
    (too_many,) = parse_body(body, 1, max_depth=64).items
    assert isinstance(too_many, Invalid) and too_many.error["code"] == INVALID_REQUEST


def test_request_of_uses_the_quick_parse_when_it_found_a_call() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}'
    single = parse_single(body, max_depth=64)
    assert single is not None
    assert request_of(b"ignored: the call is known", single, 10, max_depth=64).items == [single]
    (item,) = request_of(body, None, 10, max_depth=64).items
    assert item == single


# A batch of items in the common shape is read in one pass (`_plain_calls`); anything else
# takes the careful reading. Both must make the same items of any batch.
_json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
)
_json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=6,
)
_items = st.one_of(
    st.fixed_dictionaries(
        {"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0"]), "method": st.text(max_size=8)},
        optional={"id": _json_values, "params": _json_values, "extra": _json_values},
    ),
    _json_values,
)


@settings(max_examples=400, deadline=None)
@given(batch=st.lists(_items, min_size=1, max_size=5), depth=st.sampled_from([1, 2, 3, 4, 64]))
def test_a_batch_read_in_one_pass_makes_the_items_the_careful_reading_makes(
    batch: list[Any], depth: int
) -> None:
    body = json.dumps(batch).encode()
    careful = [_checked_item(obj, depth) for obj in json.loads(body)]
    if any(isinstance(obj, dict) and type(obj.get("id")) is float for obj in batch):
        return  # ids and params with floats are read again as written: another test's
    if any(isinstance(obj, dict) and _holds_float(obj.get("params")) for obj in batch):
        return
    assert parse_request(body, 10, max_depth=depth).items == careful


def test_the_common_batch_is_read_in_one_pass_and_an_odd_item_sends_it_the_careful_way() -> None:
    common = [
        {"jsonrpc": "2.0", "id": i, "method": "eth_call", "params": [{"to": "0xab"}, "latest"]}
        for i in range(3)
    ]
    assert _plain_calls(common) == [Call("eth_call", c["params"], c["id"], False) for c in common]
    for odd in (
        {"jsonrpc": "2.0", "id": True, "method": "m"},  # a bool is no id
        {"jsonrpc": "2.0", "method": "m"},  # a notification
        {"jsonrpc": "2.0", "id": 1, "method": "m", "params": [[1]]},  # deeper
        {"jsonrpc": "2.0", "id": 1, "method": "m", "params": [1.5]},  # a float
        {"jsonrpc": "2.0", "id": 1, "method": "m", "params": {"a": 1}},  # by name
    ):
        assert _plain_calls([*common, odd]) is None, odd
