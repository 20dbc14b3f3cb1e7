"""Subscriptions inside a Python program: `AsyncWeb3(PersistentRpcgateProvider(config))`
subscribes to newHeads and logs as over rpcgate's WebSocket. What it receives is compared
with the nodes' own chain: every head and log once, in order, through upstream cut-offs,
and on a reorg the dropped logs again with `removed: true`. Its plain calls and batches
answer too, and disconnecting leaves nothing behind."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from web3 import AsyncWeb3

from rpcgate.web3 import PersistentRpcgateProvider
from tests.conftest import ProxiedClusterFactory
from tests.harness.logging_chain import (
    CHAIN_ID,
    LOGS_FILTER,
    LoggingChain,
    assert_once_in_order,
    logging_chain,
    web3_head,
    web3_log,
)
from tests.harness.sockets import connections_to
from tests.web3.configs import devnet_config

pytestmark = pytest.mark.filterwarnings("error")

BLOCK_PACE_S = 0.15  # between blocks: the gateway polls heads every 0.1 s
QUIET_S = 0.5  # after the last expected message: nothing more may come


@pytest.fixture
def chain(proxied_cluster: ProxiedClusterFactory) -> LoggingChain:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=1)
    return logging_chain(cluster, proxies)


def config(chain: LoggingChain) -> dict[str, Any]:
    return devnet_config(chain.proxies, head_poll_interval=0.1)


class Received:
    """Every subscription message, by subscription, read in a task of its own."""

    def __init__(self, w3: AsyncWeb3[Any]) -> None:
        self.by_id: dict[str, list[Any]] = {}
        self.task = asyncio.create_task(self._read(w3))

    async def _read(self, w3: AsyncWeb3[Any]) -> None:
        async for message in w3.socket.process_subscriptions():
            self.by_id.setdefault(message["subscription"], []).append(message["result"])

    def of(self, subscription: Any) -> list[Any]:
        return self.by_id.get(str(subscription), [])

    async def settle(self, arrived: Any, timeout_s: float = 20) -> None:
        """Until `arrived()` (or the timeout: the comparison after says what is missing),
        then a little more: a repeat or a stray would come now."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not arrived() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        await asyncio.sleep(QUIET_S)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def in_thread(work: Any, *args: Any) -> Any:
    """The cluster's own calls are blocking: off the loop, so messages keep flowing."""
    return await asyncio.to_thread(work, *args)


def test_new_heads_and_logs_each_once_in_order_through_cut_offs(chain: LoggingChain) -> None:
    async def run() -> None:
        async with AsyncWeb3(PersistentRpcgateProvider(config(chain))) as w3:
            heads = await w3.eth.subscribe("newHeads")
            logs = await w3.eth.subscribe("logs", LOGS_FILTER)
            received = Received(w3)
            first = await in_thread(chain.cluster[0].block_number) + 1
            for index in range(12):
                if index in (4, 8):  # the one in use, then a second of three
                    await in_thread(chain.cut_the_upstream_in_use)
                await in_thread(chain.mine_with_logs)
                await asyncio.sleep(BLOCK_PACE_S)
            last = first + 11
            await received.settle(
                lambda: len(received.of(heads)) >= 12 and len(received.of(logs)) >= 12
            )
            await received.stop()
            assert_once_in_order(
                "newHeads",
                await in_thread(chain.node_heads, first, last),
                [web3_head(h) for h in received.of(heads)],
            )
            assert_once_in_order(
                "logs",
                await in_thread(chain.node_logs, first),
                [web3_log(e) for e in received.of(logs)],
            )
            assert await w3.eth.block_number == last  # a plain call on the same provider

    asyncio.run(run())


def test_a_reorg_sends_the_dropped_logs_removed_then_the_new_ones(chain: LoggingChain) -> None:
    async def run() -> None:
        async with AsyncWeb3(PersistentRpcgateProvider(config(chain))) as w3:
            logs = await w3.eth.subscribe("logs", LOGS_FILTER)
            received = Received(w3)
            fork_point = await in_thread(chain.cluster[0].block_number) + 1
            await in_thread(chain.mine_with_logs)  # kept by the reorg
            snapshot = await in_thread(chain.snapshot)
            await in_thread(chain.mine_with_logs, 2)  # dropped by the reorg
            old_logs = await in_thread(chain.node_logs, fork_point)
            await received.settle(lambda: len(received.of(logs)) >= 3)
            await in_thread(chain.revert, snapshot)
            await in_thread(lambda: chain.mine_with_logs(3, fork=True))
            new_logs = await in_thread(chain.node_logs, fork_point + 1)
            await received.settle(lambda: len(received.of(logs)) >= 8)
            await received.stop()
            got = received.of(logs)
            assert [e["removed"] for e in got] == [False] * 3 + [True] * 2 + [False] * 3, [
                (e["blockNumber"], e["removed"]) for e in got
            ]
            assert [web3_log(e) for e in got[:3]] == old_logs
            assert sorted(web3_log(e) for e in got[3:5]) == old_logs[1:]
            assert [web3_log(e) for e in got[5:]] == new_logs

    asyncio.run(run())


def test_calls_batches_and_unsubscribe_on_the_persistent_provider(chain: LoggingChain) -> None:
    ports = [p.port for p in chain.proxies]
    before = {t.name for t in threading.enumerate()}

    async def run() -> None:
        provider = PersistentRpcgateProvider(config(chain), chain="devnet")
        async with AsyncWeb3(provider) as w3:
            assert await w3.eth.chain_id == CHAIN_ID
            async with w3.batch_requests() as batch:
                batch.add(w3.eth.get_block(1))
                batch.add(w3.eth.get_block(2))
                blocks = await batch.async_execute()
            assert [b["number"] for b in blocks] == [1, 2]
            heads = await w3.eth.subscribe("newHeads")
            feed = provider.embedded.chain.head_feed()  # type: ignore[union-attr]
            assert feed.subscriber_count == 1
            assert await w3.eth.unsubscribe(heads) is True
            assert feed.subscriber_count == 0
            await w3.eth.subscribe("newHeads")
            assert provider.status()["chains"][0]["name"] == "devnet"
            assert connections_to(ports) > 0
        # Leaving the block disconnected it: subscriptions, tasks, connections gone.
        assert feed.subscriber_count == 0
        assert asyncio.all_tasks() == {asyncio.current_task()}
        assert connections_to(ports) == 0
        assert not await provider.is_connected()

    asyncio.run(run())
    assert {t.name for t in threading.enumerate()} <= before
