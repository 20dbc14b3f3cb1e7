"""The fault proxy's tampering modes, against a real anvil node, without a gateway.

Each mode must change exactly what it says, in a shape a client still accepts (valid
JSON-RPC, a quantity still a quantity, a hash still 32 bytes), keep everything else
(a block's `hash` above all), leave other methods alone, do the same inside a batch, and
count what it altered in `tampered_answers`.
"""

from __future__ import annotations

import copy
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from eth_utils import to_checksum_address

from tests.harness.anvil import (
    DEFAULT_CHAIN_ID,
    DEFAULT_GENESIS_TIMESTAMP,
    DEV_ADDRESSES,
    DEV_KEYS,
    AnvilNode,
    canonical_timestamp,
    sign_transaction,
)
from tests.harness.contract import INIT_CODE, create_address
from tests.harness.faultproxy import TAMPERING, Fault, FaultProxy
from tests.harness.tampering import flip_last_digit, word_plus_one

RECIPIENT = to_checksum_address("0x" + "be" * 20)  # no code, a balance that grows each block
OUT_OF_GAS = 21_100  # enough to be included, not to run the contract: a failed receipt


@dataclass(frozen=True)
class Chain:
    """Block 1 deploys the contract; block 2 holds three logging calls, one call that runs
    out of gas and a transfer to RECIPIENT; block 3 (the head) one more logging call and
    another transfer, so RECIPIENT's balance and the deployer's nonce differ at 2 and 3."""

    node: AnvilNode
    contract: str
    succeeded: str  # a transaction hash
    failed: str
    head: int

    def rpc(self, method: str, params: list[Any]) -> Any:
        return self.node.rpc(method, params)

    def block_hash(self, number: int) -> str:
        return str(self.node.block_hash(number))


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
    with AnvilNode() as node:
        contract = create_address(DEV_ADDRESSES[0], 0)

        def send(nonce: int, key: int = 0, **fields: Any) -> str:
            raw = sign_transaction(
                chain_id=DEFAULT_CHAIN_ID, nonce=nonce, key=DEV_KEYS[key], **fields
            )
            return node.send_raw_transaction(raw)

        def mine() -> None:
            node.mine(canonical_timestamp(DEFAULT_GENESIS_TIMESTAMP, node.block_number() + 1))

        send(0, data=INIT_CODE)
        mine()
        succeeded = send(1, to=contract, data="0x01")
        send(2, to=contract, data="0x02")
        send(3, to=contract, data="0x03")
        failed = send(4, to=contract, data="0x04", gas=OUT_OF_GAS)
        send(0, key=1, to=RECIPIENT, value=1_000, gas=21_000)
        mine()
        send(5, to=contract, data="0x05")
        send(1, key=1, to=RECIPIENT, value=2_000, gas=21_000)
        mine()
        chain = Chain(node, contract, succeeded, failed, node.block_number())
        assert chain.rpc("eth_getTransactionReceipt", [failed])["status"] == "0x0"
        yield chain


# -- what a change may be: old value, new value -> is it that change --

Change = Callable[[Any, Any], bool]


def is_plus_one(old: str, new: str) -> bool:
    return int(new, 16) == int(old, 16) + 1 and new == hex(int(new, 16))


def is_word_plus_one(old: str, new: str) -> bool:
    return len(new) == len(old) == 66 and int(new, 16) == int(old, 16) + 1


def is_other_last_digit(old: str, new: str) -> bool:
    if old == "0x":
        return new == "0x00"
    return (
        len(new) == len(old)
        and new[:-1] == old[:-1]
        and new[-1] != old[-1]
        and new[-1] in string.hexdigits
    )


def is_flipped_status(old: str, new: str) -> bool:
    return {old, new} == {"0x0", "0x1"}


def is_middle_dropped(old: list[Any], new: list[Any]) -> bool:
    middle = len(old) // 2
    return len(old) >= 1 and new == old[:middle] + old[middle + 1 :]


KeyPath = tuple[str | int, ...]  # keys into a result; () is the result itself


@dataclass(frozen=True)
class Case:
    fault: Fault
    method: str
    params: Callable[[Chain], list[Any]]
    paths: Callable[[Any], list[KeyPath]]  # where the direct answer must change
    change: Change
    options: dict[str, Any]

    @property
    def id(self) -> str:
        option = "-".join(str(v) for v in self.options.values())
        return f"{self.fault.value}-{self.method}" + (f"-{option}" if option else "")


