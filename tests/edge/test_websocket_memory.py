"""What WebSocket clients cost the gateway process: a client that never reads is cut off
at a stated bound, and idle subscribed connections cost a stated amount each. The gateway
runs as `rpcgate serve` in a process of its own, so its memory is measured alone."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
import time
from typing import Any

import aiohttp

from rpcgate.chain.feeds import LOGS_WINDOW
from tests.conftest import ServeProcess
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, AnvilCluster, sign_transaction
from tests.harness.contract import INIT_CODE, create_address
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.memory import PeakRss
from tests.harness.tools import process_memory, status_json

CHAIN_ID = 31337
CONTRACT = create_address(DEV_ADDRESSES[0], 0)
SEND_QUEUE = 32  # websocket.send_queue in these tests
LOG_BYTES = 60_000  # calldata each logged transaction carries: a notification of ~120 KB
# A stalled client may hold: its queue of notifications, plus what the transport buffers
# before the sender waits (aiohttp's high-water mark, 64 KiB, plus one message), and a few
# transient copies of a message while it is encoded and framed; twice that, for what the
# allocator keeps of freed blocks (peak RSS, measured under the whole suite's load).
STALLED_BOUND = 2 * (SEND_QUEUE * 2 * LOG_BYTES + 2 * (64 * 1024 + 2 * LOG_BYTES))
IDLE_BOUND_PER_CONNECTION = 64 * 1024  # what an idle subscribed connection may cost
SETTINGS: dict[str, Any] = {
    # A small cache, so that what grows is what the connections hold.
    "cache": {"memory_bytes": 1024 * 1024},
    "websocket": {"send_queue": SEND_QUEUE, "max_subscriptions": 10},
}


def _frame(text: str) -> bytes:
    """A masked client text frame (RFC 6455)."""
    payload = text.encode()
    mask = os.urandom(4)
    head = bytes([0x81])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    else:
        head += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


async def _stalled_client(url: str) -> socket.socket:
    """A client that subscribes to logs, then never reads again (a tiny receive buffer)."""
    sock = _silent_client(url)
    call = {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["logs", {}]}
    sock.sendall(_frame(json.dumps(call)))
    return sock


def _deploy(node: Any) -> None:
    deploy = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=None, data=INIT_CODE, key=DEV_KEYS[0], gas=200_000
    )
    node.send_raw_transaction(deploy)


def _log_block(node: Any, nonce: int) -> None:
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=nonce, to=CONTRACT, data=os.urandom(LOG_BYTES), gas=5_000_000
    )
    node.send_raw_transaction(raw)  # automine: one block with one ~60 KB log


def test_a_client_that_never_reads_is_cut_off_at_a_bounded_cost(
    anvil_cluster: AnvilClusterFactory, serve_process: ServeProcess
) -> None:
    cluster: AnvilCluster = anvil_cluster(1, chain_id=CHAIN_ID, automine=True)
    node = cluster[0]
    _deploy(node)
    url, process = serve_process(node.url, **SETTINGS)
    pid = process.pid

    # A client that reads, while the feed's window of recent logs fills (it keeps the logs
    # of its last blocks, to send them as removed after a reorg): the gateway's steady state.
    async def reading_client() -> tuple[aiohttp.ClientSession, Any]:
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(url.replace("http", "ws") + "/devnet", max_msg_size=0)
        await ws.send_json(
            {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["logs", {}]}
        )
        return session, ws

    loop = asyncio.new_event_loop()
    session, _ = loop.run_until_complete(reading_client())
    nonce = 1
    for nonce in range(1, LOGS_WINDOW + 10):
        _log_block(node, nonce)
        loop.run_until_complete(asyncio.sleep(0.02))
    loop.run_until_complete(session.close())
    time.sleep(0.5)

    stalled = asyncio.run(_stalled_client(url))
    time.sleep(0.5)
    baseline = process_memory(pid)
    peak = baseline
    closed_after = None
    # Blocks of ~120 KB notifications until the gateway gives up: the kernel's socket buffers
    # (up to 4 MB here) fill first, then the send queue.
    for sent in range(1, 151):
        _log_block(node, nonce + sent)
        time.sleep(0.05)
        peak = max(peak, process_memory(pid))
        if status_json(url)["clients"]["websocket_connections"] == 0:
            closed_after = sent
            break
    loop.close()
    assert closed_after is not None, "the stalled client was never disconnected"
    growth = peak - baseline
    print(f"stalled client: cut off after {closed_after} blocks, RSS +{growth / 1e6:.1f} MB")
    assert growth < STALLED_BOUND, (growth, STALLED_BOUND)
    # The gateway still serves, and the stalled socket ends (closed or reset).
    assert status_json(url)["chains"][0]["name"] == "devnet"
    stalled.settimeout(5)
    ended = False
    try:
        while stalled.recv(65536):
            pass
        ended = True
    except (ConnectionResetError, TimeoutError):
        ended = True
    assert ended
    stalled.close()


def test_idle_subscribed_connections_cost_a_bounded_amount_each(
    anvil_cluster: AnvilClusterFactory, serve_process: ServeProcess
) -> None:
    node = anvil_cluster(1, chain_id=CHAIN_ID, automine=True)[0]
    url, process = serve_process(node.url, **SETTINGS)
    pid = process.pid
    count = 1000

    async def open_many() -> tuple[int, int, list[Any]]:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        sockets = []
        before = process_memory(pid)
        for _ in range(0, count, 100):
            batch = await asyncio.gather(
                *(session.ws_connect(url.replace("http", "ws") + "/devnet") for _i in range(100))
            )
            for ws in batch:
                await ws.send_json(
                    {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
                )
            for ws in batch:
                reply = await ws.receive_json(timeout=10)
                assert "result" in reply, reply
            sockets.extend(batch)
        await asyncio.sleep(1)
        after = process_memory(pid)
        status = status_json(url)["clients"]
        assert status["websocket_connections"] == count
        assert status["websocket_subscriptions"] == count
        for ws in sockets:
            await ws.close()
        await session.close()
        return before, after, sockets

    before, after, _ = asyncio.run(open_many())
    per_connection = (after - before) / count
    print(f"idle subscribed WebSocket: {per_connection / 1024:.1f} KiB per connection")
    assert per_connection < IDLE_BOUND_PER_CONNECTION, per_connection
    time.sleep(0.5)
    assert status_json(url)["clients"]["websocket_connections"] == 0  # all released


# A contract answering eth_call with as many zero bytes as its calldata's first word says:
# PUSH1 0, CALLDATALOAD, PUSH1 0, RETURN.
ECHO_SIZE_CODE = "0x6000356000f3"
ECHO_SIZE = "0x" + "ee" * 20
ANSWER_BYTES = 300_000  # each eth_call: 600 KB of hex; a batch of four, one 2.4 MB message
QUEUE_BYTES = 16 * 1024 * 1024  # websocket.send_queue_bytes' default
# A stalled client may hold: its queue up to the limit, then one more message, the one the
# sender is writing, and the transport's buffer (64 KiB); twice that for the allocator's
# slack (peak RSS). Measured before the limit: +483 MB for 200 batches.
BIG_BOUND = 2 * (QUEUE_BYTES + 3 * 4 * 2 * ANSWER_BYTES)


def _silent_client(url: str) -> socket.socket:
    """A WebSocket client that sends calls and never reads an answer (a tiny receive
    buffer)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /devnet HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _big_answers_batch(n: int) -> str:
    """Four eth_calls whose answers are ~600 KB each (sizes of their own: none shared)."""
    calls = [
        {
            "jsonrpc": "2.0",
            "id": 4 * n + k,
            "method": "eth_call",
            "params": [{"to": ECHO_SIZE, "data": "0x%064x" % (ANSWER_BYTES + 32 * (4 * n + k))}],
        }
        for k in range(4)
    ]
    return json.dumps(calls)


