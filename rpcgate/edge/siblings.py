"""The other workers of `serve --workers N`, so that the process looks like one.

The supervisor gives each worker a private directory (`RPCGATE_WORKER_DIR`, mode 0700) and
the count (`RPCGATE_WORKER_COUNT`); each worker also listens on a Unix socket there
(`worker-K.sock`) serving its own `/metrics`, `/status.json` and `/admin/`. The worker a
request reaches asks its siblings over those sockets: `/metrics` reports every worker's
series (labelled `worker`), `/status.json` shows every worker, and a drill started or ended
through one worker is applied by all (forwarded once, marked `X-Rpcgate-Sibling`, with the
drill's id, so that every worker knows it by the same id).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import aiohttp
from aiohttp import web

DIR_ENV = "RPCGATE_WORKER_DIR"
COUNT_ENV = "RPCGATE_WORKER_COUNT"
FORWARDED = "X-Rpcgate-Sibling"  # a request one worker passed on: not passed on again
ASK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Reply:
    worker: int
    status: int
    body: bytes


@dataclass(frozen=True)
class Siblings:
    directory: str
    count: int
    own: int

    @classmethod
    def from_env(cls, own: int | None) -> Siblings | None:
        directory, count = os.environ.get(DIR_ENV), os.environ.get(COUNT_ENV, "")
        if own is None or not directory or not count.isdigit() or int(count) < 2:
            return None
        return cls(directory, int(count), own)

    def socket(self, worker: int) -> str:
        return os.path.join(self.directory, f"worker-{worker}.sock")

    @property
    def others(self) -> list[int]:
        return [k for k in range(self.count) if k != self.own]

    async def ask(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[Reply]:
        """Every other worker's answer to the request; a worker that does not answer in
        time (restarting) is left out."""
        replies = await asyncio.gather(
            *(self._ask_one(k, method, path, body, headers or {}) for k in self.others)
        )
        return [reply for reply in replies if reply is not None]

    async def _ask_one(
        self, worker: int, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> Reply | None:
        connector = aiohttp.UnixConnector(path=self.socket(worker))
        try:
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                asyncio.timeout(ASK_TIMEOUT_S),
                session.request(
                    method,
                    "http://worker" + path,
                    data=body,
                    headers={**headers, FORWARDED: str(self.own)},
                ) as reply,
            ):
                return Reply(worker, reply.status, await reply.read())
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None


class SiblingFanout:
    """A drill started or ended through one worker, passed on to the others (the admin
    endpoint's `Fanout`): the same method and path, the caller's Authorization."""

    def __init__(self, siblings: Siblings) -> None:
        self.siblings = siblings

    def forwarded(self, request: web.Request) -> bool:
        return FORWARDED in request.headers

    async def send(self, request: web.Request, body: bytes | None, until: float) -> int:
        headers = {"Content-Type": "application/json"}
        if "Authorization" in request.headers:
            headers["Authorization"] = request.headers["Authorization"]
        replies = await self.siblings.ask(request.method, request.path, body=body, headers=headers)
        return sum(1 for reply in replies if reply.status < 300)
