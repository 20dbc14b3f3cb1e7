"""eth_call answers checked by executing the call locally over proven state
(`verify: proofs`): the I/O shell around `rpcgate/verify/calls.py` and `local_evm.py`.

For a call pinned to a block the consensus names, the block's header is fetched and
checked (its hash recomputed, the block anchored to the consensus head), and the accounts
and slots the call is expected to touch are proven against its `stateRoot` by eth_getProof
(code against the proven `codeHash`). Which ones: those an upstream's eth_createAccessList
names (a hint, never trusted: a slot it leaves out is found by the execution, a slot it adds
costs one proof), the sender, the callee and the block's coinbase. The call then runs in
revm over exactly that state; whatever else it touches is proven when it touches it
(`local_evm.StateSource`). The answer an upstream gave must be the same bytes, or it is that
upstream's `integrity` failure.

Calls it does not execute (a contract creation, state or block overrides, a chain whose EVM
is not Ethereum's) are answered as before, at the `consensus` level.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from rpcgate.chain.local_evm import LocalEvm, ProvenAccount, Unproven
from rpcgate.rpc.context import CLIENT_BATCH, ClientBatch
from rpcgate.rpc.trace import VERIFICATION_NOTES, note_verification
from rpcgate.verify import EMPTY_CODE_HASH, code_matches, verify_account, verify_storage
from rpcgate.verify.calls import (
    BlockEnvironment,
    CallRequest,
    Executed,
    access_hint,
    block_environment,
    call_request,
    outcome_difference,
    revert_difference,
)

EXECUTION_TIMEOUT_S = 10.0  # one local execution, its proofs included
CODES_KEPT_BYTES = 8 * 1024 * 1024  # proven contract code kept by code hash
_PREPARED_KEPT_S = 2.0  # proven state of a call, kept for the check that follows
Fetch = Callable[[str, list[Any]], Awaitable[tuple[Any, dict[str, Any] | None]]]


class Anchors(Protocol):
    """What the verifier lends: checked headers, and block hashes anchored to the head."""

    async def header(self, block: Any) -> dict[str, Any]: ...

    async def not_canonical(self, number: Any, block_hash: Any, what: str) -> str | None: ...

    async def hash_at(self, number: int) -> str | None: ...


class ExecutedCalls:
    def __init__(self, chain_id: int, chain: str, fetch: Fetch, anchors: Anchors) -> None:
        self._fetch = fetch
        self._anchors = anchors
        self.evm = LocalEvm(chain_id, chain)
        self._codes = _Codes()
        self._preparing: dict[bytes, asyncio.Future[_Prepared]] = {}

    def executes(self, params: Any) -> bool:
        """Whether an eth_call with these params is checked by execution."""
        return self.evm.available is not False and isinstance(call_request(params), CallRequest)

    async def problem(self, params: Any, result: Any) -> str | None:
        """What is wrong with `result` as the answer to eth_call(params); None if it is what
        the call returns over proven state (or the call is not one executed). Raises
        Unproven when the call could not be run over proven state."""
        executed = await self._executed(params)
        return None if isinstance(executed, str) else outcome_difference(result, executed)

    async def revert_problem(self, params: Any, data: Any) -> str | None:
        """What is wrong with an upstream's revert (its error's `data`) of eth_call(params)."""
        executed = await self._executed(params)
        return None if isinstance(executed, str) else revert_difference(data, executed)

    def prepare(self, params: Any) -> None:
        """Starts proving the state an eth_call needs while the upstream is asked for its
        answer (the check then finds it under way, or done)."""
        if isinstance(call_request(params), CallRequest) and len(params) > 1:
            self._prepared(params)

    def _prepared(self, params: Any) -> asyncio.Future[_Prepared]:
        key = orjson.dumps(params[:2], option=orjson.OPT_SORT_KEYS)
        under_way = self._preparing.get(key)
        if under_way is None:
            under_way = self._preparing[key] = asyncio.ensure_future(self._prepare(params))
            # Kept until the check that follows has taken it (or for a moment, if none does).
            loop = asyncio.get_running_loop()
            under_way.add_done_callback(
                lambda _: loop.call_later(_PREPARED_KEPT_S, self._preparing.pop, key, None)
            )
            # A failure no check came to read (the upstream's answer failed first).
            under_way.add_done_callback(lambda done: done.cancelled() or done.exception())
        return under_way

    async def _executed(self, params: Any) -> Executed | str:
        """The call executed over the state of its block, proven; a reason in words when
        it is not a call executed locally."""
        request = call_request(params)
        if not isinstance(request, CallRequest):
            return request
        if len(params) < 2 or params[1] is None:
            return "no block"
        if not await self.evm.ready():  # no pyrevm here: served unexecuted (`consensus`)
            return self.evm.unavailable_reason
        prepared = await asyncio.shield(self._prepared(params))
        # Still the block the consensus has there (prepared a moment ago: a reorg since?).
        number = hex(prepared.environment.number)
        problem = await self._anchors.not_canonical(number, prepared.block_hash, "call")
        if problem is not None:
            raise Unproven(problem)
        executed = await self.evm.execute(
            prepared.environment,
            request,
            prepared.accounts,
            prepared.slots,
            prepared.state,
            EXECUTION_TIMEOUT_S,
        )
        for note in prepared.notes:
            note_verification(note)
        note_verification(
            f"eth_call executed at block {prepared.environment.number} "
            f"({prepared.block_hash[:12]}…) over {len(prepared.accounts)} accounts and "
            f"{sum(len(v) for v in prepared.slots.values())} slots proven against its "
            f"stateRoot, {executed.proven_on_touch} more proven when touched: "
            f"{executed.outcome}, {executed.gas_used} gas"
        )
        return executed

    async def _prepare(self, params: list[Any]) -> _Prepared:
        """The block's checked header and environment, and the state the hint names,
        proven: the header and the hint at once; then the block's anchor and every
        account's proof (and the code not seen before) at once, in upstream batches."""
        request = call_request(params)
        assert isinstance(request, CallRequest)
        block = params[1]
        # What anchoring the block takes, for the trace of the check that reads this (the
        # preparation runs as a task of its own: its notes are its own).
        notes: list[str] = []
        VERIFICATION_NOTES.set(notes)
        header, (hint_answer, hint_error) = await asyncio.gather(
            self._anchors.header(block),
            self._fetch("eth_createAccessList", [params[0], block]),
        )
        environment = block_environment(header)
        if isinstance(environment, str):
            raise Unproven(environment)
        state = _BlockState(self._fetch, self._anchors, header, self._codes)
        wanted = access_hint(hint_answer) if hint_error is None else {}
        for address in (request.caller, request.to, environment.coinbase):
            wanted.setdefault(address, set())
        anchoring = asyncio.ensure_future(
            self._anchors.not_canonical(header.get("number"), header.get("hash"), "call")
        )
        in_batch = CLIENT_BATCH.set(ClientBatch())
        try:
            proven = await asyncio.gather(
                *(state.prove(address, sorted(slots)) for address, slots in wanted.items())
            )
        except BaseException:
            anchoring.cancel()
            raise
        finally:
            CLIENT_BATCH.reset(in_batch)
        problem = await anchoring
        if problem is not None:
            raise Unproven(problem)
        return _Prepared(
            environment=environment,
            block_hash=str(header.get("hash")),
            accounts={address: account for address, account, _ in proven},
            slots={address: values for address, _, values in proven},
            state=state,
            notes=notes,
        )

    async def close(self) -> None:
        await self.evm.close()


