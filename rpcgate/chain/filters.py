"""Filters the gateway keeps itself: `eth_newFilter` and `eth_newBlockFilter` live in
rpcgate, not on one upstream node.

A filter made on an upstream exists on that node only: the next call, sent to another
upstream (or by another replica, or after that node fails), gets "filter not found", and
a client that makes a new one misses what happened in between. rpcgate answers filter
calls from its own consensus instead: a filter is the criteria and the last blocks it has
delivered (their hashes, and a log filter's logs), and `eth_getFilterChanges` takes the walk
the WebSocket feed takes (`reorg_walk.py`): back by parent hash from the consensus head (or
from 1,000 blocks past the last one delivered) to a block it delivered. The blocks walked
are delivered (their hashes, or their logs, fetched with `eth_getLogs` through the usual
cache and failover), after the logs of the delivered blocks a reorg dropped, again with
`removed: true`, oldest block first, as geth sends them. So no upstream failure loses or
repeats a block or a log, and with Redis configured every replica serves every filter
(state in Redis, a TTL renewed on each poll, as a node expires a filter nobody polls).
What filters take is bounded as a node bounds it: criteria over `filters.max_criteria_bytes`
are refused, and beyond `filters.max_count` filters or `filters.memory_bytes` bytes (in
Redis: for all replicas together) the least recently polled is forgotten.
`eth_newPendingTransactionFilter` needs a node's pool: it is made on one upstream and its
calls go there; when that upstream is gone, the client gets the standard "filter not found".
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import orjson
import structlog

from rpcgate.chain.reorg_walk import Fetch, Followed, follow, walk_back
from rpcgate.config.settings import FiltersConfig
from rpcgate.consensus.heads import Block
from rpcgate.rpc.jsonrpc import INVALID_PARAMS, Call, quantity, rpc_error
from rpcgate.storage.shared_state import SharedState

log = structlog.get_logger("rpcgate.filters")

FILTER_METHODS = frozenset(
    {
        "eth_newFilter",
        "eth_newBlockFilter",
        "eth_newPendingTransactionFilter",
        "eth_getFilterChanges",
        "eth_getFilterLogs",
        "eth_uninstallFilter",
    }
)
# A filter nobody polls for this long is forgotten (geth's default is 5 minutes).
FILTER_TTL_S = 300.0
# Most blocks one eth_getFilterChanges covers; the rest comes with the next poll.
MAX_BLOCKS_PER_POLL = 1000
FILTER_NOT_FOUND = -32000  # geth's code and message for an unknown filter id
# What a filter remembers of the blocks it delivered, to see them dropped by a reorg: the
# last 64 (the WebSocket feed keeps the logs of as many), and the logs of the newest of them
# while they hold at most 256 logs (the newest block's always), to send them again as
# removed. It goes to Redis at every poll: small enough for that.
REMEMBERED_BLOCKS = 64
REMEMBERED_LOGS = 256


@dataclass
class Delivered:
    """A block a filter delivered: its hash, to see a reorg drop it, and (log filters) the
    logs delivered from it, to send them again as removed (None: not kept)."""

    number: int
    hash: str
    logs: list[dict[str, Any]] | None = None


@dataclass
class Filter:
    kind: str  # "block" | "logs" | "pending"
    last_block: int  # the last block delivered (or the head when it was made)
    criteria: dict[str, Any] | None = None  # logs: as the client gave them
    upstream: str | None = None  # pending: the node that holds it
    upstream_id: str | None = None
    recent: list[Delivered] = field(default_factory=list)  # the last delivered, oldest first

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @staticmethod
    def from_json(raw: bytes) -> Filter:
        """As `to_json` wrote it, by this version or another (a field it does not know is
        left out, one it lacks gets its default): replicas are upgraded one by one."""
        stored = orjson.loads(raw)
        known = {f.name for f in fields(Filter)} - {"recent"}
        recent = [
            Delivered(e["number"], e["hash"], e.get("logs")) for e in stored.get("recent") or ()
        ]
        return Filter(**{k: v for k, v in stored.items() if k in known}, recent=recent)


def not_found() -> dict[str, Any]:
    return rpc_error(FILTER_NOT_FOUND, "filter not found")


# -- pure decisions ------------------------------------------------------------------------


def poll_reach(last_block: int, head: int) -> int:
    """The newest block one poll goes up to: the head, at most 1,000 blocks past the last
    one delivered."""
    return min(head, last_block + MAX_BLOCKS_PER_POLL)


def walk_limit(item: Filter, top: int) -> int:
    """Most blocks a poll's walk back from block `top` takes: down to just above the oldest
    block remembered (below it no link can be found), or to the first block not delivered
    when none is remembered."""
    floor = item.recent[0].number if item.recent else item.last_block
    return top - floor


def remembered(recent: list[Delivered]) -> list[Delivered]:
    """What a filter keeps of the blocks it delivered (oldest first): the last 64, and the
    logs of the newest of them while they hold at most 256 logs (the newest block's always)."""
    kept = recent[-REMEMBERED_BLOCKS:]
    total = 0
    for index in range(len(kept) - 1, -1, -1):
        entry = kept[index]
        if entry.logs is None:
            continue
        total += len(entry.logs)
        if total > REMEMBERED_LOGS and index < len(kept) - 1:
            kept[index] = Delivered(entry.number, entry.hash)
    return kept


def blocks_to_deliver(item: Filter, step: Followed) -> list[Block]:
    """The blocks a poll delivers after its walk: the new canonical ones; after a gap (a
    reorg deeper than what the filter remembers) only those above the last one delivered."""
    if step.linked:
        return list(step.new)
    return [block for block in step.new if block.number > item.last_block]


def advance(
    item: Filter, top: Block, step: Followed, logs: Mapping[str, list[dict[str, Any]]]
) -> tuple[list[Any], Filter]:
    """What a poll that walked back from block `top` returns, and the filter after it. A
    block filter: the new blocks' hashes. A log filter (`logs`: its logs in the new blocks,
    by block hash): first the logs it delivered from the blocks a reorg dropped, again with
    `removed: true`, oldest block first, each in log order (as geth and the WebSocket feed
    send them), then the new blocks' logs."""
    new = blocks_to_deliver(item, step)
    if item.kind == "block":
        result: list[Any] = [block.hash for block in new]
        delivered = [Delivered(block.number, block.hash) for block in new]
    else:
        dropped = item.recent[step.kept :]
        result = [{**e, "removed": True} for block in dropped for e in block.logs or ()]
        result += [e for block in new for e in logs[block.hash]]
        delivered = [Delivered(block.number, block.hash, logs[block.hash]) for block in new]
    last_block = top.number if step.linked or new else item.last_block  # new ends at top
    recent = remembered(item.recent[: step.kept] + delivered)
    return result, replace(item, last_block=last_block, recent=recent)


def logs_by_block(result: Any, blocks: Sequence[Block]) -> dict[str, list[dict[str, Any]]] | None:
    """An `eth_getLogs` answer over `blocks` (the canonical ones, from the walk) by block
    hash, in order; None when a log is not in one of them (an answer from another branch)."""
    if not isinstance(result, list):
        return None
    canonical = {block.number: block.hash for block in blocks}
    grouped: dict[str, list[dict[str, Any]]] = {block.hash: [] for block in blocks}
    for entry in result:
        if not isinstance(entry, dict):
            return None
        number = quantity(entry.get("blockNumber"))
        block_hash = canonical.get(number) if number is not None else None
        if block_hash is None or entry.get("blockHash") != block_hash:
            return None
        grouped[block_hash].append(entry)
    return grouped


def logs_window(criteria: dict[str, Any], first: int, last: int) -> tuple[int, int] | None:
    """The part of [first, last] the filter's own fromBlock/toBlock allow (numbers only;
    tags other than numbers mean "no bound" here, as for a node's filter)."""
    low = quantity(criteria.get("fromBlock"))
    high = quantity(criteria.get("toBlock"))
    first = max(first, low) if low is not None else first
    last = min(last, high) if high is not None else last
    return (first, last) if first <= last else None


def criteria_too_large(criteria: Any, limit: int) -> dict[str, Any] | None:
    """The error for eth_newFilter criteria over `limit` bytes of JSON, else None."""
    try:
        size = len(orjson.dumps(criteria))
    except TypeError:  # an integer beyond 64 bits: no filter criterion holds one
        return rpc_error(INVALID_PARAMS, "invalid filter criteria: a number out of range")
    if size <= limit:
        return None
    return rpc_error(
        INVALID_PARAMS,
        f"filter criteria too large: {size} bytes of JSON, over {limit} "
        "(filters.max_criteria_bytes); split the addresses or topics across filters",
        {"limit": limit, "size": size},
    )


# Redis: a filter stored within the bounds, the least recently polled forgotten first.
# KEYS: the filter, when each filter was stored last (a sorted set, ms of Redis's clock, so
# that replicas' clocks do not matter), each one's bytes (a hash), their sum. ARGV: the
# filter's JSON, its TTL (ms), most filters, most bytes. Index entries of expired filters
# are dropped as they are met (what they took is given back).
_STORE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ttl = tonumber(ARGV[2])
local function forget(key)
  local size = tonumber(redis.call('HGET', KEYS[3], key) or '0')
  redis.call('HDEL', KEYS[3], key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('DEL', key)
  return redis.call('DECRBY', KEYS[4], size)
end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl, 'LIMIT', 0, 100)) do
  forget(key)
