"""The process that executes eth_calls locally (`python -m rpcgate.chain.evm_worker`),
with revm (pyrevm), for `rpcgate/chain/local_evm.py`.

It reads one request a line on stdin and writes one answer a line on stdout (JSON). A
request carries the block's environment, the proven accounts, code and slots, the call, and
the URL of the gateway's own state endpoint: whatever the execution touches beyond what it
was given (an account, a slot, a block hash, also inside a frame that reverts), revm asks
that endpoint for, and the gateway proves it before answering (or refuses, and the
execution fails). revm blocks while it asks, holding Python's lock, which is why it runs in
a process of its own and not beside the gateway's event loop.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

_REVERT = re.compile(r"Revert \{ gas_used: (\d+), output: 0x([0-9a-fA-F]*) \}")
_HALT = re.compile(r"Halt \{ reason: (\w+)[^}]*gas_used: (\d+)")
# revm's rules for a block: the newest it knows; the EVM of every chain this runs for is
# Ethereum's (the chain table's `execution`).
_SPEC = "PRAGUE"


def execute(request: dict[str, Any]) -> dict[str, Any]:
    from pyrevm import EVM, AccountInfo, BlockEnv, CfgEnv, Env

    block = request["block"]
    environment = Env(
        cfg=CfgEnv(chain_id=request["chain_id"]),
        block=BlockEnv(
            number=block["number"],
            coinbase=block["coinbase"],
            timestamp=block["timestamp"],
            difficulty=block["difficulty"],
            prevrandao=bytes.fromhex(block["prevrandao"]),
            basefee=block["basefee"],
            gas_limit=block["gas_limit"],
            excess_blob_gas=block["excess_blob_gas"],
        ),
    )
    evm = EVM(
        env=environment,
        fork_url=request["url"],
        fork_block=hex(block["number"]),
        gas_limit=request["gas"],
        spec_id=_SPEC,
    )
    for address, account in request["accounts"].items():
        code = bytes.fromhex(account["code"])
        evm.insert_account_info(
            address,
            AccountInfo(  # type: ignore[call-arg]  # pyrevm's stub lacks the balance it takes
                balance=int(account["balance"], 16),
                nonce=account["nonce"],
                code=code or None,
            ),
        )
    for address, slots in request["slots"].items():
        for slot, value in slots.items():
            # Inside a snapshot reverted at once: the value stays in the database, and the
            # slot stays cold (pyrevm 0.3.7 leaves an account's later slots warm otherwise,
            # and the call would cost less gas than on a node).
            checkpoint = evm.snapshot()
            evm.insert_account_storage(address, int(slot, 16), int(value, 16))
            evm.revert(checkpoint)
    call = request["call"]
    try:
        output = evm.message_call(
            call["caller"],
            call["to"],
            bytes.fromhex(call["data"]),
            int(call["value"], 16),
            request["gas"],
        )
    except Exception as exc:  # revm reports a revert, a halt or a database error as one
        return _failure(str(exc))
    result = evm.result
    return {
        "outcome": "returned",
        "output": bytes(output).hex(),
        "gas_used": result.gas_used if result is not None else 0,
    }


def _failure(text: str) -> dict[str, Any]:
    reverted = _REVERT.search(text)
    if reverted:
        return {
            "outcome": "reverted",
            "output": reverted.group(2),
            "gas_used": int(reverted.group(1)),
        }
    halted = _HALT.search(text)
    if halted:
        return {
            "outcome": "halted",
            "output": "",
            "gas_used": int(halted.group(2)),
            "reason": halted.group(1),
        }
    return {"outcome": "failed", "output": "", "gas_used": 0, "reason": text[:300]}


def main() -> None:
    try:
        import pyrevm  # noqa: F401
    except ImportError as exc:
        print(json.dumps({"ready": False, "reason": str(exc)}), flush=True)
        return
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = execute(request)
        except Exception as exc:  # a request it cannot run: said, never the end of it
            answer = {"outcome": "failed", "output": "", "gas_used": 0, "reason": repr(exc)}
        answer["id"] = request.get("id")
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