def case(
    fault: Fault,
    method: str,
    params: Callable[[Chain], list[Any]],
    paths: list[KeyPath] | Callable[[Any], list[KeyPath]],
    change: Change,
    **options: Any,
) -> Case:
    where = paths if callable(paths) else (lambda _answer, fixed=paths: fixed)
    return Case(fault, method, params, where, change, options)


def _block(full: bool) -> Callable[[Chain], list[Any]]:
    return lambda c: [hex(c.head - 1), full]


def _latest(*leading: Any) -> Callable[[Chain], list[Any]]:
    return lambda c: [*(getattr(c, a) if a == "contract" else a for a in leading), "latest"]


SLOTS = ["0x" + "00" * 32, "0x" + "00" * 31 + "01"]
WHOLE: list[KeyPath] = [()]

CASES = [
    case(Fault.TAMPER_BLOCK, "eth_getBlockByNumber", _block(False), [("gasUsed",)], is_plus_one),
    case(
        Fault.TAMPER_BLOCK,
        "eth_getBlockByHash",
        lambda c: [c.block_hash(c.head - 1), False],
        [("timestamp",)],
        is_plus_one,
        field="timestamp",
    ),
    *(
        case(Fault.TAMPER_BLOCK, "eth_getBlockByNumber", _block(False), [(f,)], change, field=f)
        for f, change in [
            ("gasUsed", is_plus_one),
            ("miner", is_other_last_digit),
            ("stateRoot", is_other_last_digit),
            ("extraData", is_other_last_digit),  # anvil's is empty: "0x" becomes "0x00"
            ("logsBloom", is_other_last_digit),
            ("baseFeePerGas", is_plus_one),
        ]
    ),
    case(
        Fault.TAMPER_BLOCK,
        "eth_getBlockByNumber",
        _block(True),
        [("transactions", 0, "value")],
        is_plus_one,
        field="transaction",
    ),
    case(
        Fault.TAMPER_BLOCK,
        "eth_getBlockByHash",
        lambda c: [c.block_hash(c.head), True],
        [("transactions", 0, "value")],
        is_plus_one,
        field="transaction",
    ),
    case(
        Fault.TAMPER_BLOCK,
        "eth_getTransactionByHash",
        lambda c: [c.succeeded],
        [("value",)],
        is_plus_one,
        field="transaction",
    ),
    case(
        Fault.TAMPER_BLOCK,
        "eth_getTransactionByBlockNumberAndIndex",
        lambda c: [hex(c.head), "0x1"],
        [("value",)],
        is_plus_one,
        field="transaction",
    ),
    case(
        Fault.TAMPER_BLOCK,
        "eth_getTransactionByBlockHashAndIndex",
        lambda c: [c.block_hash(c.head - 1), "0x0"],
        [("value",)],
        is_plus_one,
        field="transaction",
    ),
    case(
        Fault.TAMPER_RECEIPT,
        "eth_getTransactionReceipt",
        lambda c: [c.succeeded],
        [("status",)],
        is_flipped_status,
    ),
    case(
        Fault.TAMPER_RECEIPT,
        "eth_getTransactionReceipt",
        lambda c: [c.failed],
        [("status",)],
        is_flipped_status,
    ),
    case(
        Fault.TAMPER_RECEIPT,
        "eth_getBlockReceipts",
        lambda c: [hex(c.head - 1)],
        lambda receipts: [(i, "status") for i in range(len(receipts))],
        is_flipped_status,
    ),
    case(Fault.TAMPER_BALANCE, "eth_getBalance", _latest(RECIPIENT), WHOLE, is_plus_one),
    case(Fault.TAMPER_BALANCE, "eth_getProof", _latest(RECIPIENT, []), [("balance",)], is_plus_one),
    case(
        Fault.TAMPER_NONCE, "eth_getTransactionCount", _latest(DEV_ADDRESSES[0]), WHOLE, is_plus_one
    ),
    case(
        Fault.TAMPER_NONCE, "eth_getProof", _latest(DEV_ADDRESSES[0], []), [("nonce",)], is_plus_one
    ),
    case(Fault.TAMPER_CODE, "eth_getCode", _latest("contract"), WHOLE, is_other_last_digit),
    case(Fault.TAMPER_CODE, "eth_getCode", _latest(RECIPIENT), WHOLE, is_other_last_digit),  # "0x"
    case(
        Fault.TAMPER_CODE,
        "eth_getProof",
        _latest("contract", []),
        [("codeHash",)],
        is_other_last_digit,
    ),
    case(
        Fault.TAMPER_STORAGE,
        "eth_getStorageAt",
        _latest("contract", "0x0"),
        WHOLE,
        is_word_plus_one,
    ),
    case(
        Fault.TAMPER_STORAGE,
        "eth_getProof",
        _latest("contract", SLOTS),
        [("storageProof", 0, "value"), ("storageProof", 1, "value")],
        is_plus_one,
    ),
    case(
        Fault.TAMPER_CALL,
        "eth_call",
        lambda c: [{"to": c.contract, "data": "0x"}, "latest"],
        WHOLE,
        is_other_last_digit,
    ),
    case(
        Fault.DROP_LOG,
        "eth_getLogs",
        lambda c: [{"fromBlock": "0x0", "toBlock": "latest"}],
        WHOLE,
        is_middle_dropped,
    ),
    case(
        Fault.DROP_LOG,
        "eth_getLogs",
        lambda c: [{"blockHash": c.block_hash(c.head)}],  # one log: none left
        WHOLE,
        is_middle_dropped,
    ),
]
# Calls no tampering mode may touch, besides those of the other modes.
ALWAYS_UNTOUCHED: list[tuple[str, Callable[[Chain], list[Any]]]] = [
    ("eth_chainId", lambda c: []),
    ("eth_blockNumber", lambda c: []),
    ("eth_getBlockByNumber", lambda c: [hex(c.head + 100), True]),  # null: nothing to change
    ("eth_getTransactionReceipt", lambda c: ["0x" + "ab" * 32]),  # null
    ("eth_getLogs", lambda c: [{"fromBlock": "0x0", "toBlock": "0x0"}]),  # no logs
]


