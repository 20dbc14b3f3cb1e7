"""HTTP/1.1 for upstream calls, without I/O: the bytes of a JSON-RPC POST, and a reader that
turns the bytes an upstream sends back into whole responses.

Pure, so every framing (a declared length, chunks with or without trailers, a body that
ends with the connection, a 100 Continue ahead, gzip) is tested with tables of bytes;
`upstream_http` is the asyncio shell that moves them. What an upstream sends is not
trusted: a malformed head or chunk is a `ProtocolError`, and a body over the size bound
is `TooLarge` as soon as it is known to be, before it is read to its end.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

_MAX_HEAD_BYTES = 64 * 1024  # status line and header fields of one response
_HEX_DIGITS = b"0123456789abcdefABCDEF"  # a chunk size's, and nothing else


class ProtocolError(Exception):
    """The upstream's bytes are not an HTTP/1.1 response."""


class TooLarge(Exception):
    """The response body passes the size bound."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where an upstream's calls go: its address, and the head every call carries."""

    host: str
    port: int
    tls: bool
    head: bytes  # request line and fixed header fields, up to Content-Length


def target(url: str, headers: Mapping[str, str], user_agent: str) -> Target:
    """The Target of an upstream URL (http or https, credentials in the URL sent as Basic
    auth, the path and query as given) with its extra header fields. Raises ValueError for
    a URL or a field that cannot be sent."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname or ''}")
    tls = parts.scheme == "https"
    port = parts.port or (443 if tls else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    fields = {
        "Host": host,
        "User-Agent": user_agent,
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        fields["Authorization"] = "Basic " + base64.b64encode(credentials.encode()).decode()
    fields.update(headers)
    for name, value in fields.items():
        if not _token(name) or not _field_value(value):
            raise ValueError(f"header field {name!r} cannot be sent as it is")
    lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return Target(parts.hostname, port, tls, f"POST {path} HTTP/1.1\r\n{lines}".encode())


def request_bytes(target: Target, body: bytes) -> bytes:
    """One POST of `body` to the target."""
    return b"%sContent-Length: %d\r\n\r\n%s" % (target.head, len(body), body)


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated field's values comma-joined
    body: bytes
    keep_alive: bool  # whether the connection may carry another request


class ResponseReader:
    """Bytes in, whole responses out, one connection's worth at a time.

    `feed` returns the response its bytes complete (None while incomplete); `eof` says the
    connection closed, which completes a body that runs until the close.
    """

    def __init__(self, max_body_bytes: int) -> None:
        self._max = max_body_bytes
        self._buffer = bytearray()
        self._head: tuple[int, dict[str, str], bool] | None = None
        self._framing = ""  # "length" | "chunked" | "close"
        self._length = 0
        self._chunks: list[bytes] = []
        self._size = 0
        self.started = False  # a byte of a response has arrived

    @property
    def idle(self) -> bool:
        """Nothing held: no response begun, no stray bytes after the last one."""
        return self._head is None and not self._buffer

    def feed(self, data: bytes) -> Response | None:
        if data:
            self.started = True
            self._buffer += data
        while self._head is None:
            if not self._read_head():
                return None
        if self._framing == "length":
            if len(self._buffer) < self._length:
                return None
            body = bytes(self._buffer[: self._length])
            del self._buffer[: self._length]
            return self._done(body)
        if self._framing == "chunked":
            return self._read_chunks()
        self._grow(len(self._buffer))  # until the close
        return None

    def eof(self) -> Response:
        """The response the close completes; ProtocolError when the close cut it short."""
        if self._head is not None and self._framing == "close":
            body = bytes(self._buffer)
            self._buffer.clear()
            return self._done(body, closing=True)
        where = "before a response" if not self.started else "in the middle of a response"
        raise ProtocolError(f"connection closed {where}")

    def _read_head(self) -> bool:
        """Reads a head from the buffer: False when none is there whole yet."""
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > _MAX_HEAD_BYTES:
                raise ProtocolError(f"response head over {_MAX_HEAD_BYTES} bytes")
            return False
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        status_line = lines[0].split(" ", 2)
        if (
            len(status_line) < 2
            or status_line[0] not in ("HTTP/1.1", "HTTP/1.0")
            or not _digits(status_line[1])
            or len(status_line[1]) != 3
        ):
            raise ProtocolError(f"not an HTTP/1.x status line: {lines[0][:60]!r}")
        status = int(status_line[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            name = name.lower()
            if not colon or not _token(name):
                raise ProtocolError(f"malformed header field: {line[:60]!r}")
            value = value.strip(" \t")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if 100 <= status < 200:  # 100 Continue and other interim answers: the real one follows
            return True  # read, and no head yet: the loop reads on
        connection = headers.get("connection", "").lower()
        keep_alive = (
            "close" not in connection
            if status_line[0] == "HTTP/1.1"
            else "keep-alive" in connection
        )
        encoding = headers.get("transfer-encoding", "").lower()
        if status in (204, 304):
            self._framing, self._length = "length", 0
        elif encoding:
            if encoding.rsplit(",", 1)[-1].strip() != "chunked":
                raise ProtocolError(f"transfer-encoding not supported: {encoding[:40]}")
            self._framing = "chunked"
        elif "content-length" in headers:
            declared = headers["content-length"]
            if not _digits(declared):
                raise ProtocolError(f"bad content-length: {declared[:40]!r}")
            self._framing, self._length = "length", int(declared)
            self._grow(self._length)
        else:
            self._framing, keep_alive = "close", False
        self._head = (status, headers, keep_alive)
        return True

    def _read_chunks(self) -> Response | None:
        buffer = self._buffer
        while True:
            line_end = buffer.find(b"\r\n")
            if line_end < 0:
                if len(buffer) > 1024:
                    raise ProtocolError("chunk size line over 1024 bytes")
                return None
            size_text = bytes(buffer[:line_end]).split(b";", 1)[0].strip()
            # Hex digits only: Python's int() would also take a sign, "0x" and underscores.
            if not size_text or size_text.strip(_HEX_DIGITS):
                raise ProtocolError(f"bad chunk size: {size_text[:20]!r}")
            size = int(size_text, 16)
            if size == 0:  # the last chunk, then trailer fields until an empty line
                if buffer.startswith(b"\r\n", line_end + 2):
                    del buffer[: line_end + 4]
                else:
                    trailer_end = buffer.find(b"\r\n\r\n", line_end + 2)
                    if trailer_end < 0:
                        return None
                    del buffer[: trailer_end + 4]
                body = b"".join(self._chunks)
                self._chunks = []
                return self._done(body)
            self._grow(self._size + size)
            if len(buffer) < line_end + 2 + size + 2:
                return None
            start = line_end + 2
            if buffer[start + size : start + size + 2] != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
            self._chunks.append(bytes(buffer[start : start + size]))
            self._size += size
            del buffer[: start + size + 2]

    def _grow(self, size: int) -> None:
        if size > self._max:
            raise TooLarge(f"response body over {self._max} bytes")

    def _done(self, body: bytes, closing: bool = False) -> Response:
        assert self._head is not None
        status, headers, keep_alive = self._head
        self._head = None
        self._size = 0
        coding = headers.get("content-encoding", "identity").lower()
        if coding in ("gzip", "x-gzip", "deflate"):
            body = self._decompressed(body, coding)
        elif coding != "identity":
            raise ProtocolError(f"content-encoding not supported: {coding[:40]}")
        return Response(status, headers, body, keep_alive and not closing)

    def _decompressed(self, body: bytes, coding: str) -> bytes:
        # Bounded like any body: a small bomb must not become a large answer.
        wbits = zlib.MAX_WBITS | 16 if "gzip" in coding else zlib.MAX_WBITS
        inflater = zlib.decompressobj(wbits)
        try:
            plain = inflater.decompress(body, self._max + 1)
        except zlib.error as exc:
            raise ProtocolError(f"{coding} body does not decompress: {exc}") from None
        self._grow(len(plain))
        return plain


def _token(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in name)


def _field_value(value: str) -> bool:
    return value.isprintable() or all(c == "\t" or c.isprintable() for c in value)


def _digits(text: str) -> bool:
    """ASCII digits only (str.isdigit also takes "²", which int() refuses)."""
    return text.isascii() and text.isdigit()
