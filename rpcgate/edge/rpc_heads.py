"""A request head read and judged: whether the fast path (`fast_http`) serves it, and
what it says. Pure: bytes in, a decision out (httptools parses, and does no I/O).

The fast path serves `POST /`, `/{chain}` or `/{chain}/{key}` over HTTP/1.0 or 1.1 with a
body of a declared length. Any other head is aiohttp's, so that aiohttp does with it what
it always did: another method or path (WebSockets, the probes, the status page, admin,
preflights), a field aiohttp acts on (`Expect`, `Upgrade`, a chunked or compressed body),
a path it would decode or normalise, and a head llhttp refuses or aiohttp would (no
`Host` in HTTP/1.1, a field it allows once given twice, a line or a field over its bounds,
too many fields).

How a head is found in a connection's bytes is `fast_http`'s: it ends at the first empty
line (`HEAD_END`), within `MOST_HEAD_BYTES`; the body is `Content-Length` bytes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httptools
from aiohttp import HttpVersion10, HttpVersion11
from aiohttp.http_parser import SINGLETON_HEADERS
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

HEAD_END = b"\r\n\r\n"
MOST_HEAD_BYTES = 65536  # a head not ended within this is aiohttp's (it refuses it)
# aiohttp's own bounds on a head (max_line_size, max_field_size, max_headers).
_MOST_LINE_BYTES = 8190
_MOST_FIELDS = 128
_VERSIONS = {"1.1": HttpVersion11, "1.0": HttpVersion10}


@dataclass(frozen=True, slots=True)
class RpcHead:
    """A head the fast path serves: where it goes, its fields, and how the answer goes.
    Read-only: one is shared by every request with the same head bytes."""

    chain: str | None  # the path's segments: /{chain}/{key}
    key: str | None
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]  # as aiohttp reads them
    version: Any  # aiohttp's HttpVersion, for the answer's status line
    keep_alive: bool
    length: int  # the body's declared length


# A client sends the same head again and again (the same fields, and the same length for
# the same calls): a head this short is judged once while it is among the last ones seen.
_REMEMBERED_HEAD_BYTES = 2048
_REMEMBERED_HEADS = 256


def rpc_head(head: bytes, operator_segments: frozenset[bytes]) -> RpcHead | None:
    """The head (its bytes up to and with `HEAD_END`) of a request the fast path serves;
    None: one for aiohttp. `operator_segments`: first path segments that are not a chain's
    (the operator's paths). A pure function of its arguments, so a decision is remembered
    by the head's bytes."""
    if len(head) <= _REMEMBERED_HEAD_BYTES:
        return _remembered_head(head, operator_segments)
    return _read_head(head, operator_segments)


def _read_head(head: bytes, operator_segments: frozenset[bytes]) -> RpcHead | None:
    reader = _HeadReader()
    try:
        reader.parser.feed_data(head)
    except (httptools.HttpParserError, httptools.HttpParserUpgrade):
        return None  # aiohttp answers it as it always did
    fields = reader.fields
    # As aiohttp reads them: the whitespace after a value is not part of it.
    headers: CIMultiDict[str] = CIMultiDict(
        [
            (
                n.decode("utf-8", "surrogateescape"),
                v.rstrip(b" \t").decode("utf-8", "surrogateescape"),
            )
            for n, v in fields
        ]
    )
    version = reader.version
    if (
        version is None
        or reader.method != b"POST"
        or _aiohttps(reader.target, fields, headers, version, len(head))
    ):
        return None
    route = rpc_route(reader.target, operator_segments)
    if route is None:
        return None
    declared = headers.get("Content-Length")
    return RpcHead(
        *route,
        CIMultiDictProxy(headers),
        version,
        reader.keep_alive,
        0 if declared is None else int(declared),  # llhttp let only digits through
    )


_remembered_head = functools.lru_cache(maxsize=_REMEMBERED_HEADS)(_read_head)


class _HeadReader:
    """What httptools hands over while it parses a head. The method, version and keep-alive
    are read as the head completes: once a message without a body is complete, llhttp has
    forgotten them (it waits for the next one)."""

    __slots__ = ("fields", "keep_alive", "method", "parser", "target", "version")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.target = b""
        self.fields: list[tuple[bytes, bytes]] = []
        self.method = b""  # b"": the head did not complete
        self.version: Any = None
        self.keep_alive = False

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        self.method = parser.get_method()
        self.version = _VERSIONS.get(parser.get_http_version())
        self.keep_alive = parser.should_keep_alive()


def _aiohttps(
    target: bytes,
    fields: list[tuple[bytes, bytes]],
    headers: CIMultiDict[str],
    version: Any,
    head_length: int,
) -> bool:
    """Whether a POST's head has a field aiohttp acts on, or is one aiohttp refuses."""
    return (
        "Expect" in headers
        or "Upgrade" in headers
        or "Transfer-Encoding" in headers
        or "Content-Encoding" in headers
        or (version == HttpVersion11 and "Host" not in headers)
        or len(fields) > _MOST_FIELDS
        or (len({n.lower() for n, _ in fields}) != len(fields) and _repeats_a_singleton(headers))
        or (head_length > _MOST_LINE_BYTES and _too_long_for_aiohttp(target, fields))
        or "Sec-WebSocket-Key1" in headers
    )


def _repeats_a_singleton(headers: CIMultiDict[str]) -> bool:
    return any(len(headers.getall(name, ())) > 1 for name in SINGLETON_HEADERS)


def _too_long_for_aiohttp(target: bytes, fields: list[tuple[bytes, bytes]]) -> bool:
    return len(target) > _MOST_LINE_BYTES or any(
        len(n) + len(v) > _MOST_LINE_BYTES for n, v in fields
    )


# A path of at most two segments of plain characters: anything percent-encoded, dotted or
# empty is aiohttp's to decode or normalise.
_RPC_PATH = re.compile(rb"/(?:([A-Za-z0-9_~.-]+)(?:/([A-Za-z0-9_~.-]+))?)?")
_DOTS = (b".", b"..")
_NO_QUERY: Mapping[str, str] = {}

Route = tuple[str | None, str | None, Mapping[str, str]]


@functools.lru_cache(maxsize=1024)  # a client sends one target again and again
def rpc_route(target: bytes, operator_segments: frozenset[bytes] = frozenset()) -> Route | None:
    """The chain and key segments and the query of a request target the fast path serves,
    as aiohttp would read them; None: one for aiohttp (the query is read-only)."""
    path, mark, query = target.partition(b"?")
    matched = _RPC_PATH.fullmatch(path)
    if matched is None or b"#" in query:
        return None
    chain, key = matched.groups()
    if chain is None:
        return (None, None, _parse_query(query) if mark else _NO_QUERY)
    if chain in operator_segments or chain in _DOTS or key in _DOTS:
        return None
    return (
        chain.decode(),
        None if key is None else key.decode(),
        _parse_query(query) if mark else _NO_QUERY,
    )


def _parse_query(query: bytes) -> Mapping[str, str]:
    # As aiohttp's parser builds a request's URL (yarl, encoded), so `?key=` reads the same.
    parsed: Mapping[str, str] = URL.build(
        query_string=query.decode("utf-8", "surrogateescape"), encoded=True
    ).query
    return parsed
