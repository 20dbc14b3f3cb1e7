"""How fast two Python EVMs execute the same eth_calls: pyrevm (revm, Rust, what
rpcgate/chain/evm_worker.py uses) against py-evm (pure Python), on this machine.

    .venv/bin/python bench/evm_choice.py --pyevm-python /tmp/pyevm-venv/bin/python

py-evm is not a dependency of rpcgate and must not go into .venv; install it in a venv of
its own first:

    python3 -m venv /tmp/pyevm-venv
    /tmp/pyevm-venv/bin/pip install "py-evm==0.12.1b1" eth-abi

Each library builds the same world in memory, without a node, from
tests/fixtures/contracts/dex.json: three Tokens (supply 1e24) from a funded deployer, a
Factory and a Quoter, pairs A/B and B/C given liquidity and sync()ed. The contract
addresses come out the same in both (the script checks). Then two eth_calls are timed, each
as a read that changes nothing (the median over `--runs-*` runs, after a few warm-up calls):
  - `balanceOf(pair A/B)` on token A (one SLOAD);
  - the Quoter's `getAmountsOut(1e18, [A, B, C])` (two hops: the factory, a pair and its
    token0 read for each hop: six calls between contracts).
Both libraries must return the same bytes for each call (asserted).

Two ways of making a read, for each library:
  - fresh: state as a node would hold it, every account and slot cold, nothing kept
    between calls. py-evm: its own eth_call path (`Chain.get_transaction_result`: a state
    built from the block's state root, the call applied as a costless transaction, then
    reverted). pyrevm: a new `EVM`, given the world's accounts and slots, then one
    `message_call`: what evm_worker.py does for each request, except that each slot is
    written inside a snapshot that is then reverted (pyrevm 0.3.7 otherwise leaves all but
    an account's first slot warm: see `run_pyrevm`). The gas agrees between the two
    (asserted).
  - reused: one state kept across calls, with a snapshot taken before each and reverted
    after. pyrevm: every deploy and `message_call` is kept in revm's journal, which is
    never finalized (`commit()` only closes a `snapshot()`; without one it breaks the next
    call), so the accounts and slots the setup touched stay warm and the gas is lower.
    py-evm: the costless state's own snapshot/revert; its warm set is per transaction.

The py-evm half runs in the other interpreter (this file with `--only-pyevm`, printing
JSON); the pyrevm half runs here. The table goes to bench/results/evm_choice.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONTRACTS = REPO / "tests/fixtures/contracts/dex.json"
RESULTS = REPO / "bench/results/evm_choice.md"

# The deployer's key (any non-zero 32 bytes): py-evm needs signed transactions for the
# setup; pyrevm needs only the address.
PRIVATE_KEY = bytes.fromhex("46" * 32)
DEPLOYER_BALANCE = 10**24
SUPPLY = 10**24
# (first token, second token, amount of the first, amount of the second) per pair.
LIQUIDITY = (("A", "B", 10**21, 2 * 10**21), ("B", "C", 5 * 10**20, 3 * 10**21))
AMOUNT_IN = 10**18
GAS = 10_000_000
WARMUP = 3
CALLS = ("balanceOf", "getAmountsOut")
MODES = ("fresh", "reused")


def creation_code(name: str, types: list[str], args: list[Any]) -> bytes:
    from eth_abi import encode

    contracts = json.loads(CONTRACTS.read_text())["contracts"]
    return bytes.fromhex(contracts[name]["bytecode"].removeprefix("0x")) + encode(types, args)


def calldata(signature: str, types: list[str], args: list[Any]) -> bytes:
    from eth_abi import encode
    from eth_utils import keccak

    return keccak(text=signature)[:4] + encode(types, args)


def deployer_address() -> str:
    from eth_keys import keys

    return keys.PrivateKey(PRIVATE_KEY).public_key.to_checksum_address()


def contract_address(sender: str, nonce: int) -> str:
    """The address CREATE gives: the last 20 bytes of keccak(rlp([sender, nonce]))."""
    import rlp
    from eth_utils import keccak, to_canonical_address, to_checksum_address

    return to_checksum_address(keccak(rlp.encode([to_canonical_address(sender), nonce]))[12:])


def setup_calls(addresses: dict[str, str]) -> list[tuple[str, bytes]]:
    """The calls that give the pairs their liquidity, after the five deployments (the
    deployer's nonces 0-4: tokens A, B, C, the Factory, the Quoter)."""
    calls = [
        (
            addresses["Factory"],
            calldata(
                "createPair(address,address)",
                ["address", "address"],
                [addresses[first], addresses[second]],
            ),
        )
        for first, second, _, _ in LIQUIDITY
    ]
    for first, second, amount_first, amount_second in LIQUIDITY:
        pair = addresses[first + second]
        for token, amount in ((first, amount_first), (second, amount_second)):
            transfer = calldata("transfer(address,uint256)", ["address", "uint256"], [pair, amount])
            calls.append((addresses[token], transfer))
        calls.append((pair, calldata("sync()", [], [])))
    return calls


def world_addresses() -> dict[str, str]:
    deployer = deployer_address()
    addresses = {"deployer": deployer}
    for nonce, name in enumerate(("A", "B", "C", "Factory", "Quoter")):
        addresses[name] = contract_address(deployer, nonce)
    # The Factory's nonce starts at 1 (EIP-161) and goes up by one for each pair it creates.
    for nonce, (first, second, _, _) in enumerate(LIQUIDITY, start=1):
        addresses[first + second] = contract_address(addresses["Factory"], nonce)
    return addresses


def deployments(addresses: dict[str, str]) -> list[tuple[str, bytes]]:
    token = creation_code("Token", ["uint256"], [SUPPLY])
    return [
        ("A", token),
        ("B", token),
        ("C", token),
        ("Factory", creation_code("Factory", [], [])),
        ("Quoter", creation_code("Quoter", ["address"], [addresses["Factory"]])),
    ]


def benchmark_calls(addresses: dict[str, str]) -> dict[str, tuple[str, bytes]]:
    path = [addresses["A"], addresses["B"], addresses["C"]]
    return {
        "balanceOf": (
            addresses["A"],
            calldata("balanceOf(address)", ["address"], [addresses["AB"]]),
        ),
        "getAmountsOut": (
            addresses["Quoter"],
            calldata(
                "getAmountsOut(uint256,address[])", ["uint256", "address[]"], [AMOUNT_IN, path]
            ),
        ),
    }


def median_us(run: Callable[[], Any], runs: int) -> float:
    for _ in range(WARMUP):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        run()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000


# pyrevm


def storage_slots(addresses: dict[str, str]) -> dict[str, list[int]]:
    """The slots the world holds, from Dex.sol's layouts (pyrevm cannot list them): what a
    fresh EVM is given, as evm_worker.py is given the proven slots."""
    from eth_abi import encode
    from eth_utils import keccak

    def mapping(key: str | int, slot: int) -> int:
        key_type = "address" if isinstance(key, str) else "uint256"
        return int.from_bytes(keccak(encode([key_type, "uint256"], [key, slot])), "big")

    pairs = [first + second for first, second, _, _ in LIQUIDITY]
    holders = [addresses["deployer"], *(addresses[pair] for pair in pairs)]
    slots: dict[str, list[int]] = {}
    for token in ("A", "B", "C"):
        # balanceOf (slot 0), totalSupply (slot 2)
        slots[addresses[token]] = [mapping(holder, 0) for holder in holders] + [2]
    for pair in pairs:
        slots[addresses[pair]] = [0, 1, 2]  # token0, token1, reserves and timestamp
    all_pairs = int.from_bytes(keccak(encode(["uint256"], [1])), "big")
    factory = [1] + [all_pairs + index for index in range(len(pairs))]  # allPairs
    for first, second, _, _ in LIQUIDITY:
        for a, b in ((first, second), (second, first)):  # getPair[a][b] (slot 0)
            inner = int.from_bytes(keccak(encode(["address", "uint256"], [addresses[a], 0])), "big")
            factory.append(mapping(addresses[b], inner))
    slots[addresses["Factory"]] = factory
    slots[addresses["Quoter"]] = []  # its factory is immutable: in the code
    return slots


def run_pyrevm(runs: int) -> dict[str, Any]:
    from importlib.metadata import version

    from pyrevm import EVM, AccountInfo

    spec = "PRAGUE"  # as evm_worker.py
    addresses = world_addresses()
    deployer = addresses["deployer"]
    evm = EVM(spec_id=spec)
    evm.set_balance(deployer, DEPLOYER_BALANCE)
    for name, code in deployments(addresses):
        deployed = evm.deploy(deployer, code, gas=GAS)
        assert deployed.lower() == addresses[name].lower(), (name, deployed)
    for to, data in setup_calls(addresses):
        evm.message_call(deployer, to, data, gas=GAS)  # kept: the journal is the state

    # The world, for the fresh EVMs.
    accounts = []
    for address, slots in storage_slots(addresses).items():
        info = evm.basic(address)
        values = [(slot, evm.storage(address, slot)) for slot in slots]
        accounts.append((address, info.balance, info.nonce, evm.get_code(address), values))
    accounts.append((deployer, evm.get_balance(deployer), evm.basic(deployer).nonce, None, []))

    def fresh_call(to: str, data: bytes) -> tuple[bytes, int]:
        fresh = EVM(spec_id=spec)
        for address, balance, nonce, code, values in accounts:
            fresh.insert_account_info(
                address,
                AccountInfo(balance=balance, nonce=nonce, code=code),  # type: ignore[call-arg]
            )
            for slot, value in values:
                # pyrevm 0.3.7 writes an account's first slot to the database (cold) but
                # loads the account into the journal, and writes its later slots there: warm
                # for the call, as if already read. Reverting the journal after each write
                # unloads the account and keeps the (unjournaled) database write.
                checkpoint = fresh.snapshot()
                fresh.insert_account_storage(address, slot, value)
                fresh.revert(checkpoint)
        output = fresh.message_call(deployer, to, data, gas=GAS)
        return bytes(output), fresh.result.gas_used

    def reused_call(to: str, data: bytes) -> tuple[bytes, int]:
        checkpoint = evm.snapshot()
        output = evm.message_call(deployer, to, data, gas=GAS, is_static=True)
        gas_used = evm.result.gas_used
        evm.revert(checkpoint)
        return bytes(output), gas_used

    results: dict[str, Any] = {}
    for call, (to, data) in benchmark_calls(addresses).items():
        for mode, run in (("fresh", fresh_call), ("reused", reused_call)):
            output, gas_used = run(to, data)
            assert run(to, data) == (output, gas_used), (call, mode, "not repeatable")
            results[f"{call}/{mode}"] = {
                "median_us": median_us(lambda run=run, to=to, data=data: run(to, data), runs),
                "runs": runs,
                "gas": gas_used,
                "output": output.hex(),
            }
    return {
        "library": "pyrevm",
        "version": version("pyrevm"),
        "fork": spec,
        "python": platform.python_version(),
        "results": results,
    }


# py-evm (run in its own interpreter, with --only-pyevm)


def run_pyevm(runs: int) -> dict[str, Any]:
    from importlib.metadata import version

    from eth import constants
    from eth.chains.base import MiningChain
    from eth.db.atomic import AtomicDB
    from eth.vm.forks import PragueVM
    from eth.vm.spoof import SpoofTransaction
    from eth_keys import keys
    from eth_utils import to_canonical_address

    chain_id = 1337
    chain_class = MiningChain.configure(
        __name__="BenchChain", vm_configuration=((0, PragueVM),), chain_id=chain_id
    )
    addresses = world_addresses()
    deployer = to_canonical_address(addresses["deployer"])
    key = keys.PrivateKey(PRIVATE_KEY)
    genesis_params = {
        "difficulty": 0,
        "gas_limit": 60_000_000,
        "timestamp": 1_700_000_000,
        "coinbase": constants.ZERO_ADDRESS,
    }
    genesis_state = {
        deployer: {"balance": DEPLOYER_BALANCE, "nonce": 0, "code": b"", "storage": {}}
    }
    chain = chain_class.from_genesis(AtomicDB(), genesis_params, genesis_state)

    def transact(to: bytes, data: bytes) -> Any:
        vm = chain.get_vm()
        tx = vm.create_unsigned_transaction(
            nonce=vm.state.get_nonce(deployer),
            gas_price=10**10,
            gas=GAS,
            to=to,
            value=0,
            data=data,
        ).as_signed_transaction(key, chain_id=chain_id)
        _, _, computation = chain.apply_transaction(tx)
        computation.raise_if_error()
        return computation

    for name, code in deployments(addresses):
        computation = transact(constants.CREATE_CONTRACT_ADDRESS, code)
        deployed = computation.msg.storage_address
        assert deployed == to_canonical_address(addresses[name]), (name, deployed.hex())
    for to, data in setup_calls(addresses):
        transact(to_canonical_address(to), data)
    chain.mine_block()
    head = chain.get_canonical_head()

    def transaction(to: str, data: bytes) -> Any:
        vm = chain.get_vm(head)
        unsigned = vm.create_unsigned_transaction(
            nonce=vm.state.get_nonce(deployer),
            gas_price=0,
            gas=GAS,
            to=to_canonical_address(to),
            value=0,
            data=data,
        )
        return SpoofTransaction(unsigned, from_=deployer)

    def gas_used(tx: Any, computation: Any) -> int:
        floor = getattr(computation, "data_floor_gas", 0)
        return tx.gas - computation.get_gas_remaining() - computation.get_gas_refund() + floor

    def fresh_call(tx: Any) -> tuple[bytes, int]:
        # Chain.get_transaction_result, which returns only the output.
        with chain.get_vm(head).in_costless_state() as state:
            computation = state.costless_execute_transaction(tx)
        computation.raise_if_error()
        return computation.output, gas_used(tx, computation)

    results: dict[str, Any] = {}
    # One costless state for all the `reused` calls, each reverted to a snapshot after.
    with chain.get_vm(head).in_costless_state() as reused:

        def reused_call(tx: Any) -> tuple[bytes, int]:
            snapshot = reused.snapshot()
            computation = reused.costless_execute_transaction(tx)
            reused.revert(snapshot)
            computation.raise_if_error()
            return computation.output, gas_used(tx, computation)

        for call, (to, data) in benchmark_calls(addresses).items():
            tx = transaction(to, data)
            for mode, run in (("fresh", fresh_call), ("reused", reused_call)):
                output, used = run(tx)
                assert run(tx) == (output, used), (call, mode, "not repeatable")
                results[f"{call}/{mode}"] = {
                    "median_us": median_us(lambda run=run, tx=tx: run(tx), runs),
                    "runs": runs,
                    "gas": used,
                    "output": output.hex(),
                }
    return {
        "library": "py-evm",
        "version": version("py-evm"),
        "fork": "PragueVM",
        "python": platform.python_version(),
        "results": results,
    }


# The table


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def report(runs: list[dict[str, Any]], command: str) -> str:
    pyrevm, pyevm = runs
    world = storage_slots(world_addresses())
    accounts, slots = len(world) + 1, sum(map(len, world.values()))  # + the deployer
    lines = [
        "# pyrevm against py-evm: the same eth_calls, executed in memory",
        "",
        f"Date: {datetime.date.today().isoformat()}. Machine: {cpu_model()}.",
        "",
        f"    {command}",
        "",
        "Medians per call, after a warm-up; both libraries returned the same bytes for each"
        " call (asserted).",
        "",
        "- `fresh`: every account and slot cold, nothing kept between calls. py-evm:"
        " `Chain.get_transaction_result`'s path (a costless state from the block's state root,"
        f" reverted after). pyrevm: a new `EVM` given the whole world ({accounts} accounts,"
        f" their code and {slots} slots) and one `message_call`, as"
        " `rpcgate/chain/evm_worker.py` does; the loading is inside the time. Each slot is"
        " written inside a snapshot that is then"
        " reverted: otherwise pyrevm 0.3.7 leaves all but an account's first slot warm. The"
        " gas agrees (asserted).",
        "- `reused`: one state kept across calls, a snapshot taken before each and reverted"
        " after. pyrevm's journal keeps the accounts and slots the setup touched warm, hence"
        " its lower gas; py-evm's warm set is per transaction.",
        "",
        "Gas includes the transaction's 21,000. See the script's docstring.",
        "",
        "| library | version | fork | call | mode | median µs | runs | gas |",
        "|---|---|---|---|---|---:|---:|---:|",
    ]
    for call in CALLS:
        for mode in MODES:
            for run in (pyrevm, pyevm):
                result = run["results"][f"{call}/{mode}"]
                lines.append(
                    f"| {run['library']} | {run['version']} | {run['fork']} | {call} | {mode} "
                    f"| {result['median_us']:,.1f} | {result['runs']} | {result['gas']:,} |"
                )
    lines += ["", "py-evm's median over pyrevm's:", ""]
    for call in CALLS:
        for mode in MODES:
            ratio = (
                pyevm["results"][f"{call}/{mode}"]["median_us"]
                / pyrevm["results"][f"{call}/{mode}"]["median_us"]
            )
            lines.append(f"- {call}, {mode}: {ratio:,.0f}x")
    lines += [
        "",
        f"Python {pyrevm['python']} (pyrevm, in .venv) and {pyevm['python']} (py-evm, in its"
        " own venv).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pyevm-python", help="the interpreter py-evm is installed for")
    parser.add_argument("--runs-pyrevm", type=int, default=200)
    parser.add_argument("--runs-pyevm", type=int, default=30)
    parser.add_argument(
        "--only-pyevm", action="store_true", help="run the py-evm half here, print JSON"
    )
    args = parser.parse_args()
    if args.only_pyevm:
        print(json.dumps(run_pyevm(args.runs_pyevm)))
        return
    if not args.pyevm_python:
        parser.error("--pyevm-python is required (the interpreter py-evm is installed for)")

    pyrevm = run_pyrevm(args.runs_pyrevm)
    completed = subprocess.run(
        [args.pyevm_python, __file__, "--only-pyevm", "--runs-pyevm", str(args.runs_pyevm)],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        sys.exit(f"the py-evm half failed:\n{completed.stderr}")
    pyevm = json.loads(completed.stdout)
    for name, result in pyrevm["results"].items():
        other = pyevm["results"][name]
        assert result["output"] == other["output"], (name, result["output"], other["output"])
    for call in CALLS:  # both cold: the same execution, the same gas
        name = f"{call}/fresh"
        assert pyrevm["results"][name]["gas"] == pyevm["results"][name]["gas"], name

    interpreter = Path(sys.executable)
    if interpreter.is_relative_to(REPO):
        interpreter = interpreter.relative_to(REPO)
    command = shlex.join([str(interpreter), *sys.argv])
    text = report([pyrevm, pyevm], command)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
