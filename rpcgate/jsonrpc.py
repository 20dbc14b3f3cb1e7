"""JSON-RPC 2.0 framing, exactly as the specification says; no I/O.

`parse_request` turns a request body into items (valid calls or per-item errors) and
`encode_response` turns answers back into bytes. Ids are returned as sent, notifications
get no answer, batches are answered item by item in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# rpcgate's own codes, in the implementation-defined server range, chosen apart from the
# codes proxyd and eRPC use (-32010..-32024), which collide with each other.
ALL_UPSTREAMS_FAILED = -32050  # every attempt failed; `data.attempts` says how
DEADLINE_EXCEEDED = -32051  # the call's total deadline ran out
NO_UPSTREAM = -32052  # nothing configured or available to serve the call
UNKNOWN_CHAIN = -32053  # the URL path names no configured chain

_ABSENT = object()


def quantity(value: Any) -> int | None:
    """A JSON-RPC quantity ("0x1a") as an int; None when it is not one."""
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return int(value, 16)
        except ValueError:
            return None
    return None


def rpc_error(code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return error


@dataclass(slots=True)  # not frozen: built once per call, and a frozen __init__ costs
class Call:
    """A valid request object. `params` is None when the request had none."""

    method: str
    params: list[Any] | dict[str, Any] | None
    id: Any
    is_notification: bool


@dataclass(frozen=True, slots=True)
class Invalid:
    """A request object that is answered with an error without reaching an upstream."""

    id: Any
    error: dict[str, Any]


Item = Call | Invalid


@dataclass(slots=True)
class Request:
    items: list[Item]
    is_batch: bool


def loads(body: bytes | str) -> Any:
    return orjson.loads(body)


_ID_TYPES = (str, int, float)  # by exact type: a bool is not a valid id


def _has_float_id(parsed: Any) -> bool:
    if type(parsed) is dict:
        return type(parsed.get("id")) is float
    if type(parsed) is list:
        return any(type(i) is dict and type(i.get("id")) is float for i in parsed)
    return False


def dumps(value: Any, option: int = 0) -> bytes:
    try:
        return orjson.dumps(value, option=option)
    except TypeError:  # an integer beyond 64 bits (an id): written as its digits
        return orjson.dumps(_big_ints_as_fragments(value), option=option)


_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _big_ints_as_fragments(value: Any) -> Any:
    """`value` with every integer orjson cannot write replaced by its JSON text (results
    already encoded, `orjson.Fragment`, pass through untouched)."""
    if type(value) is int:
        return value if _INT64_MIN <= value <= _UINT64_MAX else orjson.Fragment(str(value))
    if type(value) is dict:
        return {k: _big_ints_as_fragments(v) for k, v in value.items()}
    if type(value) is list:
        return [_big_ints_as_fragments(v) for v in value]
    return value


def _parse_item(obj: Any) -> Item:
    if not isinstance(obj, dict):
        return Invalid(None, rpc_error(INVALID_REQUEST, "Invalid Request: not an object"))
    raw_id = obj.get("id", _ABSENT)
    id_ok = raw_id is _ABSENT or raw_id is None or type(raw_id) in _ID_TYPES
    reply_id = raw_id if id_ok and raw_id is not _ABSENT else None
    if not id_ok:
        return Invalid(
            None,
            rpc_error(INVALID_REQUEST, "Invalid Request: id must be a string, a number or null"),
        )
    if obj.get("jsonrpc") != "2.0":
        return Invalid(
            reply_id, rpc_error(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
        )
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        return Invalid(
            reply_id, rpc_error(INVALID_REQUEST, 'Invalid Request: "method" must be a string')
        )
    params = obj.get("params")
    if params is not None and not isinstance(params, list | dict):
        return Invalid(
            reply_id,
            rpc_error(INVALID_REQUEST, 'Invalid Request: "params" must be an array or an object'),
        )
    return Call(method, params, reply_id, raw_id is _ABSENT)


def parse_single(body: bytes) -> Call | None:
    """The common case in one step: a body that is one valid call, else None (and the
    caller takes `parse_request`, which says what is wrong)."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or type(obj.get("id")) is float:
        return None
    item = _parse_item(obj)
    return item if type(item) is Call else None


def parse_request(body: bytes, max_batch_items: int) -> Request:
    """A body becomes items to answer; a body that is not JSON becomes one -32700 error."""
    try:
        parsed = loads(body)
        if _has_float_id(parsed):
            # orjson reads integers beyond 64 bits as floats; an id must come back as sent.
            parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return Request([Invalid(None, rpc_error(PARSE_ERROR, "Parse error"))], False)
    if isinstance(parsed, list):
        if not parsed:
            return Request(
                [Invalid(None, rpc_error(INVALID_REQUEST, "Invalid Request: empty batch"))], False
            )
        if len(parsed) > max_batch_items:
            message = (
                f"Invalid Request: batch of {len(parsed)} items exceeds the limit of "
                f"{max_batch_items} (limits.max_batch_items)"
            )
            return Request(
                [Invalid(None, rpc_error(INVALID_REQUEST, message, {"limit": max_batch_items}))],
                False,
            )
        return Request([_parse_item(obj) for obj in parsed], True)
    return Request([_parse_item(parsed)], False)


def response_object(
    request_id: Any, *, result: Any = None, error: dict[str, Any] | None = None
) -> dict[str, Any]:
    if error is not None:
        return {"jsonrpc": "2.0", "id": request_id, "error": error}
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def encode_response(answers: list[dict[str, Any]], is_batch: bool) -> bytes | None:
    """The body to send, or None when nothing is to be sent (only notifications)."""
    if not answers:
        return None
    return dumps(answers if is_batch else answers[0])
