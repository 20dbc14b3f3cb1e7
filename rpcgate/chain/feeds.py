"""Subscription feeds of one chain: canonical heads and their logs, from rpcgate's own
consensus head, for every WebSocket subscriber at once.

The feed follows the head tracker's decisions. At each new consensus head it takes the walk
of `reorg_walk.py` (the one HTTP filters take too): back from that head by parent hash
until a block it already sent; the blocks walked are the new canonical ones, the blocks sent
after the meeting point are the dropped ones. So each canonical head goes out once and in
order, a reorg sends the new heads from the fork point up, and logs (`eth_getLogs` by block
hash, once per block for all subscribers, matched here) go out once each, with the dropped
blocks' logs again with `removed: true` first.

The decisions (`reorg_walk.follow`, `log_matches`, `parse_log_filter`, `header_object`) are
pure.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from rpcgate.chain.reorg_walk import Fetch, follow, walk_back
from rpcgate.consensus.heads import Block
from rpcgate.rpc.background import Background
from rpcgate.rpc.jsonrpc import Call, quantity

log = structlog.get_logger("rpcgate.feeds")

WINDOW = 128  # blocks remembered: a reorg deeper than this is sent from the window's start
LOGS_WINDOW = 64  # of those, the last ones whose logs are kept (to send them as removed)
MAX_WALK = 256  # most blocks fetched in one step (a longer jump is a gap, logged)

# Fields of a block object that are not header fields (a node's newHeads sends the header).
_NOT_HEADER = frozenset({"transactions", "uncles", "withdrawals", "size", "totalDifficulty"})
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_TOPIC = re.compile(r"^0x[0-9a-fA-F]{64}$")

Deliver = Callable[[Any], None]


# -- pure decisions ------------------------------------------------------------------------


def header_object(block: dict[str, Any]) -> dict[str, Any]:
    """The header a node's newHeads sends, from a block object."""
    return {k: v for k, v in block.items() if k not in _NOT_HEADER}


@dataclass(frozen=True, slots=True)
class LogFilter:
    addresses: frozenset[str] | None  # lower-case; None: any address
    topics: tuple[frozenset[str] | None, ...]  # per position: None any, else one of (lower)


def parse_log_filter(raw: Any) -> LogFilter | str:
    """The filter of `eth_subscribe("logs", filter)`, or what is wrong with it."""
    if raw is None:
        return LogFilter(None, ())
    if not isinstance(raw, dict):
        return "the logs filter must be an object with `address` and `topics`"
    address = raw.get("address")
    addresses: frozenset[str] | None = None
    if address is not None:
        values = [address] if isinstance(address, str) else address
        if not isinstance(values, list) or not all(
            isinstance(a, str) and _ADDRESS.match(a) for a in values
        ):
            return "address must be a 20-byte hex address or a list of them"
        addresses = frozenset(a.lower() for a in values) if values else None
    topics_raw = raw.get("topics") or []
    if not isinstance(topics_raw, list) or len(topics_raw) > 4:
        return "topics must be a list of at most 4 positions"
    topics: list[frozenset[str] | None] = []
    for position in topics_raw:
        if position is None:
            topics.append(None)
            continue
        options = [position] if isinstance(position, str) else position
        if not isinstance(options, list) or not all(
            isinstance(t, str) and _TOPIC.match(t) for t in options
        ):
            return "each topic must be null, a 32-byte hex value or a list of them"
        topics.append(frozenset(t.lower() for t in options) if options else None)
    return LogFilter(addresses, tuple(topics))


def log_matches(entry: dict[str, Any], wanted: LogFilter) -> bool:
    if wanted.addresses is not None:
        address = entry.get("address")
        if not isinstance(address, str) or address.lower() not in wanted.addresses:
            return False
    topics = entry.get("topics") or []
    for i, options in enumerate(wanted.topics):
        if options is None:
            continue
        if i >= len(topics) or not isinstance(topics[i], str) or topics[i].lower() not in options:
            return False
    return True


@dataclass(slots=True)
class Sent:
    """A block the feed sent (or started from), and its logs once fetched."""

    block: Block
    seq: int  # order of sending: a subscriber gets removed logs only of blocks it was sent
    logs: list[dict[str, Any]] | None = None


# -- the feed ------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class Subscriber:
    deliver: Deliver  # takes the notification's `result`
    kind: str  # newHeads | logs
    log_filter: LogFilter | None = None
    since_seq: int = 0  # blocks sent from this sequence number on are this subscriber's


