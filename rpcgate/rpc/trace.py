"""What one call's routing did, for `X-Rpcgate-Trace: 1`: the upstreams considered with
their scores, the ones excluded and why, and every attempt and hedge. Plain data, filled
in only when a trace was asked for: the candidates by `failover`, each attempt by
`attempt` (failover's, a quorum's, a broadcast's alike)."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

HEADER_TRACE = "X-Rpcgate-Trace"
# Where the checks of the answer being verified write how they anchored it (set by failover
# around a check, when a trace was asked for; None otherwise).
VERIFICATION_NOTES: ContextVar[list[str] | None] = ContextVar("verification_notes", default=None)


@dataclass
class CallTrace:
    block: int | None = None  # the block routing served the call at
    considered: list[dict[str, Any]] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    answered_by: str = ""
    verification: list[str] = field(default_factory=list)  # how the answer was anchored

    def as_json(self) -> dict[str, Any]:
        traced: dict[str, Any] = {
            "answered_by": self.answered_by,
            "block": self.block,
            "considered": self.considered,
            "excluded": self.excluded,
            "attempts": self.attempts,
        }
        if self.verification:
            traced["verification"] = self.verification
        return traced


def note_verification(text: str) -> None:
    """A step of the check of the answer being traced (an anchor, an execution)."""
    notes = VERIFICATION_NOTES.get()
    if notes is not None and len(notes) < _NOTES_KEPT:
        notes.append(text)


_NOTES_KEPT = 64


def wants_trace(value: str | None) -> bool:
    return value is not None and value.strip().lower() in ("1", "true", "yes")
