"""Carry one call to an answer: attempts over upstreams, with failover, under a deadline.

tenacity drives the attempts; which upstreams may serve the call and in which order is
`routing`'s decision, what a failure means is `errors`' decision, and what it does to the
upstream's standing is `health`'s. This module only strings them together.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from eth_utils import keccak
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt

from rpcgate.config import FailoverConfig
from rpcgate.errors import Classification, ErrorClass, classify
from rpcgate.health import record_failure, record_success
from rpcgate.jsonrpc import ALL_UPSTREAMS_FAILED, DEADLINE_EXCEEDED, NO_UPSTREAM, Call, rpc_error
from rpcgate.masking import MASKER
from rpcgate.methods import ALREADY_KNOWN_MESSAGES, Kind, method_info
from rpcgate.routing import Candidate, attempt_order, block_fit, next_candidate
from rpcgate.tracker import HeadTracker
from rpcgate.upstream import Reply, Upstream

log = structlog.get_logger("rpcgate.failover")

# An upstream's own error is more useful to the caller than ours when every upstream said
# the same kind of thing about the call (method unsupported, block missing, range too big).
_ERRORS_ABOUT_THE_CALL = frozenset(
    {ErrorClass.UNSUPPORTED, ErrorClass.MISSING_DATA, ErrorClass.TOO_LARGE}
)
# Failures worth a second try on the same upstream once all have been tried.
_MAY_NOT_REPEAT = frozenset({ErrorClass.TRANSIENT, ErrorClass.RATE_LIMITED})
_SECOND_ROUND_BACKOFF_S = 0.05
_DETAIL_CHARS = 200  # of an upstream's error text, kept in a failed call's `data.attempts`


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt of a call on an upstream, as the metrics and the call log read it."""

    upstream: str
    error_class: ErrorClass | None  # None: the upstream answered
    latency_s: float


@dataclass(slots=True)
class Outcome:
    result: Any = None
    error: dict[str, Any] | None = None
    upstream: str = "gateway"
    attempts: int = 0
    cache: str = "bypass"  # hit | miss | bypass
    result_json: bytes | None = None  # a cached result, already encoded
    block: int | None = None  # the block the answer is about, where there is one
    attempt_log: tuple[Attempt, ...] = ()  # the upstream attempts, in order
    # Set once the metrics counted `attempt_log`: callers coalesced onto one upstream call
    # share this Outcome, and its attempts happened once.
    attempts_counted: bool = False


@dataclass
class _CallState:
    call: Call
    order: list[Candidate]
    deadline: float
    tried: list[str] = field(default_factory=list)
    exhausted: set[str] = field(default_factory=set)
    failed_domains: set[str] = field(default_factory=set)
    history: list[dict[str, str]] = field(default_factory=list)
    call_errors: list[tuple[ErrorClass, dict[str, Any]]] = field(default_factory=list)
    attempt_log: list[Attempt] = field(default_factory=list)


@dataclass(slots=True)
class _Step:
    outcome: Outcome
    retry: bool