def _at(answer: Any, path: KeyPath) -> Any:
    for key in path:
        answer = answer[key]
    return answer


def assert_changed_exactly(direct: Any, proxied: Any, paths: list[KeyPath], change: Change) -> None:
    """`proxied` is `direct` with each path's value changed by `change`, and nothing else."""
    restored = copy.deepcopy(proxied)
    for path in paths:
        old, new = _at(direct, path), _at(proxied, path)
        assert change(old, new), f"{path}: {old!r} -> {new!r}"
        if not path:
            restored = old
        else:
            _at(restored, path[:-1])[path[-1]] = old
    assert restored == direct


async def rpc(session: aiohttp.ClientSession, url: str, payload: Any) -> Any:
    async with session.post(url, json=payload) as response:
        assert response.status == 200
        return await response.json()


def call(method: str, params: list[Any], id_: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}


def untouched_calls(chain: Chain, fault: Fault) -> list[tuple[str, list[Any]]]:
    """Calls the mode must pass as they are: the other modes' calls on methods it leaves
    alone, and a few that no mode changes."""
    own = {c.method for c in CASES if c.fault is fault}
    others = [(c.method, c.params(chain)) for c in CASES if c.method not in own]
    return [*others, *((m, params(chain)) for m, params in ALWAYS_UNTOUCHED)]


# -- answer-changing modes --


@pytest.mark.parametrize("tampering", CASES, ids=lambda c: c.id)
async def test_a_single_answer_changes_exactly_as_the_mode_says(
    chain: Chain, tampering: Case
) -> None:
    params = tampering.params(chain)
    direct = chain.rpc(tampering.method, params)
    async with FaultProxy(chain.node.url) as proxy, aiohttp.ClientSession() as session:
        proxy.set_fault(tampering.fault, **tampering.options)
        reply = await rpc(session, proxy.url, call(tampering.method, params, id_="x"))
        assert set(reply) == {"jsonrpc", "id", "result"} and reply["id"] == "x"
        assert_changed_exactly(direct, reply["result"], tampering.paths(direct), tampering.change)
        assert proxy.tampered_answers == 1
        assert proxy.requests == [tampering.method]  # what was asked, as it was asked


ANSWER_CHANGING = sorted(TAMPERING - {Fault.STALE_STATE}, key=lambda f: f.value)


