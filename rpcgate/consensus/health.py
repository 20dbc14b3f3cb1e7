"""What rpcgate remembers about each upstream's recent behaviour; pure bookkeeping.

An upstream that rate-limits, runs out of quota or rejects our key is put in cooldown for
as long as its answer says; one that fails repeatedly for transient reasons is put in an
exponentially growing cooldown (a circuit breaker that half-opens when the cooldown ends:
the next call may try it again, and one success closes it).
"""

from __future__ import annotations

from dataclasses import dataclass

from rpcgate.rpc.errors import Classification, ErrorClass

# After this many consecutive transient failures the upstream is skipped for a while.
TRANSIENT_FAILURES_BEFORE_COOLDOWN = 3
TRANSIENT_COOLDOWN_BASE_S = 1.0
TRANSIENT_COOLDOWN_MAX_S = 30.0
# A latency average that forgets quickly: routing should react within a few calls.
LATENCY_EWMA_WEIGHT = 0.2
# p95 is estimated as the average plus this many mean deviations (about right for the
# long-tailed latencies of RPC providers, and cheap: two numbers per upstream).
P95_DEVIATIONS = 2.5


@dataclass
class UpstreamHealth:
    cooldown_until: float = 0.0  # monotonic seconds
    cooldown_reason: str = ""
    consecutive_failures: int = 0
    successes: int = 0
    failures: int = 0
    latency_ewma_s: float | None = None
    latency_dev_s: float = 0.0  # decaying mean absolute deviation of the latency
    in_flight: int = 0  # attempts under way now
    last_error: str = ""
    last_error_class: ErrorClass | None = None
    integrity_failures: int = 0  # answers that failed verification (chains[].verify)

    def is_available(self, now: float) -> bool:
        return now >= self.cooldown_until

    @property
    def latency_p95_s(self) -> float | None:
        if self.latency_ewma_s is None:
            return None
        return self.latency_ewma_s + P95_DEVIATIONS * self.latency_dev_s

    @property
    def error_rate(self) -> float:
        total = self.successes + self.failures
        return self.failures / total if total else 0.0


def record_success(health: UpstreamHealth, latency_s: float, calls: int = 1) -> None:
    """An answer (or `calls` answers of one upstream batch: one request, so one latency)."""
    health.successes += calls
    health.consecutive_failures = 0
    health.cooldown_until = 0.0
    health.cooldown_reason = ""
    record_latency(health, latency_s)


def record_latency(health: UpstreamHealth, latency_s: float) -> None:
    """An observed latency; also a lower bound for an attempt that lost to a hedge (it
    took at least that long), so a slow upstream's estimate rises although it never
    answered."""
    if health.latency_ewma_s is None:
        health.latency_ewma_s = latency_s
        return
    deviation = abs(latency_s - health.latency_ewma_s)
    health.latency_ewma_s += LATENCY_EWMA_WEIGHT * (latency_s - health.latency_ewma_s)
    health.latency_dev_s += LATENCY_EWMA_WEIGHT * (deviation - health.latency_dev_s)


def counts_against_health(error_class: ErrorClass) -> bool:
    """Failures that say something about the upstream, not about the call."""
    return error_class not in (
        ErrorClass.CLIENT,
        ErrorClass.REVERT,
        ErrorClass.TXPOOL,
        ErrorClass.UNSUPPORTED,
        ErrorClass.MISSING_DATA,
        ErrorClass.TOO_LARGE,
    )


def record_failure(health: UpstreamHealth, classification: Classification, now: float) -> None:
    if not counts_against_health(classification.error_class):
        return
    health.failures += 1
    health.consecutive_failures += 1
    if classification.error_class is ErrorClass.INTEGRITY:
        health.integrity_failures += 1
    health.last_error = classification.reason
    health.last_error_class = classification.error_class
    cooldown = classification.cooldown_s
    if cooldown is None and classification.error_class is ErrorClass.TRANSIENT:
        excess = health.consecutive_failures - TRANSIENT_FAILURES_BEFORE_COOLDOWN
        if excess >= 0:
            cooldown = min(TRANSIENT_COOLDOWN_BASE_S * 2**excess, TRANSIENT_COOLDOWN_MAX_S)
    if cooldown:
        until = now + cooldown
        if until > health.cooldown_until:
            health.cooldown_until = until
            health.cooldown_reason = f"{classification.error_class}: {classification.reason}"


def record_socket_failure(
    health: UpstreamHealth, classification: Classification, now: float
) -> None:
    """A failure of the upstream's WebSocket: counted. A verdict about the account (a
    rejected key, a quota, a rate limit) rests the whole upstream, as over HTTP; a dropped or
    refused socket does not cool the HTTP path, whose own calls say how it is."""
    if classification.error_class is not ErrorClass.TRANSIENT:
        record_failure(health, classification, now)
        return
    health.failures += 1
    health.last_error = classification.reason
    health.last_error_class = classification.error_class
