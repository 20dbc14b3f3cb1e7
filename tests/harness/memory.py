"""What a process's resident memory does while a test attacks it: sampled from /proc every
few milliseconds in a thread, so a peak between two requests is not missed."""

from __future__ import annotations

import contextlib
import threading
import time
from types import TracebackType

from tests.harness.tools import process_memory


class PeakRss:
    """`with PeakRss(pid) as rss: ...attack...`; then `rss.growth`: the highest RSS seen
    during the block, less the RSS when it began (bytes)."""

    def __init__(self, pid: int, every_s: float = 0.005) -> None:
        self.pid = pid
        self.every_s = every_s
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, process_memory(self.pid))
            except (OSError, AssertionError):  # the process is gone
                return
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRss:
        self.baseline = self.peak = process_memory(self.pid)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError, AssertionError):  # the process is gone
            self.peak = max(self.peak, process_memory(self.pid))
