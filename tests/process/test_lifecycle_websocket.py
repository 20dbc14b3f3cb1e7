"""Shutting down with WebSocket clients connected: each is told the server goes away (1001)
when the listener closes, and the process exits within `shutdown.grace_s` +
`shutdown.timeout_s` (the Helm chart's terminationGracePeriodSeconds is sized on that)."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp

from tests.conftest import ServeProcess
from tests.harness.fixtures import AnvilClusterFactory

GRACE_S = 1.0
TIMEOUT_S = 3.0  # small, so that the test is quick; the rule is the same at the defaults


def test_sigterm_tells_websocket_clients_1001_and_exits_within_grace_plus_timeout(
    anvil_cluster: AnvilClusterFactory, serve_process: ServeProcess
) -> None:
    node = anvil_cluster(1, automine=True)[0]
    url, process = serve_process(node.url, shutdown={"grace_s": GRACE_S, "timeout_s": TIMEOUT_S})

    async def connected_through_shutdown() -> tuple[float, int | None, str, float]:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(url.replace("http://", "ws://") + "/devnet")
            await ws.send_json(
                {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
            )
            assert "result" in await ws.receive_json(timeout=10)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            while True:  # head notifications may come first
                message = await ws.receive(timeout=3 * (GRACE_S + TIMEOUT_S))
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
            told_after = time.monotonic() - started
            reason = str(message.extra or "")
            await ws.close()
        exit_code = await asyncio.to_thread(process.wait, 3 * (GRACE_S + TIMEOUT_S))
        assert exit_code == 0
        return told_after, ws.close_code, reason, time.monotonic() - started

    told_after, code, reason, exited_after = asyncio.run(connected_through_shutdown())
    print(f"closed ({code}) after {told_after:.2f} s, exit after {exited_after:.2f} s")
    assert code == 1001, (code, reason)
    assert reason == "server shutting down"
    assert GRACE_S <= told_after < GRACE_S + 1.0  # when the listener closes, not later
    assert exited_after < GRACE_S + TIMEOUT_S, exited_after
