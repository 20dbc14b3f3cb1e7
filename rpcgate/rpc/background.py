"""Background tasks, started and stopped one way.

A component that works in the background (a chain's head tracker and head feed, an
upstream's WebSocket, the served heads' subscription) holds one `Background`: `start` runs
its work unless it runs already, `cancel` asks it to end (from synchronous code: the last
subscriber leaving), `stop` asks and waits until it has ended. A task that ends by an
exception is logged, never silently lost.

`LoopThread` is an event loop on a daemon thread of its own, for synchronous code that
drives asynchronous code: the synchronous web3.py provider's gateway, and the test harness's
servers.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import structlog

log = structlog.get_logger("rpcgate")

T = TypeVar("T")


class Background:
    def __init__(self, name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self._work = work
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self.running:
            return
        self._task = asyncio.create_task(self._work(), name=self.name)
        self._task.add_done_callback(self._ended)

    def cancel(self) -> None:
        """Asks the work to end (it does at its next await); `stop` also waits for that."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # asyncio.wait, not await: the task's own cancellation is expected, a
            # cancellation of the caller is not swallowed.
            await asyncio.wait({task})

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error(
                "background_task_failed", task=self.name, error=f"{type(error).__name__}: {error}"
            )


class LoopThread:
    """Runs its own event loop on a daemon thread until `stop()`; coroutines are run on it
    and waited for from any other thread."""

    def __init__(self, name: str = "rpcgate-loop") -> None:
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
        """`coro` run on the loop, its result waited for (cancelled after `timeout`). From
        the loop's own thread it would wait for itself, so that is refused."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("LoopThread.run() called from the loop's own thread; await instead")
        if not self.is_running:
            coro.close()
            raise RuntimeError("the loop is stopped")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise

    def stop(self, timeout: float = 10.0) -> None:
        """Cancels whatever still runs on the loop, joins its executor's threads (name
        look-ups run there), then stops and closes it. Called on the loop's own thread, it
        only asks the loop to stop."""
        if not self.is_running:
            return
        if threading.current_thread() is self._thread:
            self.loop.call_soon(self.loop.stop)
            return
        asyncio.run_coroutine_threadsafe(_cancel_other_tasks(), self.loop).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.loop.close()  # from any thread (an async program's own included)

    def __enter__(self) -> LoopThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def _cancel_other_tasks() -> None:
    current = asyncio.current_task()
    pending = [task for task in asyncio.all_tasks() if task is not current]
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    await loop.shutdown_default_executor()
