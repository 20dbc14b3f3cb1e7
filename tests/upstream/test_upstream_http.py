"""The upstream HTTP client: `http1`'s framing as tables of bytes, and `upstream_http`'s
connections over real sockets against a small server that answers in each framing a real
upstream (or the proxy in front of it) may use, closes idle connections, or misbehaves."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import socket
import ssl
import subprocess
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop

from rpcgate.config.settings import ConfigError, UpstreamConfig, parse_config
from rpcgate.rpc.masking import MASKER, mask_url
from rpcgate.upstream.client import Upstream
from rpcgate.upstream.http1 import (
    CHUNKS_PER_FEED,
    ProtocolError,
    ResponseReader,
    TooLarge,
    proxy_url,
    request_bytes,
    target,
)
from rpcgate.upstream.http_client import ConnectFailure, UpstreamHttp
from tests.harness.anvil import AnvilNode

ANSWER = b'{"jsonrpc":"2.0","id":1,"result":"0x1"}'


def _head(*fields: str, status: str = "200 OK", version: str = "HTTP/1.1") -> bytes:
    return (f"{version} {status}\r\n" + "".join(f"{f}\r\n" for f in fields) + "\r\n").encode()


def _chunked(body: bytes, sizes: tuple[int, ...] = (), trailer: bytes = b"") -> bytes:
    """The body in chunks of these sizes (one chunk by default), then the last chunk."""
    out, at = b"", 0
    for size in sizes or (len(body),):
        out += b"%x;ext=1\r\n%s\r\n" % (size, body[at : at + size])
        at += size
    return out + b"0\r\n" + trailer + b"\r\n"


def _sized(body: bytes, *fields: str) -> bytes:
    return _head(*fields, f"Content-Length: {len(body)}") + body


LENGTH = _sized(ANSWER)
# mtime=0: the bytes are the same in every process (test ids hold them, and each xdist
# worker must collect the same ids).
GZIPPED = gzip.compress(ANSWER, mtime=0)
ZEROS_GZIPPED = gzip.compress(b"0" * 5000, mtime=0)
FRAMINGS = {
    "content-length": LENGTH,
    "chunked": _head("Transfer-Encoding: chunked") + _chunked(ANSWER, (5, 20, len(ANSWER) - 25)),
    "chunked with trailers": _head("Transfer-Encoding: chunked")
    + _chunked(ANSWER, trailer=b"X-Checksum: 1\r\n"),
    "after 100 Continue": _head(status="100 Continue") + LENGTH,
    "after 8 interim answers": _head(status="100 Continue") * 7
    + _head("Link: </x>; rel=preload", status="103 Early Hints")
    + LENGTH,
    "gzip": _sized(GZIPPED, "Content-Encoding: gzip"),
    "gzip in two members": _sized(
        gzip.compress(ANSWER[:9], mtime=0) + gzip.compress(ANSWER[9:], mtime=0),
        "Content-Encoding: gzip",
    ),
    "deflate": _sized(zlib.compress(ANSWER), "Content-Encoding: deflate"),
    "gzip as a transfer coding": _head("Transfer-Encoding: gzip, chunked")
    + _chunked(GZIPPED, (10, len(GZIPPED) - 10)),
    "gzip content, deflate and chunked transfer": _head(
        "Content-Encoding: gzip", "Transfer-Encoding: deflate, chunked"
    )
    + _chunked(zlib.compress(GZIPPED)),
}


@pytest.mark.unit
@pytest.mark.parametrize("framing", FRAMINGS)
@pytest.mark.parametrize("piece", [1, 7, 10_000])
def test_every_framing_gives_the_same_answer_in_pieces_of_any_size(
    framing: str, piece: int
) -> None:
    data = FRAMINGS[framing]
    reader = ResponseReader(1_000_000)
    answers = [reader.feed(data[i : i + piece]) for i in range(0, len(data), piece)]
    complete = [a for a in answers if a is not None]
    assert len(complete) == 1 and answers[-1] is complete[0]
    assert (complete[0].status, complete[0].body, complete[0].keep_alive) == (200, ANSWER, True)
    assert reader.idle


@pytest.mark.unit
@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (_head(f"Content-Length: {len(ANSWER)}"), True),
        (_head(f"Content-Length: {len(ANSWER)}", "Connection: close"), False),
        (_head(f"Content-Length: {len(ANSWER)}", version="HTTP/1.0"), False),
        (
            _head(f"Content-Length: {len(ANSWER)}", "Connection: Keep-Alive", version="HTTP/1.0"),
            True,
        ),
    ],
)
def test_keep_alive_is_what_the_version_and_connection_field_say(
    head: bytes, keep_alive: bool
) -> None:
    answer = ResponseReader(1000).feed(head + ANSWER)
    assert answer is not None and answer.keep_alive is keep_alive


@pytest.mark.unit
def test_a_body_without_length_runs_until_the_close() -> None:
    reader = ResponseReader(1000)
    assert reader.feed(_head() + ANSWER[:10]) is None
    assert reader.feed(ANSWER[10:]) is None
    answer = reader.eof()
    assert (answer.body, answer.keep_alive) == (ANSWER, False)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (_head("Content-Length: ten") + ANSWER, "bad content-length"),
        # digits to str.isdigit ("\xb9" is "¹" in latin-1), not to int()
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\r\n\r\nx", "bad content-length"),
        # a sign int() takes and RFC 9110 (8.6: 1*DIGIT) does not
        (_head("Content-Length: +2") + b"ab", "bad content-length"),
        (_head("Content-Length: -2") + b"ab", "bad content-length"),
        (b"HTTP/1.1 2\xb20 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (_head("Transfer-Encoding: gzip"), "transfer-encoding not supported"),
        (_head("Transfer-Encoding: chunked, chunked"), "transfer-encoding not supported"),
        (_head("Transfer-Encoding: br, chunked"), "transfer-encoding not supported: br"),
        (_head("Transfer-Encoding: compress, chunked"), "transfer-encoding not supported"),
        (_head("Transfer-Encoding: gzip, chunked") + _chunked(ANSWER), "not decompress"),
        (
            _head("Transfer-Encoding: chunked", f"Content-Length: {len(ANSWER)}")
            + _chunked(ANSWER),
            "both Transfer-Encoding and Content-Length",
        ),
        (_head(status="100 Continue") * 9 + LENGTH, "more than 8 interim"),
        (_head(status="101 Switching Protocols") + LENGTH, "101 Switching Protocols"),
        (_sized(GZIPPED[:20], "Content-Encoding: gzip"), "gzip body is cut short"),
        (
            _head("Content-Encoding: gzip, gzip, gzip, gzip", "Content-Length: 2") + b"ab",
            "more than 3 codings",
        ),
        # non-ASCII letters are str.isalnum, and no token characters (RFC 9110 5.1)
        ("HTTP/1.1 200 OK\r\nCöntent-Length: 2\r\n\r\nab".encode("latin-1"), "header field"),
        (_head("Content-Length : 2") + b"ab", "malformed header field"),
        (_head("Transfer-Encoding: chunked") + b"0\r\n" + b"X: y\r\n" * 13108, "trailer fields"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 13108, "response head over 65536"),
        (_head("Transfer-Encoding: chunked") + b"zz\r\n", "bad chunk size"),
        (_head("Transfer-Encoding: chunked") + b"-1\r\nabc\r\n", "bad chunk size"),
        (_head("Transfer-Encoding: chunked") + b"0x2\r\nab\r\n", "bad chunk size"),
        (_head("Transfer-Encoding: chunked") + b"1_0\r\n", "bad chunk size"),
        (_head("Transfer-Encoding: chunked") + b";ext\r\n", "bad chunk size"),
        (_head("Transfer-Encoding: chunked") + b"2\r\nabcd", "chunk not followed by CRLF"),
        (_head("Bad Field: 1"), "malformed header field"),
        (_head("Content-Encoding: br", "Content-Length: 2") + b"ab", "content-encoding"),
        (_head("Content-Encoding: gzip", "Content-Length: 2") + b"ab", "does not decompress"),
    ],
)
def test_bytes_that_are_no_http_response_say_what_is_wrong(data: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        ResponseReader(1000).feed(data)


@pytest.mark.unit
@pytest.mark.parametrize(
    "data",
    [
        _head("Content-Length: 1001"),  # declared: refused before a byte of the body
        _head("Transfer-Encoding: chunked") + b"3e9\r\n",  # a chunk announced over the bound
        _head() + b"x" * 1001,  # until the close
        _head("Content-Encoding: gzip", f"Content-Length: {len(ZEROS_GZIPPED)}")
        + ZEROS_GZIPPED,  # small on the wire, over the bound inflated
    ],
)
def test_a_body_over_the_bound_is_refused_as_soon_as_it_is_known(data: bytes) -> None:
    with pytest.raises(TooLarge):
        ResponseReader(1000).feed(data)


@pytest.mark.unit
def test_a_body_in_tiny_chunks_is_read_over_several_feeds_to_let_the_loop_turn() -> None:
    chunks = CHUNKS_PER_FEED * 3 + 5
    reader = ResponseReader(1_000_000)
    data = _head("Transfer-Encoding: chunked") + b"1\r\nx\r\n" * chunks + b"0\r\n\r\n"
    assert reader.feed(data) is None
    feeds = 1
    while reader.more:
        answer = reader.feed(b"")
        feeds += 1
    assert feeds == 4 and answer is not None and answer.body == b"x" * chunks
    assert reader.idle


@pytest.mark.unit
def test_a_close_in_the_middle_of_a_response_is_no_answer() -> None:
    reader = ResponseReader(1000)
    reader.feed(LENGTH[:-3])
    with pytest.raises(ProtocolError, match="in the middle of a response"):
        reader.eof()


@pytest.mark.unit
def test_the_request_carries_path_query_credentials_and_extra_fields() -> None:
    where = target("https://user:p%40ss@rpc.example:8443/v1/k?x=1", {"X-Api-Key": "s"}, "ua/1")
    assert (where.host, where.port, where.tls) == ("rpc.example", 8443, True)
    head, _, body = request_bytes(where, b"{}").partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/k?x=1 HTTP/1.1"
    fields = dict(line.split(": ", 1) for line in lines[1:])
    assert fields["Host"] == "rpc.example:8443"
    assert fields["Authorization"] == "Basic dXNlcjpwQHNz"  # user:p@ss
    assert (fields["X-Api-Key"], fields["User-Agent"], fields["Content-Length"]) == (
        "s",
        "ua/1",
        "2",
    )
    assert body == b"{}"
    assert fields["Accept-Encoding"] == "gzip"  # a large answer may travel compressed
    assert target("http://[::1]/", {}, "ua").head.split(b"\r\n")[1] == b"Host: [::1]"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "fields"),
    [
        ("ftp://host/", {}),
        ("http://host/", {"X-Key": "a\r\nInjected: 1"}),
        ("http://h/", {"A B": "1"}),
        ("http://h/", {"X-Ünicode": "1"}),  # str.isalnum, not an RFC 9110 token
    ],
)
def test_what_cannot_be_sent_is_refused(url: str, fields: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        target(url, fields, "ua")


# --- over real sockets, on asyncio's loop and on uvloop (which `rpcgate serve` uses) ----

Run = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    factory = uvloop.new_event_loop if request.param == "uvloop" else None

    def run_on_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(coroutine)

    return run_on_loop


Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    return await reader.readexactly(length)


class Server:
    """A TCP server that runs `script` for each connection (with its index)."""

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        self.script = script
        self.tls = tls
        self.connections = 0

    async def __aenter__(self) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            index = self.connections
            self.connections += 1
            try:
                await self.script(reader, writer, index)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        self.server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=self.tls)
        port = self.server.sockets[0].getsockname()[1]
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{port}/"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()


async def _answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
    while True:  # echoes each call's id, keeping the connection
        call = json.loads(await _read_request(reader))
        body = json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": call["id"]}).encode()
        writer.write(_head(f"Content-Length: {len(body)}") + body)


def _call(i: int) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": i, "method": "eth_chainId"}).encode()


def test_calls_reuse_one_kept_alive_connection(run: Run) -> None:
    async def scenario() -> tuple[list[int], int]:
        server = Server(_answering)
        async with server as url:
            client = UpstreamHttp(url, {}, "test", 10_000)
            ids = [json.loads((await client.post(_call(i))).body)["id"] for i in range(20)]
            await client.close()
        return ids, server.connections

    assert run(scenario()) == (list(range(20)), 1)


def test_a_connection_the_server_closed_while_idle_is_replaced_without_losing_the_call(
    run: Run,
) -> None:
    async def once_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        await _read_request(reader)
        writer.write(LENGTH)  # says nothing of closing, then closes: as an idle timeout does
        await writer.drain()

    async def scenario() -> tuple[list[bytes], int]:
        server = Server(once_then_close)
        async with server as url:
            client = UpstreamHttp(url, {}, "test", 10_000)
            bodies = []
            for _ in range(3):
                bodies.append((await client.post(_call(1))).body)
                await asyncio.sleep(0.05)  # the close arrives while the connection is idle
            await client.close()
        return bodies, server.connections

    assert run(scenario()) == ([ANSWER] * 3, 3)


def test_a_call_that_meets_a_close_on_a_reused_connection_goes_again_on_a_new_one(
    run: Run,
) -> None:
    # The close crosses the call on the wire (an idle timeout firing as the call is sent):
    # the connection looked alive when taken, and no byte of an answer came back.
    async def first_answers_then_closes_at_the_next(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        if index > 0:
            await _answering(reader, writer, index)
            return
        await _read_request(reader)
        writer.write(LENGTH)
        await writer.drain()
        await reader.read(1)  # the next call's first bytes: closed without an answer

    async def scenario() -> tuple[list[bytes], int]:
        server = Server(first_answers_then_closes_at_the_next)
        async with server as url:
            client = UpstreamHttp(url, {}, "test", 10_000)
            bodies = [(await client.post(_call(1))).body for _ in range(3)]
            await client.close()
        return bodies, server.connections

    bodies, connections = run(scenario())
    assert [json.loads(b)["id"] for b in bodies] == [1, 1, 1] and connections == 2


def test_a_connection_whose_call_was_abandoned_is_not_reused(run: Run) -> None:
    async def slow_first(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while True:
            await _read_request(reader)
            if index == 0:
                await asyncio.sleep(0.5)  # answers late, on the connection it was asked on
            writer.write(LENGTH)

    async def scenario() -> tuple[bytes, int]:
        server = Server(slow_first)
        async with server as url:
            client = UpstreamHttp(url, {}, "test", 10_000)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await client.post(_call(1))
            # The late answer must not be taken for the next call's.
            body = (await client.post(_call(2))).body
            await client.close()
        return body, server.connections

    assert run(scenario()) == (ANSWER, 2)


def test_a_server_that_closes_mid_answer_is_a_failure_not_an_answer(run: Run) -> None:
    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        writer.write(LENGTH[:-5])
        await writer.drain()

    async def scenario() -> None:
        async with Server(cut) as url:
            client = UpstreamHttp(url, {}, "test", 10_000)
            with pytest.raises(ProtocolError, match="in the middle"):
                await client.post(_call(1))
            await client.close()

    run(scenario())


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    where = tmp_path_factory.mktemp("tls")
    key, cert = where / "key.pem", where / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(Path(cert), Path(key))
    return context


def test_tls_with_a_certificate_nobody_vouches_for_is_refused_in_words(
    self_signed: ssl.SSLContext, run: Run
) -> None:
    async def scenario() -> str:
        async with Server(_answering, tls=self_signed) as url:
            client = UpstreamHttp(url, {}, "test", 10_000)
            with pytest.raises(ConnectFailure) as failed:
                await client.post(_call(1))
            await client.close()
        return failed.value.reason

    assert run(scenario()).startswith("TLS: certificate not accepted (127.0.0.1: ")


def test_tls_answers_are_read_like_plain_ones(self_signed: ssl.SSLContext, run: Run) -> None:
    async def scenario() -> bytes:
        async with Server(_answering, tls=self_signed) as url:
            client = UpstreamHttp(url, {}, "test", 10_000)
            client._ssl = ssl.create_default_context()  # trusting this test's certificate
            client._ssl.check_hostname = False
            client._ssl.verify_mode = ssl.CERT_NONE
            body = (await client.post(_call(5))).body
            await client.close()
        return body

    assert json.loads(run(scenario()))["result"] == 5


def test_an_upstream_behind_a_chunking_gzip_proxy_answers_through_the_upstream_shell(
    run: Run,
) -> None:
    async def chunked_gzip(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        while True:
            call = json.loads(await _read_request(reader))
            body = gzip.compress(
                json.dumps({"jsonrpc": "2.0", "id": call["id"], "result": "0x2a"}).encode()
            )
            writer.write(
                _head("Transfer-Encoding: chunked", "Content-Encoding: gzip")
                + _chunked(body, (3, len(body) - 3))
            )

    async def scenario() -> object:
        async with Server(chunked_gzip) as url:
            upstream = Upstream(
                UpstreamConfig(name="proxied", url=url), max_response_bytes=10_000, max_concurrent=8
            )
            await upstream.start()
            reply = await upstream.call("eth_chainId", [], 5)
            await upstream.close()
        return reply.result

    assert run(scenario()) == "0x2a"


def test_a_name_is_resolved_once_for_many_connections_and_its_failure_said_in_words() -> None:
    async def close_each(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        await _read_request(reader)
        writer.write(_head(f"Content-Length: {len(ANSWER)}", "Connection: close") + ANSWER)
        await writer.drain()

    async def scenario() -> tuple[int, int, str]:
        loop = asyncio.get_running_loop()
        resolve, lookups = loop.getaddrinfo, []

        async def counted(*args: Any, **kwargs: Any) -> Any:
            lookups.append(args[0])
            return await resolve(*args, **kwargs)

        loop.getaddrinfo = counted  # type: ignore[method-assign]
        server = Server(close_each)
        async with server as url:
            client = UpstreamHttp(url.replace("127.0.0.1", "localhost"), {}, "test", 10_000)
            for _ in range(5):
                assert (await client.post(_call(1))).body == ANSWER
            await client.close()
        nowhere = UpstreamHttp("http://no-such-host.invalid/", {}, "test", 10_000)
        with pytest.raises(ConnectFailure) as failed:
            await nowhere.post(_call(1))
        return server.connections, lookups.count("localhost"), failed.value.reason

    connections, lookups, reason = asyncio.run(scenario())
    assert (connections, lookups) == (5, 1)
    assert reason == "DNS: name not resolved (no-such-host.invalid)"


async def _read_call(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes]:
    """A request's header fields (lower-case names) and body."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if line)
    fields = {name.lower(): value for name, value in fields.items()}
    return fields, await reader.readexactly(int(fields["content-length"]))


