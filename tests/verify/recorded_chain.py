"""A node's answers about tests/harness/verify_chain.py's chain (and about the small chains
of older hardforks), recorded in tests/fixtures/verify/, so that tests/verify/test_verify.py
checks rpcgate/verify/ against them as unit tests, with no node: in milliseconds, and so
under mutation testing (docs/mutation.md).

What is recorded is what those tests ask (`questions`): every block with its transactions
and as hashes only, its receipts, each transaction by hash, eth_getProof answers of every
kind of account and slot, balances, nonces, code and storage, and the logs the filters list.
tests/verify/test_recorded_chain.py builds the chains again on anvil and checks that it
still answers all of them the same. When it does not (another anvil, another chain or
another question), record them again:

    ANVIL_BIN=... .venv/bin/python -m tests.verify.recorded_chain
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from eth_utils import keccak

from tests.harness.anvil import DEV_ADDRESSES, AnvilNode
from tests.harness.contract import LOG_TOPIC
from tests.harness.verify_chain import (
    STORE_TOPIC,
    STORED,
    build_small_chain,
    build_verify_chain,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "verify"
CHAIN_FILE = "verify_chain.json"
HARDFORKS = ("berlin", "london", "shanghai", "cancun", "prague")
BLOCKS = ("genesis", "transfers", "deploys", "calls", "blob", "set-code", "empty", "many")
# The blocks whose logs are asked for by filter (LOG_FILTERS).
LOG_BLOCKS = ("calls", "set-code", "many")
SMALL_CHAIN_BLOCKS = (0, 1)
UNSET_SLOTS = (0, 4, 2**200)
ABSENT_ADDRESS = "0x" + keccak(b"rpcgate.tests.verify.test_verify absent account")[:20].hex()

# eth_getLogs filters; an address named here ("store", "logger", "authority", and
# "store-uppercase") is the chain's (`ChainNames.resolve`).
LOG_FILTERS: dict[str, dict[str, Any]] = {
    "everything": {},
    "address": {"address": "store"},
    "addresses": {"address": ["store", "logger"]},
    "address-uppercase": {"address": ["store-uppercase"]},
    "absent-address": {"address": ABSENT_ADDRESS},
    "topic0": {"topics": [STORE_TOPIC]},
    "topic0-alternatives": {"topics": [[STORE_TOPIC, LOG_TOPIC]]},
    "wildcard-then-slot": {"topics": [None, f"0x{3:064x}"]},
    "value-alternatives": {"topics": [None, None, [f"0x{5:064x}", f"0x{7:064x}"]]},
    "empty-alternatives": {"topics": [[]]},
    "more-positions-than-topics": {"topics": [LOG_TOPIC, None]},
    "address-and-other-topic": {"address": "logger", "topics": [STORE_TOPIC]},
    "delegated-account": {"address": "authority", "topics": ["0x" + LOG_TOPIC[2:].upper()]},
}


def word(number: int) -> str:
    """A 32-byte value as hex: a storage slot, a topic."""
    return f"0x{number:064x}"


@dataclass
class ChainNames:
    """What the chain holds, by name (VerifyChain without its node)."""

    blocks: dict[str, int] = field(default_factory=dict)  # what a block holds -> its number
    block_hashes: dict[str, str] = field(default_factory=dict)  # the same name -> its hash
    transactions: dict[str, str] = field(default_factory=dict)  # kind -> transaction hash
    store: str = ""  # the storing contract
    logger: str = ""  # tests/harness/contract.py's contract
    authority: str = ""  # the account delegated to `logger`

    def tag(self, block: str) -> str:
        return hex(self.blocks[block])

    def account_cases(self) -> dict[str, tuple[str, str]]:
        """The accounts whose proofs are checked: name -> (address, block)."""
        return {
            "eoa": (DEV_ADDRESSES[0], "calls"),
            "absent": (ABSENT_ADDRESS, "calls"),
            "store-contract": (self.store, "calls"),
            "logger-contract": (self.logger, "calls"),
            "delegated-eoa": (self.authority, "set-code"),
            # Not at genesis: anvil's genesis says the empty stateRoot, funded accounts and all.
            "receiver-of-transfers": (DEV_ADDRESSES[1], "transfers"),
        }

    def resolve(self, criteria: dict[str, Any]) -> dict[str, Any]:
        """A filter of LOG_FILTERS with the chain's addresses in place of their names."""
        named = {
            "store": self.store,
            "store-uppercase": "0x" + self.store[2:].upper(),
            "logger": self.logger,
            "authority": self.authority,
        }
        address = criteria.get("address")
        if isinstance(address, str):
            return {**criteria, "address": named.get(address, address)}
        if isinstance(address, list):
            return {**criteria, "address": [named.get(a, a) for a in address]}
        return criteria


Question = tuple[str, list[Any]]