class Failover:
    """Spreads the calls of one chain over its upstreams."""

    def __init__(
        self, upstreams: dict[str, Upstream], tracker: HeadTracker, config: FailoverConfig
    ) -> None:
        self.upstreams = upstreams
        self.tracker = tracker
        self.config = config
        self._rotation = itertools.count()

    def _candidates(self, now: float, block: int | None) -> list[Candidate]:
        candidates = []
        for upstream in self.upstreams.values():
            view = self.tracker.views[upstream.name]
            head = view.head.number if view.head is not None else None
            fit = block_fit(view.state, view.chain_id_ok is True, head, view.agreed_height, block)
            if fit is not False:
                candidates.append(
                    Candidate(
                        upstream.name,
                        upstream.domain,
                        upstream.health.is_available(now),
                        last_resort=fit is None,
                    )
                )
        return candidates

    def _nobody_serves(self, block: int | None) -> Outcome:
        states = "; ".join(f"{v.name}: {v.state} ({v.reason})" for v in self.tracker.views.values())
        about = "" if block is None else f" block {block}"
        return Outcome(
            error=rpc_error(NO_UPSTREAM, f"no upstream can serve{about} now: {MASKER.mask(states)}")
        )

    async def run(self, call: Call, block: int | None, head: int | None) -> Outcome:
        """Attempts over the upstreams that may serve `block`, until one answers, the call
        is shown to be the caller's problem, or the attempts or the deadline run out."""
        now = time.monotonic()
        # About the head, an unknown height, or a block nobody has yet: ask in-sync upstreams.
        if block is None or (head is not None and block > head):
            block = head
        candidates = self._candidates(now, block)
        if not candidates:
            return self._nobody_serves(block)
        sticky = method_info(call.method).kind is Kind.STATEFUL
        state = _CallState(
            call,
            attempt_order(candidates, next(self._rotation), sticky),
            now + self.config.deadline_s,
        )
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.max_attempts) | self._out_of_time(state),
            retry=retry_if_result(lambda step: step.retry),
            wait=lambda rs: self._backoff(state),
            retry_error_callback=lambda rs: self._give_up(state, rs),
        )
        step: _Step = await retrying(self._attempt, state)
        step.outcome.attempt_log = tuple(state.attempt_log)
        return step.outcome

    @staticmethod
    def _out_of_time(state: _CallState) -> Any:
        return lambda rs: time.monotonic() >= state.deadline - 0.001

    def _backoff(self, state: _CallState) -> float:
        """No wait before a new upstream; a short one before asking one a second time."""
        if len(state.tried) < len(state.order):
            return 0.0
        return min(
            _SECOND_ROUND_BACKOFF_S * len(state.tried), max(0.0, state.deadline - time.monotonic())
        )

    async def _attempt(self, state: _CallState) -> _Step:
        eligible = [c for c in state.order if c.name not in state.exhausted]
        candidate = next_candidate(eligible, state.tried, state.failed_domains)
        if candidate is None:
            return _Step(self._failed(state), retry=False)
        remaining = state.deadline - time.monotonic()
        if remaining <= 0:
            return _Step(self._failed(state), retry=False)
        upstream = self.upstreams[candidate.name]
        state.tried.append(upstream.name)
        attempts = len(state.tried)
        timeout = min(self.config.attempt_timeout_s, remaining)
        reply = await upstream.call(state.call.method, state.call.params, timeout)
        if reply.failure is None:
            state.attempt_log.append(Attempt(upstream.name, None, reply.latency_s))
            record_success(upstream.health, reply.latency_s)
            return _Step(
                Outcome(result=reply.result, upstream=upstream.name, attempts=attempts), retry=False
            )
        classification = classify(reply.failure)
        state.attempt_log.append(
            Attempt(upstream.name, classification.error_class, reply.latency_s)
        )
        if self._already_known(state.call, reply):
            # A transaction the node already has: a previous attempt delivered it.
            return _Step(
                Outcome(result=_tx_hash(state.call), upstream=upstream.name, attempts=attempts),
                retry=False,
            )
        self._note_failure(upstream, classification)
        attempt = {
            "upstream": upstream.name,
            "class": str(classification.error_class),
            "reason": MASKER.mask(classification.reason),
        }
        detail = (reply.error or {}).get("message") or reply.failure.body_text
        if detail:
            attempt["detail"] = MASKER.mask(str(detail))[:_DETAIL_CHARS]
        state.history.append(attempt)
        if not classification.retry_elsewhere:
            # The caller's problem (bad params, revert, nonce): the upstream's answer verbatim.
            error = (
                MASKER.mask_any(reply.error)
                if reply.error
                else rpc_error(ALL_UPSTREAMS_FAILED, MASKER.mask(classification.reason))
            )
            return _Step(
                Outcome(error=error, upstream=upstream.name, attempts=attempts), retry=False
            )
        state.failed_domains.add(upstream.domain)
        if classification.error_class not in _MAY_NOT_REPEAT:
            state.exhausted.add(upstream.name)
        if reply.error is not None:
            state.call_errors.append((classification.error_class, MASKER.mask_any(reply.error)))
        return _Step(Outcome(attempts=attempts), retry=True)

    def _note_failure(self, upstream: Upstream, classification: Classification) -> None:
        now = time.monotonic()
        was_available = upstream.health.is_available(now)
        record_failure(upstream.health, classification, now)
        if was_available and not upstream.health.is_available(now):
            log.warning(
                "upstream_cooldown",
                upstream=upstream.name,
                error_class=str(classification.error_class),
                reason=classification.reason,
                seconds=round(upstream.health.cooldown_until - now, 3),
            )

    @staticmethod
    def _already_known(call: Call, reply: Reply) -> bool:
        if call.method != "eth_sendRawTransaction" or reply.error is None:
            return False
        message = str(reply.error.get("message", "")).lower()
        return (
            any(text in message for text in ALREADY_KNOWN_MESSAGES) and _tx_hash(call) is not None
        )

    def _give_up(self, state: _CallState, rs: RetryCallState) -> _Step:
        if time.monotonic() >= state.deadline - 0.001:
            return _Step(
                Outcome(
                    error=rpc_error(
                        DEADLINE_EXCEEDED,
                        f"no upstream answered within {self.config.deadline_s} s "
                        "(failover.deadline_s)",
                        {"attempts": state.history},
                    ),
                    attempts=len(state.tried),
                ),
                retry=False,
            )
        return _Step(self._failed(state), retry=False)

    @staticmethod
    def _failed(state: _CallState) -> Outcome:
        attempts = len(state.tried)
        if state.call_errors and all(c in _ERRORS_ABOUT_THE_CALL for c, _ in state.call_errors):
            return Outcome(error=state.call_errors[-1][1], attempts=attempts)
        if not state.tried:
            return Outcome(error=rpc_error(NO_UPSTREAM, "no upstream is available"))
        return Outcome(
            error=rpc_error(
                ALL_UPSTREAMS_FAILED,
                f"no upstream could answer ({attempts} attempt{'' if attempts == 1 else 's'})",
                {"attempts": state.history},
            ),
            attempts=attempts,
        )


def _tx_hash(call: Call) -> str | None:
    params = call.params
    if not isinstance(params, list) or not params or not isinstance(params[0], str):
        return None
    raw = params[0]
    try:
        return "0x" + keccak(hexstr=raw).hex()
    except ValueError:
        return None
