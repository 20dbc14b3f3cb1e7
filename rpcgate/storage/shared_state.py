"""One Redis connection for the small state replicas share (filters, who accepted which
transaction): every operation bounded by the cache's short timeout, a failure logged once
per outage and answered as "nothing there", so Redis never breaks a call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError

log = structlog.get_logger("rpcgate.shared_state")


class SharedState:
    def __init__(self, url: str, prefix: str, timeout_s: float) -> None:
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._up = True

    def key(self, chain_id: int, kind: str, name: str) -> str:
        return f"{self.prefix}{chain_id}:{kind}:{name}"

    async def quick(self, operation: Awaitable[Any]) -> Any:
        """The operation's result, or None when Redis is down, slow or refuses it."""
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await operation
        except (RedisError, OSError, TimeoutError) as exc:
            if self._up:
                self._up = False
                log.warning("shared_state_unavailable", error=f"{type(exc).__name__}: {exc}")
            return None
        if not self._up:
            self._up = True
            log.info("shared_state_available")
        return result

    async def close(self) -> None:
        await self.client.aclose()
