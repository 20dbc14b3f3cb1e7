"""How the fault proxy's tampering modes change an answer: one field, in a valid shape.

Each `tamper_*` function takes the method called and its (decoded) result and returns the
result to send instead, or None when there was nothing of its kind to change. Nothing
recomputes a hash: a block keeps its `hash`, a transaction its `hash`, a proof its nodes,
which is what a buggy or dishonest upstream would serve and what verification must notice.
The one exception is `fake_block`: a liar that hashes, whose fake is self-consistent and is
caught only against a hash the consensus proves.
"""

from __future__ import annotations

import copy
from typing import Any

from rpcgate.verify import header_hash

BLOCK_METHODS = ("eth_getBlockByNumber", "eth_getBlockByHash")
TRANSACTION_METHODS = (
    "eth_getTransactionByHash",
    "eth_getTransactionByBlockHashAndIndex",
    "eth_getTransactionByBlockNumberAndIndex",
)
# The header fields TAMPER_BLOCK can change: numbers get +1, hashes, addresses and bytes
# another value of the same kind. `hash` is not one of them: it is what must stay.
HEADER_QUANTITIES = frozenset(
    {
        "number",
        "gasUsed",
        "gasLimit",
        "timestamp",
        "difficulty",
        "totalDifficulty",
        "baseFeePerGas",
        "blobGasUsed",
        "excessBlobGas",
        "size",
    }
)
HEADER_DATA = frozenset(
    {
        "parentHash",
        "sha3Uncles",
        "miner",
        "stateRoot",
        "transactionsRoot",
        "receiptsRoot",
        "logsBloom",
        "extraData",
        "mixHash",
        "nonce",
        "withdrawalsRoot",
        "parentBeaconBlockRoot",
        "requestsHash",
    }
)
TRANSACTION_FIELD = "transaction"  # not a header field: the first transaction's value
BLOCK_FIELDS = HEADER_QUANTITIES | HEADER_DATA | {TRANSACTION_FIELD}

# Where each state method's block parameter is (for STALE_STATE's rewrite). eth_call's is
# not its last when state overrides follow it.
STATE_BLOCK_PARAM = {
    "eth_getBalance": 1,
    "eth_getTransactionCount": 1,
    "eth_getCode": 1,
    "eth_call": 1,
    "eth_getStorageAt": 2,
    "eth_getProof": 2,
}
DEFAULT_BLOCK = "latest"  # what a node assumes when a state call names no block
_STATE_MODES = {
    "tamper_balance": "balance",
    "tamper_nonce": "nonce",
    "tamper_code": "code",
    "tamper_storage": "storage",
}


def tampered(mode: str, method: str, result: Any, field: str) -> Any | None:
    """The result a tampering mode (a `Fault`'s value) sends instead of a call's; None:
    nothing of its kind to change. `field` is TAMPER_BLOCK's."""
    if mode == "tamper_block":
        return tamper_block(method, result, field)
    if mode == "tamper_receipt":
        return tamper_receipt(method, result)
    if mode in _STATE_MODES:
        return tamper_state(method, result, _STATE_MODES[mode])
    if mode == "drop_log":
        return drop_log(method, result)
    if mode == "tamper_call" and method == "eth_call" and isinstance(result, str):
        return flip_last_digit(result) if len(result) > 2 else None
    return None


def omitted_slots(access_list_answer: Any) -> dict[str, str]:
    """The storage key OMIT_SLOT leaves out of an eth_createAccessList answer, per contract:
    the first it names."""
    entries = access_list_answer.get("accessList") if isinstance(access_list_answer, dict) else None
    return {
        str(entry["address"]).lower(): entry["storageKeys"][0]
        for entry in entries or []
        if isinstance(entry, dict) and entry.get("storageKeys")
    }


def without_omitted_slots(access_list_answer: dict[str, Any]) -> dict[str, Any]:
    answer = copy.deepcopy(access_list_answer)
    for entry in answer.get("accessList") or []:
        if isinstance(entry, dict) and entry.get("storageKeys"):
            entry["storageKeys"] = entry["storageKeys"][1:]
    return answer


def plus_one(number: str) -> str:
    return hex(int(number, 16) + 1)


def quantity(value: Any) -> int | None:
    """A JSON-RPC quantity's number; None for anything else (a tag, a malformed value)."""
    if not isinstance(value, str) or not value.startswith("0x"):
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None


def flip_last_digit(data: str) -> str:
    """Another value of the same length ("0x" becomes "0x00": empty code gets a byte)."""
    if data in ("0x", "0X"):
        return "0x00"
    return data[:-1] + ("1" if data[-1] == "0" else "0")


def word_plus_one(word: str) -> str:
    """A 32-byte storage word +1, still 0x and 64 hex digits (wrapping at 2**256)."""
    return f"0x{(int(word, 16) + 1) % 2**256:064x}"


