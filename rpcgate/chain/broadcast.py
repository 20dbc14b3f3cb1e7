"""Transactions broadcast: `eth_sendRawTransaction` goes at once to several upstreams in
different failure domains, and the caller gets the hash as soon as one accepts it.

A transaction sent to one provider reaches the network only through that provider; if its
node drops it, or its region is down, the transaction is lost. Sent to several in
different domains, it survives any one of them. The same signed bytes have one hash
everywhere, so sending them twice cannot spend twice, and "already known" (or "nonce too
low" for this very transaction, checked with `eth_getTransactionByHash`) means accepted.
A real rejection (insufficient funds, underpriced, a bad signature) comes back as the node
said it. The sends that have not answered when one accepted go on in the background: each
acceptance is one more node that spreads it. Each send, and each look-up, is an `attempt`
(timed, weighed against the upstream's health, in the call's attempts and trace); "already
known" counts there as the acceptance it is.

Until it is mined, lookups of that hash and the sender's `pending` nonce go first to the
upstreams that accepted it (`PendingTransactions`): others may not know it yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from rpcgate.consensus.routing import Candidate
from rpcgate.rpc.errors import ErrorClass, classify
from rpcgate.rpc.jsonrpc import Call
from rpcgate.rpc.masking import MASKER
from rpcgate.rpc.methods import ALREADY_KNOWN_MESSAGES
from rpcgate.rpc.raw_transactions import transaction_hash, transaction_sender
from rpcgate.rpc.trace import CallTrace
from rpcgate.storage.shared_state import SharedState
from rpcgate.upstream.attempt import Attempt, Check, attempt
from rpcgate.upstream.client import Reply, Upstream

log = structlog.get_logger("rpcgate.broadcast")

# How long the upstreams that accepted a transaction are remembered (it is mined long
# before, or dropped).
REMEMBER_S = 600.0
_NONCE_TOO_LOW = "nonce too low"


def broadcast_targets(order: Sequence[Candidate], count: int) -> list[str]:
    """Up to `count` upstreams from the attempt order, one per failure domain first."""
    chosen: list[str] = []
    domains: set[str] = set()
    usable = [c for c in order if c.available and not c.last_resort]
    for candidate in usable:
        if len(chosen) < count and candidate.domain not in domains:
            chosen.append(candidate.name)
            domains.add(candidate.domain)
    for candidate in usable:
        if len(chosen) < count and candidate.name not in chosen:
            chosen.append(candidate.name)
    return chosen


class Verdict:
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # the transaction is wrong: the node's answer goes to the caller
    FAILED = "failed"  # the upstream could not say: try another
    CHECK = "check"  # "nonce too low": accepted only if the node has this very transaction


def verdict(reply: Reply) -> str:
    if reply.failure is None:
        return Verdict.ACCEPTED
    message = str((reply.error or {}).get("message", "")).lower()
    if any(text in message for text in ALREADY_KNOWN_MESSAGES):
        return Verdict.ACCEPTED
    if _NONCE_TOO_LOW in message:
        return Verdict.CHECK
    if classify(reply.failure).error_class in (
        ErrorClass.CLIENT,
        ErrorClass.REVERT,
        ErrorClass.TXPOOL,
    ):
        return Verdict.REJECTED
    return Verdict.FAILED


def own_transaction(
    upstream: Upstream,
    tx_hash: str,
    timeout_s: float,
    attempts: list[Attempt],
    trace: CallTrace | None,
) -> Check:
    """The check of a send of the transaction `tx_hash` to `upstream`: what its answer
    means for this very transaction. "already known" is the node holding it, and "nonce
    too low" is also what a node says about a transaction it has mined or holds: when it
    knows this hash (asked with eth_getTransactionByHash), both are the transaction
    accepted, its hash the answer. Every send goes through it, at once or one at a time,
    so a retry after an attempt that reached the node never turns into an error."""

    async def check(reply: Reply) -> Reply:
        if reply.failure is None:
            return reply
        said = verdict(reply)
        if said == Verdict.CHECK:
            lookup = await attempt(
                upstream, "eth_getTransactionByHash", [tx_hash], timeout_s, attempts, trace=trace
            )
            known = lookup.classification is None and isinstance(lookup.reply.result, dict)
            said = Verdict.ACCEPTED if known else Verdict.REJECTED
        if said == Verdict.ACCEPTED:
            return Reply(result=tx_hash, latency_s=reply.latency_s)
        return reply

    return check


@dataclass
class _Pending:
    upstreams: list[str]
    sender: str | None
    until: float


# The calls `PendingTransactions.preferred` may route to the upstreams that took a
# transaction (lookups of it, and the pending nonce of its sender).
PREFERENCE_METHODS = frozenset(
    {"eth_getTransactionByHash", "eth_getTransactionReceipt", "eth_getTransactionCount"}
)


class PendingTransactions:
    """Which upstreams accepted which transaction (and so know its sender's new nonce): in
    process, and in Redis when configured, so that every replica asks them first."""

    def __init__(self, chain_id: int, shared: SharedState | None = None) -> None:
        self.by_hash: dict[str, _Pending] = {}
        self._chain_id = chain_id
        self._shared = shared

    async def accepted(self, tx_hash: str, upstream: str, sender: str | None, now: float) -> None:
        entry = self.by_hash.get(tx_hash)
        if entry is None:
            entry = self.by_hash[tx_hash] = _Pending([], sender, now + REMEMBER_S)
        if upstream not in entry.upstreams:
            entry.upstreams.append(upstream)
        if len(self.by_hash) > 10_000:  # a flood of transactions: forget the oldest
            for old in list(self.by_hash)[:1000]:
                del self.by_hash[old]
        shared = self._shared
        if shared is not None:
            pipe = shared.client.pipeline(transaction=False)
            keys = [shared.key(self._chain_id, "tx", tx_hash)]
            if sender is not None:
                keys.append(shared.key(self._chain_id, "sender", sender))
            for key in keys:
                pipe.sadd(key, upstream)
                pipe.expire(key, int(REMEMBER_S))
            await shared.quick(pipe.execute())

    def mined(self, tx_hash: str) -> None:
        self.by_hash.pop(tx_hash, None)

    async def preferred(self, method: str, params: Any, now: float) -> list[str]:
        """Upstreams to ask first for this call: those that accepted the transaction it
        looks up, or a transaction of the sender whose pending nonce it asks."""
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            return []
        names: list[str] = []
        if method in ("eth_getTransactionByHash", "eth_getTransactionReceipt"):
            tx_hash = params[0].lower()
            entry = self.by_hash.get(tx_hash)
            if entry is not None and entry.until > now:
                names = list(entry.upstreams)
            key = ("tx", tx_hash)
        elif method == "eth_getTransactionCount" and params[1:2] == ["pending"]:
            sender = params[0].lower()
            for entry in self.by_hash.values():
                if entry.sender == sender and entry.until > now:
                    names.extend(n for n in entry.upstreams if n not in names)
            key = ("sender", sender)
        else:
            return []
        shared = self._shared
        if shared is not None and not names:  # accepted through another replica?
            members = await shared.quick(shared.client.smembers(shared.key(self._chain_id, *key)))
            names = sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members or ())
        return names


class Broadcaster:
    """Sends one transaction to several upstreams at once."""

    def __init__(self, upstreams: dict[str, Upstream], pending: PendingTransactions) -> None:
        self.upstreams = upstreams
        self.pending = pending
        self._background: set[asyncio.Task[Any]] = set()

    async def send(
        self,
        call: Call,
        targets: list[str],
        timeout_s: float,
        attempts: list[Attempt],
        trace: CallTrace | None = None,
    ) -> tuple[str | None, Reply | None, list[str]]:
        """(hash, None, accepted-by) once one upstream accepts; (None, the rejection,
        []) when the transaction is refused; (None, None, []) when no upstream could say
        (the caller then tries the others one by one). Each attempt goes to `attempts` and
        `trace` as it ends (the sends that go on in the background, too late for them)."""
        raw = call.params[0] if isinstance(call.params, list) and call.params else None
        tx_hash = transaction_hash(raw)
        sender = transaction_sender(raw) if isinstance(raw, str) else None
        if tx_hash is None:
            return None, None, []
        tasks = {
            asyncio.create_task(
                self._send_one(name, call, tx_hash, timeout_s, attempts, trace)
            ): name
            for name in targets
        }
        rejection: Reply | None = None
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                name = tasks[task]
                result, reply = task.result()
                if result == Verdict.ACCEPTED:
                    await self.pending.accepted(tx_hash, name, sender, time.monotonic())
                    self._finish_in_background(pending, tasks, tx_hash, sender)
                    return tx_hash, None, [name]
                if result == Verdict.REJECTED and rejection is None:
                    rejection = reply
        return None, rejection, []

    def _finish_in_background(
        self,
        pending: set[asyncio.Task[tuple[str, Reply]]],
        names: dict[asyncio.Task[tuple[str, Reply]], str],
        tx_hash: str,
        sender: str | None,
    ) -> None:
        """The other sends go on: each acceptance is one more node spreading it."""
        for task in pending:
            remember = asyncio.create_task(self._remember(task, names[task], tx_hash, sender))
            self._background.update((task, remember))
            task.add_done_callback(self._background.discard)
            remember.add_done_callback(self._background.discard)

    async def _remember(
        self,
        task: asyncio.Task[tuple[str, Reply]],
        name: str,
        tx_hash: str,
        sender: str | None,
    ) -> None:
        result, _ = await task
        if result == Verdict.ACCEPTED:
            await self.pending.accepted(tx_hash, name, sender, time.monotonic())

    async def _send_one(
        self,
        name: str,
        call: Call,
        tx_hash: str,
        timeout_s: float,
        attempts: list[Attempt],
        trace: CallTrace | None,
    ) -> tuple[str, Reply]:
        upstream = self.upstreams[name]
        sent = await attempt(
            upstream,
            call.method,
            call.params,
            timeout_s,
            attempts,
            trace=trace,
            check=own_transaction(upstream, tx_hash, timeout_s, attempts, trace),
        )
        reply = sent.reply
        result = verdict(reply)
        if result == Verdict.CHECK:  # "nonce too low" for a transaction the node lacks
            result = Verdict.REJECTED
        if result == Verdict.FAILED and reply.failure is not None:
            log.info(
                "broadcast_attempt_failed",
                upstream=name,
                reason=MASKER.mask(classify(reply.failure).reason),
            )
        return result, reply

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
