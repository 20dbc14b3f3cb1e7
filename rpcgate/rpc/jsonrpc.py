"""JSON-RPC 2.0 framing, exactly as the specification says; no I/O.

`parse_request` turns a request body into items (valid calls or per-item errors) and
`encode_response` turns answers back into bytes. Ids are returned as sent, params are sent
on as sent (numbers included, whatever their size or spelling), notifications get no answer,
batches are answered item by item in order. Any bytes at all become items: parsing never
raises, whatever a client sends.
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
# A refused call (a rate limit, too many subscriptions): "limit exceeded" in EIP-1474, the
# code clients already know from providers' rate limits.
LIMIT_EXCEEDED = -32005

# rpcgate's own codes, in the implementation-defined server range, chosen apart from the
# codes proxyd and eRPC use (-32010..-32024), which collide with each other.
ALL_UPSTREAMS_FAILED = -32050  # every attempt failed; `data.attempts` says how
DEADLINE_EXCEEDED = -32051  # the call's total deadline ran out
NO_UPSTREAM = -32052  # nothing configured or available to serve the call
UNKNOWN_CHAIN = -32053  # the URL path names no configured chain

_ABSENT = object()

DEFAULT_MAX_JSON_DEPTH = 64  # limits.max_json_depth's default
# orjson refuses a document nested deeper than this itself, whatever the configured limit.
_PARSER_MAX_DEPTH = 1024


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


# By exact type: a bool is not a valid id. A Fragment is a number kept as the client wrote
# it (`_number_as_written`).
_ID_TYPES = (str, int, float, orjson.Fragment)


def _holds_float(value: Any) -> bool:
    """Whether orjson read a number in `value` as a float: a number with a fraction or an
    exponent, or an integer beyond 64 bits. A float is not necessarily the number the client
    wrote (123456789012345678901234567890 became 1.2345678901234568e+29, 1e2 became 100.0),
    and ids come back, and params go on, as written. One type check per value, in a few
    values for most calls."""
    if type(value) is float:
        return True
    if type(value) is not list and type(value) is not dict:
        return False
    pending = [value]
    while pending:
        node = pending.pop()
        for child in node.values() if type(node) is dict else node:
            kind = type(child)
            if kind is float:
                return True
            if kind is list or kind is dict:
                pending.append(child)
    return False


def _reads_a_float(parsed: Any) -> bool:
    """Whether an id or the params of a request object (or of a batch's) hold a float (the
    other members are refused if they are numbers, and never sent anywhere)."""
    for item in parsed if type(parsed) is list else (parsed,):
        if type(item) is dict and (
            type(item.get("id")) is float or _holds_float(item.get("params"))
        ):
            return True
    return False


def _read_exactly(body: bytes, orjson_reading: Any) -> Any:
    """`body` with every number as written: integers of any size as ints, other numbers
    as floats where they are written back the same, else as their own text. The stdlib
    parser recurses (RecursionError past ~1000 levels) and refuses integers of over 4300
    digits: then orjson's reading stands (only a too-deep or absurd request is that, and it
    is refused anyway)."""
    try:
        return json.loads(body, parse_float=_number_as_written)
    except (ValueError, RecursionError):
        return orjson_reading


def _number_as_written(text: str) -> float | orjson.Fragment:
    """A number with a fraction or an exponent: a float when orjson writes that float back
    as `text` (1.5), else `text` itself, written back byte for byte (1e2, 2.50, 1E-7)."""
    number = float(text)
    return number if orjson.dumps(number) == text.encode() else orjson.Fragment(text)


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


def too_deep(params: list[Any] | dict[str, Any], max_depth: int) -> bool:
    """Whether arrays and objects nest more than `max_depth` levels in a request whose
    params are these (the request object is level 1, its params level 2). Iterative, and
    it stops at the first container past the limit: an ordinary call costs a few type
    checks, a hostile one no more than the limit's worth of levels."""
    if max_depth < 2:
        return True
    pending: list[tuple[list[Any] | dict[str, Any], int]] = [(params, 2)]
    while pending:
        node, depth = pending.pop()
        for child in node.values() if type(node) is dict else node:
            if type(child) is dict or type(child) is list:
                if depth >= max_depth:
                    return True
                pending.append((child, depth + 1))
    return False


