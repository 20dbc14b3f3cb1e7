"""Rate limits per client: token buckets, and a cap on calls in flight.

Each client (its key, or its address; see `clients.py`) has a bucket of `rate_burst`
tokens refilled at `rate_per_s`; each call takes one token, a batch one per item. With
Redis (`cache.redis_url`), the bucket lives there, so every replica counts together, but a
call does not wait on Redis: each replica holds a small *lease* of the client's tokens,
taken from the Redis bucket by one atomic script (on Redis's clock, so replicas' clocks do
not matter) and spent in process. A lease is `lease_size` tokens (a twentieth of a second
of the rate, at most a twentieth of the burst, at least one); a replica asks for the next
one in the background when half is spent, and a call waits on Redis only when its
replica's lease is empty (a new client, or one faster than the lease refills). A lease
lasts `LEASE_TTL_S` at most. So the tokens a client spends across replicas never exceed its
Redis bucket's, and fall short of it by at most what the leases hold: a lease per replica
the client calls through. Redis down or slow: the replica counts in process, says so once
in the log, and tries Redis again a second later. Limits never fall back to refusing
everyone.

`take` and `lease_size` are the decisions, pure; the classes around them are storage.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

import structlog

from rpcgate.config.settings import LimitsConfig
from rpcgate.edge.clients import Caller
from rpcgate.rpc import jsonrpc
from rpcgate.storage.redis_client import RedisLink

log = structlog.get_logger("rpcgate.limits")

# The JSON-RPC error of a refused call (HTTP 429): rpc.jsonrpc.LIMIT_EXCEEDED, -32005.
LIMIT_EXCEEDED = jsonrpc.LIMIT_EXCEEDED
_MAX_LOCAL_BUCKETS = 100_000  # beyond this, buckets already full again are forgotten
LEASE_TTL_S = 2.0  # a lease unspent for this long is dropped (its tokens would be stale)
_LEASE_SHARE = 0.05  # a lease: this share of the burst, and this many seconds of the rate


@dataclass(frozen=True, slots=True)
class Rate:
    per_s: float  # 0: no limit
    burst: int


@dataclass(slots=True)
class Bucket:
    tokens: float
    updated: float  # seconds, on the clock `take` was given


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_s: float | None = None  # None with a refusal: waiting will not help
    message: str = ""
    reason: str = ""  # a refusal's kind, for metrics: rate_limit | batch_over_burst | in_flight


ALLOWED = Verdict(True)


def take(bucket: Bucket | None, rate: Rate, cost: int, now: float) -> tuple[Bucket, float]:
    """The bucket after trying to take `cost` tokens, and the wait: 0 when they were taken,
    else how long until they would be there (and nothing is taken)."""
    if bucket is None:
        tokens = float(rate.burst)
    else:
        tokens = min(float(rate.burst), bucket.tokens + max(0.0, now - bucket.updated) * rate.per_s)
    if tokens >= cost:
        return Bucket(tokens - cost, now), 0.0
    return Bucket(tokens, now), (cost - tokens) / rate.per_s


def lease_size(rate: Rate) -> int:
    """How many tokens a replica takes from Redis at once for a client."""
    return max(1, min(int(rate.burst * _LEASE_SHARE), math.ceil(rate.per_s * _LEASE_SHARE)))


@dataclass(slots=True)
class Lease:
    """The tokens a replica holds of a client's Redis bucket."""

    tokens: float = 0.0
    taken_at: float = 0.0  # monotonic: when the last tokens came
    empty_until: float = 0.0  # monotonic: Redis said none are to be had before then
    refill: asyncio.Future[None] | None = None


def rate_for(caller: Caller, limits: LimitsConfig) -> Rate:
    key = caller.key
    per_s = limits.rate_per_s if key is None or key.rate_per_s is None else key.rate_per_s
    burst = limits.rate_burst if key is None or key.rate_burst is None else key.rate_burst
    return Rate(per_s, burst)


# KEYS[1]: the client's bucket; ARGV: rate per second, burst, the tokens wanted, the tokens
# needed at least. Takes as many as are there up to `wanted` if `needed` are; returns
# {taken, "0"}, or {0, wait in seconds until `needed` are there} (as text: Lua numbers
# become integers).
_LEASE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local needed = tonumber(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1])
if tokens == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - tonumber(state[2])) * rate)
end
local taken = 0
local wait = 0
if tokens >= needed then
  taken = math.min(wanted, math.floor(tokens))
  tokens = tokens - taken
