"""Upstreams that attack the gateway's HTTP client, over real sockets: each writes crafted
bytes that never make an answer, and the call must fail at once (a protocol error that
failover moves past, not a timeout), hold bounded memory, and never stall the event loop
that serves every other call."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from rpcgate.upstream.http1 import ProtocolError, TooLarge
from rpcgate.upstream.http_client import UpstreamHttp
from tests.upstream import test_upstream_http
from tests.upstream.test_upstream_http import (
    ANSWER,
    Run,
    Script,
    Server,
    _answering,
    _call,
    _chunked,
    _head,
    _read_request,
)

run = test_upstream_http.run  # the fixture: each test on asyncio's loop and on uvloop

ATTEMPT_TIMEOUT_S = 5.0  # what an attempt would wait; a hostile answer must fail long before
MAX_BODY_BYTES = 1024 * 1024
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE


async def _forever(writer: asyncio.StreamWriter, block: bytes) -> None:
    while True:  # until the client gives up: drain raises then
        writer.write(block)
        await writer.drain()


def _hostile(opening: bytes, repeated: bytes) -> Script:
    """An upstream that reads the call, writes `opening`, then `repeated` without end."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await _read_request(reader)
        writer.write(opening)
        await _forever(writer, repeated * max(1, 65536 // len(repeated)))

    return script


# What each attack writes, what it fails as, and within how long.
HOSTILE = {
    "trailer fields without end": (
        _hostile(_head("Transfer-Encoding: chunked") + b"2\r\n{}\r\n0\r\n", b"X-Pad: 1\r\n"),
        ProtocolError,
        1.0,
    ),
    "a head without end": (
        _hostile(b"HTTP/1.1 200 OK\r\n", b"X-Pad: 1\r\n"),
        ProtocolError,
        1.0,
    ),
    "interim answers without end": (
        _hostile(b"", _head(status="100 Continue")),
        ProtocolError,
        1.0,
    ),
    # The body stays under its bound for 6 MiB of the wire, a million chunks at about 2 us
    # of parsing each: it must not cost an object per chunk meanwhile, nor hold the loop.
    "one-byte chunks": (
        _hostile(_head("Transfer-Encoding: chunked"), b"1\r\nx\r\n"),
        TooLarge,
        ATTEMPT_TIMEOUT_S,
    ),
}


@dataclass
class Watch:
    """Samples the loop under test every 10 ms: how late it woke, and the process's RSS."""

    baseline_rss: int
    peak_rss: int = 0
    worst_stall_s: float = 0.0

    async def sample(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.worst_stall_s = max(self.worst_stall_s, loop.time() - before - 0.01)
            self.peak_rss = max(self.peak_rss, _rss())


@pytest.mark.parametrize("attack", HOSTILE)
def test_a_hostile_answer_fails_at_once_in_bounded_memory_without_stalling_the_loop(
    attack: str, run: Run
) -> None:
    script, failure, within_s = HOSTILE[attack]

    async def scenario() -> tuple[BaseException, float, Watch]:
        async with Server(script) as url:
            client = UpstreamHttp(url, {}, "test", MAX_BODY_BYTES)
            watch = Watch(baseline_rss=_rss())
            watching = asyncio.create_task(watch.sample())
            await asyncio.sleep(0.05)
            started = time.monotonic()
            try:
                async with asyncio.timeout(ATTEMPT_TIMEOUT_S):
                    await client.post(_call(1))
            except (ProtocolError, TooLarge, TimeoutError) as exc:
                error: BaseException = exc
            took = time.monotonic() - started
            await asyncio.sleep(0.05)
            watching.cancel()
            await client.close()
        return error, took, watch

    error, took, watch = run(scenario())
    growth_mb = (watch.peak_rss - watch.baseline_rss) / 1e6
    print(f"{attack}: {type(error).__name__} after {took:.3f} s, RSS +{growth_mb:.1f} MB, "
          f"worst loop stall {watch.worst_stall_s * 1000:.0f} ms")  # fmt: skip
    assert isinstance(error, failure), error
    assert took < within_s
    assert growth_mb < 20
    assert watch.worst_stall_s < 0.2


def test_an_answer_framed_by_both_transfer_encoding_and_content_length_is_refused_and_its_connection_dropped(  # noqa: E501
    run: Run,
) -> None:
    # RFC 9112 6.3: the two disagree on where the answer ends; a proxy in front that reads
    # Content-Length would see the rest as the next answer (response smuggling).
    async def smuggling_first(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        if index > 0:
            await _answering(reader, writer, index)
            return
        while True:
            await _read_request(reader)
            writer.write(
                _head("Transfer-Encoding: chunked", f"Content-Length: {len(ANSWER)}")
                + _chunked(ANSWER)
            )

    async def scenario() -> tuple[str, int, int]:
        server = Server(smuggling_first)
        async with server as url:
            client = UpstreamHttp(url, {}, "test", 10_000)
            with pytest.raises(ProtocolError) as refused:
                await client.post(_call(1))
            answered = json.loads((await client.post(_call(2))).body)["id"]
            await client.close()
        return str(refused.value), answered, server.connections

    words, answered, connections = run(scenario())
    assert "both Transfer-Encoding and Content-Length" in words
    assert (answered, connections) == (2, 2)  # the next call on a new connection
