"""Slow and abusive clients, over real sockets, against a gateway over a real anvil node.

A client sending its head a byte at a time, its body too slowly or too much of it, one
idling on a kept-alive connection, and one connection too many: each costs the gateway a
socket for the time its limit allows, and nothing else.
"""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import aiohttp
import pytest
import yaml

from tests.conftest import GatewayFactory, RunningGateway
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.tools import free_port, host_port, rpcgate_command, wait_for_http

CALL = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}).encode()
SLACK_S = 0.6  # how late a limit may act on a loaded test machine


def _on_time(elapsed_s: float | None, limit_s: float) -> bool:
    """Whether a limit acted on time, seen from the client (whose clock starts a little
    after the gateway's when it measures from its connect)."""
    return elapsed_s is not None and limit_s - 0.1 <= elapsed_s < limit_s + SLACK_S


def _request(body: bytes = CALL) -> bytes:
    return (
        b"POST / HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, Any]:
        reply = json.loads(self.body)
        assert reply["jsonrpc"] == "2.0" and reply["id"] is None, reply
        error: dict[str, Any] = reply["error"]
        return error


async def _read_answer(reader: asyncio.StreamReader) -> Answer | None:
    """One HTTP response, or None when the connection closed before one came."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    status_line, *lines = head.decode().split("\r\n")
    headers = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in lines if line)
    }
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(int(status_line.split()[1]), headers, body)


async def _closed_within(reader: asyncio.StreamReader, timeout_s: float) -> bool:
    """Whether the gateway closes the connection within `timeout_s` (anything sent before
    is read and dropped)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while (left := deadline - loop.time()) > 0:
        try:
            data = await asyncio.wait_for(reader.read(65536), left)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        if not data:
            return True
    return False


async def _send_slowly(
    writer: asyncio.StreamWriter,
    reader: asyncio.StreamReader,
    data: bytes,
    interval_s: float,
    give_up_s: float,
) -> float | None:
    """Sends `data` a byte every `interval_s`: seconds from the first byte until the gateway
    closed the connection, or None when it was still open after `give_up_s`."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(len(data)):
        if loop.time() - started > give_up_s:
            return None
        writer.write(data[i : i + 1])
        if await _closed_within(reader, interval_s):
            return loop.time() - started
    return None


async def _trickle(writer: asyncio.StreamWriter, data: bytes, interval_s: float) -> None:
    for i in range(len(data)):
        writer.write(data[i : i + 1])
        await asyncio.sleep(interval_s)


GatewayWithLimits = Callable[..., RunningGateway]  # limits as keyword arguments


@pytest.fixture(params=[True, False], ids=["fast-path", "aiohttp"])
def gateway_with(
    request: pytest.FixtureRequest,
    anvil_cluster: AnvilClusterFactory,
    start_gateway: GatewayFactory,
) -> GatewayWithLimits:
    """Starts an in-process gateway over one anvil node, with the given `limits`: served by
    the fast path (the default), and by aiohttp alone (`server.fast_path: false`)."""
    cluster = anvil_cluster(1, automine=True)

    def start(**limits: Any) -> RunningGateway:
        return start_gateway(cluster.urls, limits=limits, server={"fast_path": request.param})

    return start


def test_slow_loris_is_cut_at_the_header_timeout_while_others_are_served_at_full_speed(
    gateway_with: GatewayWithLimits,
) -> None:
    gateway = gateway_with(header_timeout_s=1)
    host, port = host_port(gateway.url)
    head = b"POST / HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"

    async def loris() -> float | None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            return await _send_slowly(writer, reader, head, interval_s=0.2, give_up_s=4)
        finally:
            writer.close()

    async def scenario() -> tuple[list[float | None], list[float]]:
        lorises = [asyncio.create_task(loris()) for _ in range(20)]
        latencies: list[float] = []
        async with aiohttp.ClientSession() as session:
            while not all(task.done() for task in lorises):
                started = perf_counter()
                async with session.post(gateway.url, data=CALL) as resp:
                    assert resp.status == 200
                    assert "result" in await resp.json()
                latencies.append(perf_counter() - started)
                await asyncio.sleep(0.02)
        return [task.result() for task in lorises], latencies

    cut_after, latencies = asyncio.run(scenario())
    assert all(_on_time(t, 1) for t in cut_after), cut_after
    assert len(latencies) >= 20, latencies
    assert statistics.median(latencies) < 0.05, latencies
    assert max(latencies) < 0.25, latencies


def test_kept_alive_connection_has_header_timeout_from_the_start_of_its_next_request(
    gateway_with: GatewayWithLimits,
) -> None:
    gateway = gateway_with(header_timeout_s=1, keepalive_timeout_s=5)
    host, port = host_port(gateway.url)

    async def scenario() -> float | None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(_request())
            answer = await _read_answer(reader)
            assert answer is not None and answer.status == 200
            # Idle past the header timeout: idle is the keep-alive timeout's business.
            assert not await _closed_within(reader, 1.5)
            return await _send_slowly(writer, reader, _request(), interval_s=0.2, give_up_s=4)
        finally:
            writer.close()

    cut_after = asyncio.run(scenario())
    assert _on_time(cut_after, 1), cut_after


def test_slow_body_gets_408_naming_the_body_timeout(gateway_with: GatewayWithLimits) -> None:
    gateway = gateway_with(body_timeout_s=1)
    host, port = host_port(gateway.url)
    request = _request()
    head, body = request[: -len(CALL)], CALL

    async def scenario() -> tuple[Answer | None, float, bool]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(head)
            started = perf_counter()
            trickle = asyncio.create_task(_trickle(writer, body, interval_s=0.2))
            answer = await asyncio.wait_for(_read_answer(reader), 5)
            elapsed = perf_counter() - started
            trickle.cancel()
            return answer, elapsed, await _closed_within(reader, 1)
        finally:
            writer.close()

    answer, elapsed, closed = asyncio.run(scenario())
    assert answer is not None
    assert answer.status == 408
    assert _on_time(elapsed, 1), elapsed
    error = answer.error()
    assert error["code"] == -32600
    assert "limits.body_timeout_s" in error["message"]
    assert error["data"] == {"limit": 1}
    assert answer.headers.get("connection") == "close"
    assert closed  # the rest of the body is not waited for


def test_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(
    gateway_with: GatewayWithLimits,
) -> None:
    gateway = gateway_with(keepalive_timeout_s=1)
    host, port = host_port(gateway.url)

    async def scenario() -> float | None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(_request())
            answer = await _read_answer(reader)
            assert answer is not None and answer.status == 200
            assert answer.headers.get("connection") != "close"
            answered = perf_counter()
            closed = await _closed_within(reader, 4)
            return perf_counter() - answered if closed else None
        finally:
            writer.close()

    idle_for = asyncio.run(scenario())
    assert _on_time(idle_for, 1), idle_for


def test_connections_over_max_connections_are_closed_and_room_is_made_as_others_close(
    gateway_with: GatewayWithLimits,
) -> None:
    gateway = gateway_with(max_connections=4)
    host, port = host_port(gateway.url)

    async def exchange(connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> int:
        """The status of one call on `connection`, 0 when it was closed without answer."""
        reader, writer = connection
        try:
            writer.write(_request())
            answer = await asyncio.wait_for(_read_answer(reader), 5)
        except ConnectionError:
            return 0
        return 0 if answer is None else answer.status

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port)

    async def scenario() -> dict[str, list[int]]:
        first = [await connect() for _ in range(4)]
        seen = {"first": [await exchange(c) for c in first]}
        extra = [await connect() for _ in range(3)]
        seen["extra"] = [await exchange(c) for c in extra]
        seen["first_again"] = [await exchange(c) for c in first]
        for _, writer in first[:2]:
            writer.close()
            await writer.wait_closed()
        await asyncio.sleep(0.3)  # the gateway sees them go
        later = [await connect() for _ in range(2)]
        seen["later"] = [await exchange(c) for c in later]
        one_too_many = await connect()
        seen["one_too_many"] = [await exchange(one_too_many)]
        for _, writer in [*first[2:], *extra, *later, one_too_many]:
            writer.close()
        return seen

    seen = asyncio.run(scenario())
    assert seen == {
        "first": [200] * 4,
        "extra": [0] * 3,
        "first_again": [200] * 4,
        "later": [200] * 2,
        "one_too_many": [0],
    }


# --- 100 MB bodies, against a gateway process whose memory is watched -------------------

BODY_LIMIT = 1_000_000
HUGE = 100_000_000
CHUNK = b"0" * 65536


@dataclass
class GatewayProcess:
    url: str
    pid: int

    def rss_bytes(self) -> int:
        return self._status_kb("VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        return self._status_kb("VmHWM") * 1024

    def reset_peak_rss(self) -> None:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS

    def _status_kb(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} in /proc/{self.pid}/status")


@pytest.fixture
def gateway_process(anvil_cluster: AnvilClusterFactory, tmp_path: Path) -> Iterator[GatewayProcess]:
    cluster = anvil_cluster(1, automine=True)
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "chains": [
            {
                "name": "devnet",
                "chain_id": 31337,
                "upstreams": [{"name": "node0", "url": cluster.urls[0]}],
            }
        ],
        "limits": {"max_body_bytes": BODY_LIMIT},
    }
    path = tmp_path / "rpcgate.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [*rpcgate_command(), "serve", "--config", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/healthz")
        yield GatewayProcess(url, process.pid)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass
class Pushed:
    answer: Answer | None
    sent_before_answer: int  # body bytes the client had sent when the answer came
    sent: int  # body bytes the client could send in all (HUGE: the gateway took them all)


async def _push(url: str, head: bytes, frame: bytes, wait_for_answer_first: bool) -> Pushed:
    """Sends `head`, then `frame` over and over (HUGE bytes of body in all) while reading
    the answer, until the gateway closes the connection."""
    reader, writer = await asyncio.open_connection(*host_port(url))
    writer.write(head)
    answering = asyncio.create_task(_read_answer(reader))
    if wait_for_answer_first:  # a client waiting for an early refusal before it sends
        await asyncio.wait([answering], timeout=2)
    sent = 0
    sent_before_answer = None
    try:
        while sent < HUGE:
            if answering.done() and sent_before_answer is None:
                sent_before_answer = sent
            writer.write(frame)
            await writer.drain()
            sent += len(CHUNK)
    except ConnectionError:
        pass
    finally:
        writer.close()
    answer = await asyncio.wait_for(answering, 5)
    return Pushed(answer, sent if sent_before_answer is None else sent_before_answer, sent)


def _warm_up(gateway: GatewayProcess) -> None:
    async def call() -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.post(gateway.url, data=CALL) as resp,
        ):
            assert resp.status == 200

    asyncio.run(call())


def _assert_refused_as_too_large(pushed: Pushed) -> None:
    assert pushed.answer is not None
    assert pushed.answer.status == 413
    error = pushed.answer.error()
    assert error["code"] == -32600
    assert "limits.max_body_bytes" in error["message"]
    assert error["data"] == {"limit": BODY_LIMIT}
    assert pushed.answer.headers.get("connection") == "close"
    assert pushed.sent < HUGE  # the connection was cut, the rest never read


def test_declared_100_mb_body_is_refused_before_it_is_sent(
    gateway_process: GatewayProcess,
) -> None:
    _warm_up(gateway_process)
    before = gateway_process.rss_bytes()
    gateway_process.reset_peak_rss()
    head = (
        b"POST / HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % HUGE
    )

    pushed = asyncio.run(_push(gateway_process.url, head, CHUNK, wait_for_answer_first=True))

    _assert_refused_as_too_large(pushed)
    assert pushed.sent_before_answer == 0
    assert gateway_process.peak_rss_bytes() - before < 20_000_000


def test_chunked_100_mb_body_is_refused_once_past_the_limit(
    gateway_process: GatewayProcess,
) -> None:
    _warm_up(gateway_process)
    before = gateway_process.rss_bytes()
    gateway_process.reset_peak_rss()
    head = (
        b"POST / HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    frame = b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK)

    pushed = asyncio.run(_push(gateway_process.url, head, frame, wait_for_answer_first=False))

    _assert_refused_as_too_large(pushed)
    assert BODY_LIMIT < pushed.sent_before_answer < 20_000_000
    assert gateway_process.peak_rss_bytes() - before < 20_000_000


@pytest.mark.parametrize(("declared", "status"), [(100 * 1024 * 1024, 413), (len(CALL), 200)])
def test_expect_continue_refuses_an_announced_oversize_body_before_it_is_sent(
    gateway_with: GatewayWithLimits, declared: int, status: int
) -> None:
    gateway = gateway_with(max_body_bytes=1024 * 1024)
    host, port = host_port(gateway.url)
    head = (
        b"POST / HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % declared
    )

    async def scenario() -> tuple[bytes, Answer | None]:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(head)  # and nothing more until the gateway says go on
            first = await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
            if first.startswith(b"HTTP/1.1 100"):
                await reader.readuntil(b"\r\n")  # the blank line after the interim answer
                writer.write(CALL)
                return first, await asyncio.wait_for(_read_answer(reader), 5)
            rest = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            fake = asyncio.StreamReader()
            fake.feed_data(first + rest + await reader.read(65536))
            fake.feed_eof()
            return first, await _read_answer(fake)
        finally:
            writer.close()

    first, answer = asyncio.run(scenario())
    assert answer is not None and answer.status == status, (first, answer)
    if status == 413:
        assert not first.startswith(b"HTTP/1.1 100")  # never told to send the 100 MB
        assert "limits.max_body_bytes" in answer.error()["message"]
    else:
        assert "result" in json.loads(answer.body)