def proof_question(address: str, slots: Sequence[int], block_tag: str) -> Question:
    return ("eth_getProof", [address, [word(slot) for slot in slots], block_tag])


def questions(chain: ChainNames) -> Iterator[Question]:
    """Everything tests/verify/test_verify.py asks the node about the verify chain."""
    for name in BLOCKS:
        yield ("eth_getBlockByNumber", [chain.tag(name), True])
        yield ("eth_getBlockByNumber", [chain.tag(name), False])
        yield ("eth_getBlockReceipts", [chain.tag(name)])
    for tx_hash in chain.transactions.values():
        yield ("eth_getTransactionByHash", [tx_hash])
    for address, block in chain.account_cases().values():
        tag = chain.tag(block)
        yield proof_question(address, [], tag)
        for method in ("eth_getBalance", "eth_getTransactionCount", "eth_getCode"):
            yield (method, [address, tag])
    calls = chain.tag("calls")
    yield proof_question(DEV_ADDRESSES[0], [], chain.tag("deploys"))
    yield proof_question(DEV_ADDRESSES[1], [], calls)
    slots = [*STORED, *UNSET_SLOTS]
    yield proof_question(chain.store, slots, calls)
    for slot in slots:
        yield ("eth_getStorageAt", [chain.store, word(slot), calls])
    yield proof_question(chain.store, [1, 4], calls)
    yield proof_question(ABSENT_ADDRESS, [1], calls)
    for address in (chain.store, chain.logger):
        yield ("eth_getCode", [address, "latest"])
    yield ("eth_getLogs", [{"fromBlock": "0x0", "toBlock": "latest"}])
    for name in LOG_BLOCKS:
        for criteria in LOG_FILTERS.values():
            block_hash = chain.block_hashes[name]
            yield ("eth_getLogs", [{**chain.resolve(criteria), "blockHash": block_hash}])


def small_chain_questions() -> Iterator[Question]:
    """Everything asked of the small chain of each older hardfork."""
    for number in SMALL_CHAIN_BLOCKS:
        yield ("eth_getBlockByNumber", [hex(number), True])
        yield ("eth_getBlockReceipts", [hex(number)])


def _key(method: str, params: Sequence[Any]) -> str:
    return json.dumps([method, list(params)], sort_keys=True)


@dataclass
class Recording:
    """A node's answers, by question. `rpc` answers a recorded question with a deep copy
    (tests tamper with what they are given) and refuses any other."""

    chain: ChainNames
    answers: list[dict[str, Any]]  # {"method", "params", "result"}, in the order asked
    _by_key: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_key = {_key(a["method"], a["params"]): a["result"] for a in self.answers}

    def rpc(self, method: str, *params: Any) -> Any:
        key = _key(method, params)
        if key not in self._by_key:
            raise LookupError(
                f"{method}{list(params)} was not recorded: ask it in "
                "tests/verify/recorded_chain.py's questions and record again"
            )
        return copy.deepcopy(self._by_key[key])

    def dump(self, path: Path) -> None:
        body = {"chain": asdict(self.chain), "answers": self.answers}
        path.write_text(json.dumps(body, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Recording:
        body = json.loads(path.read_text())
        return cls(ChainNames(**body["chain"]), body["answers"])


def ask(node: AnvilNode, chain: ChainNames, asked: Iterator[Question]) -> Recording:
    answers = [
        {"method": method, "params": params, "result": node.rpc(method, params)}
        for method, params in asked
    ]
    return Recording(chain, answers)


def record_verify_chain(node: AnvilNode) -> Recording:
    """Build the verify chain on a fresh node, and ask it every question."""
    built = build_verify_chain(node)
    hashes = {name: node.block_hash(number) for name, number in built.blocks.items()}
    chain = ChainNames(
        built.blocks, hashes, built.transactions, built.store, built.logger, built.authority
    )
    return ask(node, chain, questions(chain))


def record_small_chain(node: AnvilNode) -> Recording:
    build_small_chain(node)
    return ask(node, ChainNames(), small_chain_questions())


def small_chain_file(hardfork: str) -> str:
    return f"small_chain_{hardfork}.json"


def recorders() -> dict[str, tuple[Callable[[], AnvilNode], Callable[[AnvilNode], Recording]]]:
    """Each fixture file, with the node its chain is built on and how it is recorded."""
    made: dict[str, tuple[Callable[[], AnvilNode], Callable[[AnvilNode], Recording]]] = {
        CHAIN_FILE: (AnvilNode, record_verify_chain)
    }
    for hardfork in HARDFORKS:
        node_of_fork = partial(AnvilNode, extra_args=["--hardfork", hardfork])
        made[small_chain_file(hardfork)] = (node_of_fork, record_small_chain)
    return made


def main() -> None:
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for file_name, (make_node, record) in recorders().items():
        with make_node() as node:
            record(node).dump(FIXTURES / file_name)
        print(f"recorded {FIXTURES / file_name}")


if __name__ == "__main__":
    main()
