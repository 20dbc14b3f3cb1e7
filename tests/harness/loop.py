"""An asyncio event loop on a daemon thread, so synchronous tests can host async servers."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class BackgroundLoop:
    """Runs its own event loop on a daemon thread until `stop()`.

    Servers started through `run()` (fault proxies, the gateway under test) keep serving
    while the test thread blocks in synchronous clients such as web3's HTTPProvider.
    """

    def __init__(self, name: str = "harness-loop") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve_forever, name=name, daemon=True)
        self._thread.start()

    def _serve_forever(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    @property
    def is_running(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 30.0) -> T:
        """Run `coro` on the background loop and block until it finishes."""
        if threading.current_thread() is self._thread:
            coro.close()
            # Blocking the loop's own thread on its own future can never complete.
            raise RuntimeError("BackgroundLoop.run() called from the loop thread; await instead")
        if not self.is_running:
            coro.close()
            raise RuntimeError("BackgroundLoop is stopped")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel whatever is still running on the loop, then stop and close it."""
        if not self.is_running:
            return
        cancel_all = asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), self.loop)
        cancel_all.result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        self.loop.close()

    def __enter__(self) -> BackgroundLoop:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()
