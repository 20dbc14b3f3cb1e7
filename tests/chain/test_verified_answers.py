"""Verified answers (chains[].verify) against an upstream that lies with a valid shape.

Three anvil nodes in lock-step; the first, listed first, sits behind a fault proxy that
tampers with its answers (tests/harness/faultproxy.py: a block field changed with its hash
kept, a receipt's status flipped, a balance +1 wei, state from an older block, a log
dropped...). Calls are sent concurrently and uncached (`Cache-Control: no-cache`), so the
tamperer answers its share; every answer is compared with an honest node's. With the mode
that covers a tampering, no tampered answer reaches a client; with `off`, some do (so these
tests can fail).
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from eth_utils import to_checksum_address

from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, AnvilCluster, sign_transaction
from tests.harness.contract import INIT_CODE, create_address
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.loop import BackgroundLoop

CHAIN_ID = 31337
RECIPIENTS = [to_checksum_address(f"0x{0xFEED00 + i:040x}") for i in range(4)]
ROUNDS = 5  # rounds of every call at once: the tamperer gets its share


@dataclass
class Chain:
    cluster: AnvilCluster
    proxies: list[FaultProxy]
    contract: str
    tx_hashes: list[str]
    tx_blocks: list[int]  # blocks holding the transactions
    head: int

    def honest(self, method: str, params: list[Any]) -> Any:
        return self.cluster[1].rpc(method, params)


@pytest.fixture
def chain(proxied_cluster: ProxiedClusterFactory) -> Chain:
    """Blocks with a contract deployment, contract calls that log, and transfers; the
    transfers' recipients' balances change block by block."""
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    deployer = DEV_ADDRESSES[0]
    contract = create_address(deployer, 0)
    hashes = [
        cluster.broadcast_raw_transaction(
            sign_transaction(chain_id=CHAIN_ID, nonce=0, data=INIT_CODE, key=DEV_KEYS[0])
        )
    ]
    cluster.mine_all()
    nonce = 1
    for block in range(3):
        for i, recipient in enumerate(RECIPIENTS):
            raws = [
                sign_transaction(
                    chain_id=CHAIN_ID,
                    nonce=nonce,
                    to=recipient,
                    value=10**12 * (block + 1) + i,
                    gas=21000,
                ),
                sign_transaction(
                    chain_id=CHAIN_ID, nonce=nonce + 1, to=contract, data=f"0x{block:02x}{i:02x}"
                ),
            ]
            nonce += 2
            hashes += [cluster.broadcast_raw_transaction(raw) for raw in raws]
        cluster.mine_all()
    cluster.mine_all(3)
    receipts = [cluster[1].receipt(h) for h in hashes]
    assert all(r is not None and r["status"] == "0x1" for r in receipts)
    blocks = sorted({int(r["blockNumber"], 16) for r in receipts if r})
    return Chain(cluster, proxies, contract, hashes, blocks, cluster[1].block_number())


def _gateway(start_gateway: GatewayFactory, chain: Chain, verify: str) -> RunningGateway:
    gateway = start_gateway(
        [p.url for p in chain.proxies],
        chain={"verify": verify},
        # A 30 s window keeps every head-poll cheap; the failover has room for retries.
        failover={"attempt_timeout_s": 2.0, "deadline_s": 15.0, "max_attempts": 5},
    )
    gateway.sync()
    return gateway


async def _all_at_once(
    url: str, calls: list[tuple[str, list[Any]]]
) -> list[tuple[dict[str, Any], dict[str, str]]]:
    async with aiohttp.ClientSession() as session:

        async def one(index: int, method: str, params: list[Any]) -> Any:
            body = {"jsonrpc": "2.0", "id": index, "method": method, "params": params}
            async with session.post(
                url + "/", json=body, headers={"Cache-Control": "no-cache"}
            ) as resp:
                return json.loads(await resp.read()), dict(resp.headers)

        return await asyncio.gather(
            *(one(i, method, params) for i, (method, params) in enumerate(calls))
        )


def _served(
    loop: BackgroundLoop, gateway: RunningGateway, chain: Chain, calls: list[tuple[str, list[Any]]]
) -> tuple[int, int, set[str]]:
    """Sends every call at once, ROUNDS times; (answers equal to an honest node's, answers
    that differ, X-Rpcgate-Verified values seen)."""
    expected = {json.dumps(c): chain.honest(*c) for c in calls}
    replies = []
    sent: list[tuple[str, list[Any]]] = []
    for round_ in range(ROUNDS):  # identical calls at once would be coalesced into one
        # Shuffled: the rotation over upstreams must not line up with the list's pattern.
        shuffled = random.Random(round_).sample(calls, len(calls))
        replies += loop.run(_all_at_once(gateway.url, shuffled))
        sent += shuffled
    same = differ = 0
    levels: set[str] = set()
    for (method, params), (reply, headers) in zip(sent, replies, strict=True):
        assert "error" not in reply, (method, params, reply)
        levels.add(headers.get("X-Rpcgate-Verified", "missing"))
        if reply["result"] == expected[json.dumps([method, params])]:
            same += 1
        else:
            differ += 1
    return same, differ, levels


def _block_calls(chain: Chain) -> list[tuple[str, list[Any]]]:
    calls: list[tuple[str, list[Any]]] = []
    for number in chain.tx_blocks:
        block_hash = chain.honest("eth_getBlockByNumber", [hex(number), False])["hash"]
        calls += [
            ("eth_getBlockByNumber", [hex(number), False]),
            ("eth_getBlockByNumber", [hex(number), True]),
            ("eth_getBlockByHash", [block_hash, True]),
        ]
    return calls


def _transaction_calls(chain: Chain) -> list[tuple[str, list[Any]]]:
    return [("eth_getTransactionByHash", [h]) for h in chain.tx_hashes]


def _receipt_calls(chain: Chain) -> list[tuple[str, list[Any]]]:
    calls: list[tuple[str, list[Any]]] = [
        ("eth_getTransactionReceipt", [h]) for h in chain.tx_hashes
    ]
    calls += [("eth_getBlockReceipts", [hex(n)]) for n in chain.tx_blocks]
    return calls


def _state_calls(chain: Chain, method: str) -> list[tuple[str, list[Any]]]:
    at = [hex(n) for n in chain.tx_blocks]
    if method == "eth_getBalance":
        return [("eth_getBalance", [r, b]) for r in RECIPIENTS for b in at]
    if method == "eth_getTransactionCount":
        return [("eth_getTransactionCount", [DEV_ADDRESSES[0], b]) for b in at]
    if method == "eth_getCode":
        return [("eth_getCode", [chain.contract, b]) for b in at]
    return [("eth_getStorageAt", [chain.contract, hex(slot), b]) for slot in (0, 1) for b in at]


def _logs_calls(chain: Chain) -> list[tuple[str, list[Any]]]:
    first, last = hex(chain.tx_blocks[0]), hex(chain.tx_blocks[-1])
    calls: list[tuple[str, list[Any]]] = [
        ("eth_getLogs", [{"fromBlock": first, "toBlock": last}]),
        ("eth_getLogs", [{"fromBlock": first, "toBlock": last, "address": chain.contract}]),
    ]
    for number in chain.tx_blocks:
        block_hash = chain.honest("eth_getBlockByNumber", [hex(number), False])["hash"]
        calls.append(("eth_getLogs", [{"blockHash": block_hash}]))
    return calls


def _integrity_failures(gateway: RunningGateway, upstream: str) -> int:
    status = gateway.loop.run(_status(gateway.url))
    (entry,) = [u for u in status["chains"][0]["upstreams"] if u["name"] == upstream]
    return int(entry["integrity_failures"])


def _metric(gateway: RunningGateway, family: str) -> dict[str, float]:
    """One family's value per upstream, from /metrics."""

    async def scrape() -> str:
        async with aiohttp.ClientSession() as session, session.get(gateway.url + "/metrics") as r:
            return await r.text()

    values = {}
    for line in gateway.loop.run(scrape()).splitlines():
        if line.startswith(family + "{"):
            labels, value = line[len(family) + 1 :].rsplit("} ", 1)
            upstream = labels.split('upstream="')[1].split('"')[0]
            values[upstream] = float(value)
    return values


