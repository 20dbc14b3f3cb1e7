"""A chain that logs, for subscription tests: three anvil nodes in lock-step behind fault
proxies with the test contract deployed, blocks mined with one log each, reorgs, upstream
cut-offs, and what the nodes themselves say to compare with what a client received."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tests.harness.anvil import DEV_ADDRESSES, AnvilCluster, sign_transaction
from tests.harness.contract import INIT_CODE, LOG_TOPIC, create_address
from tests.harness.faultproxy import Fault, FaultProxy

CHAIN_ID = 31337
CONTRACT = create_address(DEV_ADDRESSES[0], 0)
LOGS_FILTER = {"address": CONTRACT, "topics": [LOG_TOPIC]}
QUIET_SECONDS = 0.5  # after the last expected event: nothing more may come


@dataclass
class LoggingChain:
    """Three anvil nodes in lock-step behind fault proxies, with the test contract deployed
    (each call to it logs its calldata)."""

    cluster: AnvilCluster
    proxies: list[FaultProxy]
    nonce: int = 1  # the deployer's next nonce: the deployment used 0

    def mine_with_logs(self, blocks: int = 1, *, fork: bool = False) -> None:
        """Mines `blocks` blocks on every node, each with one call to the contract (one
        log). `fork` gives them timestamps the canonical chain does not use (new hashes)."""
        for _ in range(blocks):
            self.cluster.broadcast_raw_transaction(
                sign_transaction(
                    chain_id=CHAIN_ID,
                    nonce=self.nonce,
                    to=CONTRACT,
                    data=(self.nonce + (1000 if fork else 0)).to_bytes(4, "big"),
                    gas=100_000,
                )
            )
            self.nonce += 1
            if fork:
                for index in range(len(self.cluster)):
                    self.cluster.fork(index)
            else:
                self.cluster.mine_all()

    def snapshot(self) -> tuple[list[str], int]:
        return self.cluster.snapshot_all(), self.nonce

    def revert(self, snapshot: tuple[list[str], int]) -> None:
        """Every node goes back to the snapshot (and so does the deployer's nonce)."""
        snapshot_ids, self.nonce = snapshot
        self.cluster.revert_all(snapshot_ids)

    def cut_the_upstream_in_use(self) -> str:
        """Refuses connections to the upstream in use: the one that took the most requests
        since the last cut (the gateway spreads calls; the first on a tie). Returns its name."""
        healthy = [p for p in self.proxies if p.fault is Fault.HEALTHY]
        in_use = max(healthy, key=lambda p: p.request_count)
        in_use.set_fault(Fault.REFUSE)
        for proxy in self.proxies:
            proxy.reset_counts()
        return f"node{self.proxies.index(in_use)}"

    def node_heads(self, first: int, last: int) -> list[tuple[int, str]]:
        node = self.cluster[0]  # a node, not a proxy: never cut off
        return [(n, node.block_hash(n)) for n in range(first, last + 1)]

    def node_logs(self, first: int) -> list[tuple[int, str, int, str]]:
        logs = self.cluster[0].rpc(
            "eth_getLogs", [{"fromBlock": hex(first), "toBlock": "latest", **LOGS_FILTER}]
        )
        return [
            (
                int(e["blockNumber"], 16),
                e["blockHash"],
                int(e["logIndex"], 16),
                e["transactionHash"],
            )
            for e in logs
        ]


def logging_chain(cluster: AnvilCluster, proxies: list[FaultProxy]) -> LoggingChain:
    """The contract deployed on a lock-step cluster (one block mined for it)."""
    cluster.broadcast_raw_transaction(
        sign_transaction(chain_id=CHAIN_ID, nonce=0, data=INIT_CODE, gas=200_000)
    )
    cluster.mine_all()
    return LoggingChain(cluster, proxies)


def assert_once_in_order(what: str, expected: Sequence[Any], got: Sequence[Any]) -> None:
    if list(got) == list(expected):
        return
    missing = [item for item in expected if item not in got]
    repeated = sorted({item for item in got if list(got).count(item) > 1})
    foreign = [item for item in got if item not in expected]
    raise AssertionError(
        f"{what}: expected the node's {len(expected)}, each once, in order; got {len(got)}: "
        f"missing {missing}, repeated {repeated}, not on the node's chain {foreign}, "
        f"order {'wrong' if not (missing or repeated or foreign) else 'see above'}\n"
        f"expected {list(expected)}\ngot      {list(got)}"
    )


def web3_head(header: Any) -> tuple[int, str]:
    return header["number"], header["hash"].to_0x_hex()


def web3_log(entry: Any) -> tuple[int, str, int, str]:
    return (
        entry["blockNumber"],
        entry["blockHash"].to_0x_hex(),
        entry["logIndex"],
        entry["transactionHash"].to_0x_hex(),
    )


def settle(arrived: Callable[[], bool], timeout: float = 20) -> None:
    """Waits until `arrived()` (or `timeout`: the comparison that follows says what is
    missing), then a little more: a repeat or a stray would come now."""
    deadline = time.monotonic() + timeout
    while not arrived() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(QUIET_SECONDS)