def tamper_block(method: str, result: Any, field: str) -> Any | None:
    """A block with `field` changed and its `hash` kept; with field "transaction", the
    first transaction of a full block (or a transaction answer) with 1 wei more value."""
    if method in TRANSACTION_METHODS and field == TRANSACTION_FIELD:
        return _value_plus_one(result)
    if method not in BLOCK_METHODS or not isinstance(result, dict):
        return None
    if field == TRANSACTION_FIELD:
        transactions = result.get("transactions") or []
        first = _value_plus_one(transactions[0]) if transactions else None
        if first is None:
            return None  # no transaction, or only their hashes
        return {**result, "transactions": [first, *transactions[1:]]}
    value = result.get(field)
    if not isinstance(value, str):
        return None
    changed = plus_one(value) if field in HEADER_QUANTITIES else flip_last_digit(value)
    return {**result, field: changed}


def fake_block(result: Any, field: str) -> dict[str, Any] | None:
    """A self-consistent fake of a block: header `field` changed (as `tamper_block`) and the
    block's `hash` recomputed from the changed header (its transactions naming the new
    hash), as a liar able to hash would serve it; None for what is not a block."""
    changed = tamper_block("eth_getBlockByNumber", result, field)
    if changed is None or field == TRANSACTION_FIELD:
        return None
    new_hash = "0x" + header_hash(changed).hex()
    transactions = [
        {**tx, "blockHash": new_hash} if isinstance(tx, dict) else tx
        for tx in changed.get("transactions") or []
    ]
    return {**changed, "hash": new_hash, "transactions": transactions}


def tamper_receipt(method: str, result: Any) -> Any | None:
    """Receipts with `status` flipped ("0x1" <-> "0x0"); pre-Byzantium receipts (a `root`,
    no `status`) have nothing to flip."""

    def flipped(receipt: Any) -> Any:
        if not isinstance(receipt, dict) or receipt.get("status") not in ("0x0", "0x1"):
            return receipt
        return {**receipt, "status": "0x0" if receipt["status"] == "0x1" else "0x1"}

    if method == "eth_getTransactionReceipt":
        receipts = [result]
    elif method == "eth_getBlockReceipts" and isinstance(result, list):
        receipts = result
    else:
        return None
    tampered = [flipped(receipt) for receipt in receipts]
    if all(new is old for new, old in zip(tampered, receipts, strict=True)):
        return None
    return tampered if method == "eth_getBlockReceipts" else tampered[0]


def tamper_state(method: str, result: Any, what: str) -> Any | None:
    """`what`: balance, nonce, code or storage; the plain method's answer and the same
    field of an eth_getProof answer (whose proof nodes stay as they are)."""
    if method == "eth_getProof" and isinstance(result, dict):
        proof = copy.deepcopy(result)
        if what == "balance":
            proof["balance"] = plus_one(proof["balance"])
        elif what == "nonce":
            proof["nonce"] = plus_one(proof["nonce"])
        elif what == "code":
            proof["codeHash"] = flip_last_digit(proof["codeHash"])
        else:
            if not proof.get("storageProof"):
                return None
            for item in proof["storageProof"]:
                item["value"] = plus_one(item["value"])
        return proof
    plain = {
        "balance": ("eth_getBalance", plus_one),
        "nonce": ("eth_getTransactionCount", plus_one),
        "code": ("eth_getCode", flip_last_digit),
        "storage": ("eth_getStorageAt", word_plus_one),
    }
    name, change = plain[what]
    if method != name or not isinstance(result, str):
        return None
    return change(result)


def drop_log(method: str, result: Any) -> Any | None:
    """eth_getLogs without its middle log (a lone log: none left)."""
    if method != "eth_getLogs" or not isinstance(result, list) or not result:
        return None
    middle = len(result) // 2
    return result[:middle] + result[middle + 1 :]


def state_block(call: Any) -> tuple[int, Any] | None:
    """Where a state call names its block, and the block it names (a tag, a number, an
    EIP-1898 object; "latest" when left out); None for any other call."""
    if not isinstance(call, dict):
        return None
    position = STATE_BLOCK_PARAM.get(call.get("method"))  # type: ignore[arg-type]
    params = call.get("params")
    if position is None or not isinstance(params, list) or len(params) < position:
        return None
    return position, params[position] if len(params) > position else DEFAULT_BLOCK


def at_block(call: dict[str, Any], position: int, number: int) -> dict[str, Any]:
    """The same call about block `number` (a plain number, whatever it named before)."""
    params = [*call["params"][:position], hex(number), *call["params"][position + 1 :]]
    return {**call, "params": params}


def _value_plus_one(transaction: Any) -> Any | None:
    if not isinstance(transaction, dict) or not isinstance(transaction.get("value"), str):
        return None
    return {**transaction, "value": plus_one(transaction["value"])}
