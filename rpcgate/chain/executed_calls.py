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
from typing import Any, Protocol

from rpcgate.chain.local_evm import LocalEvm, ProvenAccount, Unproven
from rpcgate.rpc.context import CLIENT_BATCH, ClientBatch
from rpcgate.rpc.trace import note_verification
from rpcgate.verify import EMPTY_CODE_HASH, code_matches, verify_account, verify_storage
from rpcgate.verify.calls import (
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

    async def _executed(self, params: Any) -> Executed | str:
        """The call executed over the state of its block, proven; a reason in words when
        it is not a call executed locally, or about a block the consensus does not have."""
        request = call_request(params)
        if not isinstance(request, CallRequest):
            return request
        block = params[1] if len(params) > 1 else None
        if block is None:
            return "no block"
        # The block's header and the hint at once; then every account's proof and the code
        # not seen before, in upstream batches.
        header, (hint_answer, hint_error) = await asyncio.gather(
            self._anchors.header(block),
            self._fetch("eth_createAccessList", [params[0], block]),
        )
        anchors = self._anchors
        problem = await anchors.not_canonical(header.get("number"), header.get("hash"), "call")
        if problem is not None:
            raise Unproven(problem)
        environment = block_environment(header)
        if isinstance(environment, str):
            raise Unproven(environment)
        state = _BlockState(self._fetch, self._anchors, header, self._codes)
        wanted = access_hint(hint_answer) if hint_error is None else {}
        for address in (request.caller, request.to, environment.coinbase):
            wanted.setdefault(address, set())
        in_batch = CLIENT_BATCH.set(ClientBatch())
        try:
            proven = await asyncio.gather(
                *(state.prove(address, sorted(slots)) for address, slots in wanted.items())
            )
        finally:
            CLIENT_BATCH.reset(in_batch)
        accounts = {address: account for address, account, _ in proven}
        slots = {address: values for address, _, values in proven}
        executed = await self.evm.execute(
            environment, request, accounts, slots, state, EXECUTION_TIMEOUT_S
        )
        note_verification(
            f"eth_call executed at block {environment.number} ({str(header.get('hash'))[:12]}…) "
            f"over {len(accounts)} accounts and {sum(len(v) for v in slots.values())} slots "
            f"proven against its stateRoot, {executed.proven_on_touch} more proven when "
            f"touched: {executed.outcome}, {executed.gas_used} gas"
        )
        return executed

    async def close(self) -> None:
        await self.evm.close()


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
