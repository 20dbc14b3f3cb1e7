"""The upstream client's response parser: the hand-written `rpcgate/upstream/http1.py`
reader against httptools (llhttp, the parser uvicorn uses) given the same bounds, measured two ways:

    .venv/bin/python -m pip install httptools     # not a dependency of rpcgate
    .venv/bin/python bench/parser_bench.py        # typical answers parsed by each, best of 15
    .venv/bin/python bench/parser_bench.py --passthrough --seconds 4 --rounds 5
        # scenario b of bench/suite.py (eth_getBalance at `pending`, 32 connections, wrk):
        # rpcgate on each parser in turn against one anvil, medians of the rounds

The httptools reader keeps the hand-written one's contract and bounds where llhttp's
callbacks allow: head and trailer bytes, interim answers, the body bound (declared and
read), codings, Transfer-Encoding beside Content-Length. It is a measurement, not a
candidate kept in the package.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import httptools  # noqa: E402

from rpcgate.upstream import http1  # noqa: E402
from rpcgate.upstream.http1 import (  # noqa: E402
    MAX_HEAD_BYTES,
    MAX_INTERIM,
    ProtocolError,
    Response,
    ResponseReader,
    TooLarge,
)


class HttptoolsReader:
    """`http1.ResponseReader`'s contract (feed, eof, idle, started, more) on llhttp."""

    def __init__(self, max_body_bytes: int) -> None:
        self._max = max_body_bytes
        self._parser = httptools.HttpResponseParser(self)
        self._reset()
        self._interim = 0
        self._done: Response | None = None
        self._in_message = False
        self.started = False
        self.more = False

    def _reset(self) -> None:
        self._headers: dict[str, str] = {}
        self._head_bytes = 0
        self._body: list[bytes] = []
        self._size = 0

    @property
    def idle(self) -> bool:
        return not self._in_message

    # llhttp's callbacks
    def on_message_begin(self) -> None:
        self._in_message = True
        self._reset()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4  # trailer fields come here too
        if self._head_bytes > MAX_HEAD_BYTES:
            raise ProtocolError(f"response head over {MAX_HEAD_BYTES} bytes")
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._interim += 1
            if self._interim > MAX_INTERIM:
                raise ProtocolError(f"more than {MAX_INTERIM} interim (1xx) answers")
            return
        self._interim = 0
        headers = self._headers
        if "transfer-encoding" in headers and "content-length" in headers:
            raise ProtocolError("both Transfer-Encoding and Content-Length (a smuggling sign)")
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            raise TooLarge(f"response body over {self._max} bytes")

    def on_body(self, body: bytes) -> None:
        self._size += len(body)
        if self._size > self._max:
            raise TooLarge(f"response body over {self._max} bytes")
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            return
        self._in_message = False
        body = b"".join(self._body)
        coding = self._headers.get("content-encoding", "")
        if body and coding:
            body = _decoded(body, coding, self._max)
        self._done = Response(status, self._headers, body, self._parser.should_keep_alive())

    def feed(self, data: bytes) -> Response | None:
        if data:
            self.started = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            error = cause if isinstance(cause, ProtocolError | TooLarge) else ProtocolError(exc)
            raise error from None
        except httptools.HttpParserError as exc:
            raise ProtocolError(str(exc)) from None
        done, self._done = self._done, None
        return done

    def eof(self) -> Response:
        raise ProtocolError("connection closed in the middle of a response")


def _decoded(body: bytes, coding: str, bound: int) -> bytes:
    reader = ResponseReader(bound)  # the same bounded inflating, on the same body
    answer = reader.feed(
        b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n%s"
        % (coding.encode(), len(body), body)
    )
    assert answer is not None
    return answer.body


def answers() -> dict[str, bytes]:
    """Typical upstream answers: a ~200 B result and a ~50 KB one (an eth_getLogs page), by
    length and in chunks (8 KiB, as a proxy in front of a node would send them)."""
    small = b'{"jsonrpc":"2.0","id":1,"result":"0x' + b"0" * 140 + b'1234"}'
    large = (
        b'{"jsonrpc":"2.0","id":1,"result":['
        + b",".join(
            b'{"address":"0x%040x","topics":["0x%064x"],"data":"0x%064x","logIndex":"0x%x"}'
            % (i, i, i, i)
            for i in range(200)
        )
        + b"]}"
    )
    head = b"HTTP/1.1 200 OK\r\nDate: Sat, 29 Nov 2026 10:00:00 GMT\r\n"
    head += b"Content-Type: application/json\r\nVary: Origin\r\n"

    def length(body: bytes) -> bytes:
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def chunked(body: bytes) -> bytes:
        out = head + b"Transfer-Encoding: chunked\r\n\r\n"
        for at in range(0, len(body), 8192):
            piece = body[at : at + 8192]
            out += b"%x\r\n%s\r\n" % (len(piece), piece)
        return out + b"0\r\n\r\n"

    return {
        f"{len(small)} B, length": length(small),
        f"{len(small)} B, chunked": chunked(small),
        f"{len(large) // 1000} KB, length": length(large),
        f"{len(large) // 1000} KB, chunked": chunked(large),
    }


