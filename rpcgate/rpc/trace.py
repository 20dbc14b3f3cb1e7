"""What one call's routing did, for `X-Rpcgate-Trace: 1`: the upstreams considered with
their scores, the ones excluded and why, and every attempt and hedge. Plain data, filled
in only when a trace was asked for: the candidates by `failover`, each attempt by
`attempt` (failover's, a quorum's, a broadcast's alike)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HEADER_TRACE = "X-Rpcgate-Trace"


@dataclass
class CallTrace:
    block: int | None = None  # the block routing served the call at
    considered: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    answered_by: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "answered_by": self.answered_by,
            "block": self.block,
            "considered": self.considered,
            "excluded": self.excluded,
            "attempts": self.attempts,
        }


def wants_trace(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes")
