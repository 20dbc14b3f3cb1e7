"""A TCP relay that delays every byte by a fixed time each way: a far-away server (a Redis
in another zone) on localhost, so a test can see what happens while a reply is on its way.

Bytes keep their order and are never held back longer than `delay_s`; a close on either
side reaches the other after the same delay. The relay lives on the loop that awaited
`start()`.
"""

from __future__ import annotations

import asyncio
import contextlib


class SlowLink:
    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "slow link not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> SlowLink:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for relay in list(self._relays):
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def _relay(self, client: asyncio.StreamReader, to_client: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        to_server: asyncio.StreamWriter | None = None
        try:
            server, to_server = await asyncio.open_connection("127.0.0.1", self.target_port)
            await asyncio.gather(self._pipe(client, to_server), self._pipe(server, to_client))
        except OSError:
            pass
        finally:
            self._relays.discard(task)
            for writer in (to_client, to_server):
                if writer is not None:
                    writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not data:
                    with contextlib.suppress(OSError):
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                queue.put_nowait((loop.time() + self.delay_s, data))
                if not data:
                    break
            await delivering
        finally:
            delivering.cancel()
