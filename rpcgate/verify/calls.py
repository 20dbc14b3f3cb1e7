"""eth_call as a local execution: what the call asks, the block it runs in, the state it
starts from, and how its outcome compares with an upstream's answer. No execution here
(`rpcgate/chain/local_evm.py` runs it, `rpcgate/chain/executed_calls.py` proves the state).

A call is executed as geth's eth_call runs it: in block B's environment (its number,
timestamp, coinbase, gas limit, prevrandao) over the state after B (B's stateRoot), with
no fee charged when the call names no gas price (then BASEFEE reads 0), from the zero
address when it names no sender, with the block's gas limit when it names no gas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from rpcgate.verify._hex import BadField, hex_bytes, hex_int, quantity, short

ZERO_ADDRESS = "0x" + "00" * 20
_ADDRESS_BYTES = 20
_SLOT_LIMIT = 1 << 256
# Fields of a call object whose effect the local execution reproduces; a call with any other
# field (fee fields aside, which eth_call ignores but for BASEFEE) is answered unexecuted.
_EXECUTED_FIELDS = frozenset(
    {
        "from",
        "to",
        "data",
        "input",
        "value",
        "gas",
        "gasPrice",
        "maxFeePerGas",
        "maxPriorityFeePerGas",
        "type",
        "nonce",
        "chainId",
        "accessList",
    }
)


@dataclass(frozen=True)
class CallRequest:
    """The message an eth_call sends."""

    caller: str
    to: str
    data: bytes
    value: int
    gas: int | None
    fee_named: bool  # a gas price was given: BASEFEE is the block's, not zero


@dataclass(frozen=True)
class BlockEnvironment:
    number: int
    timestamp: int
    coinbase: str
    gas_limit: int
    prevrandao: bytes
    difficulty: int
    basefee: int
    excess_blob_gas: int | None


@dataclass(frozen=True)
class Executed:
    """What a local execution came to: `returned` (the output), `reverted` (the revert
    data), or `halted` (out of gas, an invalid opcode: `output` is empty)."""

    outcome: Literal["returned", "reverted", "halted"]
    output: bytes
    gas_used: int
    reason: str = ""
    proven_on_touch: int = 0  # state items proven while it ran (the hint had not named them)


def call_request(params: Any) -> CallRequest | str:
    """The call an eth_call's params ask for; a reason in words when it is not one the
    local execution reproduces (a contract creation, state or block overrides, a field it
    does not know)."""
    if not isinstance(params, list) or not params or not isinstance(params[0], Mapping):
        return "the call is not an object"
    if len(params) > 2 and params[2] not in (None, {}):
        return "state overrides are not executed locally"
    if len(params) > 3 and params[3] not in (None, {}):
        return "block overrides are not executed locally"
    tx = params[0]
    unknown = sorted(set(tx) - _EXECUTED_FIELDS)
    if unknown:
        return f"field {unknown[0]!r} is not executed locally"
    try:
        to = _address(tx.get("to"), "to")
        caller = _address(tx.get("from"), "from") or ZERO_ADDRESS
        data_field = tx.get("input") if tx.get("input") is not None else tx.get("data")
        data = hex_bytes(data_field, "data") if data_field is not None else b""
        if tx.get("input") is not None and tx.get("data") not in (None, tx.get("input")):
            return "the call's data and input differ"
        value = hex_int(tx["value"], "value") if tx.get("value") is not None else 0
        gas = hex_int(tx["gas"], "gas") if tx.get("gas") is not None else None
    except BadField as exc:
        return str(exc)
    if to is None:
        return "a contract creation is not executed locally"
    fee_named = any(tx.get(name) not in (None, "0x0") for name in ("gasPrice", "maxFeePerGas"))
    return CallRequest(caller, to, data, value, gas, fee_named)


def block_environment(header: Mapping[str, Any]) -> BlockEnvironment | str:
    """The environment a call in this (checked) block runs in."""
    try:
        coinbase = _address(header.get("miner"), "miner")
        randao = header.get("mixHash") or header.get("prevRandao")
        blob = header.get("excessBlobGas")
        environment = BlockEnvironment(
            number=quantity(header, "number"),
            timestamp=quantity(header, "timestamp"),
            coinbase=coinbase or ZERO_ADDRESS,
            gas_limit=quantity(header, "gasLimit"),
            prevrandao=hex_bytes(randao, "mixHash") if randao is not None else bytes(32),
            difficulty=hex_int(header.get("difficulty") or "0x0", "difficulty"),
            basefee=hex_int(header.get("baseFeePerGas") or "0x0", "baseFeePerGas"),
            excess_blob_gas=hex_int(blob, "excessBlobGas") if blob is not None else None,
        )
    except BadField as exc:
        return f"header: {exc}"
    return environment


def access_hint(answer: Any) -> dict[str, set[int]]:
    """The accounts and slots an eth_createAccessList answer names (a hint: what is not
    named is found by the execution, what is named and not touched costs one proof)."""
    hint: dict[str, set[int]] = {}
    items = answer.get("accessList") if isinstance(answer, Mapping) else None
    if not isinstance(items, list):
        return hint
    for item in items:
        if not isinstance(item, Mapping):
            continue
        try:
            address = _address(item.get("address"), "address")
            keys = item.get("storageKeys") or []
            keys = keys if isinstance(keys, list) else []
            slots = {hex_int(key, "storage key") for key in keys}
        except BadField:
            continue
        if address is not None:
            hint.setdefault(address, set()).update(s for s in slots if s < _SLOT_LIMIT)
    return hint


def outcome_difference(answered: Any, executed: Executed) -> str | None:
    """How an upstream's eth_call result differs from the local execution's, in words;
    None when they are the same bytes."""
    if executed.outcome != "returned":
        what = "reverts" if executed.outcome == "reverted" else f"halts ({executed.reason})"
        return f"eth_call returned {short(str(answered))}, executed over proven state it {what}"
    try:
        given = hex_bytes(answered, "result")
    except BadField:
        return "eth_call's result is not hex"
    if given != executed.output:
        return (
            f"eth_call returned {short(given, 18)} ({len(given)} bytes), executed over proven "
            f"state it returns {short(executed.output, 18)} ({len(executed.output)} bytes)"
        )
    return None


def revert_difference(data: Any, executed: Executed) -> str | None:
    """How an upstream's revert of an eth_call (its error's `data`) differs from the local
    execution's outcome; None when the execution fails the same way (a revert with the
    same data, or a halt where the node names no data)."""
    if executed.outcome == "returned":
        return (
            f"eth_call failed (execution reverted), executed over proven state it returns "
            f"{short(executed.output, 18)}"
        )
    if executed.outcome == "halted":
        return None if data in (None, "", "0x") else "eth_call reverted where it halts"
    try:
        given = hex_bytes(data, "data") if data is not None else b""
    except BadField:
        return None  # a node that words its revert without data: the outcome agrees
    if data is not None and given != executed.output:
        return (
            f"eth_call reverted with {short(given, 18)}, executed over proven state it "
            f"reverts with {short(executed.output, 18)}"
        )
    return None


def _address(value: Any, name: str) -> str | None:
    if value is None:
        return None
    raw = hex_bytes(value, name)
    if len(raw) != _ADDRESS_BYTES:
        raise BadField(f"{name} is not 20 bytes")
    return "0x" + raw.hex()
