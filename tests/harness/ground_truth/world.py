"""The world: five anvil nodes, their load balancers and fault proxies, and a spare
replica, moved by the schedule's steps.

Each node's fault proxy forwards to a load balancer whose only backend is the node, until
the node is load balanced: then the balancer also draws a spare replica, a sixth node that
no config names, kept exactly one canonical block behind (it mines each height just after
the others mine the next one), as a provider's replicas answer at slightly different
heights.

A canonical block is the same on every node that mines it, whenever it does: block h has
the timestamp `canonical_timestamp(h)` and exactly the transactions recorded for h, sent only
to the nodes that mine h at that moment (anvil mines whatever its pool holds) and replayed
height by height when a lagging node (or the spare) catches up or a forked or rewound
node, reverted to its snapshot, rejoins. Each node is compared with the truth after it
mines. Every node takes an anvil snapshot at each canonical height it mines, keeping its
last few heads: a fork mines blocks of the node's own on its head, a rewind first reverts
to one of the heads before it, and rejoining reverts to where the branch began.

anvil 1.7.1 facts this relies on (checked by hand): `evm_revert` leaves the transaction
pool as it is (pending transactions stay pending) and does not give back the transactions
of the blocks it drops; it consumes the snapshot and every later one; with
`--slots-in-an-epoch N`, `safe` is the head minus N and `finalized` the head minus 2N
(floored at 0), derived from the node's head, so a revert moves them back too.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tests.harness.anvil import (
    DEV_ADDRESSES,
    DEV_KEYS,
    FORK_TIMESTAMP_SKEW,
    AnvilCluster,
    sign_transaction,
    transaction_hash,
)
from tests.harness.contract import INIT_CODE, create_address
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.ground_truth.schedule import (
    MAX_REWIND_DEPTH,
    NODES,
    TRUTH,
    Settle,
    Step,
    StepKind,
)
from tests.harness.loadbalancer import LoadBalancer

if TYPE_CHECKING:
    from tests.conftest import RunningGateway

# safe = head - 2, finalized = head - 4 on every node: finality moves within a short run.
SLOTS_IN_AN_EPOCH = 2
ANVIL_ARGS = ("--slots-in-an-epoch", str(SLOTS_IN_AN_EPOCH))
LATENCY_DELAY_S = 0.1  # below the gateway's attempt timeout: slow, yet answering

# anvil's third dev account (same mnemonic): it transacts on forks only, so its balance and
# nonce differ between a fork and the canonical chain.
FORK_KEY = "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a"
FORK_ADDRESS = "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"
SINKS = (
    "0x00000000000000000000000000000000000000A1",
    "0x00000000000000000000000000000000000000A2",
    "0x00000000000000000000000000000000000000A3",
)
CONTRACT = create_address(DEV_ADDRESSES[0], 0)  # deployed at height 1: logs on every call
ADDRESSES = (*DEV_ADDRESSES, FORK_ADDRESS, *SINKS, CONTRACT)
INITIAL_BLOCKS = 3
SPARE = NODES  # the cluster's sixth node: a replica load balanced with a node, never alone
_GWEI = 10**9


class HarnessError(RuntimeError):
    """The harness broke its own promise (e.g. a node mined a canonical height differently):
    a bug of the test, not of the gateway."""


@dataclass
class NodeState:
    height: int  # the last canonical height this node has (its branch's base while off it)
    lagging: bool = False
    branched: bool = False  # forked or rewound: on blocks of its own until it rejoins
    fault: Fault | None = None
    balanced: bool = False  # its URL leads to it or the spare, either, call by call
    # anvil snapshot ids of its last canonical heads, by height: where it can revert to.
    snapshots: dict[int, str] = field(default_factory=dict)

    @property
    def mines(self) -> bool:
        return not self.lagging and not self.branched


class World:
    """The cluster (five nodes and the spare), their balancers and proxies and the gateway,
    moved by `apply(step)`."""

    def __init__(
        self,
        cluster: AnvilCluster,
        balancers: list[LoadBalancer],
        proxies: list[FaultProxy],
        start_gateway: Callable[[], RunningGateway],
        stop_gateway: Callable[[RunningGateway], None],
        poll_interval: float,
        spare_url: str,
    ) -> None:
        assert len(cluster) == SPARE + 1 and NODES == len(balancers) == len(proxies)
        self.cluster = cluster
        # How balancers reach the spare: answering log ranges past its head as geth does
        # (an error), where anvil would answer the part it has as if it were all.
        self.spare_url = spare_url
        self.balancers = balancers
        self.proxies = proxies
        self.truth = cluster[TRUTH]
        self._start_gateway = start_gateway
        self._stop_gateway = stop_gateway
        self.poll_interval = poll_interval
        self.chain_id = cluster.chain_id
        self.head = cluster[TRUTH].block_number()
        self.nodes = [NodeState(self.head) for _ in range(NODES)]
        self.spare = NodeState(self.head)
        self.transactions: dict[int, list[str]] = {}  # canonical height -> signed raw txs
        self.canonical_txs: dict[str, int] = {}  # tx hash -> its canonical height
        self.fork_txs: list[str] = []  # hashes of transactions mined on branches only
        self.eventful: list[int] = []  # heights some node missed, forked or dropped, recent last
        self._nonces = {address: 0 for address in DEV_ADDRESSES}
        self.gateway: RunningGateway | None = None
        self.restarts = 0
        self._past_cache_counts: Counter[str] = Counter()  # of the gateways stopped

    def start(self) -> World:
        """Mines the first blocks everywhere (the log contract at height 1), then starts
        the gateway."""
        assert self.head == 0, "a fresh cluster"
        for index in range(NODES):
            self._snapshot(index)
        self._mine_canonical(INITIAL_BLOCKS)
        self.gateway = self._start_gateway()
        return self

    # -- steps --

    def apply(self, step: Step) -> None:
        node = step.node
        match step.kind:
            case StepKind.MINE:
                self._mine_canonical(step.count)
            case StepKind.LAG:
                assert node is not None
                self.nodes[node].lagging = True
            case StepKind.CATCH_UP:
                assert node is not None
                self._replay(node)
                self.nodes[node].lagging = False
            case StepKind.FORK:
                assert node is not None
                self._branch(node, step.count)
            case StepKind.REWIND:
                assert node is not None
                self._rewind(node, step.depth, step.count)
            case StepKind.REJOIN:
                assert node is not None
                self._rejoin(node)
            case StepKind.FAULT:
                assert node is not None and step.fault is not None
                delay = LATENCY_DELAY_S if step.fault is Fault.LATENCY else None
                self.proxies[node].set_fault(step.fault, delay=delay)
                self.nodes[node].fault = step.fault
            case StepKind.HEAL:
                assert node is not None
                self.proxies[node].heal()
                self.nodes[node].fault = None
            case StepKind.LOAD_BALANCE:
                assert node is not None
                self._spare_catch_up()
                self.balancers[node].backends = [self.cluster[node].url, self.spare_url]
                self.nodes[node].balanced = True
            case StepKind.UNBALANCE:
                assert node is not None
                self.balancers[node].backends = [self.cluster[node].url]
                self.nodes[node].balanced = False
            case StepKind.RESTART:
                assert self.gateway is not None
                self._past_cache_counts += _cache_counts(self.gateway)
                self._stop_gateway(self.gateway)
                self.gateway = self._start_gateway()
                self.restarts += 1
        self.settle(step.settle)

    def cache_counts(self) -> Counter[str]:
        """The gateways' cache counters, summed over restarts (is the warm Redis used?)."""
        current = _cache_counts(self.gateway) if self.gateway is not None else Counter()
        return self._past_cache_counts + current

    def settle(self, settle: Settle) -> None:
        assert self.gateway is not None
        if settle is Settle.SYNC:
            self.gateway.sync()
        elif settle is Settle.POLL:
            time.sleep(self.poll_interval)

    def _mine_canonical(self, count: int) -> None:
        miners = [i for i, state in enumerate(self.nodes) if state.mines]
        assert TRUTH in miners
        balanced = any(state.balanced for state in self.nodes)
        for _ in range(count):
            height = self.head + 1
            self.transactions[height] = self._canonical_transactions(height)
            for raw in self.transactions[height]:
                self.canonical_txs[transaction_hash(raw)] = height
            for index in miners:
                self._mine_height(index, height)
            self.head = height
            if balanced:
                self._mine_height(SPARE, height - 1)
        for index in miners + ([SPARE] if balanced else []):
            self._verify(index)

    def _canonical_transactions(self, height: int) -> list[str]:
        """Block h's transactions: a transfer to a sink (none in every fifth block) and, on
        odd heights, a call that logs. One transaction per sender and distinct tips, so
        anvil orders them the same way on every node."""
        raws = []
        if height == 1:
            raws.append(self._sign(DEV_KEYS[0], DEV_ADDRESSES[0], to=None, data=INIT_CODE))
        elif height % 5:
            sink = SINKS[height % len(SINKS)]
            raws.append(self._sign(DEV_KEYS[0], DEV_ADDRESSES[0], to=sink, value=height * 10**12))
        if height % 2:
            data = b"canonical" + height.to_bytes(8, "big")
            raws.append(self._sign(DEV_KEYS[1], DEV_ADDRESSES[1], to=CONTRACT, data=data, tip=1))
        return raws

    def _sign(
        self,
        key: str,
        sender: str,
        *,
        to: str | None,
        data: str | bytes = b"",
        value: int = 0,
        tip: int = 2,
    ) -> str:
        nonce = self._nonces[sender]
        self._nonces[sender] += 1
        return sign_transaction(
            chain_id=self.chain_id,
            nonce=nonce,
            to=to,
            data=data,
            value=value,
            key=key,
            max_priority_fee_per_gas=tip * _GWEI,
        )

    def _state(self, index: int) -> NodeState:
        return self.spare if index == SPARE else self.nodes[index]

    def _mine_height(self, index: int, height: int) -> None:
        """Canonical block `height` on a node (or the spare) whose head is the one below."""
        node = self.cluster[index]
        for raw in self.transactions[height]:
            node.send_raw_transaction(raw)
        node.mine(self.cluster.canonical_timestamp(height))
        self._state(index).height = height
        if index != SPARE:
            self._snapshot(index)

    def _snapshot(self, index: int) -> None:
        """Remembers the node's head, so it can go back to it; forgets heads too far back
        for a rewind (a rejoin goes back to the newest)."""
        state = self.nodes[index]
        state.snapshots[state.height] = self.cluster[index].snapshot()
        state.snapshots.pop(state.height - MAX_REWIND_DEPTH - 1, None)

    def _revert(self, index: int, height: int) -> None:
        """Back to the node's canonical head at `height`. The revert consumes that snapshot
        and every later one, so it takes a new one there."""
        state = self.nodes[index]
        self.cluster[index].revert(state.snapshots[height])
        state.snapshots = {h: s for h, s in state.snapshots.items() if h < height}
        state.height = height
        self._snapshot(index)
        self._verify(index)

    def _replay(self, index: int) -> None:
        """The canonical heights this node missed, one by one, each with its transactions."""
        start = self.nodes[index].height + 1
        if start <= self.head:
            self.eventful.append(start)
        for height in range(start, self.head + 1):
            self._mine_height(index, height)
        self._verify(index)

    def _spare_catch_up(self) -> None:
        """The spare mines the canonical heights up to one below the head."""
        for height in range(self.spare.height + 1, self.head):
            self._mine_height(SPARE, height)
        self._verify(SPARE)

    def _branch(self, index: int, count: int) -> None:
        """`count` blocks of the node's own on its head, mined at once, each with a
        transaction of its own (fork account to the log contract: other balances, other
        logs). The node stays there until it rejoins."""
        node, state = self.cluster[index], self.nodes[index]
        state.branched = True
        base = state.height
        for offset in range(count):
            height = base + 1 + offset
            data = b"fork" + bytes([index]) + height.to_bytes(8, "big")
            raw = sign_transaction(
                chain_id=self.chain_id,
                nonce=offset,  # the fork account never transacts on the canonical chain
                to=CONTRACT,
                data=data,
                value=10**16,
                key=FORK_KEY,
            )
            self.fork_txs.append(node.send_raw_transaction(raw))
            node.mine(self.cluster.canonical_timestamp(height) + FORK_TIMESTAMP_SKEW)
        self.eventful.extend(range(base + 1, base + count + 1))

    def _rewind(self, index: int, depth: int, count: int) -> None:
        """The node goes back to its head `depth` blocks ago (one the gateway may have
        seen as its head), dropping the blocks above, then branches off there with `count`
        blocks: fewer, as many or more than it dropped."""
        dropped = self.nodes[index].height
        base = dropped - depth
        self._revert(index, base)
        self._branch(index, count)
        self.eventful.extend(range(base + 1 + count, dropped + 1))

    def _rejoin(self, index: int) -> None:
        """Back to where its branch began, then the canonical heights it missed."""
        self._revert(index, self.nodes[index].height)
        self.nodes[index].branched = False
        self._replay(index)

    def _verify(self, index: int) -> None:
        """The node's head block is the truth's at that height: canonical blocks are
        identical wherever and whenever they were mined."""
        node = self.cluster[index]
        height = self._state(index).height
        if node.block_number() != height or node.block_hash(height) != self.truth.block_hash(
            height
        ):
            raise HarnessError(
                f"node{index} has {node.block(height)} at height {height}, "
                f"the truth {self.truth.block(height)}"
            )


def _cache_counts(gateway: RunningGateway) -> Counter[str]:
    counters = gateway.gateway.chains[0].cache_counters
    names = ("hits", "redis_hits", "misses", "bypass", "stale_dropped")
    return Counter({name: getattr(counters, name) for name in names})
