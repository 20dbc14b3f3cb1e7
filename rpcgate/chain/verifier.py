"""Checks an upstream's answer before it is served (`chains[].verify`): the I/O shell around
the pure checks of `rpcgate/verify/`.

A check is anchored on the block hash the upstreams agree on: the head tracker's for recent
blocks, and for older ones the hash EIP-2935's history contract holds, proven by a storage
proof against the consensus head's `stateRoot` (in hops of 8,191 blocks further back:
`verify/history.py`), kept for good once the block is final. On a chain without the
contract (its account proven empty), an old block is checked for self-consistency only.
What it needs besides the
answer (a block's header for its roots, a block's receipts, an account's proof) is fetched
through the chain's own path, so it is cached, routed and itself checked: a header is
recomputed before its `receiptsRoot` or `stateRoot` is believed. Its fetches so reach the
upstreams only as failover's `attempt`s (timed, weighed against health, traced), never by
calling an upstream here. The check itself runs inside the attempt it judges (failover
passes it as the attempt's `check`), so a failed one is recorded as that attempt's
`integrity` failure. A check says what is wrong
in words (the upstream's `integrity` failure); when its anchor cannot be had at all, it
raises `Unverifiable`, and the answer is not served as if it had been checked.

Levels (`X-Rpcgate-Verified`, per answer): `proof` (from a Merkle proof, or logs checked
against verified receipts), `integrity` (recomputed from its fields), `consensus` (about a
block the upstreams agree on, the rest is the upstream's word), `none`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import structlog

from rpcgate.chain.executed_calls import ExecutedCalls
from rpcgate.chain.local_evm import Unproven
from rpcgate.rpc.context import CLIENT_BATCH, ClientBatch
from rpcgate.rpc.errors import ErrorClass, UpstreamFailure, classify
from rpcgate.rpc.methods import METHODS, Cache, Check, method_info
from rpcgate.rpc.trace import note_verification
from rpcgate.storage.cache_policy import ChainView
from rpcgate.verify import (
    EMPTY_CODE_HASH,
    EMPTY_TRIE_ROOT,
    HISTORY_ADDRESS,
    HISTORY_CODE_HASH,
    bloom_may_contain,
    code_matches,
    hash_from_word,
    header_mismatch,
    history_slot,
    holds,
    hops,
    is_encodable,
    logs_matching,
    receipts_root_mismatch,
    transaction_hash_mismatch,
    transactions_root_mismatch,
    verify_account,
    verify_storage,
)

log = structlog.get_logger("rpcgate.verify")

Mode = Literal["off", "integrity", "proofs"]
Level = Literal["proof", "integrity", "consensus", "none"]
# A call the gateway makes for itself through the chain's path: (result, error object).
Fetch = Callable[[str, list[Any]], Awaitable[tuple[Any, dict[str, Any] | None]]]


_BLOCKS = ("eth_getBlockByNumber", "eth_getBlockByHash")
_TRANSACTIONS = (
    "eth_getTransactionByHash",
    "eth_getTransactionByBlockHashAndIndex",
    "eth_getTransactionByBlockNumberAndIndex",
)
# Answered from eth_getProof with `verify: proofs` (execute.py): the proven field of each.
PROVEN_STATE = ("eth_getBalance", "eth_getTransactionCount", "eth_getStorageAt")
_BODY_FIELDS = ("transactions", "uncles", "withdrawals", "size", "totalDifficulty")
_UNHASHABLE_KEPT = 256  # headers that failed, kept to compare with another upstream's
_HEADERS_KEPT = 4096  # checked headers remembered by hash (about 2.5 MB)
_ANCHORS_KEPT = 65_536  # proven hashes of final blocks, by number (about 10 MB)
PARENT_WALK_MAX = 256  # headers walked down from a known hash to anchor an old block
_NO_HISTORY_RECHECK_S = 300.0  # a chain found without the history contract: asked again after
_RECEIPT_FIELDS = ("status", "root", "cumulativeGasUsed", "logsBloom", "gasUsed", "type")


class Unverifiable(Exception):
    """What a check is anchored on could not be fetched (no upstream gave it)."""


def checked_methods(mode: Mode) -> frozenset[str]:
    """The methods whose answers `Verifier.check` looks at, per mode."""
    if mode == "off":
        return frozenset()
    recomputed = {name for name, info in METHODS.items() if info.check is Check.RECOMPUTE}
    if mode == "integrity":
        # logs: in canonical blocks; proofs: walked to their block's stateRoot, so that a
        # lying one (an old block's anchor is one) is that upstream's failure, never cached.
        return frozenset(recomputed | {"eth_getLogs", "eth_getProof"})
    return frozenset(recomputed | {"eth_getLogs", "eth_getProof", "eth_getCode"})


def answer_level(
    method: str, mode: Mode, anchored: bool, logs_in_bound: bool = True, error: bool = False
) -> Level:
    """What was verified of an answer. `anchored`: it is about a block the consensus names
    (a pinned number, a hash found in a canonical block, the chain's identity)."""
    check = method_info(method).check
    if error or check is Check.NONE or not anchored:
        return "none"
    if mode == "proofs" and check is Check.PROOF and logs_in_bound:
        return "proof"
    if mode != "off" and check is Check.RECOMPUTE:
        return "integrity"
    return "consensus"


def logs_range(criteria: Any) -> range | None:
    """The blocks an eth_getLogs filter with pinned numbers covers; None when its bounds
    are not both numbers (a tag left unpinned, a `blockHash` filter)."""
    if not isinstance(criteria, dict) or "blockHash" in criteria:
        return None
    try:
        first, last = int(criteria["fromBlock"], 16), int(criteria["toBlock"], 16)
    except (KeyError, TypeError, ValueError):
        return None
    return range(first, last + 1)


class Verifier:
    def __init__(
        self,
        mode: Mode,
        view: Callable[[], ChainView],
        fetch: Fetch,
        logs_max_blocks: int,
        chain: str = "",
        header_format: str = "ethereum",
        chain_id: int = 0,
        execute_calls: bool = False,
        history: bool = True,
    ) -> None:
        self.chain = chain
        self.mode = mode
        # How this chain's headers hash (the chain table's `headers`); `none`: not checked.
        self.header_layout = header_format
        # False for a chain whose headers are not recomputed (header_format: none), or once
        # two upstreams served the same header that does not hash as the layout says (a
        # chain of another shape): headers are then not recomputed (logged once).
        self.headers_recomputed = header_format != "none"
        # False once no upstream serves eth_getBlockReceipts (receipts are then unchecked).
        self.block_receipts = True
        self._unhashable: dict[str, tuple[str, tuple[Any, ...]]] = {}
        self._view = view
        self._fetch = fetch
        # eth_call checked by executing it over proven state (`proofs`, an Ethereum EVM).
        self.calls = (
            ExecutedCalls(chain_id, chain, fetch, self)
            if mode == "proofs" and execute_calls
            else None
        )
        self.methods = checked_methods(mode) | (
            {"eth_call"} if self.calls is not None else frozenset()
        )
        self.logs_max_blocks = logs_max_blocks
        self.proves = mode == "proofs"  # state answered from eth_getProof (execute.py)
        self._headers: dict[str, dict[str, Any]] = {}  # checked headers by hash, oldest first
        self._fetching_headers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._anchoring: dict[tuple[int, str], asyncio.Future[str | None]] = {}
        self._by_number: dict[str, dict[str, Any]] = {}  # headers by number, for one head
        self._by_number_head: str | None = None
        self._anchors: dict[int, str] = {}  # final blocks' proven hashes, oldest first
        self._anchors_genesis: str | None = None  # the chain's life they belong to
        self._recent: dict[int, str] = {}  # non-final blocks' proven hashes, for one head
        self._recent_head: str | None = None
        # Loop time until which old blocks are not anchored by the history contract: the
        # chain was found without it (asked again later), or has none (`history: false`).
        self._no_history_until = 0.0 if history else float("inf")
        self._said_no_history = False

    def logs_in_bound(self, params: Any) -> bool:
        """Whether a (pinned) eth_getLogs call is one `proofs` checks in full."""
        criteria = params[0] if isinstance(params, list) and params else None
        if isinstance(criteria, dict) and "blockHash" in criteria:
            return True
        blocks = logs_range(criteria)
        return blocks is not None and len(blocks) <= self.logs_max_blocks

    async def check(self, method: str, params: Any, result: Any, upstream: str = "") -> str | None:
        """What is wrong with `result` (from `upstream`) as an answer to the call, in words;
        None if nothing. Raises Unverifiable when the anchor of the check cannot be fetched."""
        if result is None:
            return None  # not found: nothing to check (routing weighs who said so)
        args = params if isinstance(params, list) else []
        if method in _BLOCKS:
            if args[:1] == ["pending"] or (isinstance(result, dict) and result.get("hash") is None):
                return None  # a block being built: no hash of its own to hold it to
            return await self._block_problem(result, upstream)
        if method in _TRANSACTIONS:
            return await self._transaction_problem(result)
        if method == "eth_getBlockReceipts":
            return await self._block_receipts_problem(args, result)
        if method == "eth_getTransactionReceipt":
            return await self._receipt_problem(result)
        if method == "eth_getLogs":
            return await self._logs_problem(args, result)
        if method == "eth_getProof":
            return await self._proof_problem(args, result)
        if method == "eth_getCode":
            return await self._code_problem(args, result)
        if method == "eth_call" and self.calls is not None:
            try:
                return await self.calls.problem(args, result)
            except Unproven as exc:
                raise Unverifiable(str(exc)) from exc
        return None

    async def revert_problem(self, method: str, params: Any, data: Any) -> str | None:
        """What is wrong with an upstream's revert of an eth_call (its error's `data`):
        under `proofs` it must be what the call does over proven state."""
        if method != "eth_call" or self.calls is None:
            return None
        try:
            return await self.calls.revert_problem(params, data)
        except Unproven as exc:
            raise Unverifiable(str(exc)) from exc

    async def close(self) -> None:
        if self.calls is not None:
            await self.calls.close()

    # -- what the check of an executed call borrows (executed_calls.Anchors) --

    async def header(self, block: Any) -> dict[str, Any]:
        return await self._header(block)

    async def not_canonical(self, number: Any, block_hash: Any, what: str) -> str | None:
        return await self._not_canonical(number, block_hash, what)

    async def hash_at(self, number: int) -> str | None:
        """Block `number`'s hash as the consensus has it or the head's history proves it."""
        view = self._view()
        head = view.head
        if head is None or number > head.number:
            return None
        if number == head.number:
            return head.hash
        known = view.hash_at(number)
        if known is None:
            known = await self._anchored_hash(number, head.number, head.hash, view)
        return known

    # -- blocks and transactions: recomputed from the answer alone --

    async def _not_canonical(
        self, number: Any, block_hash: Any, what: str, anchor: bool = True
    ) -> str | None:
        """A block below the consensus head whose hash is not the one the upstreams agree
        on (at the head itself a reorganisation may be under way). Beyond the heights the
        head tracker remembers, the hash is proven from the head (`anchor`), where the
        chain keeps its history."""
        try:
            height = int(number, 16)
        except (TypeError, ValueError):
            return f"{what}: block number {str(number)[:20]!r} is not a hex number"
        view = self._view()
        head = view.head
        if head is None or height >= head.number:
            return None
        known = view.hash_at(height)
        if known is None and anchor:
            known = await self._anchored_hash(height, head.number, head.hash, view)
        if known is None:
            return None
        if str(block_hash).lower() != known.lower():
            return f"{what}: block {height} is {str(block_hash)[:18]}…, the consensus has {known}"
        return None

    # -- old blocks: anchored to the head by the history contract (EIP-2935) --

    async def _anchored_hash(
        self, height: int, head: int, head_hash: str, view: ChainView
    ) -> str | None:
        """Block `height`'s hash as the history contract proves it from the head, or else
        as the parent links of the headers above it lead to it (a bounded walk); None
        where neither reaches it."""
        known = self._anchor_known(height, head_hash, view)
        if known is not None:
            return known
        # One proof (or walk) for the checks that want the same height at once.
        key = (height, head_hash)
        anchoring = self._anchoring.get(key)
        if anchoring is None:
            anchoring = self._anchoring[key] = asyncio.ensure_future(
                self._anchor(height, head, head_hash, view)
            )
            anchoring.add_done_callback(lambda _: self._anchoring.pop(key, None))
        return await asyncio.shield(anchoring)

    async def _anchor(self, height: int, head: int, head_hash: str, view: ChainView) -> str | None:
        if asyncio.get_running_loop().time() >= self._no_history_until:
            proven = await self._hopped_hash(height, head, head_hash, view)
            if proven is not None:
                return proven
        return await self._walked_hash(height, head, head_hash, view)

    async def _hopped_hash(
        self, height: int, head: int, head_hash: str, view: ChainView
    ) -> str | None:
        """By the history contract, in hops of 8,191 blocks; None where the chain has no
        contract (or its slot holds nothing for that height)."""
        at, at_hash = head, head_hash
        for step in hops(height, head):
            step_hash = self._anchor_known(step, head_hash, view)
            if step_hash is None:
                proven = await self._history_hashes([step], at, at_hash)
                step_hash = proven.get(step)
                if step_hash is None:
                    return None
                self._keep_anchors({step: step_hash}, head_hash, view)
                note_verification(
                    f"block {step} is {step_hash[:12]}…: proven by EIP-2935's history "
                    f"contract in the state of block {at} ({at_hash[:12]}…)"
                )
            at, at_hash = step, step_hash
        return at_hash

    async def _walked_hash(
        self, height: int, head: int, head_hash: str, view: ChainView
    ) -> str | None:
        """From the nearest block above `height` whose hash is known, down the headers'
        `parentHash` links, each header's hash recomputed from its fields on the way; at
        most PARENT_WALK_MAX headers, each kept as an anchor. None beyond that, or where
        headers are not recomputed (a link would prove nothing)."""
        if not self.headers_recomputed or self.mode == "off":
            return None
        start: tuple[int, str] | None = None
        for above in range(height + 1, min(head, height + PARENT_WALK_MAX) + 1):
            known = view.hash_at(above) or self._anchor_known(above, head_hash, view)
            if above == head:
                known = head_hash
            if known is not None:
                start = (above, known)
                break
        if start is None:
            return None
        at, at_hash = start
        while at > height:
            # Checked on the way in: its hash recomputed, and held to the anchor kept for
            # its height (the child's parentHash) by the check of every block answer.
            header = await self._header(at_hash)
            parent = header.get("parentHash")
            if str(header.get("hash")).lower() != at_hash.lower() or not isinstance(parent, str):
                raise Unverifiable(f"the header of block {at} on the walk to block {height}")
            at, at_hash = at - 1, parent.lower()
            self._keep_anchors({at: at_hash}, head_hash, view)
        note_verification(
            f"block {height} is {at_hash[:12]}…: {start[0] - height} parentHash links down "
            f"from block {start[0]} ({start[1][:12]}…), each header recomputed"
        )
        return at_hash

    def _anchor_known(self, height: int, head_hash: str, view: ChainView) -> str | None:
        """A hash proven before: for good once final, else while the head is the same."""
        if view.genesis != self._anchors_genesis:  # another life of the chain id: a reset
            self._anchors.clear()
            self._anchors_genesis = view.genesis
        if self._recent_head != head_hash:
            self._recent.clear()
            self._recent_head = head_hash
        return self._anchors.get(height) or self._recent.get(height)

    def _keep_anchors(self, proven: Mapping[int, str], head_hash: str, view: ChainView) -> None:
        for height, block_hash in proven.items():
            if view.is_final(height):  # a final block's hash is its hash for good
                if len(self._anchors) >= _ANCHORS_KEPT:
                    self._anchors.pop(next(iter(self._anchors)))
                self._anchors[height] = block_hash
            elif self._recent_head == head_hash:
                self._recent[height] = block_hash

    async def anchor_range(self, heights: range) -> None:
        """Proves at once (one proof of many slots) the hashes of the heights in `heights`
        that the head tracker does not hold and that the head's history still holds, so
        that the checks of a range of blocks that follow find them proven."""
        view = self._view()
        head = view.head
        if head is None or asyncio.get_running_loop().time() < self._no_history_until:
            return
        wanted = [
            h
            for h in heights
            if holds(head.number, h)
            and view.hash_at(h) is None
            and self._anchor_known(h, head.hash, view) is None
        ]
        if len(wanted) > 1:
            proven = await self._history_hashes(wanted, head.number, head.hash)
            self._keep_anchors(proven, head.hash, view)

    async def _history_hashes(self, numbers: list[int], at: int, at_hash: str) -> dict[int, str]:
        """The hashes of blocks `numbers` from the history contract's storage after block
        `at` (whose hash is known), by one storage proof of their slots checked against
        `at`'s stateRoot; empty where the chain has no (standard) history contract."""
        header = await self._header(at_hash)
        state_root = _bytes(header.get("stateRoot"))
        if state_root is None or str(header.get("hash")).lower() != at_hash.lower():
            raise Unverifiable(f"the header of block {at} to prove history against")
        slots = [history_slot(n) for n in numbers]
        proof, error = await self._fetch(
            "eth_getProof", [HISTORY_ADDRESS, slots, {"blockHash": at_hash}]
        )
        if error is not None or not isinstance(proof, dict):
            raise Unverifiable(f"history of block {numbers[0]}: {error or 'no proof'}")
        account = verify_account(proof, HISTORY_ADDRESS, state_root)
        if isinstance(account, str):
            raise Unverifiable(f"history contract at block {at}: {account}")
        if account.code_hash != HISTORY_CODE_HASH:
            self._without_history(account.code_hash)
            return {}
        items = proof.get("storageProof") or []
        if len(items) != len(numbers):
            raise Unverifiable(f"history of block {numbers[0]}: not one storage proof a slot")
        proven: dict[int, str] = {}
        for number, slot, item in zip(numbers, slots, items, strict=True):
            if not isinstance(item, dict) or _slot(item.get("key")) != int(slot, 16):
                raise Unverifiable(f"history of block {number}: proofs not for the slots asked")
            value = verify_storage(item, account.storage_hash)
            if isinstance(value, str):
                raise Unverifiable(f"history of block {number}: {value}")
            block_hash = hash_from_word(value)
            if block_hash is not None:
                proven[number] = block_hash
        return proven

    def _without_history(self, code_hash: bytes) -> None:
        """No history contract (proven absent), or code of another kind (Arbitrum's): old
        blocks are checked for self-consistency only, and the chain is asked again later
        (a fork may deploy it)."""
        self._no_history_until = asyncio.get_running_loop().time() + _NO_HISTORY_RECHECK_S
        if not self._said_no_history:
            self._said_no_history = True
            log.info(
                "history_contract_absent"
                if code_hash == EMPTY_CODE_HASH
                else "history_contract_not_standard",
                chain=self.chain,
                code_hash="0x" + code_hash.hex(),
                effect="blocks older than the head tracker's window are checked for "
                "self-consistency only",
            )

    async def _block_problem(self, block: Any, upstream: str = "") -> str | None:
        if not isinstance(block, dict):
            return "a block answer that is not an object"
        problem = header_mismatch(block, self.header_layout) if self.headers_recomputed else None
        if problem is not None and self._shaped_otherwise(block, upstream):
            self.headers_recomputed = False
            log.error(
                "headers_not_recomputable",
                chain=self.chain,
                block=block.get("hash"),
                why=problem,
                advice="two upstreams serve this same header and it does not hash as "
                f"the {self.header_layout!r} layout says: headers are no longer recomputed on "
                "this chain; if its blocks are shaped otherwise, set chains[].header_format: "
                "none (or the layout it uses)",
            )
            problem = None
        if problem is None:
            problem = await self._not_canonical(block.get("number"), block.get("hash"), "block")
        if problem is None and _known_types(block.get("transactions")):
            problem = transactions_root_mismatch(block)
        return problem

    def _shaped_otherwise(self, block: dict[str, Any], upstream: str) -> bool:
        """Whether another upstream already served this very header (every field alike)
        and it failed the same way: honest nodes of a chain whose headers are not
        Ethereum's, not one liar (a tampered header differs from the honest one)."""
        fields = tuple(sorted((k, str(v)) for k, v in block.items() if k not in _BODY_FIELDS))
        key = str(block.get("hash")).lower()
        earlier = self._unhashable.get(key)
        if earlier is not None and earlier[0] != upstream and earlier[1] == fields:
            return True
        if earlier is None:
            if len(self._unhashable) >= _UNHASHABLE_KEPT:
                self._unhashable.pop(next(iter(self._unhashable)))
            self._unhashable[key] = (upstream, fields)
        return False

    async def _transaction_problem(self, tx: Any) -> str | None:
        if not isinstance(tx, dict):
            return "a transaction answer that is not an object"
        problem = transaction_hash_mismatch(tx) if _known_types([tx]) else None
        if problem is None and tx.get("blockHash") is not None:
            problem = await self._not_canonical(
                tx.get("blockNumber"), tx["blockHash"], "transaction"
            )
        return problem

    # -- receipts: against the receiptsRoot of their block's (recomputed) header --

    async def warm(self, block: Any) -> None:
        """Fetches a block's header now, so that a check about to need it finds it cached
        or in flight (identical calls in flight are coalesced); a failure is the check's
        to report."""
        with contextlib.suppress(Unverifiable):
            await self._header(block)

    def _without_block_receipts(self, error: dict[str, Any]) -> None:
        """No upstream serves eth_getBlockReceipts: a receipt by hash cannot be checked
        against its block's receipts root, and is no longer said to be (logged once)."""
        if self.block_receipts:
            self.block_receipts = False
            log.warning(
                "receipts_not_verifiable",
                chain=self.chain,
                why=str(error.get("message"))[:200],
                effect="eth_getTransactionReceipt is served as `consensus`, not `integrity`",
            )

    def level(self, method: str, level: Level, params: Any = None) -> Level:
        """`level` as this chain's upstreams (and the call) allow it to be earned."""
        if level == "integrity" and method == "eth_getTransactionReceipt":
            return level if self.block_receipts else "consensus"
        if method == "eth_call" and level == "proof":
            return level if self.calls is not None and self.calls.executes(params) else "consensus"
        return level

    async def _header(self, block: Any) -> dict[str, Any]:
        """The header of a block (a hex number, a hash, or an EIP-1898 object), fetched
        through the chain's path (so recomputed and checked like any block answer); one
        fetch for the checks that want the same header at once (an eth_call's proofs)."""
        if isinstance(block, dict):
            block = block.get("blockHash") or block.get("blockNumber")
        key = str(block).lower()
        if isinstance(block, str) and len(block) == 66:
            known = self._headers.get(key)
            if known is not None:
                return known
        else:  # by number: the one fetched while the head is the same (a reorg moves it)
            head = self._view().head
            if head is not None and self._by_number_head == head.hash:
                known = self._by_number.get(key)
                if known is not None:
                    return known
            elif head is not None:
                self._by_number.clear()
                self._by_number_head = head.hash
        fetching = self._fetching_headers.get(key)
        if fetching is not None:
            return await asyncio.shield(fetching)
        # The first asks; the others wait on a future (no task of its own: a range of
        # headers is a thousand of these).
        fetching = self._fetching_headers[key] = asyncio.get_running_loop().create_future()
        try:
            header = await self._fetched_header(block)
        except BaseException as exc:
            if not fetching.done():
                fetching.set_exception(
                    exc if isinstance(exc, Exception) else Unverifiable(f"header of {key[:20]}")
                )
                fetching.exception()  # read here: nobody may be waiting
            raise
        else:
            fetching.set_result(header)
            return header
        finally:
            self._fetching_headers.pop(key, None)

    async def _fetched_header(self, block: Any) -> dict[str, Any]:
        by_hash = isinstance(block, str) and len(block) == 66
        if by_hash:
            result, error = await self._fetch("eth_getBlockByHash", [block, False])
        else:
            result, error = await self._fetch("eth_getBlockByNumber", [block, False])
        if error is not None or not isinstance(result, dict):
            why = error.get("message") if error else "not found"
            raise Unverifiable(f"header of block {str(block)[:20]}: {why}")
        # Checked headers by hash: a hash names its content for good (whether the block is
        # canonical is asked anew by each check).
        if len(self._headers) >= _HEADERS_KEPT:
            self._headers.pop(next(iter(self._headers)))
        self._headers[str(result.get("hash")).lower()] = result
        if not by_hash and len(self._by_number) < _HEADERS_KEPT:
            self._by_number[str(block).lower()] = result
        return result

    async def _block_receipts_problem(self, args: list[Any], receipts: Any) -> str | None:
        if not isinstance(receipts, list):
            return "block receipts that are not a list"
        if not receipts:
            if not args:
                return None
            header = await self._header(args[0])
            if str(header.get("receiptsRoot")).lower() != "0x" + EMPTY_TRIE_ROOT.hex():
                return f"no receipts for block {header.get('number')}, which has transactions"
            return None
        first = receipts[0]
        if not isinstance(first, dict):
            return "a receipt that is not an object"
        header = await self._header(first.get("blockHash"))
        problem = await self._not_canonical(header.get("number"), header.get("hash"), "receipts")
        if problem is None and _known_types(receipts):
            problem = receipts_root_mismatch(receipts, header)
        return problem

    async def _receipt_problem(self, receipt: Any) -> str | None:
        if not isinstance(receipt, dict):
            return "a receipt that is not an object"
        number, block_hash = receipt.get("blockNumber"), receipt.get("blockHash")
        problem = await self._not_canonical(number, block_hash, "receipt")
        if problem is not None:
            return problem
        # The block's header (which its receipts are checked against) is asked for at the
        # same time: one round trip for both, the receipts' own check finds it in flight.
        (receipts, error), _ = await asyncio.gather(
            self._fetch("eth_getBlockReceipts", [number]), self.warm(block_hash)
        )
        if error is not None and _unsupported(error):
            self._without_block_receipts(error)
            return None  # served as `consensus` from now on (see answer levels)
        if error is not None or not isinstance(receipts, list):
            raise Unverifiable(f"receipts of block {number}: {error or 'not found'}")
        if receipts and str(receipts[0].get("blockHash")).lower() != str(block_hash).lower():
            return f"receipt: block {number} of the consensus is not {str(block_hash)[:18]}…"
        tx_hash = str(receipt.get("transactionHash")).lower()
        proven = next(
            (r for r in receipts if str(r.get("transactionHash")).lower() == tx_hash), None
        )
        if proven is None:
            return f"receipt of {tx_hash[:18]}… is not among block {number}'s receipts"
        return _receipt_difference(receipt, proven)

    # -- logs --

    async def _logs_problem(self, args: list[Any], logs: Any) -> str | None:
        if not isinstance(logs, list):
            return "logs that are not a list"
        for log_entry in logs:
            if not isinstance(log_entry, dict):
                return "a log that is not an object"
            # Against what the head tracker knows: a range of old blocks would cost a
            # proof per block (`proofs` checks the logs themselves against receipts).
            problem = await self._not_canonical(
                log_entry.get("blockNumber"), log_entry.get("blockHash"), "log", anchor=False
            )
            if problem is not None:
                return problem
        if self.mode != "proofs" or not args or not self.logs_in_bound(args):
            return None
        criteria = args[0]
        strict, lenient = await self._expected_logs(criteria)
        problem = _logs_difference(logs, strict)
        if problem is not None and lenient != strict and _logs_difference(logs, lenient) is None:
            return None  # anvil and reth list logs with fewer topics than trailing wildcards
        return problem

    async def _expected_logs(
        self, criteria: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The logs the filter matches, from the receipts of the blocks whose logsBloom may
        hold them, each block's receipts checked against its header's receiptsRoot."""
        if "blockHash" in criteria:
            headers = [await self._header(criteria["blockHash"])]
        else:
            blocks = logs_range(criteria)
            assert blocks is not None  # logs_in_bound said so
            await self.anchor_range(blocks)  # one proof for the range's hashes
            headers = await self._together(
                [self._header(hex(number)) for number in blocks]  # one upstream batch per turn
            )
        address, topics = criteria.get("address"), criteria.get("topics")
        maybe = [h for h in headers if bloom_may_contain(h.get("logsBloom", "0x"), address, topics)]
        found = await self._together([self._receipts_of(header) for header in maybe])
        strict: list[dict[str, Any]] = []
        lenient: list[dict[str, Any]] = []
        for receipts in found:
            strict += logs_matching(receipts, criteria)
            lenient += logs_matching(receipts, criteria, lenient_positions=True)
        return strict, lenient

    async def _receipts_of(self, header: dict[str, Any]) -> list[dict[str, Any]]:
        receipts, error = await self._fetch("eth_getBlockReceipts", [header["number"]])
        if error is not None or not isinstance(receipts, list):
            raise Unverifiable(f"receipts of block {header.get('number')}: {error or 'none'}")
        if receipts and str(receipts[0].get("blockHash")).lower() != str(header["hash"]).lower():
            raise Unverifiable(f"block {header.get('number')} moved while it was checked")
        return receipts

    @staticmethod
    async def _together(fetches: list[Awaitable[Any]]) -> list[Any]:
        """Fetches at once; the calls queued in one loop turn share upstream batches."""
        in_batch = CLIENT_BATCH.set(ClientBatch())
        try:
            return await asyncio.gather(*fetches)
        finally:
            CLIENT_BATCH.reset(in_batch)

    # -- state: Merkle proofs against the stateRoot of the (recomputed) header --

    async def _proof_problem(self, args: list[Any], proof: Any) -> str | None:
        if len(args) < 3 or not isinstance(proof, dict):
            return None if len(args) < 3 else "a proof that is not an object"
        address, slots, block = args[0], args[1], args[2]
        if not _anchored_block(block):
            return None  # `pending`: nothing to check it against
        header = await self._header(block)
        problem = await self._not_canonical(header.get("number"), header.get("hash"), "proof")
        if problem is not None:
            return problem
        state_root = _bytes(header.get("stateRoot"))
        if state_root is None:
            raise Unverifiable("the header has no stateRoot")
        account = verify_account(proof, str(address), state_root)
        if isinstance(account, str):
            return account
        items = proof.get("storageProof") or []
        asked = [_slot(s) for s in slots] if isinstance(slots, list) else []
        if [_slot(item.get("key")) for item in items if isinstance(item, dict)] != asked:
            return "the storage proofs are not for the slots asked"
        for item in items:
            value = verify_storage(item, account.storage_hash)
            if isinstance(value, str):
                return value
        return None

    async def _code_problem(self, args: list[Any], code: Any) -> str | None:
        if len(args) < 2 or not _anchored_block(args[1]):
            return None
        proof, error = await self._fetch("eth_getProof", [args[0], [], args[1]])
        if error is not None or not isinstance(proof, dict):
            raise Unverifiable(f"proof of {str(args[0])[:42]}: {error or 'not found'}")
        code_hash = _bytes(proof.get("codeHash"))
        if code_hash is None or not isinstance(code, str):
            return "code or its proven hash is not hex"
        if not code_matches(code, code_hash):
            return f"code of {str(args[0])[:42]} does not hash to the proven codeHash"
        return None


def state_from_proof(method: str, proof: Mapping[str, Any]) -> str:
    """eth_getBalance, eth_getTransactionCount or eth_getStorageAt answered from a (checked)
    eth_getProof answer, in the form the method itself answers."""
    if method == "eth_getBalance":
        return hex(int(proof["balance"], 16))
    if method == "eth_getTransactionCount":
        return hex(int(proof["nonce"], 16))
    return f"0x{int(proof['storageProof'][0]['value'], 16):064x}"


def proof_call(method: str, params: Any) -> list[Any] | None:
    """The eth_getProof params that answer a PROVEN_STATE call about a definite block; None
    when the call is not one (`pending`, malformed params)."""
    size = 3 if method == "eth_getStorageAt" else 2
    if method not in PROVEN_STATE or not isinstance(params, list) or len(params) != size:
        return None
    if not _anchored_block(params[-1]):
        return None
    slots: list[Any] = []
    if method == "eth_getStorageAt":
        slot = _slot(params[1])  # eth_getProof wants keys of 32 bytes (anvil: no less)
        slots = [params[1] if slot is None or slot >= 2**256 else f"0x{slot:064x}"]
    return [params[0], slots, params[-1]]


def anchored(method: str, block: int | None, params: Any) -> bool:
    """Whether an answer is about a block the consensus names: a pinned number, a block
    found by its hash, or what is fixed for the chain."""
    info = method_info(method)
    if block is not None or info.cache is Cache.STATIC or method == "eth_blockNumber":
        return True
    if info.cache is Cache.BY_HASH:
        return True
    if method == "eth_getLogs":
        criteria = params[0] if isinstance(params, list) and params else None
        return isinstance(criteria, dict) and "blockHash" in criteria
    position = info.block_param
    if position is not None and isinstance(params, list) and len(params) > position:
        value = params[position]
        return isinstance(value, dict) and "blockHash" in value
    return False


def unpinned_anchor(method: str) -> bool | int:
    """`anchored(method, None, params)` for a method other than eth_getLogs, worked out once
    per method: a bool when its params do not matter, else the position of its block
    parameter, where a block named by its hash (an EIP-1898 object) anchors it."""
    info = method_info(method)
    if info.cache is Cache.STATIC or info.cache is Cache.BY_HASH or method == "eth_blockNumber":
        return True
    return False if info.block_param is None else info.block_param


def anchored_unpinned(anchor: bool | int, params: Any) -> bool:
    """`anchored(method, None, params)` given `unpinned_anchor(method)`."""
    if type(anchor) is bool:
        return anchor
    value = params[anchor] if type(params) is list and len(params) > anchor else None
    return type(value) is dict and "blockHash" in value


def _unsupported(error: Mapping[str, Any]) -> bool:
    """Whether an error says the method is not served (by any upstream, or by policy)."""
    code = error.get("code")
    failure = UpstreamFailure(
        rpc_code=code if isinstance(code, int) else None,
        rpc_message=str(error.get("message", "")),
    )
    return classify(failure).error_class is ErrorClass.UNSUPPORTED


def _known_types(items: Any) -> bool:
    """Whether every transaction (or receipt) is of a type rpcgate/verify encodes (legacy,
    0x1 to 0x4, OP stack deposits): another L2's own types (Arbitrum's 0x64-0x6a, zkSync's
    0x71, Scroll's L1 messages) leave the trie unchecked."""
    if not isinstance(items, list):
        return True
    return all(is_encodable(item) for item in items if isinstance(item, dict))


def _anchored_block(block: Any) -> bool:
    if isinstance(block, dict):
        return "blockHash" in block or _anchored_block(block.get("blockNumber"))
    return isinstance(block, str) and block.startswith("0x")


def _bytes(value: Any) -> bytes | None:
    try:
        return bytes.fromhex(str(value)[2:])
    except ValueError:
        return None


def _slot(value: Any) -> int | None:
    try:
        return int(str(value), 16)
    except ValueError:
        return None


def _log_key(entry: Mapping[str, Any]) -> tuple[str, int]:
    return str(entry.get("blockHash")).lower(), int(str(entry.get("logIndex", "0x0")), 16)


def _log_content(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        str(entry.get("address")).lower(),
        tuple(str(t).lower() for t in entry.get("topics") or ()),
        str(entry.get("data")).lower(),
        str(entry.get("transactionHash")).lower(),
    )


def _logs_difference(given: list[Any], expected: list[dict[str, Any]]) -> str | None:
    """How an eth_getLogs answer differs from the logs the verified receipts hold."""
    try:
        have = {_log_key(e): _log_content(e) for e in given}
    except ValueError:
        return "a log whose logIndex is not a hex number"
    want = {_log_key(e): _log_content(e) for e in expected}
    missing = [key for key in want if key not in have]
    extra = [key for key in have if key not in want]
    if missing:
        block, index = missing[0]
        return (
            f"{len(missing)} log(s) missing of {len(want)} (first: log {index} of block "
            f"{block[:18]}…)"
        )
    if extra:
        block, index = extra[0]
        return f"{len(extra)} log(s) not in the blocks' receipts (log {index} of {block[:18]}…)"
    changed = next((key for key in want if have[key] != want[key]), None)
    if changed is not None:
        return f"log {changed[1]} of block {changed[0][:18]}… differs from its receipt"
    return None


def _receipt_difference(given: Mapping[str, Any], proven: Mapping[str, Any]) -> str | None:
    """The first field in which a receipt differs from its block's verified receipt."""
    for field in _RECEIPT_FIELDS:
        if (
            field in given
            and field in proven
            and str(given[field]).lower() != str(proven[field]).lower()
        ):
            return f"receipt {field} is {given[field]}, its block's receipts say {proven[field]}"
    if [_log_content(e) for e in given.get("logs") or []] != [
        _log_content(e) for e in proven.get("logs") or []
    ]:
        return "receipt logs differ from its block's receipts"
    return None
