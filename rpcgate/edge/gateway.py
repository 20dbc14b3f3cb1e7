"""The running gateway, without HTTP: its chains (addressable by name and id), the cache,
the state replicas share through Redis, outage drills and metrics. Who may call it (keys,
rate limits, CORS) is the ingress's concern (`ingress.py`); the HTTP server and, later,
other fronts hand calls to it.
"""

from __future__ import annotations

import asyncio

from rpcgate.chain.filters import FilterStore
from rpcgate.chain.runtime import ChainRuntime
from rpcgate.config.settings import ChainConfig, Config
from rpcgate.consensus.drills import Drills
from rpcgate.ops.metrics import GatewayMetrics
from rpcgate.rpc.masking import MASKER
from rpcgate.storage.redis_client import RedisLink
from rpcgate.storage.response_cache import ResponseCache
from rpcgate.storage.shared_events import SharedEvents
from rpcgate.storage.shared_head import SharedHeads
from rpcgate.storage.shared_state import SharedState


class Gateway:
    """The running chains, addressable by name, by chain id, and (the first) by '/'."""

    def __init__(self, config: Config) -> None:
        self.config = config
        cache = config.cache
        # The one Redis client (and outage policy) of everything replicas share.
        self.redis: RedisLink | None = None
        if cache.redis_url:
            MASKER.add_url(cache.redis_url)  # a Redis password never shows
            self.redis = RedisLink(cache.redis_url, cache.redis_prefix, cache.redis_timeout_s)
        self.cache = ResponseCache(cache, self.redis)
        self.draining = False  # SIGTERM: /readyz says 503 while calls in flight finish
        self.drills = Drills()  # outage drills (admin.py): drained upstreams go last
        # Filters live in the gateway; with Redis, every replica serves every filter.
        self.shared_state = SharedState(self.redis) if self.redis is not None else None
        # With Redis, what an operator does through one replica reaches all (drills).
        self.shared_events = SharedEvents(self.redis) if self.redis is not None else None
        self.filter_store = FilterStore(self.shared_state, config.filters)
        # With Redis, replicas share the highest head served (see shared_head.py).
        self.shared_heads = (
            SharedHeads(self.redis, cache.shared_head_hold_s) if self.redis is not None else None
        )
        self._retiring: set[asyncio.Task[None]] = set()  # chains replaced by a reload
        self.chains: list[ChainRuntime] = []
        self._by_path: dict[str, ChainRuntime] = {}
        self.set_chains([self.runtime_for(chain, config) for chain in config.chains])
        self.metrics = GatewayMetrics(self)

    def runtime_for(self, chain: ChainConfig, config: Config) -> ChainRuntime:
        return ChainRuntime(
            chain,
            config.failover,
            cache=self.cache,
            max_response_bytes=config.limits.max_response_bytes,
            max_concurrent_upstream_calls=config.limits.max_concurrent_upstream_calls,
            shared_heads=self.shared_heads,
            filter_store=self.filter_store,
            drills=self.drills,
            shared_state=self.shared_state,
        )

    def set_chains(self, chains: list[ChainRuntime]) -> None:
        """Serve these chains from now on (a reload swaps them in one step)."""
        by_path = {}
        for runtime in chains:
            for alias in runtime.config.aliases:
                by_path[alias] = runtime
        for runtime in chains:  # a name or chain id wins over another chain's alias
            by_path[runtime.config.name] = runtime
            by_path[str(runtime.config.chain_id)] = runtime
        self.chains, self._by_path = chains, by_path

    def chain_for(self, path: str | None) -> ChainRuntime | None:
        if not path:
            return self.chains[0]
        return self._by_path.get(path)

    def served_paths(self) -> list[str]:
        return [f"/{c.config.name} (/{c.config.chain_id})" for c in self.chains]

    async def start(self) -> None:
        # Chains start together: each waits for one head-poll round before serving.
        await asyncio.gather(self.cache.start(), self._start_chains())

    async def _start_chains(self) -> None:
        if self.shared_heads is not None:  # the head other replicas serve, before the first poll
            await self.shared_heads.start()
        if self.shared_events is not None:
            await self.shared_events.start()
        await asyncio.gather(*(runtime.start() for runtime in self.chains))

    def retire(self, runtimes: list[ChainRuntime], after_s: float) -> None:
        """Close runtimes no longer served once the calls they carry are over."""

        async def close_later() -> None:
            try:
                for runtime in runtimes:
                    await runtime.tracker.stop()  # nothing routes by its heads any more
                await asyncio.sleep(after_s)
            finally:
                for runtime in runtimes:
                    await runtime.close()

        task = asyncio.create_task(close_later(), name="retire-chains")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for runtime in self.chains:
            await runtime.close()
        if self.shared_heads is not None:
            await self.shared_heads.close()
        if self.shared_events is not None:
            await self.shared_events.close()
        await self.cache.close()
        if self.redis is not None:
            await self.redis.close()
