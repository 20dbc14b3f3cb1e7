"""Carry one call to an answer: attempts over upstreams, with failover, under a deadline.

tenacity drives the attempts; which upstreams may serve the call and in which order is
`routing`'s decision, when a slow attempt gets a hedge beside it is `hedging`'s, and each
attempt is made (timed, classified, weighed against the upstream's health, logged and
traced) by `attempt`, the one way to call an upstream. This module only strings them
together.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import structlog
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt

from rpcgate.chain.broadcast import own_transaction
from rpcgate.chain.head_tracker import HeadTracker
from rpcgate.chain.outcome import Outcome
from rpcgate.chain.verifier import Unverifiable, Verifier
from rpcgate.config.settings import FailoverConfig
from rpcgate.consensus.drills import Drills
from rpcgate.consensus.heads import REPLICA_SPREAD_BLOCKS
from rpcgate.consensus.hedging import HedgeBudget, hedge_delay, is_hedgeable
from rpcgate.consensus.routing import (
    Candidate,
    attempt_order,
    block_fit,
    first_choices,
    next_candidate,
    score,
    why_unfit,
)
from rpcgate.consensus.standing import ms, standing
from rpcgate.rpc.context import CLIENT_BATCH, CallContext
from rpcgate.rpc.errors import ErrorClass, UpstreamFailure, classify
from rpcgate.rpc.jsonrpc import (
    ALL_UPSTREAMS_FAILED,
    DEADLINE_EXCEEDED,
    NO_UPSTREAM,
    Call,
    rpc_error,
)
from rpcgate.rpc.masking import MASKER
from rpcgate.rpc.methods import Kind, method_info
from rpcgate.rpc.raw_transactions import transaction_hash
from rpcgate.rpc.trace import VERIFICATION_NOTES, CallTrace
from rpcgate.storage.cache_policy import answer_block
from rpcgate.upstream.attempt import Attempt, Check, Tried, attempt, attempt_many, cut_short
from rpcgate.upstream.client import Reply, Upstream

# The attempt a call already had (its client batch's upstream batch), set by the runtime in
# the call's own task before it takes the full path: `run` counts it as the first.
PRIOR_ATTEMPT: ContextVar[tuple[Tried, Attempt] | None] = ContextVar(
    "rpcgate_prior_attempt", default=None
)

log = structlog.get_logger("rpcgate.failover")

# An upstream's own error is more useful to the caller than ours when every upstream said
# the same kind of thing about the call (method unsupported, block missing, range too big).
_ERRORS_ABOUT_THE_CALL = frozenset(
    {ErrorClass.UNSUPPORTED, ErrorClass.MISSING_DATA, ErrorClass.TOO_LARGE}
)
# Failures worth a second try on the same upstream once all have been tried.
_MAY_NOT_REPEAT = frozenset({ErrorClass.TRANSIENT, ErrorClass.RATE_LIMITED})
_NULL_MISSING = UpstreamFailure(rpc_message="block not found (null)")
_SECOND_ROUND_BACKOFF_S = 0.05
_DETAIL_CHARS = 200  # of an upstream's error text, kept in a failed call's `data.attempts`


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
    trace: CallTrace | None = None
    # The block the call is about and the served head (routing's), and whether the block
    # was named by the call (a null about it is then a node that lacks it).
    block: int | None = None
    head: int | None = None
    named_block: bool = False
    null_answer: Outcome | None = None  # a null kept for when nobody has better


@dataclass(slots=True)
class _Step:
    outcome: Outcome
    retry: bool


class Failover:
    """Spreads the calls of one chain over its upstreams."""

    def __init__(
        self,
        upstreams: dict[str, Upstream],
        tracker: HeadTracker,
        config: FailoverConfig,
        drills: Drills | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.upstreams = upstreams
        self.verifier = verifier  # chains[].verify: answers checked before they count
        self.drills = drills or Drills()  # outage drills: a drained upstream rests
        self.tracker = tracker
        self.config = config
        self._rotation = itertools.count()
        self.hedges = HedgeBudget(config.hedge_budget)

    def _candidates(
        self, now: float, block: int | None, trace: CallTrace | None = None
    ) -> list[Candidate]:
        candidates = []
        for upstream in self.upstreams.values():
            view = self.tracker.views[upstream.name]
            head = view.head.number if view.head is not None else None
            verified = view.chain_id_ok is True
            fit = block_fit(
                view.state, verified, head, view.agreed_height, block, view.consistent_height
            )
            if fit is False:
                if trace is not None:
                    reason = why_unfit(view.state, verified, head, view.agreed_height, block)
                    trace.excluded.append({"upstream": upstream.name, "reason": reason})
                continue
            health = upstream.health
            parts = score(
                health.latency_ewma_s, health.error_rate, health.in_flight, upstream.config.weight
            )
            drained_s = self.drills.drained_for(
                upstream.name, upstream.domain, now, self.tracker.chain.name
            )
            available = health.is_available(now) and drained_s == 0.0
            candidates.append(
                Candidate(upstream.name, upstream.domain, available, fit is None, score=parts.value)
            )
            if trace is not None:
                entry = _considered(upstream, parts.value, available, fit, now)
                if drained_s:
                    entry["drained_s"] = round(drained_s, 3)
                trace.considered.append(entry)
        return candidates

    def _nobody_serves(self, block: int | None) -> Outcome:
        states = "; ".join(f"{v.name}: {v.state} ({v.reason})" for v in self.tracker.views.values())
        about = "" if block is None else f" block {block}"
        return Outcome(
            error=rpc_error(NO_UPSTREAM, f"no upstream can serve{about} now: {MASKER.mask(states)}")
        )

    def order_at(self, block: int | None, trace: CallTrace | None = None) -> list[Candidate]:
        """The attempt order of a call about `block` (or the head), for callers that send
        to several upstreams at once (a transaction broadcast, a quorum); `trace` gets
        the upstreams considered and excluded."""
        candidates = self._candidates(time.monotonic(), block, trace)
        return attempt_order(candidates, next(self._rotation))

    async def run_many(
        self, calls: list[Call], block: int | None, context: CallContext
    ) -> list[tuple[Tried, Attempt] | None]:
        """First attempts of calls of one client batch, all about `block` or below: the
        upstreams that may serve it worked out once, each call's first choice taken by the
        rotation as `run` takes it, and the calls of one upstream sent in upstream batches
        (`attempt_many`), each upstream's at once. An upstream slower than the hedge delay
        is given up (its request ends) where hedges may follow: its calls come back as None,
        as do those no upstream takes. The caller settles each with `run`, the attempt
        that failed or was given up counted there (`PRIOR_ATTEMPT`)."""
        now = time.monotonic()
        self.hedges.earn()
        answered: list[tuple[Tried, Attempt] | None] = [None] * len(calls)
        candidates = self._candidates(now, block, None)
        if not candidates:
            return answered
        groups: dict[str, list[int]] = {}
        rotations = [next(self._rotation) for _ in calls]
        for index, chosen in enumerate(first_choices(candidates, rotations)):
            if chosen is not None:
                groups.setdefault(chosen, []).append(index)
        timeout = max(0.001, min(self.config.attempt_timeout_s, context.deadline - now))

        async def send(name: str, indices: list[int]) -> None:
            attempts: list[Attempt] = []
            sent = [(calls[i].method, calls[i].params) for i in indices]
            tried = await attempt_many(self.upstreams[name], sent, timeout, attempts)
            for index, one, made in zip(indices, tried, attempts, strict=True):
                answered[index] = (one, made)

        hedging = self.config.hedge_budget > 0 and len(candidates) > 1
        if len(groups) == 1 and not hedging:  # nothing to give up early: no task needed
            ((name, indices),) = groups.items()
            await send(name, indices)  # its request ends within `timeout` by itself
            return answered
        tasks = {
            asyncio.ensure_future(send(name, indices)): name for name, indices in groups.items()
        }
        wait = timeout
        if hedging:
            known = [self.upstreams[name].health.latency_p95_s for name in groups]
            slowest = max((p95 for p95 in known if p95 is not None), default=None)
            wait = min(
                timeout,
                hedge_delay(slowest, self.config.hedge_delay_min_s, self.config.hedge_delay_max_s),
            )
        try:
            _, pending = await asyncio.wait(tasks, timeout=wait)
        except asyncio.CancelledError:
            for task in tasks:
                task.cancel()
            raise
        if pending:
            for task in pending:
                await _cancelled(task)
                name = tasks[task]
                cut_short(self.upstreams[name], time.monotonic() - now, None, "given up")
                failure = UpstreamFailure(transport="timeout")
                slow = Tried(name, Reply(failure=failure), classify(failure))
                for index in groups[name]:
                    gave_up = Attempt(name, ErrorClass.TRANSIENT, time.monotonic() - now)
                    answered[index] = (slow, gave_up)
        return answered

    async def run(
        self,
        call: Call,
        block: int | None,
        head: int | None,
        *,
        context: CallContext | None = None,
        prefer: Sequence[str] = (),
    ) -> Outcome:
        """Attempts over the upstreams that may serve `block`, until one answers, the call
        is shown to be the caller's problem, or the attempts or the context's deadline run
        out (without a context: `failover.deadline_s` from now)."""
        now = time.monotonic()
        trace = context is not None and context.trace
        deadline = context.deadline if context is not None else now + self.config.deadline_s
        self.hedges.earn()
        kind = method_info(call.method).kind
        named_block = block is not None and (head is None or block <= head)
        if kind is Kind.WRITE:
            block = None  # a transaction is about no block: any upstream may take it
        elif block is None or (head is not None and block > head):
            # About the head, an unknown height, or a block nobody has yet: in-sync upstreams.
            block = head
        call_trace = CallTrace(block=block) if trace else None
        # The calls of one client batch, made at one moment, share who may serve a block
        # (each still takes its own turn in the rotation).
        batch = CLIENT_BATCH.get() if call_trace is None else None
        candidates = batch.shared.get((self, block)) if batch is not None else None
        if candidates is None:
            candidates = self._candidates(now, block, call_trace)
            if batch is not None:
                batch.shared[(self, block)] = candidates
        if not candidates:
            outcome = self._nobody_serves(block)
            outcome.trace = call_trace
            return outcome
        order = attempt_order(candidates, next(self._rotation), kind is Kind.STATEFUL)
        if prefer:  # those known to have what the call looks up go first (if available)
            first = [c for c in order if c.name in prefer and c.available and not c.last_resort]
            order = first + [c for c in order if c not in first]
        state = _CallState(
            call,
            order,
            deadline,
            trace=call_trace,
            block=block,
            head=head,
            named_block=named_block,
        )
        # The first attempt, in most calls the only one, goes without tenacity's per-call
        # setup; tenacity drives the attempts after a failure. An attempt made already (in
        # a client batch's upstream batch: `run_many`) counts as the first.
        prior = PRIOR_ATTEMPT.get()
        if prior is not None and prior[0].upstream in self.upstreams:
            PRIOR_ATTEMPT.set(None)  # this call's: not the calls made on its behalf
            state.tried.append(prior[0].upstream)
            state.attempt_log.append(prior[1])
            step = self._step(state, prior[0])
        else:
            step = await self._attempt(state)
        if step.retry:
            if self.config.max_attempts <= 1 or time.monotonic() >= state.deadline - 0.001:
                step = self._give_up(state)
            else:
                wait = self._backoff(state)
                if wait > 0:
                    await asyncio.sleep(wait)
                retrying = AsyncRetrying(
                    stop=stop_after_attempt(self.config.max_attempts - 1)
                    | self._out_of_time(state),
                    retry=retry_if_result(lambda step: step.retry),
                    wait=lambda rs: self._backoff(state),
                    retry_error_callback=lambda rs: self._give_up(state),
                )
                step = await retrying(self._attempt, state)
        step.outcome.attempt_log = tuple(state.attempt_log)
        if call_trace is not None:
            call_trace.answered_by = step.outcome.upstream
            step.outcome.trace = call_trace
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
        timeout = min(self.config.attempt_timeout_s, remaining)
        completed = await self._call(state, upstream, timeout)
        # A hedged attempt may bring two answers: the good one decides, a failure beside it
        # still counted against its upstream.
        completed.sort(key=lambda tried: tried.classification is None)
        steps = [self._step(state, tried) for tried in completed]
        return next((step for step in reversed(steps) if not step.retry), steps[-1])

    async def _checked(self, state: _CallState, upstream: Upstream, reply: Reply) -> Reply:
        """What an answer counts as before it is recorded: an `integrity` failure when it
        fails verification (logged once, with what differed; it never reaches the client),
        a missing-block failure when it is a null about a block the node should have."""
        verifier = self.verifier
        if verifier is not None and state.call.method in verifier.methods:
            reply = await self._verified(state, upstream, reply)
        if reply.failure is None and reply.result is None:
            info = method_info(state.call.method)
            if state.named_block and info.null_when_missing:
                # A block the consensus has, and this node (or a replica behind it) has not.
                state.null_answer = Outcome(upstream=upstream.name, attempts=len(state.tried))
                return Reply(failure=_NULL_MISSING, latency_s=reply.latency_s)
        return reply

    async def _verified(self, state: _CallState, upstream: Upstream, reply: Reply) -> Reply:
        assert self.verifier is not None
        call = state.call
        failure = reply.failure
        if failure is not None and (
            call.method != "eth_call" or classify(failure).error_class is not ErrorClass.REVERT
        ):
            return reply
        # A traced call's checks note how they anchored it; the checks of the fetches they
        # make write to the same notes (they are part of this answer's verification).
        notes = VERIFICATION_NOTES.set([]) if state.trace is not None else None
        try:
            if failure is not None:  # a revert: the call must revert over proven state too
                problem = await self.verifier.revert_problem(
                    call.method, call.params, failure.rpc_data
                )
            else:
                problem = await self.verifier.check(
                    call.method, call.params, reply.result, upstream.name
                )
        except Unverifiable as exc:  # the anchor could not be had: not served as checked
            where = answer_block(reply.result)
            if where is not None and state.head is not None and where[0] > state.head:
                # In a block above the served head whose anchor did not come in time (the
                # anchor's fetch waited for the head): as a node at the served head answers.
                return Reply(result=None, latency_s=reply.latency_s)
            failure = UpstreamFailure(transport=f"unverifiable: {MASKER.mask(str(exc))}")
            return Reply(failure=failure, latency_s=reply.latency_s)
        finally:
            if notes is not None and state.trace is not None:
                noted = VERIFICATION_NOTES.get() or []
                VERIFICATION_NOTES.reset(notes)
                state.trace.verification += [f"{upstream.name}: {note}" for note in noted]
        if problem is None:
            return reply
        log.warning(
            "integrity_failure",
            chain=self.tracker.chain.name,
            upstream=upstream.name,
            method=call.method,
            differs=MASKER.mask(problem),
        )
        return Reply(failure=UpstreamFailure(integrity=problem), latency_s=reply.latency_s)

    async def _call(self, state: _CallState, upstream: Upstream, timeout: float) -> list[Tried]:
        """One attempt, with a hedge beside it when it is slow: the attempts that ended, in
        the order they ended (a hedge's loser is cancelled and brings none)."""
        config = self.config
        if not (
            config.hedge_budget > 0
            and is_hedgeable(state.call.method)
            and self._hedge_partner(state, upstream) is not None
        ):  # no hedge can follow: the attempt needs no task of its own
            return [await self._timed(state, upstream, timeout, hedge=False)]
        replied: list[bool] = []  # the upstream answered: what runs on is its check
        first = asyncio.create_task(
            self._timed(state, upstream, timeout, hedge=False, replied=replied)
        )
        delay = hedge_delay(
            upstream.health.latency_p95_s, config.hedge_delay_min_s, config.hedge_delay_max_s
        )
        started = time.monotonic()
        try:
            answered = await _within(first, min(delay, timeout))
        except asyncio.CancelledError:
            first.cancel()
            raise
        if answered:
            return [first.result()]
        if replied:  # not slow: its answer is being verified (a hedge would verify twice)
            return [await first]
        partner = self._hedge_partner(state, upstream)
        if partner is None or not self.hedges.spend():
            return [await first]
        state.tried.append(partner.name)
        remaining = max(0.001, state.deadline - time.monotonic())
        second = asyncio.create_task(
            self._timed(state, partner, min(config.attempt_timeout_s, remaining), hedge=True)
        )
        owner = {first: upstream, second: partner}
        pending = {first, second}
        completed: list[Tried] = []
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    tried = task.result()
                    completed.append(tried)
                    if tried.classification is None:
                        if task is second:
                            self.hedges.won += 1
                        for loser in pending:
                            elapsed = time.monotonic() - started
                            why = "cancelled, the other answered"
                            cut_short(owner[loser], elapsed, state.trace, why)
                        return completed
            return completed
        finally:
            for task in pending:
                task.cancel()

    def _hedge_partner(self, state: _CallState, slow: Upstream) -> Upstream | None:
        """The best untried upstream in rotation, in another failure domain if there is one."""
        fresh = [
            c
            for c in state.order
            if c.available
            and not c.last_resort
            and c.name not in state.tried
            and c.name not in state.exhausted
        ]
        chosen = next_candidate(fresh, state.tried, state.failed_domains | {slow.domain})
        return None if chosen is None else self.upstreams[chosen.name]

    async def _timed(
        self,
        state: _CallState,
        upstream: Upstream,
        timeout: float,
        *,
        hedge: bool,
        replied: list[bool] | None = None,
    ) -> Tried:
        call = state.call
        verifier = self.verifier
        checked = (verifier is not None and call.method in verifier.methods) or (
            state.named_block and method_info(call.method).null_when_missing
        )
        check: Check | None = None
        if checked:

            async def check(reply: Reply) -> Reply:
                if replied is not None:
                    replied.append(True)
                return await self._checked(state, upstream, reply)

        tx_hash = _tx_hash(call) if call.method == "eth_sendRawTransaction" else None
        if tx_hash is not None:  # a previous attempt may have delivered it
            check = own_transaction(upstream, tx_hash, timeout, state.attempt_log, state.trace)
        return await attempt(
            upstream,
            call.method,
            call.params,
            timeout,
            state.attempt_log,
            trace=state.trace,
            hedge=hedge,
            check=check,
        )

    def _step(self, state: _CallState, tried: Tried) -> _Step:
        attempts = len(state.tried)
        upstream, reply = self.upstreams[tried.upstream], tried.reply
        classification = tried.classification
        if classification is None and reply.result is None:
            info = method_info(state.call.method)
            if info.null_confirmed and state.null_answer is None and self._second(state):
                # Not found here: found nowhere only when a second upstream says so too.
                state.null_answer = Outcome(upstream=upstream.name, attempts=attempts)
                state.exhausted.add(upstream.name)
                return _Step(Outcome(attempts=attempts), retry=True)
        if classification is None:
            return _Step(
                Outcome(result=reply.result, upstream=upstream.name, attempts=attempts), retry=False
            )
        failed = {
            "upstream": upstream.name,
            "class": str(classification.error_class),
            "reason": MASKER.mask(classification.reason),
        }
        detail = (reply.error or {}).get("message") or (reply.failure and reply.failure.body_text)
        if detail:
            failed["detail"] = MASKER.mask(str(detail))[:_DETAIL_CHARS]
        state.history.append(failed)
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
        if classification.error_class is ErrorClass.MISSING_DATA and self._lacks_recent_block(
            state, upstream
        ):
            pass  # asked again (after the others), a replica that has it may answer
        elif classification.error_class not in _MAY_NOT_REPEAT:
            state.exhausted.add(upstream.name)
        if reply.error is not None:
            state.call_errors.append((classification.error_class, MASKER.mask_any(reply.error)))
        return _Step(Outcome(attempts=attempts), retry=True)

    @staticmethod
    def _second(state: _CallState) -> bool:
        """Whether an untried upstream in good standing is left to ask."""
        return any(
            c.available and not c.last_resort and c.name not in state.tried for c in state.order
        )

    def _lacks_recent_block(self, state: _CallState, upstream: Upstream) -> bool:
        """A block just below the served head was missing: the head tracker learns that a
        replica behind this upstream is lower (so calls go where the block is), and the
        call may come back to this upstream, where another replica may have it."""
        block, head = state.block, state.head
        if block is None or head is None or not head - REPLICA_SPREAD_BLOCKS < block <= head:
            return False
        self.tracker.lacks_block(upstream.name, block)
        return True

    def _give_up(self, state: _CallState) -> _Step:
        if state.null_answer is not None:  # every upstream lacked the block: as they said
            return _Step(state.null_answer, retry=False)
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
        if state.null_answer is not None:
            return state.null_answer
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


async def _cancelled(task: asyncio.Future[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _within(task: asyncio.Task[Any], seconds: float) -> bool:
    """Whether `task` is done within `seconds` (it goes on either way): what
    `asyncio.wait({task}, timeout=...)` says, without its per-call sets and callbacks."""
    if task.done():
        return True
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[None] = loop.create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = loop.call_later(seconds, wake)
    task.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        task.remove_done_callback(wake)
    return task.done()


def _tx_hash(call: Call) -> str | None:
    raw = call.params[0] if isinstance(call.params, list) and call.params else None
    return transaction_hash(raw)


def _considered(
    upstream: Upstream, value: float, available: bool, fit: bool | None, now: float
) -> dict[str, Any]:
    seen = standing(upstream.health, upstream.config.weight, now)
    entry: dict[str, Any] = {
        "upstream": upstream.name,
        "domain": upstream.domain,
        "score": round(value * 1000, 3),
        "latency_ms": ms(seen.latency_s),
        "error_rate": round(seen.error_rate, 4),
        "in_flight": seen.in_flight,
        "weight": seen.weight,
    }
    if not available:
        entry["cooling_down_s"] = round(seen.cooling_down_s, 3)
        entry["cooldown_reason"] = seen.cooldown_reason
    if fit is None:
        entry["last_resort"] = "its polls say it is down"
    return entry
