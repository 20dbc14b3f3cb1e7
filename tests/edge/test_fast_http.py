"""The fast path (rpcgate/edge/fast_http.py): RPC POSTs answered on rpcgate's own protocol,
everything else handed to aiohttp on the same connection, over real sockets against a
gateway over a real anvil node; in process (asyncio's loop) and as `rpcgate serve`
(uvloop). The client limits it carries are pinned by test_slow_clients.py,
test_request_limits.py and test_responses.py, which run against it since it is the
default; here, what is its own: which server answers what, the hand-over (in order,
pipelined or not, counted once), malformed heads, a failing handler, the drain."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import signal
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import HttpVersion10, HttpVersion11

from rpcgate.edge import rpc_post
from rpcgate.edge.connections import LimitedServer
from rpcgate.edge.fast_http import OPERATOR_SEGMENTS
from rpcgate.edge.responses import reply_head
from rpcgate.edge.rpc_heads import rpc_head, rpc_route
from rpcgate.process.reload import plan_reload
from tests.conftest import (
    ConfigFactory,
    GatewayFactory,
    RunningGateway,
    ServeProcess,
    gateway_config,
)
from tests.harness.faultproxy import Fault
from tests.harness.fixtures import AnvilClusterFactory, FaultProxyFactory
from tests.harness.tools import host_port

CHAIN_ID = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}


# -- which requests the fast path serves (pure) ------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("target", "route"),
    [
        (b"/", (None, None, {})),
        (b"/devnet", ("devnet", None, {})),
        (b"/31337", ("31337", None, {})),
        (b"/devnet/k3y-_.~", ("devnet", "k3y-_.~", {})),
        (b"/devnet?key=a%20b&x=1", ("devnet", None, {"key": "a b", "x": "1"})),
        (b"/?key=", (None, None, {"key": ""})),
        # aiohttp's: operator paths, anything it would normalise or decode, other shapes
        (b"/metrics", None),
        (b"/status", None),
        (b"/status.json", None),
        (b"/admin", None),
        (b"/admin/drills", None),
        (b"/dev%6eet", None),
        (b"/devnet/", None),
        (b"//devnet", None),
        (b"/a/b/c", None),
        (b"/./devnet", None),
        (b"/devnet/..", None),
        (b"/devnet#top", None),
        (b"/devnet?x=1#top", None),
        (b"*", None),
        (b"http://gateway/devnet", None),
    ],
)
def test_rpc_routes_are_the_fast_paths_and_the_rest_is_aiohttps(
    target: bytes, route: tuple[str | None, str | None, dict[str, str]] | None
) -> None:
    found = rpc_route(target, OPERATOR_SEGMENTS)
    if route is None:
        assert found is None
        return
    assert found is not None
    assert (found[0], found[1], dict(found[2])) == route


def _head(*lines: str, start: str = "POST / HTTP/1.1") -> bytes:
    return ("\r\n".join([start, *lines]) + "\r\n\r\n").encode()


HOST = "Host: gateway"


@pytest.mark.unit
@pytest.mark.parametrize(
    ("head", "served"),
    [
        (_head(HOST, "Content-Length: 10"), True),
        (_head(HOST), True),  # no body: an empty one
        (_head("Content-Length: 10", start="POST /devnet HTTP/1.0"), True),  # 1.0 needs no Host
        (_head(HOST, "X-Seen: 1", "X-Seen: 2", "Content-Length: 1"), True),  # may repeat
        (_head(HOST, "Origin: https://dapp.example", "Authorization: Bearer k"), True),
        # aiohttp's: what it acts on
        (_head(HOST, "Expect: 100-continue", "Content-Length: 10"), False),
        (_head(HOST, "Upgrade: websocket", "Connection: Upgrade"), False),
        (_head(HOST, "Transfer-Encoding: chunked"), False),
        (_head(HOST, "Content-Encoding: gzip", "Content-Length: 10"), False),
        # aiohttp's: what it refuses (and answers 400)
        (_head("Content-Length: 10"), False),  # HTTP/1.1 without Host
        (_head(HOST, HOST), False),
        (_head(HOST, "Content-Type: a", "content-type: b"), False),
        (_head(HOST, *(f"X-{i}: 1" for i in range(128))), False),
        (_head(HOST, "X-Long: " + "a" * 9000), False),
        (_head(HOST, "Content-Length: 1", "Content-Length: 2"), False),  # llhttp's too
        (_head(HOST, "Bad Name: 1"), False),
        # aiohttp's: other methods, versions and paths
        (_head(HOST, start="GET / HTTP/1.1"), False),
        (_head(HOST, start="OPTIONS / HTTP/1.1"), False),
        (_head(HOST, start="PUT / HTTP/1.1"), False),
        (_head(HOST, start="POST / HTTP/2.0"), False),
        (_head(HOST, start="POST /metrics HTTP/1.1"), False),
        (_head(HOST, start="POST /admin/drills HTTP/1.1"), False),
    ],
)
def test_which_heads_the_fast_path_serves(head: bytes, served: bool) -> None:
    read = rpc_head(head, OPERATOR_SEGMENTS)
    assert (read is not None) == served, read


@pytest.mark.unit
def test_a_served_head_says_where_it_goes_and_how_to_answer() -> None:
    head = rpc_head(
        _head("Host: g", "Content-Length: 12 ", "Origin: x \t", start="POST /base/k1?a=1 HTTP/1.0"),
        OPERATOR_SEGMENTS,
    )
    assert head is not None
    assert (head.chain, head.key, dict(head.query)) == ("base", "k1", {"a": "1"})
    assert (head.version, head.keep_alive, head.length) == (HttpVersion10, False, 12)
    assert head.headers["origin"] == "x"  # as aiohttp reads it: trailing whitespace dropped
    kept = rpc_head(_head(HOST, "Connection: close"), OPERATOR_SEGMENTS)
    assert kept is not None and kept.keep_alive is False


@pytest.mark.unit
def test_a_head_sent_again_is_judged_once_and_shared_read_only() -> None:
    head = _head(HOST, "Content-Length: 40")
    first, again = rpc_head(head, OPERATOR_SEGMENTS), rpc_head(bytes(head), OPERATOR_SEGMENTS)
    assert first is not None and again is first  # remembered by its bytes
    with pytest.raises(TypeError):
        first.headers["Origin"] = "x"  # type: ignore[index]  # shared: nobody may change it
    other = rpc_head(_head(HOST, "Content-Length: 41"), OPERATOR_SEGMENTS)
    assert other is not None and other.length == 41  # another head, another decision
    long = _head(HOST, "Content-Length: 40", f"X-Pad: {'a' * 3000}")
    assert rpc_head(long, OPERATOR_SEGMENTS) is not rpc_head(long, OPERATOR_SEGMENTS)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("status", "length", "version", "keep_alive", "first", "connection", "typed"),
    [
        (204, None, HttpVersion11, True, "HTTP/1.1 204 No Content", None, False),
        (404, 10, HttpVersion11, True, "HTTP/1.1 404 Not Found", None, True),
        (413, 10, HttpVersion11, False, "HTTP/1.1 413 Request Entity Too Large", "close", True),
        (429, 10, HttpVersion10, True, "HTTP/1.0 429 Too Many Requests", "keep-alive", True),
        (500, 10, HttpVersion10, False, "HTTP/1.0 500 Internal Server Error", None, True),
    ],
)
def test_a_reply_head_says_its_status_length_and_connection(
    status: int,
    length: int | None,
    version: Any,
    keep_alive: bool,
    first: str,
    connection: str | None,
    typed: bool,
) -> None:
    head = reply_head(status, {"X-Rpcgate-Upstream": "gateway"}, length, version, keep_alive)
    status_line, *lines = head.decode().removesuffix("\r\n\r\n").split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    assert status_line == first
    assert fields.get("Connection") == connection
    assert ("Content-Type" in fields, "Content-Length" in fields) == (typed, typed)
    if typed:
        assert fields["Content-Length"] == str(length)
    assert fields["X-Rpcgate-Upstream"] == "gateway" and "Date" in fields


# -- raw HTTP over one connection ----------------------------------------------------------


@dataclass
class Answer:
    status: int
    fields: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _post(body: Any, path: str = "/", *extra: str, version: str = "1.1") -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    head = [f"POST {path} HTTP/{version}", "Host: gateway", "Content-Type: application/json"]
    head += [f"Content-Length: {len(data)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


def _get(path: str, *extra: str, method: str = "GET") -> bytes:
    head = [f"{method} {path} HTTP/1.1", "Host: gateway", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode()


def _options(path: str) -> bytes:
    return _get(path, "Origin: https://dapp.example", method="OPTIONS")


async def _answer(reader: asyncio.StreamReader) -> Answer:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head.decode().removesuffix("\r\n\r\n").split("\r\n")
    fields = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(fields.get("content-length", "0"))), 10)
    return Answer(int(status_line.split()[1]), fields, body)


async def _closed(reader: asyncio.StreamReader, within_s: float = 2.0) -> bool:
    """Whether the gateway closes the connection within `within_s` (nothing more sent)."""
    try:
        return await asyncio.wait_for(reader.read(1), within_s) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


@dataclass
class Counts:
    fast: int  # connections the fast path serves
    aiohttp: int  # connections aiohttp serves (handed over, or from the start)
    open: int  # what the connection cap counts
    refused: int


def _counts(gateway: RunningGateway) -> Counts:
    async def read() -> Counts:
        await asyncio.sleep(0.05)  # what the client sent has been read
        server = gateway.runner.server
        assert isinstance(server, LimitedServer)
        return Counts(
            len(server.fast_connections),
            len(server.connections),
            server.open_connections,
            server.refused_connections,
        )

    return gateway.loop.run(read())


@pytest.fixture
def handoffs(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """What each connection handed to aiohttp started with, in order."""
    handed: list[bytes] = []
    adopt = LimitedServer.adopt

    def counted(server: LimitedServer, transport: Any, received: bytes, *args: Any) -> None:
        handed.append(received[:40])
        adopt(server, transport, received, *args)

    monkeypatch.setattr(LimitedServer, "adopt", counted)
    return handed


@pytest.fixture
def gateway(anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory) -> RunningGateway:
    return start_gateway(anvil_cluster(1, automine=True).urls)


def test_rpc_posts_are_served_by_the_fast_path_and_other_requests_by_aiohttp_on_one_connection(
    gateway: RunningGateway,
) -> None:
    async def scenario() -> list[tuple[str, Answer, Counts]]:
        reader, writer = await asyncio.open_connection(*host_port(gateway.url))
        seen = []
        try:
            for label, request in [
                ("post", _post(CHAIN_ID)),
                ("post /devnet", _post(CHAIN_ID, "/devnet")),
                ("healthz", _get("/healthz")),
                ("post after", _post(CHAIN_ID)),
                ("status", _get("/status.json")),
                ("preflight", _options("/")),
                ("admin", _post(b"{}", "/admin/drills")),  # off (no token): as if absent
                ("post again", _post(CHAIN_ID, "/31337")),
            ]:
                writer.write(request)
                answer = await _answer(reader)
                counts = await asyncio.to_thread(_counts, gateway)
                seen.append((label, answer, counts))
            return seen
        finally:
            writer.close()

    seen = asyncio.run(scenario())
    for label, answer, _ in seen:
        expected = {"preflight": 204, "admin": 404}.get(label, 200)
        assert answer.status == expected, (label, answer)
        if label.startswith("post"):
            assert answer.json()["result"] == "0x7a69", (label, answer)
    by_label = {label: counts for label, _, counts in seen}
    # One connection, counted once whoever serves it: the fast path until the GET, then
    # aiohttp's from the request it was handed on.
    assert by_label["post"] == Counts(fast=1, aiohttp=0, open=1, refused=0)
    assert by_label["post /devnet"] == Counts(fast=1, aiohttp=0, open=1, refused=0)
    for label in ("healthz", "post after", "status", "preflight", "admin", "post again"):
        assert by_label[label] == Counts(fast=0, aiohttp=1, open=1, refused=0), label
    assert _counts(gateway) == Counts(fast=0, aiohttp=0, open=0, refused=0)  # closed


def test_a_connection_that_starts_with_a_get_is_aiohttps_from_the_start(
    gateway: RunningGateway,
) -> None:
    async def scenario() -> tuple[Answer, Counts, Answer]:
        reader, writer = await asyncio.open_connection(*host_port(gateway.url))
        try:
            writer.write(_get("/"))
            root = await _answer(reader)
            counts = await asyncio.to_thread(_counts, gateway)
            writer.write(_post(CHAIN_ID))
            return root, counts, await _answer(reader)
        finally:
            writer.close()

    root, counts, post = asyncio.run(scenario())
    assert root.status == 200 and root.json()["name"] == "rpcgate"
    assert counts == Counts(fast=0, aiohttp=1, open=1, refused=0)
    assert post.status == 200 and post.json()["result"] == "0x7a69"


def _websocket_frame(payload: bytes) -> bytes:
    """A client's text frame (masked, as RFC 6455 requires of clients)."""
    mask = os.urandom(4)
    length = len(payload)
    size = bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + length.to_bytes(2)
    return bytes([0x81]) + size + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _websocket_text(reader: asyncio.StreamReader) -> bytes:
    """The next text frame from the server (unmasked), pings skipped."""
    while True:
        first, second = await asyncio.wait_for(reader.readexactly(2), 10)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await reader.readexactly(2))
        elif length == 127:
            length = int.from_bytes(await reader.readexactly(8))
        payload = await reader.readexactly(length)
        if first & 0x0F == 0x1:
            return payload