@dataclass(frozen=True)
class _Prepared:
    environment: BlockEnvironment
    block_hash: str
    accounts: dict[str, ProvenAccount]
    slots: dict[str, dict[int, int]]
    state: _BlockState
    notes: list[str]


class _BlockState:
    """Accounts, slots and block hashes proven at one block (a `StateSource`)."""

    def __init__(
        self, fetch: Fetch, anchors: Anchors, header: dict[str, Any], codes: _Codes
    ) -> None:
        self._codes = codes
        self._fetch = fetch
        self._anchors = anchors
        self._block = header["number"]
        root = header.get("stateRoot")
        self._state_root = bytes.fromhex(root[2:]) if isinstance(root, str) else b""

    async def prove(
        self, address: str, slots: list[int]
    ) -> tuple[str, ProvenAccount, dict[int, int]]:
        keys = [f"0x{slot:064x}" for slot in slots]
        proof, error = await self._fetch("eth_getProof", [address, keys, self._block])
        if error is not None or not isinstance(proof, dict):
            raise Unproven(f"proof of {address}: {(error or {}).get('message', 'none')}")
        account = verify_account(proof, address, self._state_root)
        if isinstance(account, str):
            raise Unproven(account)
        items = proof.get("storageProof") or []
        if len(items) != len(slots):
            raise Unproven(f"proof of {address}: not one storage proof a slot")
        values: dict[int, int] = {}
        for slot, item in zip(slots, items, strict=True):
            if not isinstance(item, dict) or _key(item.get("key")) != slot:
                raise Unproven(f"proof of {address}: proofs not for the slots asked")
            value = verify_storage(item, account.storage_hash)
            if isinstance(value, str):
                raise Unproven(value)
            values[slot] = value
        code = b""
        known = self._codes.get(account.code_hash)
        if known is not None:
            code = known
        elif account.code_hash != EMPTY_CODE_HASH:
            answer, error = await self._fetch("eth_getCode", [address, self._block])
            if error is not None or not isinstance(answer, str):
                raise Unproven(f"code of {address}: {(error or {}).get('message', 'none')}")
            if not code_matches(answer, account.code_hash):
                raise Unproven(f"code of {address} does not hash to the proven codeHash")
            code = bytes.fromhex(answer[2:])
            self._codes.keep(account.code_hash, code)
        return address, ProvenAccount(account.balance, account.nonce, code), values

    async def account(self, address: str) -> ProvenAccount:
        return (await self.prove(address, []))[1]

    async def slot(self, address: str, slot: int) -> int:
        return (await self.prove(address, [slot]))[2][slot]

    async def header(self, number: int) -> dict[str, Any]:
        block_hash = await self._anchors.hash_at(number)
        if block_hash is None:
            raise Unproven(f"the hash of block {number} (BLOCKHASH) cannot be anchored")
        header = await self._anchors.header(block_hash)
        if str(header.get("hash")).lower() != block_hash.lower():
            raise Unproven(f"block {number} is not the one the consensus has")
        return header


class _Codes:
    """Code by its hash, proven once: a hash names its code for good, on every block."""

    def __init__(self) -> None:
        self._by_hash: dict[bytes, bytes] = {}
        self._bytes = 0

    def get(self, code_hash: bytes) -> bytes | None:
        return self._by_hash.get(code_hash)

    def keep(self, code_hash: bytes, code: bytes) -> None:
        if len(code) > CODES_KEPT_BYTES // 4:
            return
        while self._by_hash and self._bytes + len(code) > CODES_KEPT_BYTES:
            oldest = next(iter(self._by_hash))
            self._bytes -= len(self._by_hash.pop(oldest))
        self._by_hash[code_hash] = code
        self._bytes += len(code)


def _key(value: Any) -> int | None:
    try:
        return int(value, 16)
    except (TypeError, ValueError):
        return None
