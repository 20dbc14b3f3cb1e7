"""The one Redis client of a gateway process, and its one outage policy.

Everything replicas share goes through it: the cache's Redis tier (`response_cache`), the
served head and its publish/subscribe (`shared_head`), filters and accepted transactions
(`shared_state`), and the rate limits (`edge.rate_limits`). One connection pool, one place
where a Redis URL becomes a client: one server, a primary watched by Sentinel, or a Cluster
(`config.redis_url` says which).

The outage policy: Redis never breaks a call. Every operation is bounded by
`cache.redis_timeout_s`. A failure marks Redis down, with one `redis_down` log line naming
the operation, and for the next `RETRY_S` every operation answers None at once instead of
spending its timeout; then the next operation tries again, and the first that succeeds marks
Redis up (`redis_up`). Redis full (OOM) is no outage: reads go on, writes pause for
`WRITE_PAUSE_S` (one `redis_writes_refused` line). Callers treat None as "nothing there" and
go on from memory: each says what that means for it (the rate limits log that each replica
now counts alone).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as aioredis
import structlog
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.commands.core import AsyncScript
from redis.exceptions import OutOfMemoryError, RedisError

from rpcgate.config.redis_url import RedisTarget, parse_redis_url

log = structlog.get_logger("rpcgate.redis")

T = TypeVar("T")

RETRY_S = 1.0  # after a failure, how long operations skip Redis before one tries again
WRITE_PAUSE_S = 10.0  # Redis full (OOM): how long writes wait
RESUBSCRIBE_S = 1.0  # a subscription lost is made again after this


class RedisLink:
    """A gateway's Redis: its client, key prefix and operation timeout, up or down."""

    def __init__(self, url: str, prefix: str, timeout_s: float) -> None:
        self.prefix = prefix
        self.timeout_s = timeout_s
        self.target = parse_redis_url(url)
        self.kind = self.target.kind  # single | sentinel | cluster
        self._sentinel: Sentinel | None = None
        self.client = self._connect(self.target)
        self.up = True
        self._down_since: float | None = None  # loop time of the first failure of an outage
        self._up_since: float | None = None  # loop time the last outage ended
        self._retry_at = 0.0
        self._writes_paused_until = 0.0

    def _connect(self, target: RedisTarget) -> Any:  # Redis | RedisCluster
        """The client for what the URL names. No socket timeout: every operation is bounded
        by `run`'s own, and the served head's subscription blocks on its read by design."""
        common: dict[str, Any] = {
            "socket_timeout": None,
            "socket_connect_timeout": self.timeout_s,
            "health_check_interval": 0,
        }
        if target.kind == "single":
            return aioredis.Redis.from_url(target.url, retry_on_timeout=False, **common)
        auth: dict[str, Any] = {
            "username": target.username,
            "password": target.password,
            "ssl": target.tls,
        }
        if target.kind == "sentinel":
            # The sentinels are asked (briefly) which node is the primary, on every new
            # connection: after a failover the next connection goes to the new one.
            self._sentinel = Sentinel(
                list(target.hosts),
                sentinel_kwargs={
                    "socket_timeout": self.timeout_s,
                    "socket_connect_timeout": self.timeout_s,
                },
                **common,
                **auth,
            )
            return self._sentinel.master_for(target.service, db=target.db, retry_on_timeout=False)
        # A cluster: keys are spread over its primaries by hash slot; what one script or
        # operation touches together shares a hash tag (`key(..., slot=...)`).
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
            cluster_error_retry_attempts=2,
            **common,
            **auth,
        )

    async def run(
        self,
        what: str,
        operation: Awaitable[T] | Callable[[], Awaitable[T]],
        *,
        write: bool = False,
    ) -> T | None:
        """The operation's result, or None when Redis is down, slow, full (a write) or
        refuses it. `operation` is a coroutine or a function making one; a coroutine not
        run (Redis known to be down) is closed, never left unawaited."""
        now = asyncio.get_running_loop().time()
        if (not self.up and now < self._retry_at) or (write and now < self._writes_paused_until):
            if inspect.iscoroutine(operation):
                operation.close()
            return None
        awaitable = operation() if callable(operation) else operation
        try:
            async with asyncio.timeout(self.timeout_s):
                result = await awaitable
        except OutOfMemoryError as exc:  # Redis is full: reads still work, writes wait
            self._pause_writes(str(exc))
            return None
        except (RedisError, OSError, TimeoutError) as exc:
            self.failed(what, exc)
            return None
        self.succeeded()
        return result

    def failed(self, what: str, exc: BaseException) -> None:
        """An operation failed (here, or one run outside `run`: a subscription's read)."""
        now = asyncio.get_running_loop().time()
        self._retry_at = now + RETRY_S
        if self.up:
            self.up = False
            self._down_since = now
            log.warning("redis_down", operation=what, error=f"{type(exc).__name__}: {exc}")

    def outage_s(self) -> float | None:
        """How long Redis has been unreachable; None while it is up."""
        if self.up or self._down_since is None:
            return None
        return asyncio.get_running_loop().time() - self._down_since

    def recovered_s(self) -> float | None:
        """How long ago the last outage ended; None while Redis is down or never was."""
        if not self.up or self._up_since is None:
            return None
        return asyncio.get_running_loop().time() - self._up_since

    def succeeded(self) -> None:
        if not self.up:
            self.up = True
            self._down_since = None
            self._up_since = asyncio.get_running_loop().time()
            log.info("redis_up")

    def _pause_writes(self, reason: str) -> None:
        now = asyncio.get_running_loop().time()
        if now >= self._writes_paused_until:
            log.warning("redis_writes_refused", reason=reason, pause_s=WRITE_PAUSE_S)
        self._writes_paused_until = now + WRITE_PAUSE_S

    def script(self, text: str) -> AsyncScript:
        """A Lua script, run with EVALSHA (loaded again if Redis forgot it)."""
        script: AsyncScript = self.client.register_script(text)
        return script

    async def follow(
        self,
        what: str,
        channels: Callable[[], list[str]],
        deliver: Callable[[dict[str, Any]], None],
        subscribed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Hands every message published on the `channels()` to `deliver`, for ever:
        subscribed again (to the channels then) a second after Redis fails or drops the
        subscription (a failover). `subscribed` runs after each subscription is made: what
        was published while there was none is lost, so a caller reads what it missed."""
        while True:
            pubsub = self.pubsub()
            try:
                await self.run("subscribe to " + what, pubsub.subscribe(*channels()))
                if self.up:  # subscribed (a failure, or Redis known down, marks it down)
                    if subscribed is not None:
                        await subscribed()
                    async for message in pubsub.listen():
                        deliver(message)
            except (RedisError, OSError) as exc:
                self.failed(what + " subscription", exc)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(RESUBSCRIBE_S)

    def pubsub(self) -> PubSub:
        """A subscription (on a cluster: through one node, which hears every node's
        publications)."""
        pubsub: PubSub = self.client.pubsub(ignore_subscribe_messages=True)
        return pubsub

    def key(self, *parts: Any, slot: str | None = None) -> str:
        """A key under the prefix. `slot`: a hash tag, so that keys a script touches
        together live in one hash slot of a cluster (harmless elsewhere)."""
        tag = "{" + slot + "}:" if slot else ""
        return self.prefix + tag + ":".join(str(part) for part in parts)

    async def close(self) -> None:
        await self.client.aclose()
        if self._sentinel is not None:
            for sentinel in self._sentinel.sentinels:
                await sentinel.aclose()