def test_a_websocket_upgrade_after_rpc_posts_on_the_same_connection_is_served(
    gateway: RunningGateway,
) -> None:
    upgrade = _get(
        "/devnet",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    )

    async def scenario() -> tuple[list[int], bytes, Any]:
        reader, writer = await asyncio.open_connection(*host_port(gateway.url))
        try:
            statuses = []
            for _ in range(2):
                writer.write(_post(CHAIN_ID))
                statuses.append((await _answer(reader)).status)
            writer.write(upgrade)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.write(_websocket_frame(json.dumps({**CHAIN_ID, "id": 42}).encode()))
            return statuses, head, json.loads(await _websocket_text(reader))
        finally:
            writer.close()

    statuses, head, reply = asyncio.run(scenario())
    assert statuses == [200, 200]
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455's accept for that key
    assert reply == {"jsonrpc": "2.0", "id": 42, "result": "0x7a69"}


BALANCE = {
    "jsonrpc": "2.0",
    "method": "eth_getBalance",
    "params": ["0x" + "22" * 20, "latest"],
}


def _mixed_pipeline() -> tuple[bytes, list[tuple[int, Any]]]:
    """Requests in one write, fast and aiohttp's mixed, and the answers to expect, in order:
    (status, the id of a JSON-RPC answer or the body of another)."""
    requests = [
        (_post({**CHAIN_ID, "id": 1}), (200, 1)),
        # the full path (an upstream call, a task): what follows waits its turn
        (_post({**BALANCE, "id": 2}, "/", "Cache-Control: no-cache"), (200, 2)),
        (_post({**CHAIN_ID, "id": 3}, "/devnet"), (200, 3)),
        (_post({**CHAIN_ID, "id": 4}, "/nochain"), (404, None)),
        (_post({"jsonrpc": "2.0", "method": "eth_chainId"}), (204, b"")),  # a notification
        (_get("/healthz"), (200, {"status": "ok"})),  # aiohttp's from here on
        (_post({**BALANCE, "id": 7}, "/", "Cache-Control: no-cache"), (200, 7)),
        (_post({**CHAIN_ID, "id": 8}), (200, 8)),
    ]
    return b"".join(r for r, _ in requests), [e for _, e in requests]


