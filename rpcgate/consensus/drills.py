"""Outage drills: upstreams taken out of rotation on purpose, for a while (pure bookkeeping).

An operator drains one upstream, or a whole failure domain, for a number of seconds (through
the admin endpoint, `admin.py`) to see the gateway serve on without it. The failover treats
a drained upstream like one at rest: tried only when nothing else is left, so a drill never
costs a call that another upstream could answer. A drill ends by itself: everything here is
over `time.monotonic()`, and a drill past its end counts for nothing even before `expire`
removes it (and logs its end).

A target is one upstream or one domain, in one chain or (without `chain`) in every chain
where that name occurs. One drill per target: draining a target again replaces its drill,
so a drill can be extended or shortened. Drills on different targets may overlap (an
upstream and its domain); an upstream is out for as long as the longest of them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

import structlog

log = structlog.get_logger("rpcgate.drills")

UPSTREAM = "upstream"
DOMAIN = "domain"
MIN_SECONDS = 1.0
MAX_SECONDS = 86400.0  # a day: a drill forgotten over a weekend still ends


@dataclass(frozen=True, slots=True)
class Target:
    """What a drill takes out of rotation."""

    kind: Literal["upstream", "domain"]
    name: str
    chain: str | None = None  # None: wherever the name occurs

    def covers(self, upstream: str, domain: str, chain: str | None) -> bool:
        """`chain` None: the caller does not say, so a drill scoped to a chain counts too."""
        if self.chain is not None and chain is not None and self.chain != chain:
            return False
        return self.name == (upstream if self.kind == UPSTREAM else domain)

    def describe(self) -> str:
        where = "" if self.chain is None else f" on {self.chain}"
        return f"{self.kind} {self.name}{where}"


@dataclass(frozen=True, slots=True)
class Drill:
    id: str
    target: Target
    seconds: float
    started_at: float  # monotonic
    ends_at: float  # monotonic
    started_wall: float  # time.time(), for people
    by: str = ""
    reason: str = ""

    def left_s(self, now: float) -> float:
        return max(0.0, self.ends_at - now)

    def as_dict(self, now: float) -> dict[str, Any]:
        """What the admin endpoint and status.json show of a drill."""
        left = self.left_s(now)
        return {
            "id": self.id,
            self.target.kind: self.target.name,
            "chain": self.target.chain,
            "target": self.target.describe(),
            "seconds": self.seconds,
            "seconds_left": round(left, 3),
            "started": _iso(self.started_wall),
            "ends": _iso(time.time() + left),
            "by": self.by,
            "reason": self.reason,
        }


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


class Drills:
    """The drills of one gateway. The event loop is the only writer (no lock needed)."""

    def __init__(self) -> None:
        self._by_target: dict[Target, Drill] = {}

    def start(
        self,
        target: Target,
        seconds: float,
        now: float,
        *,
        by: str = "",
        reason: str = "",
        wall: float | None = None,
        drill_id: str | None = None,
    ) -> Drill:
        """Drains `target` for `seconds` from `now`, replacing a drill on the same target."""
        if not MIN_SECONDS <= seconds <= MAX_SECONDS:
            raise ValueError(f"seconds must be {MIN_SECONDS:g} to {MAX_SECONDS:g}, not {seconds}")
        self.expire(now)
        previous = self._by_target.pop(target, None)
        if previous is not None:
            self._ended(previous, now, "replaced")
        drill = Drill(
            id=drill_id or secrets.token_hex(4),  # another worker's id for the same drill
            target=target,
            seconds=seconds,
            started_at=now,
            ends_at=now + seconds,
            started_wall=time.time() if wall is None else wall,
            by=by,
            reason=reason,
        )
        self._by_target[target] = drill
        log.info(
            "drill_started",
            drill=drill.id,
            target=target.describe(),
            seconds=seconds,
            by=by,
            reason=reason,
        )
        return drill

    def end(
        self, now: float, *, drill_id: str | None = None, target: Target | None = None
    ) -> Drill | None:
        """Ends a drill early, named by its id or its target; None when no such drill runs."""
        self.expire(now)
        for drill in list(self._by_target.values()):
            if drill.id == drill_id or drill.target == target:
                del self._by_target[drill.target]
                self._ended(drill, now, "ended early")
                return drill
        return None

    def expire(self, now: float) -> list[Drill]:
        """Removes (and logs) the drills whose time is up."""
        over = [d for d in self._by_target.values() if d.ends_at <= now]
        for drill in over:
            del self._by_target[drill.target]
            self._ended(drill, now, "expired")
        return over

    def active(self, now: float) -> list[Drill]:
        """The drills running now, the one ending first first."""
        self.expire(now)
        return sorted(self._by_target.values(), key=lambda d: (d.ends_at, d.id))

    def next_end(self) -> float | None:
        return min((d.ends_at for d in self._by_target.values()), default=None)

    def drained_for(
        self, upstream: str, domain: str, now: float, chain: str | None = None
    ) -> float:
        """Seconds this upstream is still out of rotation (0.0: it is in rotation); `now` is
        time.monotonic(). Without `chain`, a drill scoped to one chain counts everywhere."""
        if not self._by_target:  # the call path: no drill, no work
            return 0.0
        drill = self.drill_for(upstream, domain, now, chain)
        return 0.0 if drill is None else drill.left_s(now)

    def drill_for(
        self, upstream: str, domain: str, now: float, chain: str | None = None
    ) -> Drill | None:
        """The drill keeping this upstream out longest, if any (what status shows)."""
        longest = None
        for drill in self._by_target.values():
            if (
                drill.ends_at > now
                and drill.target.covers(upstream, domain, chain)
                and (longest is None or drill.ends_at > longest.ends_at)
            ):
                longest = drill
        return longest

    def _ended(self, drill: Drill, now: float, why: str) -> None:
        log.info(
            "drill_ended",
            drill=drill.id,
            target=drill.target.describe(),
            seconds=drill.seconds,
            ran_s=round(min(now, drill.ends_at) - drill.started_at, 3),
            why=why,
        )
