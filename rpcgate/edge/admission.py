"""Admission: who is calling (`clients`), and whether they may call now (`ratelimit`).

One place for what every ingress (HTTP today, WebSocket next) asks before a call reaches a
chain, and for counting what it refused.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import Any

from rpcgate.config.settings import Config
from rpcgate.edge.clients import (
    Caller,
    Refusal,
    authenticate,
    client_address,
    is_limited,
    presented_key,
    trusted_networks,
)
from rpcgate.edge.rate_limits import ALLOWED, RateLimiter, Verdict
from rpcgate.rpc.masking import MASKER
from rpcgate.storage.redis_client import RedisLink


class Admission:
    def __init__(self, config: Config, link: RedisLink | None = None) -> None:
        self._auth = config.auth
        self._trusted = trusted_networks(config.limits.trusted_proxies)
        self._unlimited = trusted_networks(config.limits.unlimited_networks)
        self.limiter = RateLimiter(config.limits, link)
        # Calls refused before reaching a chain, by reason (status and metrics).
        self.refusals: collections.Counter[str] = collections.Counter()
        MASKER.add(*(client.key for client in config.auth.keys))  # never in a log or page
        limits = config.limits
        # Whether any limit is counted at all (else admit and leave are skipped).
        self.enforces = (
            limits.rate_per_s > 0
            or limits.max_concurrent_per_client > 0
            or any(k.rate_per_s for k in config.auth.keys)
        )
        # Whether a call over HTTP needs to know who makes it: to check a key, or to count
        # a limit. Without either, nothing reads the caller.
        self.identifies = bool(config.auth.keys) or self.enforces
        # Without keys a caller is its address alone: who (peer, X-Forwarded-For lines) was
        # is remembered, so a client's next call skips working it out again.
        self._by_address: dict[tuple[str | None, tuple[str, ...]], Caller] = {}

    def caller(
        self,
        *,
        path_key: str | None,
        headers: Mapping[str, str],
        query: Mapping[str, str],
        peer: str | None,
        chain_name: str,
        chain_id: int,
    ) -> Caller | Refusal:
        """Their key (when keys are configured), else their address; `limited` says
        whether the per-client limits apply (not to an address in limits.unlimited_networks)."""
        forwarded = _lines(headers, "X-Forwarded-For")
        remembers = not self._auth.keys and sum(map(len, forwarded)) <= _MAX_REMEMBERED_CHARS
        if remembers:
            known = self._by_address.get((peer, forwarded))
            if known is not None:
                return known
        address = client_address(peer, forwarded, self._trusted)
        caller: Caller = Caller("ip:" + address)
        if self._auth.keys:
            presented = presented_key(path_key, headers, query)
            verdict = authenticate(self._auth, presented, chain_name, chain_id)
            if isinstance(verdict, Refusal):
                self.refusals[verdict.reason] += 1
                return verdict
            if verdict is not None:
                caller = verdict
        if self._unlimited and not is_limited(caller, address, self._unlimited):
            caller = dataclasses.replace(caller, limited=False)
        if remembers:
            if len(self._by_address) >= _MAX_REMEMBERED:
                self._by_address.clear()  # they are worked out again on their next call
            self._by_address[peer, forwarded] = caller
        return caller

    def admit_now(self, caller: Caller, cost: int) -> Verdict | None:
        """As `admit` without `in_flight`, when that needs no wait (the common case: the
        replica's lease of the caller's tokens has them, or they are counted in process);
        None when it needs the next lease from Redis (then `admit`)."""
        if not caller.limited:
            return ALLOWED
        verdict = self.limiter.admit_now(caller, cost)
        if verdict is not None and not verdict.allowed:
            self.refusals[verdict.reason] += cost
        return verdict

    async def admit(self, caller: Caller, cost: int, *, in_flight: bool = True) -> Verdict:
        """Takes the caller's tokens for `cost` calls and, with `in_flight`, counts them as
        in flight until `leave`."""
        if not caller.limited:
            return ALLOWED
        verdict = self.limiter.admit_now(caller, cost)  # the common case: no wait
        if verdict is None:
            verdict = await self.limiter.admit(caller, cost)
        if verdict.allowed and in_flight:
            verdict = self.limiter.enter(caller, cost)
        if not verdict.allowed:
            self.refusals[verdict.reason] += cost
        return verdict

    def leave(self, caller: Caller, cost: int) -> None:
        if caller.limited:
            self.limiter.leave(caller, cost)

    @property
    def status(self) -> dict[str, Any]:
        return {
            "refusals": dict(self.refusals),
            "rate_limits_counted_in": self.limiter.counted_in,
        }


# How many callers `caller` remembers by address before it starts afresh, and the longest
# X-Forwarded-For it remembers one by (a client may send any, and each is a new entry).
_MAX_REMEMBERED = 10_000
_MAX_REMEMBERED_CHARS = 200


def _lines(headers: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Every line of a header field, in order (aiohttp's headers are a multidict)."""
    getall = getattr(headers, "getall", None)
    if getall is not None:
        return tuple(getall(name, ()))
    value = headers.get(name)
    return () if value is None else (value,)