async def _pipelined(address: tuple[str, int]) -> list[tuple[int, Any]]:
    data, expected = _mixed_pipeline()
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        seen: list[tuple[int, Any]] = []
        for _ in expected:
            answer = await _answer(reader)
            if not answer.body:
                seen.append((answer.status, b""))
            elif "result" in answer.body.decode() or "error" in answer.body.decode():
                seen.append((answer.status, answer.json()["id"]))
            else:
                seen.append((answer.status, answer.json()))
        assert not await _closed(reader, 0.5)
        return seen
    finally:
        writer.close()


def test_pipelined_requests_fast_and_aiohttps_are_answered_whole_and_in_order(
    gateway: RunningGateway, handoffs: list[bytes]
) -> None:
    _, expected = _mixed_pipeline()
    assert asyncio.run(_pipelined(host_port(gateway.url))) == expected
    assert handoffs == [_get("/healthz")[:40]]  # from the GET's first byte, no sooner


def test_as_rpcgate_serve_on_uvloop_pipelined_and_handed_over_requests_are_answered_in_order(
    anvil_cluster: AnvilClusterFactory, serve_process: ServeProcess
) -> None:
    url, _ = serve_process(anvil_cluster(1, automine=True).urls[0])
    _, expected = _mixed_pipeline()
    assert asyncio.run(_pipelined(host_port(url))) == expected


