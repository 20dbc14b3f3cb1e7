"""Where cache entries live: an in-process LRU bounded in bytes, and Redis when configured.

Reads check memory, then Redis; writes go to memory at once and to Redis in the background,
so the answer is never delayed by Redis. Redis never breaks a request (the one outage
policy of `redis_client`): every operation has a short timeout, and while Redis is down
requests go on from memory and upstreams.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from rpcgate.config.settings import CacheConfig
from rpcgate.storage.cache_policy import ChainView, Entry, Lifetime, is_fresh, redis_key
from rpcgate.storage.redis_client import RedisLink

log = structlog.get_logger("rpcgate.cache")

# What an entry costs beyond the bytes of its key, its answer and the hashes it is checked
# against: those objects' headers, the Entry, the (entry, expires) pair and its float, and
# the OrderedDict's node and table slots (1.5 to 6 per entry, depending on when the tables
# last grew). tracemalloc measures 350-400 bytes of it; the rest is the allocator's
# rounding. tests/storage/test_cache_memory.py holds the count to what entries really take.
_ENTRY_OVERHEAD_BYTES = 480
_MAX_PENDING_WRITES = 1000  # background Redis writes; beyond that, writes are dropped

T = TypeVar("T")


def entry_cost(key: str, entry: Entry) -> int:
    """What keeping `entry` under `key` costs the process, in bytes: the figure the byte
    budget (`cache.memory_bytes`) is spent in."""
    hashes = len(entry.block_hash or "") + len(entry.head_hash or "")
    return len(key) + len(entry.result_json) + hashes + _ENTRY_OVERHEAD_BYTES


def resident_bytes() -> int | None:
    """The process's resident memory (RSS) now, shown beside the cache's own count: the
    figure a container's memory limit is enforced on. None where /proc is not (not Linux)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


class MemoryLRU:
    """Least recently used entries go first once the byte budget is spent, in what they
    really cost the process (`entry_cost`), not just the size of their answers."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        # key -> (entry, monotonic expiry); what it costs is `entry_cost`, not stored
        self._entries: OrderedDict[str, tuple[Entry, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, now: float) -> Entry | None:
        found = self._entries.get(key)
        if found is None:
            return None
        entry, expires = found
        if now >= expires:
            self.delete(key)
            return None
        self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: Entry, expires: float) -> None:
        cost = entry_cost(key, entry)
        if cost > self.max_bytes:
            return
        self.delete(key)
        self._entries[key] = (entry, expires)
        self.bytes += cost
        while self.bytes > self.max_bytes:
            old_key, (old_entry, _) = self._entries.popitem(last=False)
            self.bytes -= entry_cost(old_key, old_entry)

    def delete(self, key: str) -> None:
        found = self._entries.pop(key, None)
        if found is not None:
            self.bytes -= entry_cost(key, found[0])


class RedisTier:
    """The cache's entries in Redis, over the gateway's one client (`redis_client`): reads
    bounded by its timeout, writes in the background."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self.prefix = link.prefix
        self._writes: set[asyncio.Task[object]] = set()

    @property
    def up(self) -> bool:
        return self.link.up

    async def start(self) -> None:
        await self.link.run("ping", self.link.client.ping)

    async def close(self) -> None:
        for task in list(self._writes):
            task.cancel()
        await asyncio.gather(*self._writes, return_exceptions=True)

    async def get(self, key: str) -> Entry | None:
        name = redis_key(self.prefix, key)
        raw = await self.link.run("cache get", lambda: self.link.client.get(name))
        if not isinstance(raw, bytes):
            return None
        try:
            return Entry.from_bytes(raw)
        except (ValueError, TypeError):
            return None  # written by something else (or an older version): treat as absent

    def put_later(self, key: str, raw: bytes, ttl_s: float) -> None:
        """Queues the write; the answer does not wait for it."""
        if not self.up or len(self._writes) >= _MAX_PENDING_WRITES:
            return
        name = redis_key(self.prefix, key)
        ttl_ms = max(1, int(ttl_s * 1000))
        task: asyncio.Task[object] = asyncio.create_task(
            self.link.run(
                "cache set", lambda: self.link.client.set(name, raw, px=ttl_ms), write=True
            )
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)


class ResponseCache:
    """Both tiers behind one get/put, shared by every chain (keys carry the chain id)."""

    def __init__(self, config: CacheConfig, link: RedisLink | None = None) -> None:
        self.config = config
        self.memory = MemoryLRU(config.memory_bytes)
        self.redis = RedisTier(link) if link is not None else None
        self._ttl = {
            Lifetime.STATIC: config.ttl_static_s,
            Lifetime.FINALIZED: config.ttl_finalized_s,
            Lifetime.UNFINALIZED: config.ttl_unfinalized_s,
            Lifetime.HEAD: config.ttl_head_s,
        }

    async def start(self) -> None:
        if self.redis is not None:
            await self.redis.start()

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()

    def get_local(self, key: str, view: ChainView, counters: CacheCounters) -> Entry | None:
        """The in-process tier: no await, so a hit costs no trip through the event loop."""
        return self._fresh(key, self.memory.get(key, time.monotonic()), view, counters)

    async def get_shared(self, key: str, view: ChainView, counters: CacheCounters) -> Entry | None:
        """The Redis tier, asked after a local miss."""
        if self.redis is None:
            return None
        entry = await self.redis.get(key)
        if entry is None:
            return None
        counters.redis_hits += 1
        # Asked again soon, most likely: keep it here too, for a short while.
        self.memory.put(key, entry, time.monotonic() + self.config.ttl_head_s)
        return self._fresh(key, entry, view, counters)

    def _fresh(
        self, key: str, entry: Entry | None, view: ChainView, counters: CacheCounters
    ) -> Entry | None:
        if entry is None:
            return None
        if not is_fresh(entry, view):
            counters.stale_dropped += 1
            self.memory.delete(key)
            return None
        return entry

    def put(self, key: str, entry: Entry, lifetime: Lifetime) -> None:
        ttl = self._ttl[lifetime]
        self.memory.put(key, entry, time.monotonic() + ttl)
        if self.redis is not None:
            self.redis.put_later(key, entry.to_bytes(), ttl)


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0
    bypass: int = 0
    redis_hits: int = 0
    stores: int = 0
    stale_dropped: int = 0
    coalesced: int = 0


class Coalescer(Generic[T]):
    """Identical calls in flight at the same time share one upstream call."""

    def __init__(self) -> None:
        self._inflight: dict[str, asyncio.Future[T]] = {}

    async def run(
        self, key: str, fetch: Callable[[], Awaitable[T]], on_shared: Callable[[], None]
    ) -> T:
        shared = self._inflight.get(key)
        if shared is not None:
            on_shared()
            try:
                return await asyncio.shield(shared)
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if not shared.cancelled() or (current is not None and current.cancelling()):
                    raise
                # The caller we were waiting on went away; fetch for ourselves.
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await fetch()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: waiters, if any, re-raise it themselves
            raise
        else:
            future.set_result(result)
            return result
        finally:
            if self._inflight.get(key) is future:
                del self._inflight[key]
