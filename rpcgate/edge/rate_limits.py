"""Rate limits per client: token buckets, and a cap on calls in flight.

Each client (its key, or its address; see `clients.py`) has a bucket of `rate_burst`
tokens refilled at `rate_per_s`; each call takes one token, a batch one per item. With
Redis (`cache.redis_url`), the bucket lives there and one atomic script takes the tokens,
so every replica counts together; the script reads Redis's clock, so replicas' clocks do
not matter. Redis down or slow: the replica counts in process, says so once in the log,
and tries Redis again a second later. Limits never fall back to refusing everyone.

`take` is the whole decision, pure; the classes around it are storage.
"""

from __future__ import annotations

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


def rate_for(caller: Caller, limits: LimitsConfig) -> Rate:
    key = caller.key
    per_s = limits.rate_per_s if key is None or key.rate_per_s is None else key.rate_per_s
    burst = limits.rate_burst if key is None or key.rate_burst is None else key.rate_burst
    return Rate(per_s, burst)


# KEYS[1]: the client's bucket; ARGV: rate per second, burst, cost. Returns {1, "0"} when
# the tokens were taken, else {0, wait in seconds} (as text: Lua numbers become integers).
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 't', 'u')
local tokens = tonumber(state[1])
if tokens == nil then
  tokens = burst
else
  tokens = math.min(burst, tokens + math.max(0, now - tonumber(state[2])) * rate)
end
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'u', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


class RateLimiter:
    def __init__(self, limits: LimitsConfig, link: RedisLink | None = None) -> None:
        self.limits = limits
        self._buckets: dict[str, Bucket] = {}
        self._in_flight: dict[str, int] = {}
        self._link = link
        self._script = link.script(_TAKE) if link is not None else None
        self._prefix = link.prefix if link is not None else ""
        self.shared = link is not None  # False while Redis is down

    @property
    def counted_in(self) -> str:
        """Where buckets are counted now (status and metrics): redis | process."""
        return "redis" if self.shared else "process"

    async def admit(self, caller: Caller, cost: int) -> Verdict:
        """Takes `cost` tokens from the caller's bucket, or says how long to wait."""
        rate = rate_for(caller, self.limits)
        if rate.per_s <= 0:
            return ALLOWED
        if cost > rate.burst:
            return Verdict(
                False,
                None,
                f"a batch of {cost} calls is more than this client may send at once "
                f"({rate.burst}, limits.rate_burst)",
                "batch_over_burst",
            )
        wait = await self._shared_wait(caller, rate, cost)
        if wait is None:
            bucket, wait = take(self._buckets.get(caller.identity), rate, cost, time.monotonic())
            self._remember(caller.identity, bucket)
        if wait <= 0:
            return ALLOWED
        return Verdict(
            False,
            wait,
            f"rate limit exceeded: {rate.per_s:g} calls per second with bursts of "
            f"{rate.burst} per client (limits.rate_per_s); retry after {wait:.2f} s",
            "rate_limit",
        )

    async def _shared_wait(self, caller: Caller, rate: Rate, cost: int) -> float | None:
        """The wait Redis decided, or None when Redis is not there (count in process)."""
        if self._script is None or self._link is None:
            return None
        script = self._script
        taken = await self._link.run(
            "rate limit",
            lambda: script(
                keys=[f"{self._prefix}rl:{caller.identity}"],
                args=[repr(rate.per_s), rate.burst, cost],
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
            return None
        if not self.shared:
            self.shared = True
            log.info("rate_limits_shared")
        allowed, wait = taken
        return 0.0 if int(allowed) == 1 else float(wait)

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


def retry_after_header(wait_s: float | None) -> dict[str, str]:
    """HTTP's Retry-After is whole seconds; the JSON-RPC error's data has the exact wait."""
    return {} if wait_s is None else {"Retry-After": str(max(1, math.ceil(wait_s)))}