HOST_LINE = b"Host: gateway\r\n"
MALFORMED = [
    pytest.param(
        b"POST / HTTP/1.1\r\n" + HOST_LINE + b"Content-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        id="two-lengths",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n"
        + HOST_LINE
        + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        id="length-and-chunked",
    ),
    pytest.param(b"POST / HTTP/1.1\r\n" + HOST_LINE + b"Bad Name: x\r\n\r\n", id="space-in-a-name"),
    pytest.param(b"POST / HTTP/1.1\r\n" + HOST_LINE + b"X: a\x00b\r\n\r\n", id="nul-in-a-value"),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + HOST_LINE + b"Content-Length: x1\r\n\r\n", id="bad-length"
    ),
    pytest.param(b"HELLO\r\n\r\n", id="not-http"),
    pytest.param(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", id="no-host-in-1.1"),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + HOST_LINE * 2 + b"Content-Length: 0\r\n\r\n", id="two-hosts"
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + HOST_LINE + b"X-Long: " + b"a" * 9000 + b"\r\n\r\n",
        id="field-too-long",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n"
        + HOST_LINE
        + b"".join(b"X-%d: 1\r\n" % i for i in range(128))
        + b"\r\n",
        id="too-many-fields",
    ),
    pytest.param(
        b"POST / HTTP/1.1\r\n" + HOST_LINE + b"X: " + b"a" * 70000 + b"\r\n\r\n", id="huge-head"
    ),
]


