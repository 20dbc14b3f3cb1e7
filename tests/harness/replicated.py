"""One chain on several anvil nodes, mined by the test: leaders at the head, followers a
block (or more) behind, as the replicas behind a provider's load balancer are.

Every node mines the same canonical blocks (height h has the timestamp
`canonical_timestamp(h)` and the transactions the leaders mined at h), the followers only
later. Transactions reach the leaders (through the gateway, or `send`); before each height
the leaders' pools are made one (each learns what another has), as the p2p network would.
A follower's pool holds what the leaders' pools hold, as a replica's does, except while it
mines: then it holds exactly the transactions of the height it mines.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tests.harness.anvil import ALREADY_IMPORTED_CODE, AnvilCluster, AnvilNode, JsonRpcError


class HarnessError(RuntimeError):
    """The replicas did not mine identical blocks: a bug of the test, not of the gateway."""


def _send(node: AnvilNode, raw: str) -> None:
    try:
        node.send_raw_transaction(raw)
    except JsonRpcError as error:
        if error.code != ALREADY_IMPORTED_CODE and "already" not in error.error_message.lower():
            raise


def pending_raws(node: AnvilNode) -> list[str]:
    """The signed bytes of every transaction in the node's pool."""
    content = node.rpc("txpool_content")
    hashes = [
        tx["hash"]
        for section in ("pending", "queued")
        for by_nonce in content.get(section, {}).values()
        for tx in by_nonce.values()
    ]
    raws = [node.rpc("eth_getRawTransactionByHash", [tx_hash]) for tx_hash in hashes]
    return [raw for raw in raws if raw]


class ReplicatedChain:
    def __init__(
        self, cluster: AnvilCluster, leaders: Sequence[int], followers: Sequence[int] = ()
    ) -> None:
        self.cluster = cluster
        self.leaders = [cluster[i] for i in leaders]
        self.followers = [cluster[i] for i in followers]
        self.head = self.leaders[0].block_number()
        self.transactions: dict[int, list[str]] = {}  # height -> the raws mined there

    def mine(self, behind: int = 1) -> int:
        """The next height on the leaders (their pools made one first); each follower
        catches up to `behind` heights below it. Returns the new head."""
        for node in self.leaders:
            for raw in [
                r for other in self.leaders if other is not node for r in pending_raws(other)
            ]:
                _send(node, raw)
        height = self.head + 1
        timestamp = self.cluster.canonical_timestamp(height)
        for node in self.leaders:
            node.mine(timestamp)
        block = self.leaders[0].block(height)
        self._check(height, block["hash"], self.leaders)
        self.transactions[height] = [
            self.leaders[0].rpc("eth_getRawTransactionByHash", [tx_hash])
            for tx_hash in block["transactions"]
        ]
        self.head = height
        for node in self.followers:
            self.catch_up(node, height - behind)
        return height

    def catch_up(self, node: AnvilNode, target: int) -> None:
        """The follower mines the canonical heights up to `target`, each with exactly its
        transactions; then its pool holds what a replica's would: the transactions of the
        heights it has yet to mine, and what the leaders' pools hold."""
        node.rpc("anvil_dropAllTransactions")
        for height in range(node.block_number() + 1, target + 1):
            for raw in self.transactions[height]:
                _send(node, raw)
            node.mine(self.cluster.canonical_timestamp(height))
            self._check(height, self.leaders[0].block_hash(height), [node])
        for height in range(target + 1, self.head + 1):
            for raw in self.transactions[height]:
                _send(node, raw)
        for raw in pending_raws(self.leaders[0]):
            _send(node, raw)

    @staticmethod
    def _check(height: int, expected: str, nodes: list[AnvilNode]) -> None:
        for node in nodes:
            got = node.block_hash(height)
            if got != expected:
                raise HarnessError(f"{node.url} mined {got} at {height}, expected {expected}")

    def send(self, raw: str) -> str:
        """A transaction straight to the first leader (the others learn it at the next
        height)."""
        return self.leaders[0].send_raw_transaction(raw)

    def block(self, number: int) -> dict[str, Any]:
        return self.leaders[0].block(number)