else
  wait = (needed - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {taken, tostring(wait)}
"""


class RateLimiter:
    def __init__(self, limits: LimitsConfig, link: RedisLink | None = None) -> None:
        self.limits = limits
        self._buckets: dict[str, Bucket] = {}
        self._in_flight: dict[str, int] = {}
        self._link = link
        self._script = link.script(_LEASE) if link is not None else None
        self._leases: dict[str, Lease] = {}
        self._prefix = link.prefix if link is not None else ""
        self.shared = link is not None  # False while Redis is down
        self._default_rate = Rate(limits.rate_per_s, limits.rate_burst)

    @property
    def counted_in(self) -> str:
        """Where buckets are counted now (status and metrics): redis | process."""
        return "redis" if self.shared else "process"

    def admit_now(self, caller: Caller, cost: int) -> Verdict | None:
        """The verdict when it needs no wait on Redis (the common case: the replica's
        lease of the client's tokens has them, or buckets are counted in process), else
        None: `admit` waits for the next lease."""
        key = caller.key
        rate = (
            self._default_rate
            if key is None or (key.rate_per_s is None and key.rate_burst is None)
            else rate_for(caller, self.limits)
        )
        if rate.per_s <= 0:
            return ALLOWED
        if cost > rate.burst:
            return _over_burst(cost, rate)
        if self._script is not None:
            lease = self._leases.get(caller.identity)
            if lease is None or lease.tokens < cost:
                return None
            now = time.monotonic()
            if now - lease.taken_at > LEASE_TTL_S:
                return None  # stale: the next lease decides
            lease.tokens -= cost
            low = lease.tokens < lease_size(rate) / 2
            if low and lease.refill is None and now >= lease.empty_until:
                lease.refill = asyncio.ensure_future(self._refill(caller.identity, lease, rate, 1))
            return ALLOWED
        return self._counted_here(caller.identity, rate, cost)

    async def admit(self, caller: Caller, cost: int) -> Verdict:
        """Takes `cost` tokens from the caller's bucket, or says how long to wait."""
        rate = rate_for(caller, self.limits)
        if rate.per_s <= 0:
            return ALLOWED
        if cost > rate.burst:
            return _over_burst(cost, rate)
        wait = await self._leased_wait(caller.identity, rate, cost)
        if wait is None:
            return self._counted_here(caller.identity, rate, cost)
        return ALLOWED if wait <= 0 else _too_fast(rate, wait)

    def _counted_here(self, identity: str, rate: Rate, cost: int) -> Verdict:
        """The verdict of the bucket this process keeps (no Redis, or Redis down)."""
        bucket, wait = take(self._buckets.get(identity), rate, cost, time.monotonic())
        self._remember(identity, bucket)
        return ALLOWED if wait <= 0 else _too_fast(rate, wait)

    async def _leased_wait(self, identity: str, rate: Rate, cost: int) -> float | None:
        """0 when the replica's lease of the client's tokens had `cost` of them (taken), else
        the wait Redis says; None when Redis is not there (count in process)."""
        if self._script is None:
            return None
        lease = self._leases.get(identity)
        if lease is None:
            if len(self._leases) >= _MAX_LOCAL_BUCKETS:
                self._forget_leases()
            lease = self._leases[identity] = Lease()
        size = lease_size(rate)
        for _ in range(2):  # the lease, then the lease once refilled for this call
            now = time.monotonic()
            if now - lease.taken_at > LEASE_TTL_S:
                lease.tokens = 0.0
            if lease.tokens >= cost:
                lease.tokens -= cost
                if lease.tokens < size / 2 and lease.refill is None and now >= lease.empty_until:
                    lease.refill = asyncio.ensure_future(self._refill(identity, lease, rate, 1))
                return 0.0
            if now < lease.empty_until:
                return lease.empty_until - now
            if lease.refill is None:
                needed = math.ceil(cost - max(0.0, lease.tokens))
                lease.refill = asyncio.ensure_future(self._refill(identity, lease, rate, needed))
            await asyncio.shield(lease.refill)
            if not self.shared:
                return None
        now = time.monotonic()
        return max(lease.empty_until - now, 1.0 / max(rate.per_s, 1e-9))

    async def _refill(self, identity: str, lease: Lease, rate: Rate, needed: float) -> None:
        """Takes the next lease from the client's Redis bucket (background, or awaited by
        the calls that found the lease empty)."""
        try:
            script = self._script
            assert script is not None and self._link is not None
            wanted = max(lease_size(rate), math.ceil(needed))
            taken = await self._link.run(
                "rate limit",
                lambda: script(
                    keys=[f"{self._prefix}rl:{identity}"],
                    args=[repr(rate.per_s), rate.burst, wanted, repr(needed)],
                ),
            )
            if taken is None:
                if self.shared:
                    self.shared = False
                    log.warning(
                        "rate_limits_local",
                        reason="Redis is down (redis_down)",
                        effect="each replica counts its own calls until Redis answers again",
                    )
                self._leases.clear()
                return
            if not self.shared:
                self.shared = True
                log.info("rate_limits_shared")
            granted, wait = int(taken[0]), float(taken[1])
            now = time.monotonic()
            if granted > 0:
                lease.tokens = max(0.0, lease.tokens) + granted
                lease.taken_at = now
                lease.empty_until = 0.0
            else:
                lease.empty_until = now + max(wait, 1.0 / max(rate.per_s, 1e-9))
        except Exception:  # a bug must not leave the client's lease refilling for good
            log.exception("rate_limit_lease_failed")
        finally:
            lease.refill = None

    def _forget_leases(self) -> None:
        """Beyond the bound: leases not refilled lately go (their tokens are stale soon)."""
        now = time.monotonic()
        stale = [k for k, v in self._leases.items() if now - v.taken_at > LEASE_TTL_S]
        for name in stale or list(self._leases)[: len(self._leases) // 2]:
            if self._leases[name].refill is None:
                del self._leases[name]

    def _remember(self, identity: str, bucket: Bucket) -> None:
        buckets = self._buckets
        if identity not in buckets and len(buckets) >= _MAX_LOCAL_BUCKETS:
            # Forget clients whose bucket has refilled: they start full anyway.
            now = time.monotonic()
            per_s = max(self.limits.rate_per_s, 1e-9)
            full = [
                name
                for name, b in buckets.items()
                if b.tokens + (now - b.updated) * per_s >= self.limits.rate_burst
            ]
            for name in full or list(buckets)[: len(buckets) // 2]:
                del buckets[name]
        buckets[identity] = bucket

    def enter(self, caller: Caller, cost: int) -> Verdict:
        """Counts `cost` calls in flight for the caller, unless that passes the cap."""
        cap = self.limits.max_concurrent_per_client
        now = self._in_flight.get(caller.identity, 0)
        if cap and now + cost > cap and now > 0:
            return Verdict(
                False,
                0.1,
                f"too many calls in flight: {now} of this client's are being answered, the "
                f"limit is {cap} (limits.max_concurrent_per_client)",
                "in_flight",
            )
        self._in_flight[caller.identity] = now + cost
        return ALLOWED

    def leave(self, caller: Caller, cost: int) -> None:
        left = self._in_flight.get(caller.identity, 0) - cost
        if left > 0:
            self._in_flight[caller.identity] = left
        else:
            self._in_flight.pop(caller.identity, None)


def _over_burst(cost: int, rate: Rate) -> Verdict:
    return Verdict(
        False,
        None,
        f"a batch of {cost} calls is more than this client may send at once "
        f"({rate.burst}, limits.rate_burst)",
        "batch_over_burst",
    )


def _too_fast(rate: Rate, wait: float) -> Verdict:
    return Verdict(
        False,
        wait,
        f"rate limit exceeded: {rate.per_s:g} calls per second with bursts of "
        f"{rate.burst} per client (limits.rate_per_s); retry after {wait:.2f} s",
        "rate_limit",
    )


def retry_after_header(wait_s: float | None) -> dict[str, str]:
    """HTTP's Retry-After is whole seconds; the JSON-RPC error's data has the exact wait."""
    return {} if wait_s is None else {"Retry-After": str(max(1, math.ceil(wait_s)))}
