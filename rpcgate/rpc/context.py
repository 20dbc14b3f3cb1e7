"""One call's context: what every layer of its path needs, in one object instead of flags
threaded through five signatures. Above all the one end-to-end deadline: from the moment
the request arrives, `failover.deadline_s` for everything the call does (waiting for a
shared head, holding for a block, a quorum's asks, the attempts of failover, the parts of a
wide eth_getLogs), so no step starts its own clock."""

from __future__ import annotations

import dataclasses
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class CallContext:
    deadline: float  # time.monotonic() by which the call is answered, whatever it does
    started: float  # time.perf_counter() when the request arrived (latency metrics)
    read_cache: bool = True  # False: the client asked for a fresh answer (no-cache)
    asked_locally: bool = False  # the edge already tried what the gateway has in hand
    trace: bool = False  # X-Rpcgate-Trace: the answer carries what routing did
    # A call the gateway makes for itself (the verifier's headers, receipts and proofs): its
    # cache hits and misses are not counted as a client's.
    own: bool = False

    @classmethod
    def arriving(
        cls,
        budget_s: float,
        *,
        started: float | None = None,
        read_cache: bool = True,
        asked_locally: bool = False,
        trace: bool = False,
    ) -> CallContext:
        """A call arriving now (or at `started`) with `budget_s` to be answered."""
        return cls(
            time.monotonic() + budget_s,
            time.perf_counter() if started is None else started,
            read_cache,
            asked_locally,
            trace,
        )

    def left_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def within(self, wait_s: float) -> float:
        """`wait_s`, or less when the deadline comes first."""
        return min(wait_s, self.left_s())

    def part(self) -> CallContext:
        """The context of a call made as part of this one (a part of a wide eth_getLogs, the
        proof behind a proven balance): its deadline, no trace of its own."""
        return dataclasses.replace(self, asked_locally=False, trace=False)

    def for_item(self) -> CallContext:
        """The context of one item of a batch (never asked locally: the edge did not)."""
        return dataclasses.replace(self, asked_locally=False) if self.asked_locally else self


# The call being served where a call is made on its behalf (the verifier's anchors): so
# that it shares that call's deadline without a context threaded through the verifier.
CURRENT_CALL: ContextVar[CallContext | None] = ContextVar("rpcgate_call", default=None)


@dataclass(slots=True)
class ClientBatch:
    """The calls of one client batch, answered together."""

    # What its calls, made at one moment, may work out once for all (failover: the
    # upstreams that may serve a block, with their scores).
    shared: dict[Any, Any] = field(default_factory=dict)
    # Each call's pinning and cache plan, found once (the chain's), by the call's identity.
    prepared: dict[int, Any] = field(default_factory=dict)


# Set (by answers.py) while the items of one client batch are answered. Tasks copy the
# context they are made in, so every attempt and hedge of those items sees it, and nothing
# else does: single calls and head polls go out alone, without waiting a loop turn.
CLIENT_BATCH: ContextVar[ClientBatch | None] = ContextVar("rpcgate_client_batch", default=None)