def test_a_client_that_never_reads_big_answers_is_cut_off_at_the_queued_bytes(
    anvil_cluster: AnvilClusterFactory, serve_process: ServeProcess
) -> None:
    node = anvil_cluster(1, chain_id=CHAIN_ID, automine=True)[0]
    node.rpc("anvil_setCode", [ECHO_SIZE, ECHO_SIZE_CODE])
    # The default send queue (256 messages, 16 MiB): the bytes are what stop this client.
    url, process = serve_process(
        node.url,
        cache={"memory_bytes": 1024 * 1024},
        limits={"rate_per_s": 0, "max_concurrent_per_client": 0},
    )
    silent = _silent_client(url)
    silent.sendall(_frame(_big_answers_batch(0)))  # the answers' path, warmed
    time.sleep(0.5)
    closed_after = None
    with PeakRss(process.pid) as rss:
        for sent in range(1, 81):
            with contextlib.suppress(OSError):  # the gateway has reset the connection
                silent.sendall(_frame(_big_answers_batch(sent)))
            time.sleep(0.05)
            if status_json(url)["clients"]["websocket_connections"] == 0:
                closed_after = sent
                break
    growth = rss.growth
    print(
        f"silent client, 2.4 MB answers: cut off after {closed_after}, RSS +{growth / 1e6:.1f} MB"
    )
    assert closed_after is not None, "the client that never reads was never disconnected"
    assert growth < BIG_BOUND, (growth, BIG_BOUND)
    assert status_json(url)["chains"][0]["name"] == "devnet"  # the gateway still serves
    silent.close()
