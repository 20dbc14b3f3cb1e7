"""An event loop on a thread of its own, for the synchronous provider: coroutines are run
on it and waited for from any thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self, name: str = "rpcgate") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """The coroutine's result, run on the loop; from the loop's own thread it would
        wait for itself, so that is refused."""
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise RuntimeError("an rpcgate provider is called from its own loop")
        if not self._thread.is_alive():
            coroutine.close()
            raise RuntimeError("this rpcgate provider is closed")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Ends the loop and the thread once what is scheduled has run; tasks still pending
        are cancelled and awaited first."""
        if not self._thread.is_alive():
            return
        if threading.current_thread() is self._thread:
            self.loop.call_soon(self.loop.stop)
            return

        async def cancel_rest() -> None:
            rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            loop = asyncio.get_running_loop()
            await loop.shutdown_asyncgens()
            # Its threads (name look-ups run there) are joined, not left to end later.
            await loop.shutdown_default_executor()

        asyncio.run_coroutine_threadsafe(cancel_rest(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()  # from any thread, a loop inside an async program's included
