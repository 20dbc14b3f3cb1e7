"""The small state replicas share through Redis (filters, who accepted which transaction),
over the gateway's one Redis client (`redis_client`): every operation bounded by its short
timeout, answered as "nothing there" while Redis is down, so Redis never breaks a call."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from rpcgate.storage.redis_client import RedisLink


class SharedState:
    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.prefix = link.prefix
        self.timeout_s = link.timeout_s
        self.client = link.client

    def key(self, chain_id: int, kind: str, name: str, slot: str | None = None) -> str:
        return self.link.key(chain_id, kind, name, slot=slot)

    async def quick(self, operation: Awaitable[Any]) -> Any:
        """The operation's result, or None when Redis is down, slow or refuses it."""
        return await self.link.run("shared state", operation)