class HeadFeed:
    """Heads and logs of one chain for all its subscribers; runs while it has some."""

    def __init__(
        self,
        chain_name: str,
        consensus_head: Callable[[], Block | None],
        decided: Callable[[], Awaitable[None]],
        fetch: Fetch,
    ) -> None:
        self.chain_name = chain_name
        self._head = consensus_head
        self._decided = decided
        self._fetch = fetch
        self._subscribers: set[Subscriber] = set()
        self._sent: list[Sent] = []
        self._seq = itertools.count(1)
        self._running = Background(f"feed-{chain_name}", self._run)
        self.gaps = 0  # steps that could not be linked to what was sent (logged)

    def subscribe(self, subscriber: Subscriber) -> None:
        subscriber.since_seq = self._sent[-1].seq + 1 if self._sent else 0
        self._subscribers.add(subscriber)
        if not self._running.running:
            head = self._head()
            self._sent = [Sent(head, next(self._seq))] if head is not None else []
            if head is not None:
                subscriber.since_seq = self._sent[-1].seq + 1
            self._running.start()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """The last subscriber gone, the feed stops (fetching nothing for no one); the next
        first subscriber starts it again from the head of that moment."""
        self._subscribers.discard(subscriber)
        if not self._subscribers:
            self._running.cancel()

    @property
    def running(self) -> bool:
        return self._running.running

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    async def stop(self) -> None:
        await self._running.stop()

    async def _run(self) -> None:
        while True:
            try:
                await self.step()
            except Exception:  # a bug in one step must not end every subscription
                log.exception("feed_step_failed", chain=self.chain_name)
            await self._decided()

    async def step(self) -> None:
        """Sends what changed since the last step: dropped logs, new heads, new logs."""
        head = self._head()
        if head is None:
            return
        if not self._sent:
            self._sent = [Sent(head, next(self._seq))]
            return
        sent = [entry.block.hash for entry in self._sent]
        walked = await walk_back(self._fetch, head.hash, set(sent), MAX_WALK)
        if walked is None:
            return  # an ancestor could not be fetched now: the next decision tries again
        step = follow(sent, head.hash, [block for block, _ in walked])
        if not step.linked:
            self.gaps += 1
            log.warning(
                "feed_gap",
                chain=self.chain_name,
                head=head.number,
                reason=f"no link to the last {len(self._sent)} blocks sent within {MAX_WALK}",
            )
        dropped = self._sent[step.kept :]
        del self._sent[step.kept :]
        for entry in dropped:  # a head back to a block sent (a rollback) drops only these
            self._send_logs(entry, removed=True)
        headers = {block.hash: header_object(raw) for block, raw in walked}
        wants_logs = any(s.kind == "logs" for s in self._subscribers)
        for block in step.new:
            entry = Sent(block, next(self._seq))
            if wants_logs:
                entry.logs = await self._logs_of(block)
                if entry.logs is None:
                    return  # the next step goes on from here: nothing sent twice
            self._sent.append(entry)
            del self._sent[:-WINDOW]
            if len(self._sent) > LOGS_WINDOW:
                self._sent[-LOGS_WINDOW - 1].logs = None  # deeper reorgs: past finality
            for subscriber in list(self._subscribers):
                if subscriber.kind == "newHeads":
                    subscriber.deliver(headers[block.hash])
            self._send_logs(entry, removed=False)

    async def _logs_of(self, block: Block) -> list[dict[str, Any]] | None:
        result, error = await self._fetch(
            Call("eth_getLogs", [{"blockHash": block.hash}], None, False)
        )
        if error is not None or not isinstance(result, list):
            return None
        logs = [e for e in result if isinstance(e, dict) and e.get("blockHash") == block.hash]
        if len(logs) != len(result):
            return None  # an answer about another block: not this block's logs
        return sorted(logs, key=lambda e: quantity(e.get("logIndex")) or 0)

    def _send_logs(self, entry: Sent, removed: bool) -> None:
        if not entry.logs:
            return
        for subscriber in list(self._subscribers):
            if subscriber.kind != "logs" or subscriber.log_filter is None:
                continue
            if removed and entry.seq < subscriber.since_seq:
                continue  # sent before this subscriber came: it never had these logs
            for item in entry.logs:
                if log_matches(item, subscriber.log_filter):
                    subscriber.deliver({**item, "removed": True} if removed else item)


class PendingFeed:
    """Pending transaction hashes of one chain, merged from the upstream WebSockets that
    offer them, each hash sent once to every subscriber."""

    def __init__(self, is_new: Callable[[str], bool], offered: Callable[[], bool]) -> None:
        self._is_new = is_new  # the merger: False for a hash already seen from any upstream
        self._offered = offered  # whether an upstream socket offers pending transactions
        self._subscribers: set[Deliver] = set()

    @property
    def available(self) -> bool:
        return self._offered()

    def subscribe(self, deliver: Deliver) -> Callable[[], None]:
        self._subscribers.add(deliver)
        return lambda: self._subscribers.discard(deliver)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def offer(self, upstream: str, tx_hash: str) -> None:
        if self._subscribers and self._is_new(tx_hash):
            for deliver in list(self._subscribers):
                deliver(tx_hash)