@pytest.mark.parametrize("after_a_post", [False, True], ids=["first", "after-a-post"])
@pytest.mark.parametrize("request_bytes", MALFORMED)
def test_a_malformed_request_gets_400_and_the_connection_closes(
    gateway: RunningGateway, request_bytes: bytes, after_a_post: bool
) -> None:
    async def scenario() -> tuple[Answer, bool]:
        reader, writer = await asyncio.open_connection(*host_port(gateway.url))
        try:
            if after_a_post:
                writer.write(_post(CHAIN_ID))
                assert (await _answer(reader)).status == 200
            writer.write(request_bytes)
            answer = await _answer(reader)
            return answer, await _closed(reader)
        finally:
            writer.close()

    answer, closed = asyncio.run(scenario())
    assert answer.status == 400, answer
    assert closed


def test_a_compressed_body_is_read_as_aiohttp_reads_it(gateway: RunningGateway) -> None:
    body = gzip.compress(json.dumps({**CHAIN_ID, "id": 3}).encode())

    async def scenario() -> list[Answer]:
        reader, writer = await asyncio.open_connection(*host_port(gateway.url))
        try:
            answers = []
            for _ in range(2):  # first on the connection, then handed over after a POST
                writer.write(_post(body, "/", "Content-Encoding: gzip"))
                answers.append(await _answer(reader))
                writer.write(_post(CHAIN_ID))
                answers.append(await _answer(reader))
            return answers
        finally:
            writer.close()

    for answer in asyncio.run(scenario()):
        assert answer.status == 200 and answer.json()["result"] == "0x7a69", answer