@pytest.mark.parametrize("fault", ANSWER_CHANGING, ids=[f.value for f in ANSWER_CHANGING])
async def test_other_methods_pass_untouched(chain: Chain, fault: Fault) -> None:
    calls = untouched_calls(chain, fault)
    direct = [chain.rpc(method, params) for method, params in calls]
    async with FaultProxy(chain.node.url) as proxy, aiohttp.ClientSession() as session:
        proxy.set_fault(fault)
        for (method, params), expected in zip(calls, direct, strict=True):
            reply = await rpc(session, proxy.url, call(method, params))
            assert reply["result"] == expected, method
        assert proxy.tampered_answers == 0


@pytest.mark.parametrize("tampering", CASES, ids=lambda c: c.id)
async def test_a_batch_changes_its_matching_items_only(chain: Chain, tampering: Case) -> None:
    params = tampering.params(chain)
    direct = chain.rpc(tampering.method, params)
    (other_method, other_params), *_ = untouched_calls(chain, tampering.fault)
    other = chain.rpc(other_method, other_params)
    batch = [
        call(tampering.method, params, id_="first"),
        call(other_method, other_params, id_=7),
        call("eth_chainId", [], id_=None),
        call(tampering.method, params, id_=8),
    ]
    async with FaultProxy(chain.node.url) as proxy, aiohttp.ClientSession() as session:
        proxy.set_fault(tampering.fault, **tampering.options)
        replies = {r["id"]: r for r in await rpc(session, proxy.url, batch)}
        assert set(replies) == {"first", 7, None, 8}
        for id_ in ("first", 8):
            paths = tampering.paths(direct)
            assert_changed_exactly(direct, replies[id_]["result"], paths, tampering.change)
        assert replies[7]["result"] == other
        assert replies[None]["result"] == hex(DEFAULT_CHAIN_ID)
        assert proxy.tampered_answers == 2
        assert proxy.methods == [m["method"] for m in batch]


async def test_transactions_stay_untouched_unless_the_field_is_transaction(chain: Chain) -> None:
    calls = [
        call("eth_getTransactionByHash", [chain.succeeded], id_=1),
        call("eth_getBlockByNumber", [hex(chain.head), True], id_=2),
    ]
    async with FaultProxy(chain.node.url) as proxy, aiohttp.ClientSession() as session:
        proxy.set_fault(Fault.TAMPER_BLOCK)  # gasUsed
        transaction, block = await rpc(session, proxy.url, calls)
        assert transaction["result"] == chain.rpc("eth_getTransactionByHash", [chain.succeeded])
        assert (
            block["result"]["transactions"]
            == chain.rpc("eth_getBlockByNumber", [hex(chain.head), True])["transactions"]
        )
        assert proxy.tampered_answers == 1  # the block's gasUsed


# -- STALE_STATE --

# (method, the params asked with BLOCK standing for the block parameter, how the test
# names the head, the block expected instead as blocks before the head, stale_blocks)
BLOCK = object()
STALE_CASES: list[tuple[str, list[Any], str, int, int | None]] = [
    ("eth_getBalance", [RECIPIENT, BLOCK], "latest", 1, None),
    ("eth_getBalance", [RECIPIENT, BLOCK], "number", 1, None),
    ("eth_getBalance", [RECIPIENT, BLOCK], "blockHash", 1, None),
    ("eth_getBalance", [RECIPIENT, BLOCK], "blockNumber", 1, None),
    ("eth_getBalance", [RECIPIENT, BLOCK], "pending", 0, 1),  # one past the head
    ("eth_getBalance", [RECIPIENT, BLOCK], "latest", 2, 2),
    ("eth_getTransactionCount", [DEV_ADDRESSES[0], BLOCK], "latest", 1, None),
    ("eth_getProof", [RECIPIENT, [], BLOCK], "blockHash", 1, None),
    ("eth_getCode", ["contract", BLOCK], "latest", 1, None),
    ("eth_getStorageAt", ["contract", "0x0", BLOCK], "latest", 1, None),
    # Before the contract existed: never below block 0.
    ("eth_getCode", ["contract", BLOCK], "number", 3, 100),
    ("eth_call", [{"to": "contract", "data": "0x"}, BLOCK], "latest", 3, 100),
]


