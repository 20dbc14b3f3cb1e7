"""The head tracker of one chain: polls every upstream and keeps the consensus current.

The I/O shell around `heads`. Polling is cheap: each poll asks each upstream for its
`latest` block header (one request, whether a block came or not; the hash shows a head
replaced at the same height, and a load balancer's replicas each answer with a block of
their own). `safe` and `finalized` are fetched every FINALITY_REFRESH_BLOCKS new blocks,
`eth_syncing` only when an upstream lags, `eth_chainId` and the genesis block at start,
when a head jumps implausibly and when an upstream's chain changed under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

import structlog

from rpcgate.config.settings import ChainConfig
from rpcgate.consensus.heads import (
    HEIGHT_WINDOW,
    REPLICA_SPREAD_BLOCKS,
    Block,
    Consensus,
    State,
    Tagged,
    UpstreamView,
    agreed_height,
    agreement_lookups,
    canonical_hashes,
    compute_consensus,
    forget_history,
    observe_height,
    raised_to_shared,
    record_hash,
    record_head,
    record_missing,
    record_uneven,
    rewind,
    upstream_state,
)
from rpcgate.consensus.health import record_failure
from rpcgate.rpc.background import Background
from rpcgate.rpc.errors import classify
from rpcgate.rpc.jsonrpc import quantity
from rpcgate.upstream.client import Reply, Upstream

if TYPE_CHECKING:
    from rpcgate.storage.shared_head import SharedHeads

log = structlog.get_logger("rpcgate.heads")

FINALITY_REFRESH_BLOCKS = 8
# A head that moves more than this between two polls is checked against the chain id again
# (an upstream silently switched to another network looks exactly like that).
IMPLAUSIBLE_JUMP_BLOCKS = 1000
# Hash look-ups one decision may make (walking back, checking who is ahead or forked,
# searching for where a fork starts: a binary search over MAX_FORK_SEARCH_DEPTH blocks takes
# seven steps of at most two look-ups).
MAX_LOOKUPS_PER_DECISION = 24
# A wrong-chain or syncing upstream is re-checked every this many polls.
RECHECK_EVERY_POLLS = 10
# How often a head that seems gone is asked for before the upstream counts as gone back
# (behind a load balancer, each ask may reach a replica that is lower).
STEPPED_BACK_ASKS = 10
# Height samples of a new head: one, or this many while an upstream is new to the tracker
# (a load balancer shows its replicas before calls meet the one behind).
YOUNG_SAMPLES = 3
# Polls asked for by answers (a block above the head) come at most this often.
HINTED_POLL_GAP_S = 0.05


class HeadTracker:
    def __init__(
        self,
        chain: ChainConfig,
        upstreams: dict[str, Upstream],
        timeout_s: float,
        shared: SharedHeads | None = None,
    ) -> None:
        self.chain = chain
        self.upstreams = upstreams
        self.timeout_s = min(timeout_s, max(chain.head_poll_interval * 4, 1.0))
        self.views = {
            up.name: UpstreamView(up.name, weight=up.weight, since=time.time())
            for up in chain.upstreams
        }
        self.consensus = Consensus()
        self.canonical: dict[int, str] = {}
        self._finality_at: dict[str, int] = {}
        self._polls = 0
        self._polling = Background(f"heads-{chain.name}", self._run)
        self._lock = asyncio.Lock()
        self._poll_now = asyncio.Event()  # an answer showed a block above the head
        self._published = asyncio.Event()  # set (and replaced) at each decision
        # Replicas: the highest head another replica served, until a poll has weighed it.
        self._shared = shared
        self._shared_floor: Block | None = None
        self._floor_heard_in_round = 0
        self._decided_round = 0  # the poll round of the last decision
        self._offered: tuple[int, str | None] = (-1, None)  # (height, genesis) offered
        if shared is not None:
            shared.listen(chain.chain_id, self._heard)

    async def start(self) -> None:
        """One round before serving (so nothing unverified serves), then poll forever."""
        await self.poll_once()
        self._polling.start()

    async def stop(self) -> None:
        await self._polling.stop()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        last_round = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.chain.head_poll_interval):
                    await self._poll_now.wait()
            gap = last_round + HINTED_POLL_GAP_S - loop.time()
            if gap > 0:
                await asyncio.sleep(gap)
            self._poll_now.clear()
            try:
                await self.poll_once()
            except Exception:  # a bug in one round must not stop head tracking
                log.exception("head_poll_round_failed", chain=self.chain.name)
            last_round = loop.time()

    def poll_soon(self) -> None:
        """An answer is a free head hint: one showed a block above the consensus head."""
        self._poll_now.set()

    def _heard(self, block: Block, genesis: str | None = None) -> None:
        """Another replica serves `block`: poll now, and hold calls about the head until
        that is weighed. A head of another life of the chain id is none of ours."""
        head = self.consensus.head
        if genesis is not None and self.consensus.genesis not in (None, genesis):
            return
        if (head is None or block.number > head.number) and (
            self._shared_floor is None or block.number > self._shared_floor.number
        ):
            self._shared_floor = block
            self._floor_heard_in_round = self._polls
            self.poll_soon()

    @property
    def behind_shared(self) -> bool:
        """Another replica has served a higher head than this one, not yet weighed here."""
        return self._shared_floor is not None

    async def catch_up_to_shared(self, timeout_s: float) -> None:
        """Waits (at most `timeout_s`) until a poll that began after this call came has
        weighed the shared head: one round of polls, not one per head heard meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        began = self._polls
        while self._shared_floor is not None and self._decided_round <= began:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self.poll_soon()
            published = self._published
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await published.wait()

    async def wait_for_head(self, number: int, timeout_s: float) -> bool:
        """Polls soon and waits (at most `timeout_s`) until the consensus head reaches
        `number`; whether it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.consensus.head is None or self.consensus.head.number < number:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self.poll_soon()
            published = self._published
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await published.wait()
        return True

    async def decided(self) -> None:
        """Returns at the next head decision (a new consensus head or the same one)."""
        await self._published.wait()

    async def poll_once(self) -> None:
        async with self._lock:
            self._polls += 1
            round_ = self._polls
            await asyncio.gather(
                *(self._poll(self.upstreams[name], view) for name, view in self.views.items())
            )
            await self._decide(round_)

    async def _call(
        self, upstream: Upstream, view: UpstreamView, method: str, params: list[Any]
    ) -> Reply:
        reply = await upstream.call(method, params, self.timeout_s)
        if reply.failure is not None:
            classification = classify(reply.failure)
            view.poll_failures += 1
            view.last_poll_error = (
                f"{method}: {classification.error_class}: {classification.reason}"
            )
            record_failure(upstream.health, classification, time.monotonic())
        return reply

    async def _poll(self, upstream: Upstream, view: UpstreamView) -> None:
        view.last_poll_at = time.time()
        recheck = view.state in (State.WRONG_CHAIN, State.SYNCING) and (
            self._polls % RECHECK_EVERY_POLLS == 0
        )
        if (view.chain_id_ok is None or recheck) and not await self._verify_chain_id(
            upstream, view
        ):
            return
        if view.chain_id_ok is False:
            return  # quarantined: only the chain id is asked again, now and then
        # The head block itself, not just its number: one request either way, and a head
        # replaced at the same height, or a lower one from a replica, is seen at once.
        reply = await self._call(upstream, view, "eth_getBlockByNumber", ["latest", False])
        if reply.failure is not None:
            return
        block = Block.from_json(reply.result)
        if block is None:
            view.poll_failures += 1
            view.last_poll_error = "eth_getBlockByNumber(latest) gave no block"
            return
        number = block.number
        if view.head is not None and abs(number - view.head.number) > IMPLAUSIBLE_JUMP_BLOCKS:
            view.chain_id_ok = None  # verify again before trusting this head
            if not await self._verify_chain_id(upstream, view) or view.chain_id_ok is False:
                return
        observe_height(view, number)
        if view.head is not None and number < view.head.number:
            height = view.consistent_height
            if (
                view.uneven
                and height is not None
                and number >= height
                and view.hash_at(number) in (None, block.hash)
            ):
                record_uneven(view, number)  # a replica behind it, as before: nothing new
            else:
                await self._stepped_back(upstream, view, block)
        elif view.head is None or block.hash != view.head.hash:
            young = len(view.seen) < HEIGHT_WINDOW
            await self._new_head(upstream, view, block)
            await self._sample_replicas(upstream, view, number, YOUNG_SAMPLES if young else 1)
        if (
            view.state is State.LAGGING and (view.syncing or self._polls % RECHECK_EVERY_POLLS == 0)
        ) or view.state is State.STARTING:
            syncing = await self._call(upstream, view, "eth_syncing", [])
            if syncing.failure is None:
                view.syncing = bool(syncing.result)  # false, or an object describing progress
        view.poll_failures = 0
        view.last_poll_error = ""

    async def _sample_replicas(
        self, upstream: Upstream, view: UpstreamView, number: int, samples: int
    ) -> None:
        """A new head is when replicas behind one URL differ: its height asked again (after
        the head came, so one node can only answer as high or higher), a lower answer is a
        replica behind. An upstream met for the first time is asked a few times more."""
        replies = await asyncio.gather(
            *(upstream.call("eth_blockNumber", [], self.timeout_s) for _ in range(samples))
        )
        lower = [n for r in replies if (n := quantity(r.result)) is not None and n < number]
        if lower and min(lower) > number - REPLICA_SPREAD_BLOCKS:
            record_uneven(view, min(lower))

    async def _new_head(self, upstream: Upstream, view: UpstreamView, block: Block) -> None:
        reorganised = False
        if view.head is not None and block.number > view.head.number + 1:
            reorganised = await self._check_continuity(upstream, view)
        reorganised = record_head(view, block) or reorganised
        if reorganised:  # from a height we do not know: maybe another life of the chain
            await self._verify_chain_id(upstream, view)
        if (
            block.number - self._finality_at.get(view.name, -FINALITY_REFRESH_BLOCKS)
            >= FINALITY_REFRESH_BLOCKS
        ):
            await self._poll_finality(upstream, view)
            self._finality_at[view.name] = block.number

    async def _check_continuity(self, upstream: Upstream, view: UpstreamView) -> bool:
        """Blocks were skipped between two polls: is the head we knew still in the chain?
        If not, the upstream reorganised and its history is no longer true (whether so)."""
        assert view.head is not None
        if await self._still_there(upstream, view.head) is not True:
            forget_history(view)
            return True
        return False

    async def _still_there(self, upstream: Upstream, known: Block) -> bool | None:
        """Whether the upstream still has `known` at its height: False when it has another
        block there, or none however often it is asked (behind a load balancer, one of a
        few asks reaches a replica that has it); None when it did not answer."""
        for _ in range(STEPPED_BACK_ASKS):
            reply = await upstream.call(
                "eth_getBlockByNumber", [hex(known.number), False], self.timeout_s
            )
            if reply.failure is not None:
                return None
            block = Block.from_json(reply.result)
            if block is not None:
                return block.hash == known.hash
        return False

    async def _stepped_back(self, upstream: Upstream, view: UpstreamView, block: Block) -> None:
        """It showed a lower head than before: a replica behind the same URL (the higher
        block is still there) or a node that went back (it is gone, or replaced)."""
        assert view.head is not None
        known, number = view.head, block.number
        if view.hash_at(number) in (None, block.hash):  # else another block below: a reorg
            still = await self._still_there(upstream, known)
            if still is None:
                return  # nothing to go by: the next poll tells
            if still:
                record_uneven(view, number)
                return
        rewind(view, block)
        await self._verify_chain_id(upstream, view)  # maybe another life of the chain
        log.info(
            "upstream_went_back",
            chain=self.chain.name,
            upstream=view.name,
            head=known.number,
            now=number,
        )

    def lacks_block(self, name: str, number: int) -> None:
        """An answer showed that `name` (a replica behind it) lacks block `number`."""
        view = self.views.get(name)
        if view is not None:
            record_missing(view, number)

    async def _verify_chain_id(self, upstream: Upstream, view: UpstreamView) -> bool:
        """Its chain id, and the genesis block that tells one life of a chain id from
        another (a devnet reset, a fork sharing the id). A node that will not give block 0
        keeps the genesis it had (or none): that alone is not a failed poll."""
        reply = await self._call(upstream, view, "eth_chainId", [])
        chain_id = quantity(reply.result)
        if reply.failure is not None or chain_id is None:
            return False
        if chain_id == self.chain.chain_id:  # a node of another chain is asked nothing else
            genesis = await upstream.call("eth_getBlockByNumber", ["0x0", False], self.timeout_s)
            block = Block.from_json(genesis.result)
            if block is not None and block.number == 0:
                view.genesis = block.hash
        view.chain_id = chain_id
        view.chain_id_ok = chain_id == self.chain.chain_id
        if not view.chain_id_ok:
            view.poll_failures = 0
        return True

    async def _poll_finality(self, upstream: Upstream, view: UpstreamView) -> None:
        depth = self.chain.finality_depth
        if depth is not None:  # a chain without the tags: final at a depth below its head
            await self._final_at_depth(upstream, view, depth)
            return
        safe, finalized = await asyncio.gather(
            upstream.call("eth_getBlockByNumber", ["safe", False], self.timeout_s),
            upstream.call("eth_getBlockByNumber", ["finalized", False], self.timeout_s),
        )
        # Nodes without the tags (pre-merge chains) answer with errors: not a poll failure.
        for reply, attr in ((safe, "safe"), (finalized, "finalized")):
            block = Block.from_json(reply.result)
            if block is not None:
                setattr(view, attr, Tagged(block.number, block.hash))
                record_hash(view, block.number, block.hash)

    async def _final_at_depth(self, upstream: Upstream, view: UpstreamView, depth: int) -> None:
        """Safe and final: the upstream's block `depth` below its head (its own hash, so
        that the consensus weighs it as it weighs the tags)."""
        head = view.head
        if head is None or head.number < depth:
            return
        number = head.number - depth
        block_hash = head.hash if depth == 0 else view.hash_at(number)
        if block_hash is None:
            reply = await upstream.call(
                "eth_getBlockByNumber", [hex(number), False], self.timeout_s
            )
            block = Block.from_json(reply.result)
            if block is None or block.number != number:
                return
            block_hash = block.hash
            record_hash(view, number, block_hash)
        view.safe = view.finalized = Tagged(number, block_hash)

    async def _decide(self, round_: int) -> None:
        views = list(self.views.values())
        # A head another replica served: served here too where a voter of ours holds it.
        floor = self._shared_floor
        previous = self.consensus
        consensus = compute_consensus(views, previous)
        canonical = canonical_hashes(views, consensus)
        needs = _needs(views, consensus, canonical, floor)
        lookups = 0
        while needs and lookups < MAX_LOOKUPS_PER_DECISION:
            batch = needs[: MAX_LOOKUPS_PER_DECISION - lookups]
            lookups += len(batch)
            await asyncio.gather(*(self._lookup(name, number) for name, number in batch))
            consensus = compute_consensus(views, previous)
            canonical = canonical_hashes(views, consensus)
            again = _needs(views, consensus, canonical, floor)
            if again == needs:
                break  # the look-ups failed; decide with what we have
            needs = again
        raised = raised_to_shared(consensus, views, floor)
        if raised is not consensus:
            consensus, canonical = raised, canonical_hashes(views, raised)
        head = consensus.head
        if self._shared is not None and head is not None:
            stance = await self._agree(consensus)
            if stance in ("hold", "settle") and previous.head is not None and head != previous.head:
                # Redis unreachable (a failover), or found again before the other replicas
                # have: the head stays where the replicas last agreed (`shared_head.stance`).
                await self._hold(previous, views, floor, round_)
                return
        self._weigh(floor, head)
        self._decided_round = round_
        self._publish(consensus, canonical)

    async def _agree(self, consensus: Consensus) -> str:
        """Where the served head stands with the other replicas (`shared_head.stance`), judged
        once Redis has been asked whether it is back: by a read, never by the offer, which
        would announce a head to nobody (the replicas still looking for Redis are not
        subscribed) and serve it beside them. When they agree, a new head is offered: in Redis
        before anyone is served it."""
        assert self._shared is not None and consensus.head is not None
        shared, head, offered = self._shared, consensus.head, self._offered
        await shared.look_again(self.chain.chain_id)
        stance = shared.stance(heard_higher=self._shared_floor is not None)
        if stance == "shared" and (head.number > offered[0] or consensus.genesis != offered[1]):
            if await shared.offer(self.chain.chain_id, head, consensus.genesis):
                self._offered = (head.number, consensus.genesis)
            else:  # lost just now: "hold" (or "alone" without a hold)
                stance = shared.stance(heard_higher=self._shared_floor is not None)
        return stance

    async def _hold(
        self, previous: Consensus, views: list[UpstreamView], floor: Block | None, round_: int
    ) -> None:
        """The served head where the replicas last agreed: the one served before, or a higher
        one another replica offered (it serves it) where a voter of ours holds that very
        block; never the upstreams' newer heads, which a replica that cannot hear of them
        would not serve beside this one. A head heard is weighed as in any decision, so calls
        about the head do not wait on it until they give up and ask an upstream."""
        lookups = _floor_lookups(views, previous.head, floor)[:MAX_LOOKUPS_PER_DECISION]
        await asyncio.gather(*(self._lookup(name, number) for name, number in lookups))
        held = raised_to_shared(previous, views, floor)
        self._weigh(floor, held.head)
        self._decided_round = round_
        if held is previous:
            self._wake()  # decided: the same head
        else:
            self._publish(held, canonical_hashes(views, held))

    def _weigh(self, floor: Block | None, head: Block | None) -> None:
        """A shared head is weighed by a poll that began after it came, or by reaching it."""
        weighed = floor is not None and (
            self._polls > self._floor_heard_in_round
            or (head is not None and head.number >= floor.number)
        )
        if weighed and self._shared_floor is floor:
            self._shared_floor = None

    async def _lookup(self, name: str, number: int) -> None:
        upstream, view = self.upstreams[name], self.views[name]
        reply = await upstream.call("eth_getBlockByNumber", [hex(number), False], self.timeout_s)
        block = Block.from_json(reply.result)
        if block is not None and block.number == number:
            record_hash(view, number, block.hash)
            record_hash(view, number - 1, block.parent_hash)

    def _wake(self) -> None:
        """Whoever waits for a decision (a new head or the same one) looks again."""
        self._published.set()
        self._published = asyncio.Event()

    def _publish(self, consensus: Consensus, canonical: dict[int, str]) -> None:
        previous = self.consensus.head
        self.consensus = consensus
        self.canonical = canonical
        self._wake()
        if consensus.head is not None and (previous is None or previous != consensus.head):
            log.debug(
                "consensus_head",
                chain=self.chain.name,
                number=consensus.head.number,
                hash=consensus.head.hash,
                voters=list(consensus.voters),
            )
        now = time.time()
        for view in self.views.values():
            state, reason, fork_height = upstream_state(
                view, consensus, self.canonical, self.chain.chain_id, self.chain.max_lag_blocks
            )
            view.fork_height = fork_height
            view.agreed_height = agreed_height(view, self.canonical)
            if state is not view.state:
                level = log.info if state in (State.OK, State.STARTING) else log.warning
                level(
                    "upstream_state",
                    chain=self.chain.name,
                    upstream=view.name,
                    state=str(state),
                    previous=str(view.state),
                    reason=reason,
                )
                view.since = now
                view.state = state
            view.reason = reason


def _needs(
    views: list[UpstreamView],
    consensus: Consensus,
    canonical: dict[int, str],
    floor: Block | None = None,
) -> list[tuple[str, int]]:
    """Look-ups the consensus needs first, then whether a voter holds the shared head,
    then those that tell how far each upstream agrees with the consensus."""
    at_floor = _floor_lookups(views, consensus.head, floor)
    lookups = agreement_lookups(views, consensus, canonical)
    return list(dict.fromkeys([*consensus.needs, *at_floor, *lookups]))


def _floor_lookups(
    views: list[UpstreamView], head: Block | None, floor: Block | None
) -> list[tuple[str, int]]:
    """Whether a voter holds the shared head, where it is above `head`: its block there."""
    if floor is None or (head is not None and head.number >= floor.number):
        return []
    return [
        (v.name, floor.number)
        for v in views
        if v.votes
        and v.head is not None
        and v.head.number >= floor.number
        and v.hash_at(floor.number) is None
    ]