def _depth_error(max_depth: int) -> dict[str, Any]:
    message = (
        f"Invalid Request: JSON nested more than {max_depth} levels deep (limits.max_json_depth)"
    )
    return rpc_error(INVALID_REQUEST, message, {"limit": max_depth})


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


def _checked_item(obj: Any, max_depth: int) -> Item:
    """One request object of a body, its nesting depth checked (only params are deep in a
    valid call, and only params are sent on to an upstream)."""
    item = _parse_item(obj)
    if type(item) is Call and item.params and too_deep(item.params, max_depth):
        return Invalid(item.id, _depth_error(max_depth))
    return item


def parse_single(body: bytes, *, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Call | None:
    """The common case in one step: a body that is one valid call, else None (and the
    caller takes `parse_request`, which says what is wrong)."""
    if body[:1] == b"[":  # a batch (leading whitespace: the full parse finds out)
        return None
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or type(obj.get("id")) is float:
        return None
    item = _parse_item(obj)
    if type(item) is not Call:
        return None
    if item.params:
        # Nesting past max_depth takes at least as many brackets: a short body is never
        # too deep.
        if len(body) > 2 * max_depth and too_deep(item.params, max_depth):
            return None
        if _holds_float(item.params):  # parse_request reads its numbers as written
            return None
    return item


def parse_request(
    body: bytes, max_batch_items: int, *, max_depth: int = DEFAULT_MAX_JSON_DEPTH
) -> Request:
    """A body becomes items to answer; a body that is not JSON becomes one -32700 error
    saying where it stops being JSON, one nested past what the parser takes one -32600
    error naming the depth limit."""
    try:
        parsed = loads(body)
    except orjson.JSONDecodeError as exc:
        if exc.msg == "depth limit exceeded":
            limit = min(max_depth, _PARSER_MAX_DEPTH)
            return Request([Invalid(None, _depth_error(limit))], False)
        # orjson's words never quote the body ("trailing comma is not allowed").
        message = f"Parse error: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        return Request([Invalid(None, rpc_error(PARSE_ERROR, message))], False)
    if type(parsed) is list and 0 < len(parsed) <= max_batch_items and max_depth >= 3:
        plain = _plain_calls(parsed)
        if plain is not None:
            return Request(plain, True)
    if _reads_a_float(parsed):
        parsed = _read_exactly(body, parsed)
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
        return Request([_checked_item(obj, max_depth) for obj in parsed], True)
    return Request([_checked_item(parsed, max_depth)], False)


_SCALARS = (str, int, bool, type(None))


def _plain_calls(batch: list[Any]) -> list[Item] | None:
    """A batch's calls as `_checked_item` would make them, in one pass, when every item is
    the common shape: an object with "jsonrpc": "2.0", a method, a string or integer id, and
    params an array of scalars or of objects of scalars (two levels below the request, and
    no float: nothing to read again as written). None: some item is not, and the careful
    reading answers the whole batch."""
    calls: list[Item] = []
    for obj in batch:
        if type(obj) is not dict or obj.get("jsonrpc") != "2.0":
            return None
        method, ident, params = obj.get("method"), obj.get("id"), obj.get("params")
        if type(method) is not str or not method or type(ident) not in (str, int):
            return None
        if params is not None:
            if type(params) is not list:
                return None
            for param in params:
                kind = type(param)
                if kind is dict:
                    for value in param.values():
                        if type(value) not in _SCALARS:
                            return None
                elif kind not in _SCALARS:
                    return None
        calls.append(Call(method, params, ident, False))
    return calls


def request_of(
    body: bytes, single: Call | None, max_batch_items: int, *, max_depth: int
) -> Request:
    """The request `body` holds, given what `parse_single` made of it (the common case
    parsed once)."""
    if single is not None:
        return Request([single], is_batch=False)
    return parse_request(body, max_batch_items, max_depth=max_depth)


def parse_body(body: bytes, max_batch_items: int, *, max_depth: int) -> Request:
    """`parse_single`, then `parse_request` where the body is not one valid call."""
    single = parse_single(body, max_depth=max_depth)
    return request_of(body, single, max_batch_items, max_depth=max_depth)


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
