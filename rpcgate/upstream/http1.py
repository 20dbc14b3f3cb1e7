"""HTTP/1.1 for upstream calls, without I/O: the bytes of a JSON-RPC POST, a reader that
turns the bytes an upstream sends back into whole responses, and the egress proxy's
decisions (which proxy, the CONNECT that opens a tunnel through it, the proxy's answer).

Pure, so every framing (a declared length, chunks with or without trailers, a body that
ends with the connection, 1xx interim answers ahead, gzip and deflate as content or
transfer codings) is tested with tables of bytes; `upstream_http` is the asyncio shell
that moves them. What an upstream sends is not trusted, and every part of it is bounded:

- a head, and the trailer fields after a chunked body, are at most `MAX_HEAD_BYTES`, and
  the end of either is searched for once per byte (where the last search stopped), so a
  peer that never ends them costs neither memory nor time beyond that;
- at most `MAX_INTERIM` 1xx answers ahead of the real one;
- a body over the size bound is `TooLarge` as soon as it is known to be, before it is read
  to its end, and so is one that passes it once decoded (calls ask for gzip: a bomb);
- a chunked body is read at most `CHUNKS_PER_FEED` chunks per feed (`ResponseReader.more`
  says there is more to read without new bytes), so one in tiny chunks never holds the
  event loop for long, and its chunks cost no object each;
- `Transfer-Encoding` beside `Content-Length` is refused (RFC 9112 6.3: the two disagree
  on where the answer ends, a sign of response smuggling), as are transfer and content
  codings other than gzip, deflate and chunked (chunked last), and header field names
  outside RFC 9110's ASCII token characters.

Anything malformed is a `ProtocolError` at once (the call fails over, it does not wait out
its timeout), and the connection it came on is never used again.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

MAX_HEAD_BYTES = 64 * 1024  # status line and header fields of one response; trailer fields
MAX_INTERIM = 8  # 1xx answers ahead of the final one (100 Continue, 103 Early Hints)
_MAX_CODINGS = 3  # transfer and content codings stacked on one body
_MAX_GZIP_MEMBERS = 8  # a gzip body may be several members back to back
# Chunks read by one feed, a few ms of work: a body in tiny chunks is read over several loop
# turns (`ResponseReader.more`), not in one that holds every other call.
CHUNKS_PER_FEED = 2048
# A chunk size is hex digits and nothing else (Python's int() would also take a sign, "0x"
# and underscores), then extensions, which are not used.
_CHUNK_SIZE_LINE = re.compile(rb"[ \t]*([0-9a-fA-F]+)[ \t]*(?:;[^\r\n]*)?\r\n")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2, ASCII only
_ZLIB_WBITS = {  # the codings undone, and how zlib reads each
    "gzip": zlib.MAX_WBITS | 16,
    "x-gzip": zlib.MAX_WBITS | 16,
    "deflate": zlib.MAX_WBITS,
}


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
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    fields = {
        "Host": _authority(parts.hostname, parts.port),
        "User-Agent": user_agent,
        "Content-Type": "application/json",
        "Accept": "application/json",
        # Large answers (eth_getLogs, traces) travel compressed from providers that can.
        "Accept-Encoding": "gzip",
    }
    if parts.username is not None:
        fields["Authorization"] = _basic(parts.username, parts.password)
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

    `feed` returns the response its bytes complete (None while incomplete, or while `more`
    says it stopped to let the loop turn, and `feed(b"")` reads on); `eof` says the
    connection closed, which completes a body that runs until the close.
    """

    def __init__(self, max_body_bytes: int) -> None:
        self._max = max_body_bytes
        self._buffer = bytearray()
        self._searched = 0  # bytes of the buffer already searched for the end of a head
        self._interim = 0  # 1xx answers read ahead of this response
        self._head: tuple[int, dict[str, str], bool] | None = None
        self._framing = ""  # "length" | "chunked" | "trailers" | "close"
        self._length = 0
        self._codings: tuple[str, ...] = ()  # to undo, in this order, once the body is whole
        self._body = bytearray()  # a chunked body's chunks so far
        self.started = False  # a byte of a response has arrived
        self.more = False  # the last feed stopped early: feed(b"") reads on

    @property
    def idle(self) -> bool:
        """Nothing held: no response begun, no stray bytes after the last one."""
        return self._head is None and not self._buffer

    def feed(self, data: bytes) -> Response | None:
        self.more = False
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
            response = self._read_chunks()
            if response is not None or self._framing == "chunked":
                return response
        if self._framing == "trailers":
            return self._read_trailers()
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

    def _end_of_fields(self, what: str) -> int:
        """Where the empty line that ends a head (or trailer fields) starts in the buffer;
        -1 while it has not come. Each byte is searched once: the search goes on from where
        the last one stopped, and gives up at MAX_HEAD_BYTES."""
        start = max(0, self._searched - 3)  # the end may straddle two reads
        end = self._buffer.find(b"\r\n\r\n", start, MAX_HEAD_BYTES + 4)
        if end < 0:
            self._searched = len(self._buffer)
            if self._searched > MAX_HEAD_BYTES:
                raise ProtocolError(f"{what} over {MAX_HEAD_BYTES} bytes")
            return -1
        self._searched = 0
        return end

    def _read_head(self) -> bool:
        """Reads a head from the buffer: False when none is there whole yet."""
        end = self._end_of_fields("response head")
        if end < 0:
            return False
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        version, status = _status_line(lines[0])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon or not _token(name):
                raise ProtocolError(f"malformed header field: {line[:60]!r}")
            name = name.lower()
            value = value.strip(" \t")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        if 100 <= status < 200:  # 100 Continue and other interim answers: the real one follows
            if status == 101:
                raise ProtocolError("101 Switching Protocols to a POST that asked for none")
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise ProtocolError(f"more than {MAX_INTERIM} interim (1xx) answers")
            return True  # read, and no head yet: the loop reads on
        self._interim = 0
        connection = headers.get("connection", "").lower()
        keep_alive = (
            "close" not in connection if version == "HTTP/1.1" else "keep-alive" in connection
        )
        transfer = _codings(headers["transfer-encoding"]) if "transfer-encoding" in headers else []
        content = _codings(headers["content-encoding"]) if "content-encoding" in headers else []
        if status in (204, 304):
            self._framing, self._length, transfer, content = "length", 0, [], []
        elif transfer:
            if "content-length" in headers:
                raise ProtocolError("both Transfer-Encoding and Content-Length (a smuggling sign)")
            if transfer[-1] != "chunked" or "chunked" in transfer[:-1]:
                raise ProtocolError(f"transfer-encoding not supported: {_shown(transfer)}")
            self._framing = "chunked"
            transfer.pop()
        elif "content-length" in headers:
            declared = headers["content-length"]
            if not _digits(declared):
                raise ProtocolError(f"bad content-length: {declared[:40]!r}")
            self._framing, self._length = "length", int(declared)
            self._grow(self._length)
        else:
            self._framing, keep_alive = "close", False
        for field, codings in (("transfer-encoding", transfer), ("content-encoding", content)):
            if any(coding not in _ZLIB_WBITS for coding in codings):
                raise ProtocolError(f"{field} not supported: {_shown(codings)}")
        if len(transfer) + len(content) > _MAX_CODINGS:
            raise ProtocolError(f"more than {_MAX_CODINGS} codings on one body")
        # Applied content codings first, then transfer codings, each list in its order.
        self._codings = (*reversed(transfer), *reversed(content))
        self._head = (status, headers, keep_alive)
        return True

    def _read_chunks(self) -> Response | None:
        buffer, at = self._buffer, 0  # what is read is dropped once, on the way out
        try:
            for _ in range(CHUNKS_PER_FEED):
                line = _CHUNK_SIZE_LINE.match(buffer, at)
                if line is None:
                    if buffer.find(b"\r\n", at, at + 1026) >= 0:
                        shown = bytes(buffer[at : buffer.find(b"\r\n", at)])[:20]
                        raise ProtocolError(f"bad chunk size: {shown!r}")
                    if len(buffer) - at > 1024:
                        raise ProtocolError("chunk size line over 1024 bytes")
                    return None
                size, start = int(line[1], 16), line.end()
                if size == 0:  # the last chunk, then trailer fields until an empty line
                    at = start
                    self._framing = "trailers"
                    return None
                if len(self._body) + size > self._max:
                    self._grow(len(self._body) + size)
                end = start + size
                if len(buffer) < end + 2:
                    return None
                if buffer[end : end + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                with memoryview(buffer) as view:
                    self._body += view[start:end]
                at = end + 2
            self.more = True
            return None
        finally:
            del buffer[:at]

    def _read_trailers(self) -> Response | None:
        """Trailer fields are read past, never kept: bounded like a head."""
        if self._buffer.startswith(b"\r\n"):  # none
            del self._buffer[:2]
            self._searched = 0
        else:
            end = self._end_of_fields("trailer fields")
            if end < 0:
                return None
            del self._buffer[: end + 4]
        body = bytes(self._body)
        self._body = bytearray()
        return self._done(body)

    def _grow(self, size: int) -> None:
        if size > self._max:
            raise TooLarge(f"response body over {self._max} bytes")

    def _done(self, body: bytes, closing: bool = False) -> Response:
        assert self._head is not None
        status, headers, keep_alive = self._head
        self._head = None
        if body:  # an empty body has nothing to undo (a 204 that names a coding)
            for coding in self._codings:
                body = self._decoded(body, coding)
        return Response(status, headers, body, keep_alive and not closing)

    def _decoded(self, body: bytes, coding: str) -> bytes:
        """The body with one gzip or deflate coding undone, bounded like any body: a small
        bomb must not become a large answer."""
        plain: list[bytes] = []
        size = 0
        for _ in range(_MAX_GZIP_MEMBERS):
            inflater = zlib.decompressobj(_ZLIB_WBITS[coding])
            try:
                piece = inflater.decompress(body, self._max + 1 - size)
            except zlib.error as exc:
                raise ProtocolError(f"{coding} body does not decompress: {exc}") from None
            size += len(piece)
            self._grow(size)
            plain.append(piece)
            if not inflater.eof:
                raise ProtocolError(f"{coding} body is cut short")
            body = inflater.unused_data
            if not body:
                return b"".join(plain)
        raise ProtocolError(f"{coding} body: over {_MAX_GZIP_MEMBERS} members, or bytes after")


# --- the egress proxy: which one, and the tunnel through it ----------------------------


@dataclass(frozen=True, slots=True)
class Proxy:
    """An HTTP proxy that opens tunnels (CONNECT) to upstreams."""

    host: str
    port: int
    authorization: str | None  # Proxy-Authorization, from the credentials in its URL
    shown: str  # what logs and errors may say of it: host:port, never its credentials


def proxy_url(upstream_url: str, setting: str | None, environ: Mapping[str, str]) -> str | None:
    """The URL of the proxy an upstream's connections go through; None: straight there.

    `setting` is the upstream's own `proxy`: a URL is used as it is, "" or "none" means no
    proxy; None leaves it to the environment as curl and Python read it: HTTPS_PROXY for an
    https upstream, HTTP_PROXY for an http one (the lower-case name first), unless NO_PROXY
    names the host (a name and its subdomains, an address, a CIDR network, or `*`). A node
    on this machine (localhost, a loopback address) is never reached through the
    environment's proxy, as Go's clients do: a proxy elsewhere cannot reach it."""
    if setting is not None:
        return None if setting.strip().lower() in ("", "none") else setting.strip()
    parts = urlsplit(upstream_url)
    scheme, host = parts.scheme, parts.hostname or ""
    found = environ.get(f"{scheme}_proxy") or environ.get(f"{scheme.upper()}_PROXY")
    if not found or _is_loopback(host):
        return None
    no_proxy = environ.get("no_proxy") or environ.get("NO_PROXY") or ""
    port = parts.port or (443 if scheme == "https" else 80)
    return None if _bypassed(host, port, no_proxy) else found


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def proxy(url: str) -> Proxy:
    """The Proxy of a proxy URL (http://[user:password@]host[:port], the scheme may be left
    out). Raises ValueError, without the URL's credentials in its words."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ValueError(f"not an http:// proxy ({parts.scheme}:// proxies are not supported)")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError("not a proxy URL (bad port)") from None
    if not parts.hostname:
        raise ValueError("not a proxy URL (no host)")
    credentials = _basic(parts.username, parts.password) if parts.username is not None else None
    return Proxy(parts.hostname, port, credentials, _authority(parts.hostname, port))


def connect_request(proxy: Proxy, host: str, port: int) -> bytes:
    """The CONNECT that asks the proxy for a tunnel to host:port."""
    authority = _authority(host, port)
    fields = f"Host: {authority}\r\n"
    if proxy.authorization is not None:
        fields += f"Proxy-Authorization: {proxy.authorization}\r\n"
    return f"CONNECT {authority} HTTP/1.1\r\n{fields}\r\n".encode()


def tunnel_answer(data: bytes) -> tuple[int, str] | None:
    """The status and reason phrase of the proxy's answer to CONNECT; None while its head
    has not come whole. A 2xx opens the tunnel; its body, for any other status, is not read.
    ProtocolError for what is no HTTP answer, or a head over MAX_HEAD_BYTES."""
    end = data.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES + 4)
    if end < 0:
        if len(data) > MAX_HEAD_BYTES:
            raise ProtocolError(f"proxy's answer head over {MAX_HEAD_BYTES} bytes")
        return None
    line = data[:end].split(b"\r\n", 1)[0].decode("latin-1")
    _, status = _status_line(line)
    if 200 <= status < 300 and len(data) > end + 4:
        # The tunnel's first bytes are the upstream's, and only after the request.
        raise ProtocolError("proxy sent bytes into the tunnel before any request")
    words = line.split(" ", 2)
    reason = "".join(c for c in words[2] if c.isprintable())[:60] if len(words) == 3 else ""
    return status, reason


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """Whether NO_PROXY's entries name the host (or host:port)."""
    host = host.lower().strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in no_proxy.lower().split(","):
        name, entry_port = entry.strip(), ""
        if name == "*":
            return True
        if name.startswith("["):  # [v6 address]:port
            name, _, rest = name[1:].partition("]")
            entry_port = rest.removeprefix(":")
        elif name.count(":") == 1:  # name:port (more colons: a v6 address alone)
            name, _, entry_port = name.partition(":")
        name = name.lstrip("*").lstrip(".")
        if not name or (entry_port and entry_port != str(port)):
            continue
        if address is None:
            if host == name or host.endswith("." + name):
                return True
            continue
        try:
            if address in ipaddress.ip_network(name, strict=False):
                return True
        except ValueError:
            pass  # a name: no address matches it
    return False


def _status_line(line: str) -> tuple[str, int]:
    """The version and status of a status line; ProtocolError when it is none."""
    parts = line.split(" ", 2)
    if (
        len(parts) < 2
        or parts[0] not in ("HTTP/1.1", "HTTP/1.0")
        or not _digits(parts[1])
        or len(parts[1]) != 3
    ):
        raise ProtocolError(f"not an HTTP/1.x status line: {line[:60]!r}")
    return parts[0], int(parts[1])


def _codings(value: str) -> list[str]:
    """A Transfer- or Content-Encoding field's codings, in the order they were applied."""
    codings = (coding.strip() for coding in value.lower().split(","))
    return [coding for coding in codings if coding not in ("", "identity")]


def _shown(codings: list[str]) -> str:
    return ", ".join(codings)[:40]


def _authority(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    return host if port is None else f"{host}:{port}"


def _basic(username: str, password: str | None) -> str:
    credentials = f"{unquote(username)}:{unquote(password or '')}"
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def _token(name: str) -> bool:
    """RFC 9110's token: ASCII letters, digits and a few marks (str.isalnum takes "é")."""
    return _TOKEN.fullmatch(name) is not None


def _field_value(value: str) -> bool:
    return value.isprintable() or all(c == "\t" or c.isprintable() for c in value)


def _digits(text: str) -> bool:
    """ASCII digits only (str.isdigit also takes "²", which int() refuses)."""
    return text.isascii() and text.isdigit()