def test_fast_and_aiohttp_connections_are_one_count_under_the_connection_cap(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(anvil_cluster(1, automine=True).urls, limits={"max_connections": 3})
    address = host_port(gateway.url)

    async def exchange(
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
    ) -> int:
        reader, writer = connection
        try:
            writer.write(request)
            return (await _answer(reader)).status
        except (ConnectionError, asyncio.IncompleteReadError):
            return 0

    async def scenario() -> dict[str, Any]:
        fast = await asyncio.open_connection(*address)
        handed = await asyncio.open_connection(*address)
        seen: dict[str, Any] = {
            "fast": await exchange(fast, _post(CHAIN_ID)),
            "handed": await exchange(handed, _get("/healthz")),
        }
        third = await asyncio.open_connection(*address)
        seen["third"] = await exchange(third, _post(CHAIN_ID))
        seen["counts"] = await asyncio.to_thread(_counts, gateway)
        over = await asyncio.open_connection(*address)
        seen["over"] = await exchange(over, _post(CHAIN_ID))
        handed[1].close()
        await handed[1].wait_closed()
        await asyncio.sleep(0.3)  # the gateway sees it go
        later = await asyncio.open_connection(*address)
        seen["later"] = await exchange(later, _get("/healthz"))
        seen["counts_after"] = await asyncio.to_thread(_counts, gateway)
        for _, writer in (fast, third, over, later):
            writer.close()
        return seen

    seen = asyncio.run(scenario())
    assert (seen["fast"], seen["handed"], seen["third"]) == (200, 200, 200)
    assert seen["counts"] == Counts(fast=2, aiohttp=1, open=3, refused=0)
    assert seen["over"] == 0  # closed as it arrived
    assert seen["later"] == 200
    assert seen["counts_after"] == Counts(fast=2, aiohttp=1, open=3, refused=1)


@pytest.mark.parametrize("where", ["at_once", "in_full"])
@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "aiohttp"])
def test_a_failing_handler_is_a_logged_500_json_rpc_error_and_the_gateway_serves_on(
    anvil_cluster: AnvilClusterFactory,
    start_config: ConfigFactory,
    monkeypatch: pytest.MonkeyPatch,
    log_lines: io.StringIO,
    where: str,
    fast_path: bool,
) -> None:
    gateway = start_config(
        gateway_config(anvil_cluster(1, automine=True).urls, server={"fast_path": fast_path})
    )

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    # The first step (framing, the hot path), or the full path after it.
    monkeypatch.setattr(
        rpc_post, "parse_single" if where == "at_once" else "answer_request", broken
    )

    async def scenario() -> tuple[Answer, bool]:
        reader, writer = await asyncio.open_connection(*host_port(gateway.url))
        try:
            writer.write(_post({**BALANCE, "id": 5}))
            answer = await _answer(reader)
            return answer, await _closed(reader)
        finally:
            writer.close()

    answer, closed = asyncio.run(scenario())
    assert answer.status == 500
    assert answer.fields["content-type"] == "application/json"
    assert answer.json()["error"] == {"code": -32603, "message": "internal gateway error"}
    assert answer.fields.get("connection") == "close" and closed
    events = [json.loads(line) for line in log_lines.getvalue().splitlines()]
    [failed] = [e for e in events if e["event"] == "rpc_post_failed"]
    assert "RuntimeError: a bug" in failed["exception"]
    monkeypatch.undo()
    assert gateway.rpc("eth_chainId").json()["result"] == "0x7a69"


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "aiohttp"])
def test_a_cache_hit_under_rate_limits_is_answered_and_refused_without_awaiting_admission(
    anvil_cluster: AnvilClusterFactory,
    start_config: ConfigFactory,
    monkeypatch: pytest.MonkeyPatch,
    fast_path: bool,
) -> None:
    """With limits counted in process, a call the gateway holds is admitted (or refused)
    there and then (`Admission.admit_now`), not in a task that awaits `Admission.admit`."""
    limits = {"unlimited_networks": [], "rate_per_s": 0.001, "rate_burst": 4}
    gateway = start_config(
        gateway_config(
            anvil_cluster(1, automine=True).urls,
            server={"fast_path": fast_path},
            limits=limits,
        )
    )
    assert gateway.rpc("eth_chainId").json()["result"] == "0x7a69"  # stored: 1 token

    async def never(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a held answer awaited admission")

    monkeypatch.setattr("rpcgate.edge.admission.Admission.admit", never)
    statuses = [gateway.rpc("eth_chainId").status for _ in range(4)]
    assert statuses == [200, 200, 200, 429]


def test_with_the_fast_path_off_aiohttp_serves_every_connection(
    anvil_cluster: AnvilClusterFactory, start_config: ConfigFactory
) -> None:
    gateway = start_config(
        gateway_config(anvil_cluster(1, automine=True).urls, server={"fast_path": False})
    )

    async def scenario() -> tuple[Answer, Counts]:
        reader, writer = await asyncio.open_connection(*host_port(gateway.url))
        try:
            writer.write(_post(CHAIN_ID))
            answer = await _answer(reader)
            return answer, await asyncio.to_thread(_counts, gateway)
        finally:
            writer.close()

    answer, counts = asyncio.run(scenario())
    assert answer.status == 200 and answer.json()["result"] == "0x7a69"
    assert counts == Counts(fast=0, aiohttp=1, open=1, refused=0)


def test_sigterm_answers_the_call_in_flight_and_closes_idle_keep_alive_connections(
    anvil_cluster: AnvilClusterFactory,
    fault_proxy: FaultProxyFactory,
    serve_process: ServeProcess,
) -> None:
    proxy = fault_proxy(anvil_cluster(1, automine=True).urls[0])
    url, process = serve_process(proxy.url, shutdown={"grace_s": 0, "timeout_s": 10})
    address = host_port(url)

    async def scenario() -> tuple[bool, float, Answer, bool]:
        idle_reader, idle_writer = await asyncio.open_connection(*address)
        idle_writer.write(_post(CHAIN_ID))
        assert (await _answer(idle_reader)).status == 200
        proxy.set_fault(Fault.LATENCY, delay=1.5, methods=["eth_getBalance"])
        busy_reader, busy_writer = await asyncio.open_connection(*address)
        busy_writer.write(_post({**BALANCE, "id": 9}, "/", "Cache-Control: no-cache"))
        await asyncio.sleep(0.3)  # in flight, waiting on the slow upstream
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        process.send_signal(signal.SIGTERM)
        idle_closed = await _closed(idle_reader, 1.0)
        idle_closed_after = loop.time() - stopped
        answer = await _answer(busy_reader)
        busy_closed = await _closed(busy_reader)
        idle_writer.close()
        busy_writer.close()
        return idle_closed, idle_closed_after, answer, busy_closed

    idle_closed, idle_closed_after, answer, busy_closed = asyncio.run(scenario())
    assert idle_closed and idle_closed_after < 1.0
    assert answer.status == 200 and answer.json()["id"] == 9 and "result" in answer.json()
    assert answer.fields.get("connection") == "close" and busy_closed
    assert process.wait(10) == 0


LIMITED = {
    "header_timeout_s": 1,
    "body_timeout_s": 1,
    "keepalive_timeout_s": 1,
    "max_body_bytes": 1000,
}


async def _limit_met(address: tuple[str, int], limit: str) -> tuple[Answer | None, float]:
    """What the gateway answers (None: nothing) and after how long it closes, for a client
    that meets `limit`."""
    reader, writer = await asyncio.open_connection(*address)
    loop = asyncio.get_running_loop()
    try:
        answer = None
        if limit == "header_timeout_s":
            writer.write(_post(CHAIN_ID)[:30])  # and the rest of the head never
        elif limit == "body_timeout_s":
            writer.write(_post(CHAIN_ID)[:-5])  # the body's last bytes never
        elif limit == "max_body_bytes":
            writer.write(_post(b"[" * 1001)[:-1001])  # the head alone, announcing too much
        else:  # keepalive_timeout_s: one call, then idle
            writer.write(_post(CHAIN_ID))
            assert (await _answer(reader)).status == 200
        started = loop.time()
        if limit in ("body_timeout_s", "max_body_bytes"):
            answer = await _answer(reader)
        assert await _closed(reader, 3)
        return answer, loop.time() - started
    finally:
        writer.close()


@pytest.mark.parametrize("limit", list(LIMITED))
def test_each_client_limit_is_kept_by_the_fast_path_itself(
    anvil_cluster: AnvilClusterFactory,
    start_gateway: GatewayFactory,
    handoffs: list[bytes],
    limit: str,
) -> None:
    # The limit under test alone, the others at their defaults (longer: 10 s and more).
    gateway = start_gateway(anvil_cluster(1, automine=True).urls, limits={limit: LIMITED[limit]})
    answer, closed_after = asyncio.run(_limit_met(host_port(gateway.url), limit))
    if limit == "max_body_bytes":
        assert answer is not None and answer.status == 413  # before a byte of it was sent
        assert closed_after < 1.0
    elif limit == "body_timeout_s":
        assert answer is not None and answer.status == 408
        assert 0.9 < closed_after < 1.6
    else:
        assert answer is None
        assert 0.9 < closed_after < 1.6
    if answer is not None:
        assert answer.fields.get("connection") == "close"
        assert f"limits.{limit}" in answer.json()["error"]["message"]
    assert handoffs == []  # never aiohttp's
    server = gateway.runner.server
    assert isinstance(server, LimitedServer)
    assert server.late_heads == (1 if limit == "header_timeout_s" else 0)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(_post(b"", "/", "Connection: close"), id="no-body"),
        pytest.param(_post(CHAIN_ID, "/", "Connection: close"), id="a-body"),
        pytest.param(_post(CHAIN_ID, version="1.0"), id="http-1.0"),
    ],
)
def test_a_client_that_says_close_gets_its_answer_and_the_connection_closes(
    gateway: RunningGateway, request_bytes: bytes
) -> None:
    async def scenario() -> tuple[Answer, bool]:
        reader, writer = await asyncio.open_connection(*host_port(gateway.url))
        try:
            writer.write(request_bytes)
            return await _answer(reader), await _closed(reader)
        finally:
            writer.close()

    answer, closed = asyncio.run(scenario())
    assert answer.status == 200 and "jsonrpc" in answer.json()
    assert closed


