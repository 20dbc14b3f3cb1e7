"""An asyncio event loop on a daemon thread, so synchronous tests can host async servers:
the package's own `LoopThread` (rpcgate/rpc/background.py), named for the harness."""

from __future__ import annotations

from rpcgate.rpc.background import LoopThread


class BackgroundLoop(LoopThread):
    """Servers started through `run()` (fault proxies, the gateway under test) keep serving
    while the test thread blocks in synchronous clients such as web3's HTTPProvider."""

    def __init__(self, name: str = "harness-loop") -> None:
        super().__init__(name)
