"""Carry one call to an answer: attempts over upstreams, with failover, under a deadline.

tenacity drives the attempts; which upstream gets each attempt is `routing`'s decision,
what a failure means is `errors`' decision, and what it does to the upstream's standing is
`health`'s. This module only strings them together.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from eth_utils import keccak
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt

from rpcgate.cache import CachePlan, ChainView, entry_for, plan_call
from rpcgate.config import ChainConfig, FailoverConfig
from rpcgate.errors import Classification, ErrorClass, classify
from rpcgate.health import record_failure, record_success
from rpcgate.jsonrpc import ALL_UPSTREAMS_FAILED, DEADLINE_EXCEEDED, NO_UPSTREAM, Call, rpc_error
from rpcgate.masking import MASKER
from rpcgate.methods import ALREADY_KNOWN_MESSAGES, Kind, method_info
from rpcgate.pinning import PinnedCall, Tags, pin_call
from rpcgate.routing import Candidate, attempt_order, block_fit, next_candidate
from rpcgate.store import CacheCounters, Coalescer, ResponseCache
from rpcgate.tracker import HeadTracker
from rpcgate.upstream import Reply, Upstream

log = structlog.get_logger("rpcgate.execute")

# An upstream's own error is more useful to the caller than ours when every upstream said
# the same kind of thing about the call (method unsupported, block missing, range too big).
_ERRORS_ABOUT_THE_CALL = frozenset(
    {ErrorClass.UNSUPPORTED, ErrorClass.MISSING_DATA, ErrorClass.TOO_LARGE}
)
# Failures worth a second try on the same upstream once all have been tried.
_MAY_NOT_REPEAT = frozenset({ErrorClass.TRANSIENT, ErrorClass.RATE_LIMITED})
_SECOND_ROUND_BACKOFF_S = 0.05
_REMEMBERED_PLANS = 4096  # distinct hot calls whose plan is kept (cleared when full)
_DETAIL_CHARS = 200  # of an upstream's error text, kept in a failed call's `data.attempts`


@dataclass(slots=True)
class Outcome:
    result: Any = None
    error: dict[str, Any] | None = None
    upstream: str = "gateway"
    attempts: int = 0
    cache: str = "bypass"  # hit | miss | bypass
    result_json: bytes | None = None  # a cached result, already encoded


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


@dataclass(frozen=True, slots=True)
class _Step:
    outcome: Outcome
    retry: bool


class ChainRuntime:
    """The live upstreams of one chain, and the executor that spreads calls over them."""

    def __init__(
        self,
        config: ChainConfig,
        failover: FailoverConfig,
        *,
        cache: ResponseCache,
        max_response_bytes: int,
        max_concurrent_upstream_calls: int,
    ) -> None:
        self.config = config
        self.failover = failover
        self.cache = cache
        self.cache_counters = CacheCounters()
        self._coalescer: Coalescer[Outcome] = Coalescer()
        self._plans: dict[tuple[str, bytes] | None, Any] = {}
        self._view: tuple[Any, Any, tuple[int | None, Tags, ChainView]] | None = None
        self.upstreams = {
            up.name: Upstream(
                up,
                max_response_bytes=max_response_bytes,
                max_concurrent=max_concurrent_upstream_calls,
            )
            for up in config.upstreams
        }
        self._rotation = itertools.count()
        self.tracker = HeadTracker(config, self.upstreams, failover.attempt_timeout_s)

    async def start(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.start()
        await self.tracker.start()

    async def close(self) -> None:
        await self.tracker.stop()
        for upstream in self.upstreams.values():
            await upstream.close()

    def _candidates(self, now: float, block: int | None) -> list[Candidate]:
        candidates = []
        for upstream in self.upstreams.values():
            view = self.tracker.views[upstream.name]
            head = view.head.number if view.head is not None else None
            fit = block_fit(view.state, view.chain_id_ok is True, head, view.fork_height, block)
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

    async def execute(
        self, call: Call, *, read_cache: bool = True, asked_locally: bool = False
    ) -> Outcome:
        """A call's path: the consensus head, tags pinned, the cache, then the upstreams.
        `asked_locally`: the caller already tried `answer_locally` for this call."""
        local = None if asked_locally else self.answer_locally(call, read_cache)
        if local is not None:
            return local
        head, view, pinned_call, plan = self._prepare(call)
        block = pinned_call.block
        pinned = Call(call.method, pinned_call.params, call.id, call.is_notification)
        counters = self.cache_counters
        if plan.key is None:
            counters.bypass += 1
            return await self._from_upstreams(pinned, block, head)
        if read_cache:
            entry = await self.cache.get_shared(plan.key, view, counters)
            if entry is not None:
                counters.hits += 1
                return Outcome(upstream="cache", cache="hit", result_json=entry.result_json)
        counters.misses += 1
        return await self._coalescer.run(
            plan.key,
            lambda: self._fetch_and_store(pinned, block, head, plan),
            on_shared=lambda: setattr(counters, "coalesced", counters.coalesced + 1),
        )

    def answer_locally(self, call: Call, read_cache: bool = True) -> Outcome | None:
        """The answer when the gateway has it in hand (the consensus head, an entry of the
        in-process cache), without an await; None when it needs Redis or an upstream."""
        head = self.tracker.consensus.head
        if call.method == "eth_blockNumber" and head is not None:
            return Outcome(upstream="gateway", result_json=b'"%s"' % hex(head.number).encode())
        if not read_cache:
            return None
        _, view, _, plan = self._prepare(call)
        if plan.key is None:
            return None
        entry = self.cache.get_local(plan.key, view, self.cache_counters)
        if entry is None:
            return None
        self.cache_counters.hits += 1
        return Outcome(upstream="cache", cache="hit", result_json=entry.result_json)

    def _prepare(self, call: Call) -> tuple[int | None, ChainView, PinnedCall, CachePlan]:
        head, tags, view = self._consensus_view()
        pinned_call, plan = self._plan(call, tags, view)
        return head, view, pinned_call, plan

    def _consensus_view(self) -> tuple[int | None, Tags, ChainView]:
        """Tags and the cache's view of the consensus, rebuilt only when it changes."""
        consensus, canonical = self.tracker.consensus, self.tracker.canonical
        built = self._view
        if built is not None and built[0] is consensus and built[1] is canonical:
            return built[2]
        head = consensus.head.number if consensus.head is not None else None
        finalized = consensus.finalized.number if consensus.finalized else None
        tags = Tags(head, consensus.safe.number if consensus.safe else None, finalized)
        view = (head, tags, ChainView(consensus.head, finalized, canonical))
        self._view = (consensus, canonical, view)
        return view

    def _plan(self, call: Call, tags: Tags, view: ChainView) -> tuple[PinnedCall, CachePlan]:
        """Pinning and the cache key, remembered per call as sent while the consensus
        stays the same (`view` is rebuilt, as a new object, whenever it changes): hot calls
        repeat, and this is the costly part of a cache hit."""
        try:
            fingerprint = (call.method, orjson.dumps(call.params))
        except TypeError:  # an integer beyond 64 bits somewhere: not worth remembering
            fingerprint = None
        remembered = self._plans.get(fingerprint) if fingerprint is not None else None
        if remembered is not None and remembered[0] is view:
            return remembered[1], remembered[2]
        pinned_call = pin_call(call.method, call.params, tags)
        plan = plan_call(self.config.chain_id, call.method, pinned_call, view)
        if fingerprint is not None:
            if len(self._plans) >= _REMEMBERED_PLANS:
                self._plans.clear()
            self._plans[fingerprint] = (view, pinned_call, plan)
        return pinned_call, plan

    async def _fetch_and_store(
        self, call: Call, block: int | None, head: int | None, plan: CachePlan
    ) -> Outcome:
        outcome = await self._from_upstreams(call, block, head)
        outcome.cache = "miss"
        if outcome.error is None and plan.key is not None:
            _, _, view = self._consensus_view()  # as it is now, after the call
            stored = entry_for(plan, outcome.result, view)
            if stored is not None:
                self.cache.put(plan.key, *stored)
                self.cache_counters.stores += 1
        return outcome

    async def _from_upstreams(self, call: Call, block: int | None, head: int | None) -> Outcome:
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
            now + self.failover.deadline_s,
        )
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.failover.max_attempts) | self._out_of_time(state),
            retry=retry_if_result(lambda step: step.retry),
            wait=lambda rs: self._backoff(state),
            retry_error_callback=lambda rs: self._give_up(state, rs),
        )
        step: _Step = await retrying(self._attempt, state)
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
        timeout = min(self.failover.attempt_timeout_s, remaining)
        reply = await upstream.call(state.call.method, state.call.params, timeout)
        if reply.failure is None:
            record_success(upstream.health, reply.latency_s)
            return _Step(
                Outcome(result=reply.result, upstream=upstream.name, attempts=attempts), retry=False
            )
        classification = classify(reply.failure)
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
                        f"no upstream answered within {self.failover.deadline_s} s "
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
