"""A request body framed once (`parse_body`, `request_of`): one valid call takes the quick
parse, anything else the full one, which says what is wrong."""

from __future__ import annotations

import pytest

from rpcgate.rpc.jsonrpc import (
    INVALID_REQUEST,
    PARSE_ERROR,
    Call,
    Invalid,
    parse_body,
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