def test_a_large_answer_travels_gzipped_from_an_upstream_that_speaks_gzip(run: Run) -> None:
    logs = [
        {
            "address": "0x" + "ab" * 20,
            "topics": ["0x" + f"{i:064x}", "0x" + "00" * 12 + "cd" * 20],
            "data": "0x" + "00" * 31 + f"{i % 256:02x}",
            "blockNumber": hex(1000 + i // 10),
            "logIndex": hex(i % 10),
            "removed": False,
        }
        for i in range(3000)
    ]
    wire: list[int] = []

    async def gzip_speaking(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int
    ) -> None:
        while True:
            fields, body = await _read_call(reader)
            answer = json.dumps({"jsonrpc": "2.0", "id": json.loads(body)["id"], "result": logs})
            if "gzip" in fields.get("accept-encoding", ""):
                sent = gzip.compress(answer.encode())
                writer.write(_sized(sent, "Content-Encoding: gzip", "Vary: Accept-Encoding"))
            else:
                sent = answer.encode()
                writer.write(_sized(sent))
            wire.append(len(sent))

    async def scenario() -> Any:
        async with Server(gzip_speaking) as url:
            upstream = Upstream(
                UpstreamConfig(name="logs", url=url), max_response_bytes=10**7, max_concurrent=8
            )
            await upstream.start()
            reply = await upstream.call("eth_getLogs", [{"fromBlock": "0x3e8"}], 5)
            await upstream.close()
        return reply.result

    assert run(scenario()) == logs
    plain = len(json.dumps({"jsonrpc": "2.0", "id": 1, "result": logs}))
    assert plain > 1_000_000 and wire[0] < plain / 5  # asked for gzip, and got it


@pytest.fixture
def blackhole() -> Iterator[tuple[str, int]]:
    """An address that swallows connects: a listener whose accept queue is full, so the
    kernel drops every further SYN (as a route that blackholes does)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    yield listener.getsockname()
    filler.close()
    listener.close()


def test_an_address_that_swallows_connects_costs_a_quarter_second_not_the_attempt(
    blackhole: tuple[str, int], run: Run
) -> None:
    async def scenario() -> tuple[bytes, float]:
        with pytest.raises(TimeoutError):  # it does blackhole
            async with asyncio.timeout(0.5):
                await asyncio.open_connection(*blackhole)
        async with Server(_answering) as url:
            good = ("127.0.0.1", int(url.rsplit(":", 1)[1].strip("/")))
            client = UpstreamHttp("http://rpc.test/", {}, "test", 10_000)
            # The name resolves to the blackholed address first (a broken IPv6 route, say).
            client._resolved = [
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", address)
                for address in (blackhole, good)
            ]
            client._resolved_until = float("inf")
            started = time.monotonic()
            async with asyncio.timeout(5):  # the attempt's timeout
                body = (await client.post(_call(7))).body
            took = time.monotonic() - started
            await client.close()
        return body, took

    body, took = run(scenario())
    assert json.loads(body)["result"] == 7
    assert took < 1.0  # the next address started 0.25 s after the first


# --- through an egress proxy ------------------------------------------------------------

PROXY_PASSWORD = "pr0xy-s3cret-pass"
NODE_NAME = "node.rpc.example"  # resolved by the test proxy alone


class ConnectProxy:
    """A small CONNECT proxy: refuses with `refuse` (a status line's code and reason), asks
    for `credentials` (user:password) when given, else opens a tunnel to the target and
    pipes bytes both ways. Counts its tunnels, keeps the Proxy-Authorization of each ask."""

    def __init__(self, credentials: str | None = None, refuse: str | None = None) -> None:
        self.credentials = credentials
        self.refuse = refuse
        # Names only the proxy knows (a node on this machine is never reached through the
        # environment's proxy, so the tests name it as a remote one).
        self.names = {NODE_NAME: "127.0.0.1"}
        self.tunnels: list[str] = []
        self.authorizations: list[str | None] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            method, authority, _ = head.split("\r\n")[0].split(" ")
            fields = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if line)
            self.authorizations.append(fields.get("Proxy-Authorization"))
            expected = (
                self.credentials and "Basic " + base64.b64encode(self.credentials.encode()).decode()
            )
            refusal = self.refuse
            if expected and fields.get("Proxy-Authorization") != expected:
                refusal = "407 Proxy Authentication Required"
            if method != "CONNECT" or refusal:
                writer.write(
                    f"HTTP/1.1 {refusal or '405 No'}\r\nContent-Length: 0\r\n\r\n".encode()
                )
                await writer.drain()
                return
            host, port = authority.rsplit(":", 1)
            host = self.names.get(host, host.strip("[]"))
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self.tunnels.append(authority)
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture(scope="module")
def anvil() -> Iterator[AnvilNode]:
    with AnvilNode(automine=True) as node:
        yield node


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def _upstream(url: str, **config: Any) -> Upstream:
    return Upstream(
        UpstreamConfig(name="proxied", url=url, **config),
        max_response_bytes=10**6,
        max_concurrent=8,
    )


def test_calls_go_through_the_proxy_named_by_the_environment_with_its_credentials(
    anvil: AnvilNode, no_proxy_env: pytest.MonkeyPatch, run: Run
) -> None:
    proxy = ConnectProxy(credentials=f"gw:{PROXY_PASSWORD}")

    async def scenario() -> list[Any]:
        async with proxy as address:
            no_proxy_env.setenv("HTTP_PROXY", f"http://gw:{PROXY_PASSWORD}@{address}")
            no_proxy_env.setenv("NO_PROXY", "internal.example,.corp")
            upstream = _upstream(f"http://{NODE_NAME}:{anvil.port}")
            await upstream.start()
            results = [(await upstream.call("eth_chainId", [], 5)).result for _ in range(5)]
            await upstream.close()
        return results

    assert run(scenario()) == ["0x7a69"] * 5
    assert proxy.tunnels == [f"{NODE_NAME}:{anvil.port}"]  # one tunnel, kept alive
    assert proxy.authorizations == [
        "Basic " + base64.b64encode(f"gw:{PROXY_PASSWORD}".encode()).decode()
    ]
    assert PROXY_PASSWORD not in MASKER.mask(f"proxy said: wrong {PROXY_PASSWORD}")


def test_an_upstreams_own_proxy_setting_carries_its_calls(
    anvil: AnvilNode, no_proxy_env: pytest.MonkeyPatch, run: Run
) -> None:
    proxy = ConnectProxy()

    async def scenario() -> Any:
        async with proxy as address:
            upstream = _upstream(f"http://{NODE_NAME}:{anvil.port}", proxy=f"http://{address}")
            await upstream.start()
            reply = await upstream.call("eth_chainId", [], 5)
            await upstream.close()
        return reply.result

    assert run(scenario()) == "0x7a69"
    assert proxy.tunnels == [f"{NODE_NAME}:{anvil.port}"]


@pytest.mark.parametrize(
    ("no_proxy", "setting"),
    [("127.0.0.1", None), ("localhost,127.0.0.0/8", None), ("", "none"), ("", "")],
)
def test_no_proxy_or_the_upstreams_own_setting_bypasses_the_environments_proxy(
    no_proxy: str, setting: str | None, anvil: AnvilNode, no_proxy_env: pytest.MonkeyPatch
) -> None:
    proxy = ConnectProxy()

    async def scenario() -> Any:
        async with proxy as address:
            no_proxy_env.setenv("http_proxy", f"http://{address}")
            no_proxy_env.setenv("no_proxy", no_proxy)
            upstream = _upstream(anvil.url)
            upstream._http = UpstreamHttp(anvil.url, {}, "test", 10**6, proxy=setting)
            reply = await upstream.call("eth_chainId", [], 5)
            await upstream.close()
        return reply.result

    assert asyncio.run(scenario()) == "0x7a69"
    assert proxy.tunnels == []


def test_an_https_upstream_is_reached_by_tls_inside_the_proxys_tunnel(
    self_signed: ssl.SSLContext, no_proxy_env: pytest.MonkeyPatch, run: Run
) -> None:
    proxy = ConnectProxy()

    async def scenario() -> bytes:
        async with proxy as address, Server(_answering, tls=self_signed) as url:
            client = UpstreamHttp(url, {}, "test", 10_000, proxy=f"http://{address}")
            client._ssl = ssl.create_default_context()  # trusting this test's certificate
            client._ssl.check_hostname = False
            client._ssl.verify_mode = ssl.CERT_NONE
            body = (await client.post(_call(9))).body
            await client.close()
        return body

    assert json.loads(run(scenario()))["result"] == 9
    assert len(proxy.tunnels) == 1


@pytest.mark.parametrize(
    ("proxy", "words"),
    [
        (ConnectProxy(credentials="gw:another-password"), "(407 Proxy Authentication Required)"),
        (ConnectProxy(refuse="502 Bad Gateway"), "(502 Bad Gateway)"),
    ],
)
def test_a_proxy_that_refuses_the_tunnel_is_said_in_words_without_its_password(
    proxy: ConnectProxy, words: str, anvil: AnvilNode, no_proxy_env: pytest.MonkeyPatch
) -> None:
    async def scenario() -> Any:
        async with proxy as address:
            no_proxy_env.setenv("HTTP_PROXY", f"http://gw:{PROXY_PASSWORD}@{address}")
            upstream = _upstream(f"http://{NODE_NAME}:{anvil.port}")
            reply = await upstream.call("eth_chainId", [], 5)
            await upstream.close()
        return address, reply.failure

    address, failure = asyncio.run(scenario())
    assert failure.transport == (
        f"proxy: {address} refused a tunnel to {NODE_NAME}:{anvil.port} {words}"
    )
    assert PROXY_PASSWORD not in repr(failure)
    encoded = base64.b64encode(f"gw:{PROXY_PASSWORD}".encode()).decode()
    assert encoded not in repr(failure)


def test_a_proxy_that_cannot_be_reached_is_named_as_the_proxy(
    no_proxy_env: pytest.MonkeyPatch,
) -> None:
    async def scenario() -> str:
        unused = socket.socket()
        unused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = unused.getsockname()[1]
        client = UpstreamHttp(
            "https://rpc.example/", {}, "t", 10, proxy=f"http://u:{PROXY_PASSWORD}@127.0.0.1:{port}"
        )
        with pytest.raises(ConnectFailure) as failed:
            await client.post(_call(1))
        unused.close()
        return f"{failed.value.reason} {failed.value}"

    said = asyncio.run(scenario())
    assert said.startswith("proxy: connection refused (127.0.0.1:")
    assert PROXY_PASSWORD not in said


@pytest.mark.unit
def test_a_proxy_of_a_kind_not_spoken_fails_each_call_in_words() -> None:
    environ = {"HTTPS_PROXY": f"socks5://u:{PROXY_PASSWORD}@127.0.0.1:1080"}
    client = UpstreamHttp("https://rpc.example/", {}, "t", 10, environ=environ)
    with pytest.raises(ConnectFailure) as failed:
        asyncio.run(client.post(_call(1)))
    assert (
        failed.value.reason == "proxy: not an http:// proxy (socks5:// proxies are not supported)"
    )


ENV = {"HTTPS_PROXY": "http://proxy:3128", "HTTP_PROXY": "http://plain-proxy:3128"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "setting", "environ", "chosen"),
    [
        ("https://rpc.example/", None, ENV, "http://proxy:3128"),
        ("http://rpc.example/", None, ENV, "http://plain-proxy:3128"),
        ("https://rpc.example/", None, {"https_proxy": "http://lower:1", **ENV}, "http://lower:1"),
        ("https://rpc.example/", None, {"HTTP_PROXY": "http://plain:1"}, None),
        ("https://rpc.example/", None, {}, None),
        ("https://rpc.example/", None, {**ENV, "NO_PROXY": "*"}, None),
        ("https://rpc.example/", None, {**ENV, "NO_PROXY": "other.org, example"}, None),
        ("https://rpc.example/", None, {**ENV, "NO_PROXY": ".example"}, None),
        ("https://rpc.example/", None, {**ENV, "NO_PROXY": "*.example"}, None),
        ("https://rpc.example/", None, {**ENV, "NO_PROXY": "rpc.example:443"}, None),
        ("https://rpc.example/", None, {**ENV, "NO_PROXY": "rpc.example:8443"}, ENV["HTTPS_PROXY"]),
        ("https://rpc.example/", None, {**ENV, "NO_PROXY": "pc.example"}, ENV["HTTPS_PROXY"]),
        ("https://10.1.2.3/", None, {**ENV, "NO_PROXY": "10.0.0.0/8"}, None),
        ("https://[fd00::1]:8545/", None, {**ENV, "NO_PROXY": "fd00::/8"}, None),
        ("https://[fd00::1]:8545/", None, {**ENV, "NO_PROXY": "[fd00::1]:8545"}, None),
        ("https://11.1.2.3/", None, {**ENV, "NO_PROXY": "10.0.0.0/8"}, ENV["HTTPS_PROXY"]),
        ("https://rpc.example/", "http://own:1", {**ENV, "NO_PROXY": "*"}, "http://own:1"),
        # a node on this machine is never behind the environment's proxy...
        ("http://127.0.0.1:8545/", None, ENV, None),
        ("http://localhost:8545/", None, ENV, None),
        ("http://[::1]:8545/", None, ENV, None),
        ("http://127.0.0.1:8545/", "http://own:1", ENV, "http://own:1"),  # ...unless it says
        ("https://rpc.example/", "none", ENV, None),
        ("https://rpc.example/", "", ENV, None),
    ],
)
def test_the_proxy_is_the_upstreams_own_else_the_environments_unless_no_proxy_names_it(
    url: str, setting: str | None, environ: dict[str, str], chosen: str | None
) -> None:
    assert proxy_url(url, setting, environ) == chosen


@pytest.mark.unit
def test_a_proxy_url_with_credentials_is_shown_and_refused_without_them() -> None:
    assert mask_url(f"http://gw:{PROXY_PASSWORD}@proxy.corp:3128") == "http://***@proxy.corp:3128"
    config = f"""
chains:
  - name: ethereum
    chain_id: 1
    upstreams:
      - url: https://rpc.example/
        proxy: socks5://gw:{PROXY_PASSWORD}@proxy.corp:1080
"""
    with pytest.raises(ConfigError) as refused:
        parse_config(config)
    assert "chains[0].upstreams[0].proxy: not an http:// proxy URL" in str(refused.value)
    assert PROXY_PASSWORD not in str(refused.value)
    loaded = parse_config(config.replace("socks5", "http"))
    assert loaded.chains[0].upstreams[0].proxy == f"http://gw:{PROXY_PASSWORD}@proxy.corp:1080"
