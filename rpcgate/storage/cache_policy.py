"""What may be cached, under which key, and whether a cached answer may still be served.

Pure decisions over plain data; the tiers that hold entries are in `store.py`. The policy
of each method is in the method table (`methods.py`), with its reason.

The rule that keeps the cache right across reorgs: an entry about a block that was not
finalized when it was stored remembers that block's hash, and is served only while the
consensus still has that hash at that height. An entry about the head remembers the head's
hash and dies with it. Finalized blocks and static answers are kept until their TTL, under
keys of the chain's life (`chain_key`: chain id and genesis hash), so a chain that restarts
never sees the answers of its previous life.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import InitVar, dataclass
from typing import Any

import orjson

from rpcgate.consensus.heads import Block
from rpcgate.consensus.pinning import PinnedCall
from rpcgate.rpc.jsonrpc import dumps, quantity
from rpcgate.rpc.methods import Cache, method_info

# Fields of call objects and filters that are quantities: "0x01" and "0x1" are one value.
_QUANTITY_KEYS = frozenset(
    {
        "gas",
        "gasPrice",
        "value",
        "nonce",
        "maxFeePerGas",
        "maxPriorityFeePerGas",
        "maxFeePerBlobGas",
        "blockNumber",
        "fromBlock",
        "toBlock",
        "chainId",
        "type",
    }
)


class Lifetime(enum.StrEnum):
    """Which TTL an entry gets (the seconds are settings)."""

    STATIC = "static"
    FINALIZED = "finalized"
    UNFINALIZED = "unfinalized"
    HEAD = "head"


@dataclass(frozen=True, slots=True)
class ChainView:
    """What the cache needs of the consensus: the head, finality, canonical hashes."""

    head: Block | None
    finalized: int | None
    canonical: Mapping[int, str]
    genesis: str | None = None  # the life of the chain id these hashes belong to

    def hash_at(self, number: int) -> str | None:
        if self.head is not None and number == self.head.number:
            return self.head.hash
        return self.canonical.get(number)

    def is_final(self, number: int) -> bool:
        return self.finalized is not None and number <= self.finalized


@dataclass(frozen=True, slots=True)
class Entry:
    """A cached answer as it is kept: its JSON, encoded once (a hit sends these bytes as
    they are), and what its freshness is checked against. No parsed copy is kept: a
    parsed answer costs several times its JSON, and nothing reads it back."""

    result: InitVar[Any]  # encoded into `result_json` (ignored when that is given)
    block_number: int | None = None  # the block the answer is about
    block_hash: str | None = None  # its hash when stored; None: it was final then
    head_hash: str | None = None  # for answers about the head: the head they belong to
    result_json: bytes = b""

    def __post_init__(self, result: Any) -> None:
        encoded = self.result_json or orjson.dumps(result)
        # An exact copy: orjson hands out its whole working buffer (4 KiB for the
        # smallest answer, about 8x a large one), and an entry may be kept for days.
        object.__setattr__(self, "result_json", memoryview(encoded).tobytes())

    def to_bytes(self) -> bytes:
        """Metadata line, newline, result JSON (orjson never writes a raw newline)."""
        meta = orjson.dumps([self.block_number, self.block_hash, self.head_hash])
        return meta + b"\n" + self.result_json

    @staticmethod
    def from_bytes(raw: bytes) -> Entry:
        meta, _, result_json = raw.partition(b"\n")
        block_number, block_hash, head_hash = orjson.loads(meta)
        orjson.loads(result_json)  # JSON, or not one of ours: ValueError
        return Entry(None, block_number, block_hash, head_hash, result_json)


@dataclass(frozen=True, slots=True)
class CachePlan:
    key: str | None  # None: this call is not cached (bypass)
    policy: Cache
    block: int | None = None  # BLOCK: the pinned block
    block_hash: str | None = None  # BLOCK: the canonical hash there when the call was made


BYPASS = CachePlan(None, Cache.NEVER)


def _normalize(value: Any, quantity: bool = False) -> Any:
    if type(value) is list and not quantity and all(type(v) is str for v in value):
        # The common case (addresses, hashes, tags), without a call per item.
        return ["0x" + v[2:].lower() if v[:2] in ("0x", "0X") else v for v in value]
    if isinstance(value, str):
        if value[:2] in ("0x", "0X"):
            lowered = "0x" + value[2:].lower()
            if quantity:
                try:
                    return hex(int(lowered, 16))
                except ValueError:
                    return lowered
            return lowered
        return value
    if isinstance(value, dict):
        return {k: _normalize(v, k in _QUANTITY_KEYS) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def chain_key(chain_id: int, genesis: str | None) -> str:
    """What cache keys are namespaced by: the chain id, and the genesis hash of the chain
    the consensus is on, so that no entry outlives its chain (a devnet reset, or another
    chain sharing the id on one Redis, starts with a cache of its own). Until a genesis is
    known, the chain id alone."""
    return str(chain_id) if genesis is None else f"{chain_id}-{genesis[2:18].lower()}"


def cache_key(chain_id: int | str, method: str, params: Any) -> str:
    """One canonical form per call: request id dropped, tags already pinned, hex folded to
    lower case, quantities without leading zeros, object keys sorted."""
    position = method_info(method).block_param
    normalized = _normalize([] if params is None else params)  # absent params == []
    if isinstance(normalized, list) and position is not None and len(normalized) > position:
        normalized[position] = _normalize(normalized[position], quantity=True)
    body = dumps([method, normalized], orjson.OPT_SORT_KEYS)
    return str(chain_id) + ":" + body.decode()


def redis_key(prefix: str, key: str) -> str:
    """Redis keys: namespaced per chain, fixed length whatever the params."""
    chain_id, _, body = key.partition(":")
    method = body[2 : body.index('"', 2)]
    digest = hashlib.sha256(body.encode()).hexdigest()[:40]
    return f"{prefix}{chain_id}:{method}:{digest}"


def plan_call(chain_id: int | str, method: str, pinned: PinnedCall, view: ChainView) -> CachePlan:
    policy = method_info(method).cache
    if policy is Cache.NEVER:
        return BYPASS
    if policy is Cache.BLOCK:
        if pinned.block is None:  # pending, a block hash, or no block given
            return BYPASS
        return CachePlan(
            cache_key(chain_id, method, pinned.params),
            policy,
            pinned.block,
            view.hash_at(pinned.block),
        )
    return CachePlan(cache_key(chain_id, method, pinned.params), policy)


def answer_block(result: Any) -> tuple[int, str] | None:
    """The block an answer sits in or is: (number, hash), or None (pending, not a block)."""
    if not isinstance(result, dict):
        return None
    number = quantity(result.get("blockNumber", result.get("number")))
    block_hash = result.get("blockHash", result.get("hash") if "number" in result else None)
    if number is None or not isinstance(block_hash, str):
        return None
    return number, block_hash


def entry_for(
    plan: CachePlan, result: Any, view: ChainView, trusted_to: int | None
) -> tuple[Entry, Lifetime] | None:
    """The entry to store for an upstream's answer, or None when it must not be kept.

    `trusted_to`: the answering upstream's agreed height, if it votes (None otherwise). An
    answer about a finalized block is kept when the consensus hash there is known and the
    answer matches it, or, where no hash was ever fetched (old history), when the upstream
    is known to share the canonical chain at or above that block.
    """
    if plan.key is None or result is None:
        return None  # null: not found yet (a block above the head, a tx not mined)
    if plan.policy is Cache.STATIC:
        return Entry(result), Lifetime.STATIC
    if plan.policy is Cache.HEAD:
        if view.head is None:
            return None
        return Entry(result, head_hash=view.head.hash), Lifetime.HEAD
    if plan.policy is Cache.BLOCK:
        assert plan.block is not None
        number, canonical = plan.block, view.hash_at(plan.block)
        if isinstance(result, dict) and "hash" in result and "number" in result:
            where = answer_block(result)
            if where is None or where[0] != number:
                return None  # not the block asked for
            if canonical is not None and where[1] != canonical:
                return None  # not the consensus block at that height
        if view.is_final(number):
            if trusted_to is None or trusted_to < number:
                return None  # the upstream is not known to be on the canonical chain there
            return Entry(result, number), Lifetime.FINALIZED
        if canonical is None or canonical != plan.block_hash:
            return None  # unknown, or reorganised while the call was in flight
        return Entry(result, number, canonical), Lifetime.UNFINALIZED
    where = answer_block(result)  # BY_HASH
    if where is None:
        return None
    number, block_hash = where
    canonical = view.hash_at(number)
    if view.is_final(number) and (
        canonical == block_hash
        or (canonical is None and trusted_to is not None and trusted_to >= number)
    ):
        return Entry(result, number), Lifetime.FINALIZED
    if canonical != block_hash:
        return None  # not (or not known to be) on the canonical chain
    return Entry(result, number, block_hash), Lifetime.UNFINALIZED


def is_fresh(entry: Entry, view: ChainView) -> bool:
    if entry.head_hash is not None:
        return view.head is not None and view.head.hash == entry.head_hash
    if entry.block_hash is not None:
        assert entry.block_number is not None
        return view.hash_at(entry.block_number) == entry.block_hash
    return True
