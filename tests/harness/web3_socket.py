"""web3.py, a real Python client, over its WebSocketProvider, for synchronous tests.

`Web3Socket` keeps an `AsyncWeb3(WebSocketProvider(url))` on a loop thread of its own (the
client is not the gateway: they share no loop), collects what `process_subscriptions()`
yields, and lets a test run any `AsyncWeb3` call with `call(lambda w3: w3.eth.chain_id)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from web3 import AsyncWeb3, WebSocketProvider
from web3.types import SubscriptionType

from tests.harness.loop import BackgroundLoop

T = TypeVar("T")

_POLL_SECONDS = 0.02


class Web3Socket:
    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = BackgroundLoop("web3-socket")
        self.notes: dict[str, list[Any]] = {}  # subscription id -> results, as they came
        self._reader: asyncio.Task[None] | None = None
        try:
            self.w3: AsyncWeb3[Any] = self.loop.run(self._connect())
        except BaseException:
            self.loop.stop()
            raise

    async def _connect(self) -> AsyncWeb3[Any]:
        # What `async with AsyncWeb3(...)` does; `await AsyncWeb3(...)` would also install
        # signal handlers, which only the main thread may.
        w3 = AsyncWeb3(WebSocketProvider(self.url))
        await w3.provider.connect()
        return w3

    def call(self, request: Callable[[AsyncWeb3[Any]], Awaitable[T]], timeout: float = 15) -> T:
        """Runs one awaitable made from the client, e.g. `lambda w3: w3.eth.block_number`."""

        async def run() -> T:
            return await request(self.w3)

        return self.loop.run(run(), timeout)

    def subscribe(self, kind: SubscriptionType, argument: Any = None) -> str:
        """`eth_subscribe` through web3's subscription API; results land in `notes[id]`."""

        async def subscribe() -> str:
            subscription_id = await self.w3.eth.subscribe(kind, argument)
            self.notes.setdefault(subscription_id, [])
            if self._reader is None:
                self._reader = asyncio.create_task(self._read())
            return str(subscription_id)

        return self.loop.run(subscribe())

    async def _read(self) -> None:
        async for message in self.w3.socket.process_subscriptions():
            self.notes.setdefault(message["subscription"], []).append(message["result"])

    def wait(self, condition: Callable[[], T], what: str, timeout: float = 15) -> T:
        """Polls `condition` until it is truthy; fails saying what was awaited and what came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self._reader is not None and self._reader.done():
                break  # the stream ended: nothing more will come
            time.sleep(_POLL_SECONDS)
        counts = {sub: len(results) for sub, results in self.notes.items()}
        ended = self._reader is not None and self._reader.done()
        raise AssertionError(
            f"web3: timed out waiting for {what}; results by subscription {counts}"
            + (f", the stream ended: {self._reader_outcome()}" if ended else "")
        )

    def _reader_outcome(self) -> str:
        assert self._reader is not None
        if self._reader.cancelled():
            return "cancelled"
        error = self._reader.exception()
        return repr(error) if error else "without an error"

    def close(self) -> None:
        async def shut() -> None:
            if self._reader is not None:
                self._reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._reader
            await self.w3.provider.disconnect()

        try:
            self.loop.run(shut())
        finally:
            self.loop.stop()

    def __enter__(self) -> Web3Socket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
