"""Filters the gateway keeps itself: `eth_newFilter` and `eth_newBlockFilter` live in
rpcgate, not on one upstream node.

A filter made on an upstream exists on that node only: the next call, sent to another
upstream (or by another replica, or after that node fails), gets "filter not found", and
a client that makes a new one misses what happened in between. rpcgate answers filter
calls from its own consensus instead: a filter is the criteria and the last block it has
delivered, and `eth_getFilterChanges` returns the canonical blocks (or the logs, fetched
with `eth_getLogs` through the usual cache and failover) from the next block up to the
consensus head. So no upstream failure loses or repeats a block or a log, and with Redis
configured every replica serves every filter (state in Redis, a TTL renewed on each poll,
as a node expires a filter nobody polls). `eth_newPendingTransactionFilter` needs a
node's pool: it is made on one upstream and its calls go there; when that upstream is
gone, the client gets the standard "filter not found".
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import orjson
import structlog

from rpcgate.jsonrpc import INVALID_PARAMS, Call, quantity, rpc_error
from rpcgate.shared_state import SharedState

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


@dataclass
class Filter:
    kind: str  # "block" | "logs" | "pending"
    last_block: int  # the last block delivered (or the head when it was made)
    criteria: dict[str, Any] | None = None  # logs: as the client gave them
    upstream: str | None = None  # pending: the node that holds it
    upstream_id: str | None = None


def not_found() -> dict[str, Any]:
    return rpc_error(FILTER_NOT_FOUND, "filter not found")


def changes_range(last_block: int, head: int) -> tuple[int, int] | None:
    """The blocks the next poll delivers: after the last one, up to the head (bounded)."""
    if head <= last_block:
        return None
    return last_block + 1, min(head, last_block + MAX_BLOCKS_PER_POLL)


def logs_window(criteria: dict[str, Any], first: int, last: int) -> tuple[int, int] | None:
    """The part of [first, last] the filter's own fromBlock/toBlock allow (numbers only;
    tags other than numbers mean "no bound" here, as for a node's filter)."""
    low = quantity(criteria.get("fromBlock"))
    high = quantity(criteria.get("toBlock"))
    first = max(first, low) if low is not None else first
    last = min(last, high) if high is not None else last
    return (first, last) if first <= last else None


class FilterStore:
    """Filters by id: in process, or in Redis (shared by replicas) when configured."""

    def __init__(self, shared: SharedState | None = None) -> None:
        self._local: dict[str, tuple[Filter, float]] = {}
        self._shared = shared

    async def get(self, chain_id: int, filter_id: str) -> Filter | None:
        shared = self._shared
        if shared is not None:
            raw = await shared.quick(shared.client.get(shared.key(chain_id, "filter", filter_id)))
            if isinstance(raw, bytes):
                return Filter(**orjson.loads(raw))
        found = self._local.get(f"{chain_id}:{filter_id}")
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    async def put(self, chain_id: int, filter_id: str, item: Filter) -> None:
        self._local[f"{chain_id}:{filter_id}"] = (item, time.monotonic() + FILTER_TTL_S)
        if len(self._local) > 100_000:  # expired ones go first, then the oldest
            now = time.monotonic()
            for key in [k for k, (_, until) in self._local.items() if until < now][:10_000]:
                del self._local[key]
        shared = self._shared
        if shared is not None:
            key = shared.key(chain_id, "filter", filter_id)
            ttl_ms = int(FILTER_TTL_S * 1000)
            await shared.quick(shared.client.set(key, orjson.dumps(asdict(item)), px=ttl_ms))

    async def delete(self, chain_id: int, filter_id: str) -> bool:
        existed = self._local.pop(f"{chain_id}:{filter_id}", None) is not None
        shared = self._shared
        if shared is not None:
            key = shared.key(chain_id, "filter", filter_id)
            existed = bool(await shared.quick(shared.client.delete(key))) or existed
        return existed


# A call through the chain's usual path (cache, failover): (result, error).
Execute = Callable[[Call], Awaitable[tuple[Any, dict[str, Any] | None]]]


class Filters:
    """The filter methods of one chain, answered from its consensus and its call path."""

    def __init__(
        self,
        chain_id: int,
        store: FilterStore,
        head: Callable[[], int | None],
        execute: Execute,
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
                made = Filter("logs", head, criteria=params[0])
            else:
                made = Filter("block", head)
            return await self._new(made), None
        if method == "eth_newPendingTransactionFilter":
            outcome = await self._pick_upstream(call)
            if outcome.error is not None:
                return None, outcome.error
            pinned = Filter(
                "pending", head or 0, upstream=outcome.upstream, upstream_id=outcome.result
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
        self, filter_id: str, item: Filter, head: int | None
    ) -> tuple[Any, dict[str, Any] | None]:
        span = changes_range(item.last_block, head) if head is not None else None
        if span is None:
            await self.store.put(self.chain_id, filter_id, item)
            return [], None
        first, last = span
        if item.kind == "block":
            hashes = []
            for number in range(first, last + 1):
                block, error = await self._execute(
                    Call("eth_getBlockByNumber", [hex(number), False], None, False)
                )
                if error is not None or not isinstance(block, dict):
                    last = number - 1  # deliver what we have; the rest next time
                    break
                hashes.append(block["hash"])
            item.last_block = max(item.last_block, last)
            await self.store.put(self.chain_id, filter_id, item)
            return hashes, None
        assert item.criteria is not None
        window = logs_window(item.criteria, first, last)
        result: Any = []
        if window is not None:
            criteria = {**item.criteria, "fromBlock": hex(window[0]), "toBlock": hex(window[1])}
            result, error = await self._execute(Call("eth_getLogs", [criteria], None, False))
            if error is not None:
                return None, error  # nothing delivered: the same range next time
        item.last_block = last
        await self.store.put(self.chain_id, filter_id, item)
        return result, None

    async def _pending(
        self, filter_id: str, item: Filter, method: str
    ) -> tuple[Any, dict[str, Any] | None]:
        reply = await self._on_upstream(item.upstream or "", method, [item.upstream_id])
        if reply.failure is not None:
            return None, not_found()  # its node is gone: a pool cannot be moved
        await self.store.put(self.chain_id, filter_id, item)
        return reply.result, None