def parse_all(reader_class: Any, data: bytes, count: int, pieces: int) -> float:
    """Seconds to parse `count` answers on one connection, each arriving in `pieces` reads."""
    step = -(-len(data) // pieces)
    reads = [data[i : i + step] for i in range(0, len(data), step)]
    reader = reader_class(64 * 1024 * 1024)
    started = time.perf_counter()
    for _ in range(count):
        for read in reads:
            answer = reader.feed(read)
        assert answer is not None
    return time.perf_counter() - started


def microbenchmark(rounds: int) -> None:
    """The two parsers take turns, `rounds` times; the best round of each is kept (as
    timeit does: on a shared machine, slower rounds measure the neighbours)."""
    print(f"httptools {httptools.__version__}; best of {rounds} rounds; µs per answer\n")
    print("| answer | reads | hand-written | httptools | hand-written / httptools |")
    print("|---|---:|---:|---:|---:|")
    for name, data in answers().items():
        pieces = 1 if len(data) < 1000 else 4  # 50 KB arrives in a few reads
        count = 5_000 if len(data) < 1000 else 500
        runs: dict[Any, list[float]] = {ResponseReader: [], HttptoolsReader: []}
        for _ in range(rounds):
            for reader_class, times in runs.items():
                times.append(parse_all(reader_class, data, count, pieces) / count * 1e6)
        hand, tools = min(runs[ResponseReader]), min(runs[HttptoolsReader])
        print(f"| {name} | {pieces} | {hand:.2f} | {tools:.2f} | {hand / tools:.2f} |")


def passthrough(seconds: float, rounds: int) -> None:
    import suite
    import yaml

    from tests.harness.anvil import AnvilCluster
    from tests.harness.tools import free_port

    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_getBalance",
        "params": ["0x" + "ab" * 20, "pending"],
    }
    work = Path(suite.tempfile.mkdtemp(prefix="parser-bench-"))
    servers = suite.Servers(work)
    cluster = AnvilCluster(1, chain_id=suite.CHAIN_ID, automine=True).start()
    try:
        gateways = {}
        for reader in ("hand-written", "httptools"):
            port = free_port()
            config = {
                "listen": f"127.0.0.1:{port}",
                "log_level": "warning",
                "limits": suite.NO_LIMITS,
                "chains": [
                    {
                        "name": "devnet",
                        "chain_id": suite.CHAIN_ID,
                        "upstreams": [{"name": "node", "url": cluster[0].url}],
                    }
                ],
            }
            path = work / f"{port}.yaml"
            path.write_text(yaml.safe_dump(config))
            command = [sys.executable, __file__, "--serve", reader, str(path)]
            url = f"http://127.0.0.1:{port}"
            servers.spawn(command, pinned=False, health=url + "/healthz")
            gateways[reader] = url + "/"
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in gateways}
        for _ in range(rounds):
            for name, url in gateways.items():
                results[name].append(suite.wrk(url, [body], seconds, 32, pinned=False))
        print(f"\nscenario b, {rounds} rounds of {seconds:g} s, 32 connections, medians:\n")
        print("| parser | req/s | p50 ms | errors |")
        print("|---|---:|---:|---:|")
        for name, runs in results.items():
            rps = statistics.median(r["rps"] for r in runs)
            p50 = statistics.median(r["p50_ms"] for r in runs)
            print(f"| {name} | {rps:,.0f} | {p50:.2f} | {sum(r['errors'] for r in runs)} |")
    finally:
        servers.stop_all()
        cluster.stop()


def serve(reader: str, config: str) -> None:
    """rpcgate serve, its upstream connections reading with `reader`."""
    from rpcgate.cli.commands import main
    from rpcgate.upstream import http_client as upstream_http

    if reader == "httptools":
        upstream_http.ResponseReader = HttptoolsReader  # type: ignore[misc, assignment]
    assert http1.ResponseReader is ResponseReader
    sys.exit(main(["serve", "--config", config]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="default: 15, with --passthrough 5")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--passthrough", action="store_true")
    parser.add_argument("--serve", nargs=2, metavar=("READER", "CONFIG"))
    args = parser.parse_args()
    if args.serve:
        serve(*args.serve)
    elif args.passthrough:
        passthrough(args.seconds, args.rounds or 5)
    else:
        microbenchmark(args.rounds or 15)