async def _status(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.get(url + "/status.json") as resp:
        return dict(await resp.json())


# (the tampering, its setting, the calls it spoils, the least `verify` that stops it)
CASES = [
    (Fault.TAMPER_BLOCK, "gasUsed", _block_calls, "integrity"),
    (Fault.TAMPER_BLOCK, "stateRoot", _block_calls, "integrity"),
    (Fault.TAMPER_BLOCK, "miner", _block_calls, "integrity"),
    (Fault.TAMPER_BLOCK, "timestamp", _block_calls, "integrity"),
    (Fault.TAMPER_BLOCK, "extraData", _block_calls, "integrity"),
    (Fault.TAMPER_BLOCK, "transaction", _block_calls, "integrity"),
    (Fault.TAMPER_BLOCK, "transaction", _transaction_calls, "integrity"),
    (Fault.TAMPER_RECEIPT, None, _receipt_calls, "integrity"),
    (Fault.TAMPER_BALANCE, None, lambda c: _state_calls(c, "eth_getBalance"), "proofs"),
    (Fault.TAMPER_NONCE, None, lambda c: _state_calls(c, "eth_getTransactionCount"), "proofs"),
    (Fault.TAMPER_CODE, None, lambda c: _state_calls(c, "eth_getCode"), "proofs"),
    (Fault.TAMPER_STORAGE, None, lambda c: _state_calls(c, "eth_getStorageAt"), "proofs"),
    (Fault.STALE_STATE, None, lambda c: _state_calls(c, "eth_getBalance"), "proofs"),
    (Fault.DROP_LOG, None, _logs_calls, "proofs"),
]
_IDS = [
    f"{fault.value}-{field or ''}-{calls.__name__.strip('_<>')}" for fault, field, calls, _ in CASES
]
LEVEL = {"integrity": "integrity", "proofs": "proof"}


def _tamper(chain: Chain, fault: Fault, field: str | None) -> FaultProxy:
    tamperer = chain.proxies[0]
    tamperer.set_fault(fault, **({"field": field} if field else {}))
    return tamperer


@pytest.mark.parametrize(("fault", "field", "calls", "mode"), CASES, ids=_IDS)
def test_no_tampered_answer_reaches_a_client_when_verified(
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
    chain: Chain,
    fault: Fault,
    field: str | None,
    calls: Any,
    mode: str,
) -> None:
    gateway = _gateway(start_gateway, chain, mode)
    tamperer = _tamper(chain, fault, field)
    same, differ, levels = _served(background_loop, gateway, chain, calls(chain))
    assert tamperer.tampered_answers > 0, "the tampering upstream was never asked"
    assert differ == 0, f"{differ} tampered answers of {same + differ} reached the client"
    assert levels == {LEVEL[mode]}
    assert _integrity_failures(gateway, "node0") > 0
    assert _integrity_failures(gateway, "node1") == _integrity_failures(gateway, "node2") == 0
    counted = _metric(gateway, "rpcgate_upstream_integrity_failures_total")
    assert counted["node0"] == _integrity_failures(gateway, "node0")
    assert counted["node1"] == counted["node2"] == 0


# Each case again under every weaker mode: `off`, and `integrity` for what only proofs catch.
WEAKER = [
    pytest.param(fault, field, calls, weaker, id=f"{case_id}-{weaker}")
    for (fault, field, calls, mode), case_id in zip(CASES, _IDS, strict=True)
    for weaker in (["off"] if mode == "integrity" else ["off", "integrity"])
]


@pytest.mark.parametrize(("fault", "field", "calls", "weaker"), WEAKER)
def test_tampered_answers_get_through_unverified(
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
    chain: Chain,
    fault: Fault,
    field: str | None,
    calls: Any,
    weaker: str,
) -> None:
    """The same load with a mode that does not cover the tampering: tampered answers are
    served, so the test above can fail."""
    gateway = _gateway(start_gateway, chain, weaker)
    tamperer = _tamper(chain, fault, field)
    _, differ, _ = _served(background_loop, gateway, chain, calls(chain))
    assert tamperer.tampered_answers > 0
    assert differ > 0
    assert _integrity_failures(gateway, "node0") == 0


def test_receipts_are_served_as_consensus_where_no_upstream_serves_block_receipts(
    start_gateway: GatewayFactory, chain: Chain
) -> None:
    """A chain whose upstreams lack eth_getBlockReceipts (here: the chain refuses it) still
    answers receipts, and says they were not checked, instead of failing every one."""
    gateway = start_gateway(
        [p.url for p in chain.proxies],
        chain={"verify": "integrity", "methods": {"deny": ["eth_getBlockReceipts"]}},
    )
    gateway.sync()
    for tx_hash in chain.tx_hashes[:3]:
        reply = gateway.rpc("eth_getTransactionReceipt", [tx_hash], fresh=True)
        assert reply.json()["result"] == chain.honest("eth_getTransactionReceipt", [tx_hash])
        assert reply.headers["X-Rpcgate-Verified"] == "consensus"
    block = gateway.rpc("eth_getBlockByNumber", [hex(chain.tx_blocks[0]), True], fresh=True)
    assert block.headers["X-Rpcgate-Verified"] == "integrity"  # blocks are still checked
    assert not gateway.gateway.chains[0].verifier.block_receipts


def test_a_receipt_whose_block_receipts_no_upstream_gives_is_not_served_as_checked(
    start_gateway: GatewayFactory, chain: Chain
) -> None:
    """Every upstream fails eth_getBlockReceipts with an error that does not say the method
    is unsupported (an internal error): the receipt's check has no anchor, so the receipt is
    not served as checked. Nor is receipt checking given up for the chain, as it is when
    no upstream serves the method at all."""
    for proxy in chain.proxies:
        proxy.set_fault(Fault.RPC_ERROR, methods=["eth_getBlockReceipts"])
    gateway = _gateway(start_gateway, chain, "integrity")
    reply = gateway.rpc("eth_getTransactionReceipt", [chain.tx_hashes[0]], fresh=True)
    answer = reply.json()
    assert "result" not in answer, (answer, reply.headers.get("X-Rpcgate-Verified"))
    assert "unverifiable" in json.dumps(answer["error"]), answer
    assert reply.headers.get("X-Rpcgate-Verified") != "integrity"
    assert gateway.gateway.chains[0].verifier.block_receipts