def _stale_params(chain: Chain, params: list[Any], block: Any) -> list[Any]:
    def fill(value: Any) -> Any:
        if value is BLOCK:
            return block
        if value == "contract":
            return chain.contract
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    return [fill(p) for p in params]


def _naming_head(chain: Chain, how: str) -> Any:
    return {
        "latest": "latest",
        "pending": "pending",
        "number": hex(chain.head),
        "blockHash": {"blockHash": chain.block_hash(chain.head)},
        "blockNumber": {"blockNumber": hex(chain.head)},
    }[how]


@pytest.mark.parametrize(
    ("method", "params", "head", "behind", "stale_blocks"),
    STALE_CASES,
    ids=[f"{m}-{h}-{s or 1}" for m, _, h, _, s in STALE_CASES],
)
async def test_stale_state_answers_about_an_older_block(
    chain: Chain, method: str, params: list[Any], head: str, behind: int, stale_blocks: int | None
) -> None:
    asked = _stale_params(chain, params, _naming_head(chain, head))
    expected = chain.rpc(method, _stale_params(chain, params, hex(max(0, chain.head - behind))))
    async with FaultProxy(chain.node.url) as proxy, aiohttp.ClientSession() as session:
        proxy.set_fault(Fault.STALE_STATE, stale_blocks=stale_blocks)
        reply = await rpc(session, proxy.url, call(method, asked))
        assert reply["result"] == expected
        assert proxy.tampered_answers == 1
        assert proxy.requests == [method]  # the proxy's own block lookups are not recorded


async def test_stale_state_shows_the_balance_before_its_last_change(chain: Chain) -> None:
    at_head = chain.rpc("eth_getBalance", [RECIPIENT, "latest"])
    before = chain.rpc("eth_getBalance", [RECIPIENT, hex(chain.head - 1)])
    assert at_head != before  # the transfer in the head block
    batch = [
        call("eth_getBalance", [RECIPIENT, "latest"], id_=1),
        call("eth_getBlockByNumber", ["latest", False], id_=2),
        call("eth_getBalance", [RECIPIENT, "earliest"], id_=3),  # block 0 has none older
    ]
    async with FaultProxy(chain.node.url) as proxy, aiohttp.ClientSession() as session:
        proxy.set_fault(Fault.STALE_STATE)
        replies = {r["id"]: r["result"] for r in await rpc(session, proxy.url, batch)}
        assert replies[1] == before
        assert replies[2] == chain.rpc("eth_getBlockByNumber", ["latest", False])
        assert replies[3] == "0x0"
        assert proxy.tampered_answers == 1
        assert proxy.requests == [[c["method"] for c in batch]]


# -- settings --


def test_tampering_options_must_match_the_mode(chain: Chain) -> None:
    proxy = FaultProxy(chain.node.url)
    with pytest.raises(ValueError, match="field only applies to TAMPER_BLOCK"):
        proxy.set_fault(Fault.TAMPER_RECEIPT, field="status")
    with pytest.raises(ValueError, match="stale_blocks only applies to STALE_STATE"):
        proxy.set_fault(Fault.TAMPER_BALANCE, stale_blocks=2)
    with pytest.raises(ValueError, match="cannot change 'hash'"):
        proxy.set_fault(Fault.TAMPER_BLOCK, field="hash")
    with pytest.raises(ValueError, match=">= 1"):
        proxy.set_fault(Fault.STALE_STATE, stale_blocks=0)
    proxy.set_fault(Fault.TAMPER_BLOCK)
    assert (proxy.settings.field, proxy.settings.stale_blocks) == ("gasUsed", 1)
    proxy.set_fault(Fault.STALE_STATE, stale_blocks=3)
    assert proxy.settings.stale_blocks == 3


@pytest.mark.unit
@pytest.mark.parametrize(
    ("change", "before", "after"),
    [
        (flip_last_digit, "0x", "0x00"),
        (flip_last_digit, "0x60", "0x61"),
        (flip_last_digit, "0xab", "0xa0"),
        (word_plus_one, "0x" + "f" * 64, "0x" + "0" * 64),
        (word_plus_one, "0x" + "0" * 64, "0x" + "0" * 63 + "1"),
    ],
)
def test_changed_values_keep_their_kind(
    change: Callable[[str], str], before: str, after: str
) -> None:
    assert change(before) == after
