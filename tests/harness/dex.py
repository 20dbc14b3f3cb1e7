"""A small DEX deployed on a lock-step anvil cluster, for eth_calls that touch several
contracts and storage slots: three tokens, a factory, two Uniswap V2-style pairs (A/B and
B/C, with reserves) and a quoter (tests/fixtures/contracts/Dex.sol, compiled into dex.json
by scripts/compile-contracts). The same signed transactions go to every node and are mined
at canonical timestamps, so the nodes keep identical blocks and state."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi import decode, encode
from eth_utils import keccak, to_checksum_address

from tests.conftest import gossip
from tests.harness.anvil import DEV_ADDRESSES, AnvilCluster, sign_transaction
from tests.harness.contract import create_address

COMPILED = json.loads((Path(__file__).parents[1] / "fixtures/contracts/dex.json").read_text())
SUPPLY = 10**24
_GAS = 3_000_000


def contract_code(name: str) -> str:
    return str(COMPILED["contracts"][name]["bytecode"])


def calldata(signature: str, types: list[str] | None = None, args: list[Any] | None = None) -> str:
    """An ABI-encoded call: the selector of `signature` and its arguments."""
    selector = keccak(text=signature)[:4]
    return "0x" + (selector + encode(types or [], args or [])).hex()


def decoded(types: list[str], result: str) -> tuple[Any, ...]:
    return tuple(decode(types, bytes.fromhex(result[2:])))


@dataclass(frozen=True)
class Dex:
    tokens: tuple[str, str, str]
    factory: str
    quoter: str
    pairs: tuple[str, str]  # A/B and B/C
    deployed_at: int  # the block the world is complete in

    def quote_call(self, amount: int = 10**18) -> dict[str, str]:
        """getAmountsOut(amount, [A, B, C]): the factory, both pairs, and their tokens."""
        data = calldata(
            "getAmountsOut(uint256,address[])",
            ["uint256", "address[]"],
            [amount, list(self.tokens)],
        )
        return {"to": self.quoter, "data": data}

    def balance_call(self, token: int, holder: str) -> dict[str, str]:
        return {
            "to": self.tokens[token],
            "data": calldata("balanceOf(address)", ["address"], [holder]),
        }


def deploy_dex(cluster: AnvilCluster) -> Dex:
    """Deploys the DEX from the first dev account, in two blocks mined on every node."""
    deployer = DEV_ADDRESSES[0]
    nonce = cluster[0].nonce(deployer)
    sent = 0

    def send(to: str | None, data: str) -> str | None:
        nonlocal sent
        raw = sign_transaction(
            chain_id=cluster.chain_id, nonce=nonce + sent, to=to, data=data, gas=_GAS
        )
        gossip(cluster, raw)
        sent += 1
        return create_address(deployer, nonce + sent - 1) if to is None else None

    supply = encode(["uint256"], [SUPPLY]).hex()
    tokens = tuple(str(send(None, contract_code("Token") + supply)) for _ in range(3))
    factory = str(send(None, contract_code("Factory")))
    quoter = str(send(None, contract_code("Quoter") + encode(["address"], [factory]).hex()))
    for a, b in ((0, 1), (1, 2)):
        send(
            factory,
            calldata("createPair(address,address)", ["address", "address"], [tokens[a], tokens[b]]),
        )
    cluster.mine_all(1)
    pairs = tuple(_pair(cluster, factory, tokens[a], tokens[b]) for a, b in ((0, 1), (1, 2)))
    # Liquidity of different depths, so that each hop's quote depends on its own reserves.
    for pair, (a, b), (amount_a, amount_b) in zip(
        pairs, ((0, 1), (1, 2)), ((10**21, 2 * 10**21), (5 * 10**20, 3 * 10**21)), strict=True
    ):
        for token, amount in ((tokens[a], amount_a), (tokens[b], amount_b)):
            send(
                token, calldata("transfer(address,uint256)", ["address", "uint256"], [pair, amount])
            )
        send(pair, calldata("sync()"))
    cluster.mine_all(1)
    for node in cluster:  # every transaction in, on every node
        assert node.nonce(deployer, "latest") == nonce + sent
    a, b, c = tokens
    return Dex((a, b, c), factory, quoter, (pairs[0], pairs[1]), cluster[0].block_number())


def _pair(cluster: AnvilCluster, factory: str, a: str, b: str) -> str:
    call = {
        "to": factory,
        "data": calldata("getPair(address,address)", ["address", "address"], [a, b]),
    }
    return str(to_checksum_address("0x" + cluster[0].rpc("eth_call", [call, "latest"])[-40:]))
