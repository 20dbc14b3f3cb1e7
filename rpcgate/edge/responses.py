"""A JSON-RPC answer as HTTP: status line, head and body written in one piece.

aiohttp's `web.Response` builds a header multidict, checks and serializes it field by field
and walks its general path (chunking, compression, cookies, signals) for every answer. An
answer of the RPC routes needs none of that: it is always `200 OK`, JSON, of a known length,
and its fields (diagnostics, CORS) are the gateway's own words. `JsonAnswer` writes it as
one byte string, through the connection's own writer, so keep-alive, back-pressure and
the connection's accounting stay aiohttp's. On the cache-hit path this is about a tenth of
the CPU a call costs (bench/suite.py scenario a).

Refusals and errors that close the connection, and every other route, keep `web.Response`
under aiohttp; the fast path (`fast_http`) writes every answer of its own with `reply_head`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import HttpVersion10, HttpVersion11, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from multidict import CIMultiDict

_FIXED = f"Content-Type: application/json\r\nServer: {SERVER_SOFTWARE}\r\n"
# The status line and what a client's HTTP version and keep-alive call for.
_STATUS_AND_CONNECTION = {
    (HttpVersion11, True): "HTTP/1.1 200 OK\r\n",
    (HttpVersion11, False): "HTTP/1.1 200 OK\r\nConnection: close\r\n",
    (HttpVersion10, True): "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n",
    (HttpVersion10, False): "HTTP/1.0 200 OK\r\n",
}


def answer_head(fields: Mapping[str, str], length: int, version: Any, keep_alive: bool) -> bytes:
    """The status line and header fields of a 200 JSON answer of `length` bytes. Pure.

    `fields` are the gateway's own (names it chose, values it made or was configured with:
    config validation keeps upstream names printable), so they are not checked here."""
    start = _STATUS_AND_CONNECTION.get((version, keep_alive))
    if start is None:  # HTTP/0.9 or 2+, which aiohttp's parser does not produce
        start = f"HTTP/{version[0]}.{version[1]} 200 OK\r\n"
    lines = "".join([f"{name}: {value}\r\n" for name, value in fields.items()])
    return (
        f"{start}{_FIXED}Content-Length: {length}\r\nDate: {rfc822_formatted_time()}\r\n{lines}\r\n"
    ).encode()


def reply_head(
    status: int, fields: Mapping[str, str], length: int | None, version: Any, keep_alive: bool
) -> bytes:
    """`answer_head` for any status: a JSON body of `length` bytes, or none (None: a 204,
    which has neither a type nor a length). Pure."""
    if status == 200 and length is not None:
        return answer_head(fields, length, version, keep_alive)
    start = f"HTTP/{version[0]}.{version[1]} {status} {_reason(status)}\r\n"
    if keep_alive != (version >= HttpVersion11):  # what the version does not imply
        start += "Connection: keep-alive\r\n" if keep_alive else "Connection: close\r\n"
    body = (
        "" if length is None else f"Content-Type: application/json\r\nContent-Length: {length}\r\n"
    )
    lines = "".join([f"{name}: {value}\r\n" for name, value in fields.items()])
    return (
        f"{start}{body}Server: {SERVER_SOFTWARE}\r\nDate: {rfc822_formatted_time()}\r\n{lines}\r\n"
    ).encode()


@functools.cache
def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


class JsonAnswer(web.StreamResponse):
    """A 200 answer with a JSON body, written as one piece when aiohttp finishes it."""

    def __init__(self, body: bytes, fields: dict[str, str]) -> None:
        # StreamResponse's own __init__ builds a header multidict this answer does not use;
        # its class attributes hold every other default.
        self._state = {}
        self._status = 200
        self._reason = "OK"
        self._answer_body = body
        self._fields = fields

    @property
    def _headers(self) -> CIMultiDict[str]:  # type: ignore[override]
        """The fields as sent, for whoever reads `headers`, `content_type` or
        `content_length` (tests, an access log); not used on the way out."""
        return CIMultiDict(
            {
                "Content-Type": "application/json",
                "Content-Length": str(len(self._answer_body)),
                **self._fields,
            }
        )

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self._eof_sent:
            return None
        if self._payload_writer is None:
            if self._keep_alive is None:
                self._keep_alive = request.keep_alive
            self._req = request
            self._payload_writer = request.writer
        return self._payload_writer

    async def write_eof(self, data: bytes = b"") -> None:
        if self._eof_sent:
            return
        writer = self._payload_writer
        request = self._req
        assert writer is not None and request is not None, "prepare() comes first"
        body = self._answer_body
        head = answer_head(self._fields, len(body), request.version, bool(self._keep_alive))
        # No head is buffered in the writer: it sends these bytes as they are.
        await writer.write_eof(head + body)
        self._eof_sent = True
        self._req = None
        self._body_length = len(body)
        self._payload_writer = None
