"""The upstream HTTP client: `http1`'s framing as tables of bytes, and `upstream_http`'s
connections over real sockets against a small server that answers in each framing a real
upstream (or the proxy in front of it) may use, closes idle connections, or misbehaves."""

from __future__ import annotations

import asyncio
import gzip
import json
import ssl
import subprocess
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
import uvloop

from rpcgate.config import UpstreamConfig
from rpcgate.http1 import ProtocolError, ResponseReader, TooLarge, request_bytes, target
from rpcgate.upstream import Upstream
from rpcgate.upstream_http import ConnectFailure, UpstreamHttp

ANSWER = b'{"jsonrpc":"2.0","id":1,"result":"0x1"}'


def _head(*fields: str, status: str = "200 OK", version: str = "HTTP/1.1") -> bytes:
    return (f"{version} {status}\r\n" + "".join(f"{f}\r\n" for f in fields) + "\r\n").encode()


def _chunked(body: bytes, sizes: tuple[int, ...], trailer: bytes = b"") -> bytes:
    out, at = b"", 0
    for size in sizes:
        out += b"%x;ext=1\r\n%s\r\n" % (size, body[at : at + size])
        at += size
    return out + b"0\r\n" + trailer + b"\r\n"


LENGTH = _head(f"Content-Length: {len(ANSWER)}") + ANSWER
FRAMINGS = {
    "content-length": LENGTH,
    "chunked": _head("Transfer-Encoding: chunked") + _chunked(ANSWER, (5, 20, len(ANSWER) - 25)),
    "chunked with trailers": _head("Transfer-Encoding: chunked")
    + _chunked(ANSWER, (len(ANSWER),), b"X-Checksum: 1\r\n"),
    "after 100 Continue": _head(status="100 Continue") + LENGTH,
    "gzip": _head("Content-Encoding: gzip", f"Content-Length: {len(gzip.compress(ANSWER))}")
    + gzip.compress(ANSWER),
    "deflate": _head("Content-Encoding: deflate", f"Content-Length: {len(zlib.compress(ANSWER))}")
    + zlib.compress(ANSWER),
}


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


def test_a_body_without_length_runs_until_the_close() -> None:
    reader = ResponseReader(1000)
    assert reader.feed(_head() + ANSWER[:10]) is None
    assert reader.feed(ANSWER[10:]) is None
    answer = reader.eof()
    assert (answer.body, answer.keep_alive) == (ANSWER, False)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"SSH-2.0-OpenSSH\r\n\r\n", "not an HTTP/1.x status line"),
        (_head("Content-Length: ten") + ANSWER, "bad content-length"),
        # digits to str.isdigit ("\xb9" is "¹" in latin-1), not to int()
        (b"HTTP/1.1 200 OK\r\nContent-Length: \xb9\r\n\r\nx", "bad content-length"),
        (b"HTTP/1.1 2\xb20 OK\r\n\r\n", "not an HTTP/1.x status line"),
        (_head("Transfer-Encoding: gzip"), "transfer-encoding not supported"),
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


@pytest.mark.parametrize(
    "data",
    [
        _head("Content-Length: 1001"),  # declared: refused before a byte of the body
        _head("Transfer-Encoding: chunked") + b"3e9\r\n",  # a chunk announced over the bound
        _head() + b"x" * 1001,  # until the close
        _head("Content-Encoding: gzip", f"Content-Length: {len(gzip.compress(b'0' * 5000))}")
        + gzip.compress(b"0" * 5000),  # small on the wire, over the bound inflated
    ],
)
def test_a_body_over_the_bound_is_refused_as_soon_as_it_is_known(data: bytes) -> None:
    with pytest.raises(TooLarge):
        ResponseReader(1000).feed(data)


def test_a_close_in_the_middle_of_a_response_is_no_answer() -> None:
    reader = ResponseReader(1000)
    reader.feed(LENGTH[:-3])
    with pytest.raises(ProtocolError, match="in the middle of a response"):
        reader.eof()


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
    assert target("http://[::1]/", {}, "ua").head.split(b"\r\n")[1] == b"Host: [::1]"


@pytest.mark.parametrize(
    ("url", "fields"),
    [
        ("ftp://host/", {}),
        ("http://host/", {"X-Key": "a\r\nInjected: 1"}),
        ("http://h/", {"A B": "1"}),
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
