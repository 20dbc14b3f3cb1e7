"""Background tasks, started and stopped one way.

A component that works in the background (a chain's head tracker and head feed, an
upstream's WebSocket, the served heads' subscription) holds one `Background`: `start` runs
its work unless it runs already, `cancel` asks it to end (from synchronous code: the last
subscriber leaving), `stop` asks and waits until it has ended. A task that ends by an
exception is logged, never silently lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

log = structlog.get_logger("rpcgate")


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