@pytest.mark.parametrize("second_head", ["whole", "half"])
def test_a_head_pipelined_behind_a_slow_call_is_late_only_if_it_is_not_all_there(
    anvil_cluster: AnvilClusterFactory,
    fault_proxy: FaultProxyFactory,
    start_gateway: GatewayFactory,
    second_head: str,
) -> None:
    proxy = fault_proxy(anvil_cluster(1, automine=True).urls[0])
    gateway = start_gateway([proxy.url], limits={"header_timeout_s": 1})
    proxy.set_fault(Fault.LATENCY, delay=2.0, methods=["eth_getBalance"])
    second = _post({**CHAIN_ID, "id": 2})
    if second_head == "half":
        second = second[:20]

    async def scenario() -> tuple[list[Answer], bool]:
        reader, writer = await asyncio.open_connection(*host_port(gateway.url))
        try:
            slow = _post({**BALANCE, "id": 1}, "/", "Cache-Control: no-cache")
            writer.write(slow + second)  # the second waits 2 s behind the first
            answers = [await _answer(reader)]
            if second_head == "whole":
                answers.append(await _answer(reader))
            return answers, await _closed(reader)
        finally:
            writer.close()

    answers, closed = asyncio.run(scenario())
    assert answers[0].status == 200 and answers[0].json()["id"] == 1
    server = gateway.runner.server
    assert isinstance(server, LimitedServer)
    if second_head == "whole":  # in time: answered after the first, the connection kept
        assert answers[1].status == 200 and answers[1].json()["id"] == 2
        assert not closed and server.late_heads == 0
    else:  # late: the call in hand is answered, then the connection ends
        assert answers[0].fields.get("connection") == "close"
        assert closed and server.late_heads == 1


@pytest.mark.unit
def test_turning_the_fast_path_off_takes_a_restart() -> None:
    on = gateway_config(["http://127.0.0.1:1"])
    off = gateway_config(["http://127.0.0.1:1"], server={"fast_path": False})
    assert on.server.fast_path and not off.server.fast_path
    assert plan_reload(on, off).needs_restart == ("server",)