end
forget(KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], #ARGV[1])
local total = redis.call('INCRBY', KEYS[4], #ARGV[1])
local count = redis.call('ZCARD', KEYS[2])
local forgotten = 0
while count > tonumber(ARGV[3]) or total > tonumber(ARGV[4]) do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if oldest == KEYS[1] then break end
  total = forget(oldest)
  count = count - 1
  forgotten = forgotten + 1
end
return forgotten
"""
# Redis: a filter uninstalled (KEYS as above); 1 when it was there.
_FORGET = """
local size = tonumber(redis.call('HGET', KEYS[3], KEYS[1]) or '0')
redis.call('HDEL', KEYS[3], KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
redis.call('DECRBY', KEYS[4], size)
return redis.call('DEL', KEYS[1])
"""


# Every filter key and the filters' indexes share a hash tag: the scripts that store and evict
# filters touch them together, which a Redis Cluster allows within one hash slot only.
_SLOT = "filters"


class FilterStore:
    """Filters by id: in process, or in Redis (shared by replicas) when configured. A filter
    is kept as its JSON (what goes to Redis), so that the bytes counted against
    `filters.memory_bytes` are what it takes; a poll stores it again, so the least recently
    polled is the first stored, and goes first when a bound is passed (`settings`)."""

    def __init__(
        self, shared: SharedState | None = None, settings: FiltersConfig | None = None
    ) -> None:
        self.settings = settings or FiltersConfig()
        self._local: OrderedDict[str, tuple[bytes, float]] = OrderedDict()  # -> (JSON, until)
        self._local_bytes = 0
        self._shared = shared
        self._store = shared.client.register_script(_STORE) if shared is not None else None
        self._forget = shared.client.register_script(_FORGET) if shared is not None else None

    @property
    def local_count(self) -> int:
        return len(self._local)

    @property
    def local_bytes(self) -> int:
        return self._local_bytes

    async def get(self, chain_id: int, filter_id: str) -> Filter | None:
        shared = self._shared
        if shared is not None:
            raw = await shared.quick(
                shared.client.get(shared.key(chain_id, "filter", filter_id, slot=_SLOT))
            )
            if isinstance(raw, bytes):
                return Filter.from_json(raw)
        key = f"{chain_id}:{filter_id}"
        found = self._local.get(key)
        if found is None:
            return None
        if found[1] < time.monotonic():
            self._drop_local(key)
            return None
        return Filter.from_json(found[0])

    async def put(self, chain_id: int, filter_id: str, item: Filter) -> None:
        # Exact size: orjson's output keeps its working buffer (4 KB, or more).
        raw = memoryview(item.to_json()).tobytes()
        self._put_local(f"{chain_id}:{filter_id}", raw)
        shared, store = self._shared, self._store
        if shared is not None and store is not None:
            keys = [
                shared.key(chain_id, "filter", filter_id, slot=_SLOT),
                *self._index_keys(shared),
            ]
            settings = self.settings
            args: list[bytes | int] = [
                raw,
                int(FILTER_TTL_S * 1000),
                settings.max_count,
                settings.memory_bytes,
            ]
            await shared.quick(store(keys=keys, args=args))

    async def delete(self, chain_id: int, filter_id: str) -> bool:
        existed = self._drop_local(f"{chain_id}:{filter_id}")
        shared, forget = self._shared, self._forget
        if shared is not None and forget is not None:
            keys = [
                shared.key(chain_id, "filter", filter_id, slot=_SLOT),
                *self._index_keys(shared),
            ]
            existed = bool(await shared.quick(forget(keys=keys))) or existed
        return existed

    def _put_local(self, key: str, raw: bytes) -> None:
        """Stored last (the most recently polled); then expired filters go, and while a
        bound is passed the least recently polled."""
        self._drop_local(key)
        local = self._local
        now = time.monotonic()
        local[key] = (raw, now + FILTER_TTL_S)
        self._local_bytes += len(raw)
        settings = self.settings
        while True:
            oldest = next(iter(local))
            over = len(local) > settings.max_count or self._local_bytes > settings.memory_bytes
            if oldest == key or (local[oldest][1] >= now and not over):
                break
            self._drop_local(oldest)

    def _drop_local(self, key: str) -> bool:
        found = self._local.pop(key, None)
        if found is None:
            return False
        self._local_bytes -= len(found[0])
        return True

    @staticmethod
    def _index_keys(shared: SharedState) -> list[str]:
        return [
            shared.link.key("filters", part, slot=_SLOT) for part in ("polled", "bytes", "total")
        ]


class Filters:
    """The filter methods of one chain, answered from its consensus and its call path."""

    def __init__(
        self,
        chain_id: int,
        store: FilterStore,
        head: Callable[[], Block | None],
        execute: Fetch,
        on_upstream: Callable[[str, str, list[Any]], Awaitable[Any]],
        pick_upstream: Callable[[Call], Awaitable[Any]],
    ) -> None:
        self.chain_id = chain_id
        self.store = store
        self._head = head
        self._execute = execute
        self._on_upstream = on_upstream  # (upstream, method, params) -> Reply
        self._pick_upstream = pick_upstream  # eth_newPendingTransactionFilter -> Outcome

    async def handle(self, call: Call) -> tuple[Any, dict[str, Any] | None]:
        """(result, error) for one filter call."""
        params = call.params if isinstance(call.params, list) else []
        method = call.method
        head = self._head()
        if method in ("eth_newBlockFilter", "eth_newFilter"):
            if head is None:
                return None, rpc_error(-32052, "no consensus head yet: try again shortly")
            if method == "eth_newFilter":
                if not params or not isinstance(params[0], dict):
                    return None, rpc_error(INVALID_PARAMS, "eth_newFilter needs a filter object")
                refused = criteria_too_large(params[0], self.store.settings.max_criteria_bytes)
                if refused is not None:
                    return None, refused
                made = Filter(
                    "logs",
                    head.number,
                    criteria=params[0],
                    recent=[Delivered(head.number, head.hash, [])],  # no log of it delivered
                )
            else:
                made = Filter("block", head.number, recent=[Delivered(head.number, head.hash)])
            return await self._new(made), None
        if method == "eth_newPendingTransactionFilter":
            outcome = await self._pick_upstream(call)
            if outcome.error is not None:
                return None, outcome.error
            pinned = Filter(
                "pending",
                head.number if head is not None else 0,
                upstream=outcome.upstream,
                upstream_id=outcome.result,
            )
            return await self._new(pinned), None
        if not params or not isinstance(params[0], str):
            return None, rpc_error(INVALID_PARAMS, f"{method} needs a filter id")
        filter_id = params[0].lower()
        item = await self.store.get(self.chain_id, filter_id)
        if method == "eth_uninstallFilter":
            if item is not None and item.kind == "pending":
                await self._on_upstream(item.upstream or "", method, [item.upstream_id])
            return await self.store.delete(self.chain_id, filter_id), None
        if item is None:
            return None, not_found()
        if item.kind == "pending":
            return await self._pending(filter_id, item, method)
        if method == "eth_getFilterLogs":
            if item.kind != "logs" or item.criteria is None:
                return None, not_found()
            result, error = await self._execute(Call("eth_getLogs", [item.criteria], None, False))
            await self.store.put(self.chain_id, filter_id, item)  # polled: kept alive
            return result, error
        return await self._changes(filter_id, item, head)

    async def _new(self, item: Filter) -> str:
        filter_id = "0x" + secrets.token_hex(16)
        await self.store.put(self.chain_id, filter_id, item)
        return filter_id

    async def _changes(
        self, filter_id: str, item: Filter, head: Block | None
    ) -> tuple[Any, dict[str, Any] | None]:
        result, error, after = ([], None, item) if head is None else await self._follow(item, head)
        await self.store.put(self.chain_id, filter_id, after)  # polled: kept alive
        return result, error

    async def _follow(self, item: Filter, head: Block) -> tuple[Any, dict[str, Any] | None, Filter]:
        """(result, error, the filter after the poll). What fails now leaves the filter as
        it was: the next poll delivers the same."""
        top: Block | None = head
        reach = poll_reach(item.last_block, head.number)
        if reach != head.number:
            top = await self._block_at(reach)
        if top is None:
            return [], None, item
        recent = [entry.hash for entry in item.recent]
        limit = walk_limit(item, top.number)
        walked = await walk_back(self._execute, top.hash, set(recent), limit)
        if walked is None:
            return [], None, item  # an ancestor could not be fetched now
        step = follow(recent, top.hash, [block for block, _ in walked])
        if not step.linked and item.recent:
            log.warning("filter_gap", chain_id=self.chain_id, head=top.number)
        logs: Mapping[str, list[dict[str, Any]]] = {}
        if item.kind == "logs":
            assert item.criteria is not None
            found, error = await self._logs_in(item.criteria, blocks_to_deliver(item, step))
            if found is None:
                return ([], None, item) if error is None else (None, error, item)
            logs = found
        result, after = advance(item, top, step, logs)
        return result, None, after

    async def _block_at(self, number: int) -> Block | None:
        result, error = await self._execute(
            Call("eth_getBlockByNumber", [hex(number), False], None, False)
        )
        block = Block.from_json(result)
        return block if error is None and block is not None and block.number == number else None

    async def _logs_in(
        self, criteria: dict[str, Any], blocks: list[Block]
    ) -> tuple[dict[str, list[dict[str, Any]]] | None, dict[str, Any] | None]:
        """The filter's logs in `blocks` (consecutive canonical blocks), by block hash."""
        window = logs_window(criteria, blocks[0].number, blocks[-1].number) if blocks else None
        if window is None:
            return {block.hash: [] for block in blocks}, None
        query = {**criteria, "fromBlock": hex(window[0]), "toBlock": hex(window[1])}
        result, error = await self._execute(Call("eth_getLogs", [query], None, False))
        if error is not None:
            return None, error  # nothing delivered: the same range next time
        grouped = logs_by_block(result, blocks)
        if grouped is None:
            log.info("filter_logs_off_the_chain", chain_id=self.chain_id, first=window[0])
        return grouped, None

    async def _pending(
        self, filter_id: str, item: Filter, method: str
    ) -> tuple[Any, dict[str, Any] | None]:
        reply = await self._on_upstream(item.upstream or "", method, [item.upstream_id])
        if reply.failure is not None:
            return None, not_found()  # its node is gone: a pool cannot be moved
        await self.store.put(self.chain_id, filter_id, item)
        return reply.result, None
