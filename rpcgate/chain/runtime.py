"""A call's path through one chain, top to bottom: the consensus head answers what it can,
tags are pinned to consensus numbers, the cache answers what it holds, identical calls in
flight are coalesced, `failover` carries the rest to the upstreams, and no answer is given
out ahead of the served head.

Every outcome says which block it is about (`Outcome.block`): the pinned block, or the
block a by-hash answer was found in; the server sends it as `X-Rpcgate-Block`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from rpcgate.chain.broadcast import (
    PREFERENCE_METHODS,
    Broadcaster,
    PendingTransactions,
    broadcast_targets,
)
from rpcgate.chain.failover import PRIOR_ATTEMPT, Failover
from rpcgate.chain.feeds import HeadFeed, PendingFeed
from rpcgate.chain.filters import FILTER_METHODS, Filters, FilterStore
from rpcgate.chain.getlogs import refused_as_too_large, split_get_logs
from rpcgate.chain.head_tracker import HeadTracker
from rpcgate.chain.outcome import Outcome, answered_once
from rpcgate.chain.verifier import (
    PROVEN_STATE,
    Level,
    Verifier,
    anchored,
    anchored_unpinned,
    answer_level,
    proof_call,
    state_from_proof,
    unpinned_anchor,
)
from rpcgate.config.settings import ChainConfig, FailoverConfig, QuorumRule
from rpcgate.consensus.drills import Drills
from rpcgate.consensus.heads import Block
from rpcgate.consensus.pinning import PinnedCall, Tags, pin_call
from rpcgate.consensus.quorum import decide_agree, decide_max, hear
from rpcgate.rpc import logs
from rpcgate.rpc.background import Background
from rpcgate.rpc.context import CLIENT_BATCH, CURRENT_CALL, CallContext
from rpcgate.rpc.errors import UpstreamFailure
from rpcgate.rpc.jsonrpc import (
    ALL_UPSTREAMS_FAILED,
    DEADLINE_EXCEEDED,
    INTERNAL_ERROR,
    METHOD_NOT_FOUND,
    NO_UPSTREAM,
    Call,
    rpc_error,
)
from rpcgate.rpc.masking import MASKER
from rpcgate.rpc.method_policy import MethodPolicy
from rpcgate.rpc.methods import METHODS, Cache, Kind, method_info
from rpcgate.rpc.trace import CallTrace
from rpcgate.storage.cache_policy import (
    CachePlan,
    ChainView,
    answer_block,
    chain_key,
    entry_for,
    plan_call,
)
from rpcgate.storage.response_cache import CacheCounters, Coalescer, ResponseCache
from rpcgate.upstream.attempt import Attempt, Tried, attempt
from rpcgate.upstream.client import Reply, Upstream
from rpcgate.upstream.websocket import PendingMerger, UpstreamSocket

if TYPE_CHECKING:
    from rpcgate.storage.shared_head import SharedHeads
    from rpcgate.storage.shared_state import SharedState

log = structlog.get_logger("rpcgate.calls")

# The gateway could not answer (as opposed to an upstream's verdict on the call itself,
# a revert or bad params, logged at info).
GATEWAY_FAILURES = frozenset({ALL_UPSTREAMS_FAILED, DEADLINE_EXCEEDED, NO_UPSTREAM})
_REMEMBERED_PLANS = 4096  # distinct hot calls whose plan is kept (cleared when full)
# A plan holds its call about three times (the key, the cache key, the pinned params): only
# calls of up to 4 KB are remembered (a hot call is small; a client sending big distinct
# calls would otherwise fill memory), and the memo is cleared past 2 MB of them.
_REMEMBERED_PLAN_CALL_BYTES = 4096
_REMEMBERED_PLANS_BYTES = 2 * 1024 * 1024


class ChainRuntime:
    """One chain at run time: its upstreams, head tracker, cache counters and failover."""

    def __init__(
        self,
        config: ChainConfig,
        failover: FailoverConfig,
        *,
        cache: ResponseCache,
        max_response_bytes: int,
        max_concurrent_upstream_calls: int,
        shared_heads: SharedHeads | None = None,
        filter_store: FilterStore | None = None,
        drills: Drills | None = None,
        shared_state: SharedState | None = None,
    ) -> None:
        self.config = config
        self.cache = cache
        self.cache_counters = CacheCounters()  # clients' calls
        self._own_counters = CacheCounters()  # the gateway's own (verification's fetches)
        self._coalescer: Coalescer[Outcome] = Coalescer()
        self._plans: dict[tuple[str, bytes] | None, Any] = {}
        self._plans_bytes = 0  # of the calls remembered in _plans
        self._view: tuple[Any, Any, tuple[int | None, Tags, ChainView]] | None = None
        # What cache keys are namespaced by: the chain id and its genesis (`chain_key`).
        self._chain_key = chain_key(config.chain_id, None)
        self.upstreams = {
            up.name: Upstream(
                up,
                max_response_bytes=max_response_bytes,
                max_concurrent=max_concurrent_upstream_calls,
            )
            for up in config.upstreams
        }
        self.tracker = HeadTracker(
            config, self.upstreams, failover.attempt_timeout_s, shared=shared_heads
        )
        self.verifier = Verifier(
            config.verify,
            lambda: self._consensus_view()[2],
            lambda method, params: self._internal(Call(method, params, 0, False)),
            config.verify_logs_max_blocks,
            config.name,
            config.header_format,
            config.chain_id,
            config.execute_calls,
            config.history_contract,
        )
        self._failover = Failover(self.upstreams, self.tracker, failover, drills, self.verifier)
        self._levels: dict[tuple[str, bool], Level] = {}  # per method, and anchored or not
        self._anchors: dict[str, bool | int] = {}  # `unpinned_anchor`, per known method
        # Batches answered wholly from what the gateway holds, by their calls (edge/answers).
        self.held_batches: dict[bytes, Any] = {}
        self._together_methods: dict[str, bool] = {}  # methods a batch may send together
        self._failover_config = failover
        self._quorum = {rule.method: rule for rule in config.quorum}
        self.policy = MethodPolicy(config.methods)
        self.denied: collections.Counter[str] = collections.Counter()  # calls denied, by rule
        self.pending_transactions = PendingTransactions(config.chain_id, shared_state)
        self._broadcaster = Broadcaster(self.upstreams, self.pending_transactions)
        self.filters = Filters(
            config.chain_id,
            filter_store or FilterStore(),
            head=lambda: self.tracker.consensus.head,
            execute=self._internal,
            on_upstream=self._on_upstream,
            pick_upstream=lambda call: self._failover.run(call, None, self._served_head()),
        )
        self.hedges = self._failover.hedges  # counted for status and metrics
        self._head_feed: HeadFeed | None = None  # made at the first subscription
        # Tracking (on_demand: started by the first call, stopped after idle_after_s).
        self._tracking = False
        self._starting: asyncio.Task[None] | None = None
        self._last_used = time.monotonic()
        self._in_flight = 0
        self._idle = Background(f"idle-{config.name}", self._watch_idle)
        self._switching = asyncio.Lock()  # starting and stopping the tracking, one at a time
        # Upstream WebSockets (ws_url): a new head there is a hint to poll now (the polls
        # stay the check), and their pending transactions feed newPendingTransactions.
        self.sockets = {
            up.name: UpstreamSocket(
                up.config,
                up.health,
                on_head=lambda _name, _block: self.tracker.poll_soon(),
                on_pending=self._on_pending,
            )
            for up in self.upstreams.values()
            if up.config.ws_url
        }
        self.pending_feed = (
            PendingFeed(
                PendingMerger().is_new,
                lambda: any(s.supports_pending for s in self.sockets.values()),
            )
            if self.sockets
            else None
        )

    def _on_pending(self, upstream: str, tx_hash: str) -> None:
        if self.pending_feed is not None:
            self.pending_feed.offer(upstream, tx_hash)

    def head_feed(self) -> HeadFeed:
        """Heads and logs of this chain for WebSocket subscribers (made when first asked)."""
        if self._head_feed is None:
            self._head_feed = HeadFeed(
                self.config.name,
                lambda: self.tracker.consensus.head,
                self.tracker.decided,
                self._internal,
            )
        return self._head_feed

    # -- tracking: from the start, or (on_demand) while the chain is used ------------------

    async def start(self) -> None:
        if self.config.on_demand:
            return  # its first call starts the tracking (`activate`)
        await self._start_tracking()

    async def _start_tracking(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.start()
        await self.tracker.start()
        for socket in self.sockets.values():
            await socket.start()
        self._tracking = True

    @property
    def active(self) -> bool:
        """Whether the chain's heads are tracked (an on-demand chain: since its first call,
        until it has been idle for `idle_after_s`)."""
        return self._tracking or not self.config.on_demand

    def wake(self) -> asyncio.Task[None] | None:
        """Marks the chain used now and, if it is not tracked, starts its tracking (the
        task doing it; None when it is tracked already)."""
        self._last_used = time.monotonic()
        if self._tracking:
            return None
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(
                self._activate(), name=f"activate-{self.config.name}"
            )
        return self._starting

    async def _activate(self) -> None:
        async with self._switching:  # not while an idle stop is under way
            if self._tracking:
                return
            log.info("chain_active", chain=self.config.name, upstreams=len(self.upstreams))
            await self._start_tracking()
            self._idle.start()

    async def _until_active(self, context: CallContext) -> None:
        """A call to a chain not yet tracked waits (a bounded time) for its first head."""
        starting = self.wake()
        if starting is not None:
            wait_s = context.within(self.config.activation_timeout_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await asyncio.shield(starting)

    async def _watch_idle(self) -> None:
        idle_s = self.config.idle_after_s
        while True:
            await asyncio.sleep(min(idle_s / 4, 30.0))
            in_use = self._in_flight > 0 or (
                self._head_feed is not None and self._head_feed.subscriber_count > 0
            )
            if in_use:
                self._last_used = time.monotonic()
                continue
            if time.monotonic() - self._last_used < idle_s:
                continue
            async with self._switching:
                if self._in_flight == 0 and time.monotonic() - self._last_used >= idle_s:
                    log.info("chain_idle", chain=self.config.name, idle_s=idle_s)
                    await self._stop_tracking()
                    return

    async def _stop_tracking(self) -> None:
        self._tracking = False
        for socket in self.sockets.values():
            await socket.stop()
        await self.tracker.stop()
        for upstream in self.upstreams.values():
            await upstream.close()  # its connections too: nothing of the chain stays open

    async def close(self) -> None:
        await self._idle.stop()
        if self._starting is not None:
            self._starting.cancel()
            await asyncio.gather(self._starting, return_exceptions=True)
        for socket in self.sockets.values():
            await socket.stop()
        if self._head_feed is not None:
            await self._head_feed.stop()
        await self._broadcaster.close()
        await self.verifier.close()
        await self.tracker.stop()
        for upstream in self.upstreams.values():
            await upstream.close()

    async def execute(self, call: Call, context: CallContext | None = None) -> Outcome:
        """A call's path: the consensus head, tags pinned, the cache, then the upstreams,
        all within the context's one deadline. A call the gateway makes for itself (an
        anchor the verifier fetches) shares the deadline of the call it is made for, else
        it gets `failover.deadline_s` from now."""
        if context is None:
            serving = CURRENT_CALL.get()
            context = dataclasses.replace(
                serving.part()
                if serving is not None
                else CallContext.arriving(self._failover_config.deadline_s),
                own=True,
                # A client's `no-cache` is about its own answer: what checks it (headers,
                # receipts, proofs, fresh or final as the cache holds them) is read as usual.
                read_cache=True,
            )
        token = CURRENT_CALL.set(context)
        self._in_flight += 1
        try:
            if self.config.on_demand:
                await self._until_active(context)
            return await self._execute(call, context)
        finally:
            self._in_flight -= 1
            CURRENT_CALL.reset(token)

    async def _execute(self, call: Call, context: CallContext) -> Outcome:
        read_cache = context.read_cache
        denial = self.policy.check(call.method)
        if denial is not None:  # never reaches an upstream
            self.denied[denial.pattern] += 1
            return Outcome(error=denial.error(), upstream="gateway")
        if call.method in ("eth_subscribe", "eth_unsubscribe"):  # ws.py answers them
            message = f"{call.method} needs a WebSocket: connect to ws://…/{self.config.name}"
            return Outcome(error=rpc_error(METHOD_NOT_FOUND, message), upstream="gateway")
        if call.method in FILTER_METHODS:  # kept by the gateway itself (filters.py)
            result, error = await self.filters.handle(call)
            return Outcome(result=result, error=error, upstream="gateway")
        local = None if context.asked_locally else self.answer_locally(call, read_cache)
        if local is not None:
            return local
        head, view, pinned_call, plan = self._prepare(call)
        if self.tracker.behind_shared and _about_the_head(call.method, pinned_call):
            # Another replica served a higher head: one poll of ours weighs it first.
            await self.tracker.catch_up_to_shared(context.within(self.config.hold_ahead_s))
            local = self.answer_locally(call, read_cache)
            if local is not None:
                return local
            head, view, pinned_call, plan = self._prepare(call)
        block = pinned_call.block
        pinned = Call(call.method, pinned_call.params, call.id, call.is_notification)
        counters = self._own_counters if context.own else self.cache_counters
        if plan.key is None:
            counters.bypass += 1
            return await self._from_upstreams(pinned, block, head, context)
        if read_cache:
            entry = await self.cache.get_shared(plan.key, view, counters)
            if entry is not None:
                counters.hits += 1
                return _hit(entry.result_json, block, entry.block_number)
        counters.misses += 1
        return await self._coalescer.run(
            plan.key,
            lambda: self._fetch_and_store(pinned, block, head, plan, context),
            on_shared=lambda: setattr(counters, "coalesced", counters.coalesced + 1),
        )

    async def execute_many(self, calls: list[Call], context: CallContext) -> list[Outcome]:
        """The calls of one client batch that need more than the gateway holds. Those that
        can go together (plain reads that need no check, about blocks the consensus has)
        share one routing decision and one upstream batch; each that fails there, and every
        other call, takes the full path (`execute`), as a call of its own."""
        outcomes: list[Outcome | None] = [None] * len(calls)
        together = [] if self.config.on_demand and not self.active else self._together(calls)
        if len(together) >= 2:
            try:
                await self._answer_together(together, outcomes, context)
            except Exception:  # a bug: the calls take the full path, whose errors are answered
                log.exception("batch_together_failed", calls=len(together))
        rest = [i for i, outcome in enumerate(outcomes) if outcome is None]
        if rest:
            answered = await asyncio.gather(
                *(self.execute(calls[i], context.for_item()) for i in rest),
                return_exceptions=True,
            )
            for i, outcome in zip(rest, answered, strict=True):
                if isinstance(outcome, BaseException):
                    if not isinstance(outcome, Exception):
                        raise outcome
                    log.error("execute_failed", method=calls[i].method, exc_info=outcome)
                    outcome = Outcome(
                        error=rpc_error(INTERNAL_ERROR, "internal gateway error"),
                        upstream="gateway",
                    )
                outcomes[i] = outcome
        settled = [outcome for outcome in outcomes if outcome is not None]
        assert len(settled) == len(calls)  # every call settled, in its place
        return settled

    def _together(self, calls: list[Call]) -> list[tuple[int, Call, int | None, CachePlan]]:
        """The calls that may travel together: (their place, the call pinned, its block,
        its cache plan)."""
        if self.cache.redis is not None:
            return []  # the Redis tier is asked first, call by call
        picked = []
        behind_shared = self.tracker.behind_shared
        goes: dict[str, bool] = {}  # per method, for this batch
        head, _, view = self._consensus_view()
        batch = CLIENT_BATCH.get()
        prepared = batch.prepared if batch is not None else {}
        for index, call in enumerate(calls):
            method = call.method
            going = goes.get(method)
            if going is None:
                going = goes[method] = self._goes_together(method)
            if not going:
                continue
            found = _found(prepared, call, view)  # as `_prepare` found it moments ago
            if found is not None:
                pinned_call, plan = found
            else:
                head, _, pinned_call, plan = self._prepare(call)
            block = pinned_call.block
            if head is None or (block is not None and block > head):
                continue
            if behind_shared and _about_the_head(call.method, pinned_call):
                continue
            pinned = (
                call
                if pinned_call.params is call.params
                else Call(call.method, pinned_call.params, call.id, call.is_notification)
            )
            picked.append((index, pinned, block, plan))
        return picked

    def _goes_together(self, method: str) -> bool:
        known = self._together_methods.get(method)
        if known is None:
            info = METHODS.get(method)
            known = self._together_methods[method] = (
                info is not None
                and info.kind is Kind.READ
                and method not in self._quorum
                and method not in FILTER_METHODS
                and method not in PREFERENCE_METHODS
                and method not in self.verifier.methods
                and not (self.verifier.proves and method in PROVEN_STATE)
                and method not in ("eth_getLogs", "eth_subscribe", "eth_unsubscribe")
            )
        return known and self.policy.check(method) is None

    async def _answer_together(
        self,
        together: list[tuple[int, Call, int | None, CachePlan]],
        outcomes: list[Outcome | None],
        context: CallContext,
    ) -> None:
        """First attempts together (`run_many`); what they answered plainly is answered
        here, the rest takes the full path with its first attempt counted."""
        # The same call twice in a batch goes once, as the coalescer has it on the full path.
        unique: dict[str, int] = {}
        twins: list[tuple[int, int]] = []  # (place of a repeat, position of its first)
        sending = []
        about_head = False  # some call is about the head (no block named)
        highest = -1
        for entry in together:
            _, _, block, plan = entry
            key = plan.key
            if key is not None:
                if key in unique:
                    twins.append((entry[0], unique[key]))
                    continue
                unique[key] = entry[0]
            if block is None:
                about_head = True
            elif block > highest:
                highest = block
            sending.append(entry)
        head = self._served_head()
        at = head if about_head else highest
        sent = await self._failover.run_many([entry[1] for entry in sending], at, context)
        _, _, view = self._consensus_view()
        counters = self.cache_counters
        bypassed = 0
        again: list[tuple[int, Call, tuple[Tried, Attempt] | None]] = []
        for (index, call, block, plan), first in zip(sending, sent, strict=True):
            if first is None:
                again.append((index, call, None))
                continue
            answer, made = first
            reply = answer.reply
            result = reply.result
            where = answer_block(result) if type(result) is dict else None
            if (
                answer.classification is not None
                or result is None  # not found (here): the full path weighs it
                or (where is not None and (head is None or where[0] > head))
            ):
                failed = answer.classification is not None
                again.append((index, call, first if failed else None))
                continue
            outcome = answered_once(
                result,
                answer.upstream,
                made,
                block if block is not None or where is None else where[0],
            )
            if plan.key is None:
                bypassed += 1
            else:
                counters.misses += 1
                outcome.cache = "miss"
                stored = entry_for(plan, result, view, self._trusted_to(answer.upstream))
                if stored is not None:
                    self.cache.put(plan.key, *stored)
                    counters.stores += 1
            if logs.DEBUG:  # an answer: only a debug line to log
                self._log_call(call, outcome)
            outcomes[index] = outcome
        counters.bypass += bypassed
        calls = {index: call for index, call, _, _ in together} if twins else {}
        for index, original in twins:
            shared = outcomes[original]
            if shared is None:
                again.append((index, calls[index], None))  # coalesced with its first there
            else:
                counters.coalesced += 1
                outcomes[index] = shared
        if again:
            settled = await asyncio.gather(
                *(self._again(call, prior, context) for _, call, prior in again),
                return_exceptions=True,
            )
            for (index, call, _), settled_one in zip(again, settled, strict=True):
                if isinstance(settled_one, Outcome):
                    outcomes[index] = settled_one
                elif not isinstance(settled_one, Exception):
                    raise settled_one  # cancelled
                else:  # left None: execute_many answers it on its own
                    log.error("execute_failed", method=call.method, exc_info=settled_one)

    async def _again(
        self, call: Call, prior: tuple[Tried, Attempt] | None, context: CallContext
    ) -> Outcome:
        """A call of a batch on the full path, in a task of its own: its attempt in the
        batch (if it failed there) counted as its first."""
        if prior is not None:
            PRIOR_ATTEMPT.set(prior)
        outcome = await self.execute(
            call, dataclasses.replace(context.for_item(), read_cache=False)
        )
        if prior is not None and outcome.attempts == 0:  # answered without an upstream after all
            outcome.attempt_log = (prior[1], *outcome.attempt_log)
        return outcome

    def answer_locally(self, call: Call, read_cache: bool = True) -> Outcome | None:
        """The answer when the gateway has it in hand (the consensus head, an entry of the
        in-process cache), without an await; None when it needs Redis or an upstream."""
        if self.policy.check(call.method) is not None:
            return None  # execute answers with the denial
        if not self.active:
            return None  # an on-demand chain not yet (or no longer) tracked: its heads are old
        return self._local(
            call, read_cache, self.tracker.behind_shared, self.tracker.consensus.head
        )

    def answer_locally_many(
        self, calls: Sequence[Call | None], read_cache: bool = True
    ) -> list[Outcome | None]:
        """`answer_locally` for each of a client batch's calls (None: an item to skip),
        what is the same for them all found once."""
        answered: list[Outcome | None] = [None] * len(calls)
        if not self.active:
            return answered
        behind_shared, head = self.tracker.behind_shared, self.tracker.consensus.head
        denied = self.policy.check
        for index, call in enumerate(calls):
            if call is not None and denied(call.method) is None:
                answered[index] = self._local(call, read_cache, behind_shared, head)
        return answered

    def _local(
        self, call: Call, read_cache: bool, behind_shared: bool, head: Block | None
    ) -> Outcome | None:
        """`answer_locally` once the policy allows the call on an active chain; while
        `behind_shared`, what is about the head waits."""
        if call.method == "eth_blockNumber" and head is not None and not behind_shared:
            return Outcome(
                upstream="gateway",
                result_json=b'"%s"' % hex(head.number).encode(),
                block=head.number,
            )
        if not read_cache:
            return None
        _, view, pinned_call, plan = self._prepare(call)
        if plan.key is None or (behind_shared and _about_the_head(call.method, pinned_call)):
            return None
        entry = self.cache.get_local(plan.key, view, self.cache_counters)
        if entry is None:
            return None
        self.cache_counters.hits += 1
        return _hit(entry.result_json, pinned_call.block, entry.block_number)

    def view_token(self) -> object:
        """What changes whenever the consensus does (answers held for it go with it)."""
        return self._consensus_view()[2]

    def _prepare(self, call: Call) -> tuple[int | None, ChainView, PinnedCall, CachePlan]:
        head, tags, view = self._consensus_view()
        # A client batch's call is prepared once (looked up locally, then sent together).
        batch = CLIENT_BATCH.get()
        if batch is not None:
            found = _found(batch.prepared, call, view)
            if found is not None:
                return head, view, *found
        pinned_call, plan = self._plan(call, tags, view)
        if batch is not None:
            batch.prepared[id(call)] = (call, view, pinned_call, plan)
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
        view = (head, tags, ChainView(consensus.head, finalized, canonical, consensus.genesis))
        self._view = (consensus, canonical, view)
        self._chain_key = chain_key(self.config.chain_id, consensus.genesis)
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
        plan = plan_call(self._chain_key, call.method, pinned_call, view)
        size = len(fingerprint[0]) + len(fingerprint[1]) if fingerprint is not None else 0
        if fingerprint is not None and size <= _REMEMBERED_PLAN_CALL_BYTES:
            if (
                len(self._plans) >= _REMEMBERED_PLANS
                or self._plans_bytes + size > _REMEMBERED_PLANS_BYTES
            ):
                self._plans.clear()
                self._plans_bytes = 0
            # orjson's output keeps its whole working buffer (about 4 KB): stored keys are
            # copied to their exact size (lookups match: bytes compare by value).
            method, params_json = fingerprint
            if fingerprint not in self._plans:  # not a stale plan replaced
                self._plans_bytes += size
            self._plans[(method, memoryview(params_json).tobytes())] = (view, pinned_call, plan)
        return pinned_call, plan

    async def _from_upstreams(
        self, call: Call, block: int | None, head: int | None, context: CallContext
    ) -> Outcome:
        """The upstreams' answer, consistent with the served head: a call about a block
        above it that some upstream already has waits for the head to get there first, and
        an answer found in a block above it is held until the head reaches that block."""
        hold = self.config.hold_ahead_s
        if block is not None and head is not None and block > head and self._someone_has(block):
            await self.tracker.wait_for_head(block, context.within(hold))
            head = self._served_head()
        rule = self._quorum.get(call.method)
        proof_params = proof_call(call.method, call.params) if self.verifier.proves else None
        if call.method == "eth_call" and self.verifier.calls is not None:
            self.verifier.calls.prepare(call.params)  # proven while the upstream answers
        if proof_params is not None:  # verify: proofs: from the account's checked proof
            outcome = await self._proven_state(call, proof_params, context)
        elif call.method == "eth_sendRawTransaction" and self._failover_config.broadcast > 1:
            outcome = await self._broadcast(call, head, context)
        elif rule is not None:
            outcome = await self._ask_quorum(call, block, head, rule, context)
        else:
            prefer = (
                await self.pending_transactions.preferred(
                    call.method, call.params, time.monotonic()
                )
                if call.method in PREFERENCE_METHODS
                else ()
            )
            outcome = await self._failover.run(call, block, head, context=context, prefer=prefer)
            if call.method == "eth_getLogs" and refused_as_too_large(outcome):
                outcome = await split_get_logs(call, outcome, self._failover, head, context)
            if call.method == "eth_getTransactionReceipt" and outcome.result is not None:
                self.pending_transactions.mined(str(call.params[0]).lower())  # type: ignore[index]
        self._log_call(call, outcome)
        where = answer_block(outcome.result) if outcome.error is None else None
        served = self._served_head()
        if where is None or served is None or where[0] <= served:
            outcome.block = block if block is not None or where is None else where[0]
            return outcome
        if await self._reached(where, context.within(hold)):
            outcome.block = where[0]
            return outcome
        # Ahead of everything the gateway serves, or not on the chain it serves: as a node
        # at the served head would answer, not there (yet).
        return Outcome(
            result=None,
            upstream=outcome.upstream,
            attempts=outcome.attempts,
            attempt_log=outcome.attempt_log,
            trace=outcome.trace,
        )

    async def _proven_state(
        self, call: Call, proof_params: list[Any], context: CallContext
    ) -> Outcome:
        """A balance, nonce or storage slot from eth_getProof through this chain's path
        (cached, and checked against the consensus block's stateRoot by the verifier)."""
        # The header whose stateRoot the proof is checked against, asked for at once.
        proven, _ = await asyncio.gather(
            self.execute(Call("eth_getProof", proof_params, call.id, False), context.part()),
            self.verifier.warm(proof_params[-1]),
        )
        if proven.error is not None:
            return proven
        proof = orjson.loads(proven.result_json) if proven.result_json else proven.result
        return Outcome(
            result=state_from_proof(call.method, proof),
            upstream=proven.upstream,
            attempts=proven.attempts,
            attempt_log=proven.attempt_log,
        )

    def _anchor_of(self, method: str) -> bool | int:
        """`unpinned_anchor(method)`, found once per method rpcgate knows."""
        anchor = self._anchors.get(method)
        if anchor is None:
            anchor = unpinned_anchor(method)
            if method in METHODS:  # a bounded table
                self._anchors[method] = anchor
        return anchor

    def verified_level(self, call: Call, outcome: Outcome) -> Level:
        """What was verified of this answer (X-Rpcgate-Verified)."""
        if outcome.error is not None or (outcome.result is None and outcome.result_json is None):
            return "none"
        mode = self.verifier.mode
        if call.method != "eth_getLogs":  # the level follows from the method and the anchor
            key = (
                call.method,
                outcome.block is not None
                or anchored_unpinned(self._anchor_of(call.method), call.params),
            )
            level = self._levels.get(key)
            if level is None:
                level = answer_level(call.method, mode, key[1])
                if call.method in METHODS:  # a bounded table: the methods rpcgate knows
                    self._levels[key] = level
            return (
                level
                if level not in ("integrity", "proof")
                else self.verifier.level(call.method, level, call.params)
            )
        in_bound = True
        if call.method == "eth_getLogs" and mode == "proofs":
            in_bound = self.verifier.logs_in_bound(self._prepare(call)[2].params)
        level = answer_level(
            call.method, mode, anchored(call.method, outcome.block, call.params), in_bound
        )
        return self.verifier.level(call.method, level)

    async def _ask_quorum(
        self,
        call: Call,
        block: int | None,
        head: int | None,
        rule: QuorumRule,
        context: CallContext,
    ) -> Outcome:
        """Several upstreams in different domains at once, each an `attempt`; `quorum`
        decides from what they said (a result or a verdict such as a revert; the ones that
        failed do not count)."""
        at = head if block is None or (head is not None and block > head) else block
        call_trace = CallTrace(block=at) if context.trace else None
        targets = broadcast_targets(self._failover.order_at(at, call_trace), rule.upstreams)
        timeout = max(0.001, context.within(self._failover_config.attempt_timeout_s))
        attempts: list[Attempt] = []
        tried = await asyncio.gather(
            *(
                attempt(
                    self.upstreams[name],
                    call.method,
                    call.params,
                    timeout,
                    attempts,
                    trace=call_trace,
                )
                for name in targets
            )
        )
        said, failed = hear(
            (
                t.upstream,
                t.reply.result,
                t.error_class,
                t.reply.error and MASKER.mask_any(t.reply.error),
            )
            for t in tried
        )
        if rule.mode == "max" and not said:  # nobody could say: one at a time, as usual
            outcome = await self._failover.run(call, block, head, context=context)
            return _with_attempts(outcome, attempts, call_trace)
        if rule.mode == "max":
            result, error = decide_max(said)
        else:
            result, error = decide_agree(said, rule.upstreams, rule.on_dispute, failed)
        upstream = ",".join(s.upstream for s in said) or "gateway"
        outcome = Outcome(result=result, error=error, upstream=upstream, attempts=len(targets))
        return _with_attempts(outcome, attempts, call_trace)

    async def _broadcast(self, call: Call, head: int | None, context: CallContext) -> Outcome:
        """A transaction to several upstreams in different domains at once (broadcast.py);
        when none of them could say, the usual failover over all of them."""
        config = self._failover_config
        call_trace = CallTrace() if context.trace else None
        targets = broadcast_targets(self._failover.order_at(head, call_trace), config.broadcast)
        attempts: list[Attempt] = []
        if targets:
            timeout = max(0.001, context.within(config.attempt_timeout_s))
            tx_hash, rejection, accepted = await self._broadcaster.send(
                call, targets, timeout, attempts, call_trace
            )
            if tx_hash is not None:
                outcome = Outcome(result=tx_hash, upstream=accepted[0], attempts=len(targets))
                return _with_attempts(outcome, attempts, call_trace)
            if rejection is not None and rejection.error is not None:
                outcome = Outcome(error=MASKER.mask_any(rejection.error), attempts=len(targets))
                return _with_attempts(outcome, attempts, call_trace)
        outcome = await self._failover.run(call, None, head, context=context)
        return _with_attempts(outcome, attempts, call_trace)

    def _log_call(self, call: Call, outcome: Outcome) -> None:
        """Every failed call is a log line an operator can act on; successes at debug."""
        if outcome.error is None:
            if logs.DEBUG:
                log.debug(
                    "call", chain=self.config.name, method=call.method, upstream=outcome.upstream
                )
            return
        code = outcome.error.get("code")
        log_at = log.warning if code in GATEWAY_FAILURES else log.info
        log_at(
            "call_failed",
            chain=self.config.name,
            method=call.method,
            code=code,
            message=outcome.error.get("message"),
            attempts=[
                f"{a.upstream}: {a.error_class or 'ok'} ({a.latency_s * 1000:.0f} ms)"
                for a in outcome.attempt_log
            ],
        )

    async def _internal(self, call: Call) -> tuple[Any, dict[str, Any] | None]:
        """A call the gateway makes for itself, through the usual path (cache, failover)."""
        outcome = await self.execute(call)
        if outcome.result_json is not None:
            return orjson.loads(outcome.result_json), None
        return outcome.result, outcome.error

    async def _on_upstream(self, name: str, method: str, params: list[Any]) -> Any:
        """A call a filter makes on the one upstream that holds it (a pending-transaction
        filter lives in that node's pool), as an `attempt`."""
        upstream = self.upstreams.get(name)
        if upstream is None:
            return Reply(failure=UpstreamFailure(transport="upstream no longer configured"))
        timeout = self._failover_config.attempt_timeout_s
        return (await attempt(upstream, method, params, timeout, [])).reply

    def _served_head(self) -> int | None:
        head = self.tracker.consensus.head
        return None if head is None else head.number

    def _someone_has(self, block: int) -> bool:
        """Whether a voting upstream's last polled head is at or above `block`."""
        return any(
            v.votes and v.head is not None and v.head.number >= block
            for v in self.tracker.views.values()
        )

    async def _reached(self, where: tuple[int, str], hold_s: float) -> bool:
        """Whether the served head reaches the answer's block (within `hold_s`) with that
        very block on its chain."""
        number, block_hash = where
        if not await self.tracker.wait_for_head(number, hold_s):
            return False
        consensus_head = self.tracker.consensus.head
        canonical = (
            consensus_head.hash
            if consensus_head is not None and consensus_head.number == number
            else self.tracker.canonical.get(number)
        )
        return canonical == block_hash

    def _trusted_to(self, answered_by: str) -> int | None:
        """How high the upstream(s) that gave an answer are known to share the canonical
        chain (several, comma-joined, for an answer fetched in parts): the lowest of them;
        None when one of them does not vote."""
        heights = []
        for name in answered_by.split(","):
            view = self.tracker.views.get(name)
            if view is None or not view.votes or view.agreed_height is None:
                return None
            heights.append(view.agreed_height)
        return min(heights, default=None)

    async def _fetch_and_store(
        self,
        call: Call,
        block: int | None,
        head: int | None,
        plan: CachePlan,
        context: CallContext,
    ) -> Outcome:
        outcome = await self._from_upstreams(call, block, head, context)
        outcome.cache = "miss"
        if outcome.error is None and plan.key is not None:
            _, _, view = self._consensus_view()  # as it is now, after the call
            stored = entry_for(plan, outcome.result, view, self._trusted_to(outcome.upstream))
            if stored is not None:
                self.cache.put(plan.key, *stored)
                self.cache_counters.stores += 1
        return outcome


def _found(
    prepared: dict[int, Any], call: Call, view: ChainView
) -> tuple[PinnedCall, CachePlan] | None:
    """A client batch's call as it was prepared in this consensus view (`_prepare`)."""
    found = prepared.get(id(call))
    if found is None or found[0] is not call or found[1] is not view:
        return None
    return found[2], found[3]


def _about_the_head(method: str, pinned: PinnedCall) -> bool:
    """Whether the answer follows the head (so it waits while another replica's higher
    head is weighed): `eth_blockNumber`, a tag or no block where the method takes one,
    and answers about the head itself. Blocks named by number, by hash, and what never
    changes answer at once."""
    if method == "eth_blockNumber":
        return True
    info = method_info(method)
    if info.cache is Cache.HEAD:
        return True
    return info.block_param is not None and pinned.tag is not None


def _with_attempts(
    outcome: Outcome, attempts: list[Attempt], call_trace: CallTrace | None
) -> Outcome:
    """`outcome` after the attempts made before it (a quorum's, a broadcast's sends): in
    its attempt log, and in its trace when one was asked for."""
    outcome.attempt_log = (*attempts, *outcome.attempt_log)
    if call_trace is None:
        return outcome
    if outcome.trace is not None:  # a failover after them: its trace, theirs first
        outcome.trace.attempts[:0] = call_trace.attempts
    else:
        call_trace.answered_by = outcome.upstream
        outcome.trace = call_trace
    return outcome


def _hit(result_json: bytes, pinned: int | None, stored_at: int | None) -> Outcome:
    block = pinned if pinned is not None else stored_at
    return Outcome(upstream="cache", cache="hit", result_json=result_json, block=block)
