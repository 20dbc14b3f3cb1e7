"""Heads as real deployments show them: a provider that is a load balancer over replicas a
block apart, a node that goes back to an ancestor the gateway saw as its head, a replica
raised from Redis above its own upstreams, and a devnet that restarts behind Redis.

Every answer is compared with a node (the replica ahead, or the node itself after its
rewind) at the block the answer names (`X-Rpcgate-Block`).
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import GatewayFactory
from tests.harness.anvil import (
    DEV_ADDRESSES,
    DEV_KEYS,
    FORK_TIMESTAMP_SKEW,
    AnvilNode,
    json_rpc,
    sign_transaction,
)
from tests.harness.faultproxy import Fault
from tests.harness.fixtures import AnvilClusterFactory, FaultProxyFactory, LoadBalancerFactory
from tests.harness.loadbalancer import Gate
from tests.harness.loop import BackgroundLoop
from tests.harness.redis_server import RedisServer
from tests.harness.replicated import ReplicatedChain
from tests.harness.tools import free_port

CHAIN_ID = 31337
SINK = "0x00000000000000000000000000000000000000A1"
LOAD_SECONDS = 30.0
READERS = 2


def transfer(nonce: int, value: int = 10**12, key: str = DEV_KEYS[0]) -> str:
    return sign_transaction(
        chain_id=CHAIN_ID, nonce=nonce, to=SINK, value=value, key=key, gas=21000
    )


@dataclass
class Answer:
    body: dict[str, Any]
    block: int | None  # X-Rpcgate-Block
    cache: str | None
    upstream: str | None = None  # X-Rpcgate-Upstream


def call(url: str, method: str, params: list[Any], fresh: bool = True) -> Answer:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    headers = {"Content-Type": "application/json"}
    if fresh:
        headers["Cache-Control"] = "no-cache"
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as reply:
        block = reply.headers.get("X-Rpcgate-Block")
        return Answer(
            json.loads(reply.read()),
            int(block) if block and block.isdigit() else None,
            reply.headers.get("X-Rpcgate-Cache"),
            reply.headers.get("X-Rpcgate-Upstream"),
        )


# -- 1. one provider, a load balancer over replicas a block apart --


async def _new_gate() -> Gate:
    return Gate()  # made on the loop its balancers serve from


@dataclass
class Load:
    """What the callers saw: calls, failures and wrong answers, each in words."""

    calls: int = 0
    failures: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failed(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)

    def differs(self, what: str) -> None:
        with self.lock:
            self.wrong.append(what)


def read_and_compare(
    url: str, truth: str, mined: dict[str, int], load: Load, stop: threading.Event
) -> None:
    """Mixed uncached reads, each checked against the replica ahead (`truth`, its URL
    through the gate) at the block named."""
    highest = 0
    turn = 0
    while not stop.is_set():
        turn += 1
        highest = check_one_round(url, truth, mined, load, turn, highest)


def check_one_round(
    url: str, truth: str, mined: dict[str, int], load: Load, turn: int, highest: int
) -> int:
    """eth_blockNumber, then one other call by turn; returns the highest head seen."""
    head = call(url, "eth_blockNumber", [])
    load.calls += 1
    if "error" in head.body:
        load.failed(f"eth_blockNumber: {head.body['error']}")
        return highest
    number = int(head.body["result"], 16)
    if number < highest:
        load.differs(f"eth_blockNumber went back from {highest} to {number}")
    highest = max(highest, number)
    kind = turn % 5
    if kind == 3:
        sender = DEV_ADDRESSES[0]
        answer = call(url, "eth_getTransactionCount", [sender, "pending"])
        load.calls += 1
        if "error" in answer.body:
            load.failed(f"pending nonce: {answer.body['error']}")
        elif int(answer.body["result"], 16) < int(
            json_rpc(truth, "eth_getTransactionCount", [sender, hex(number)]), 16
        ):
            load.differs(f"pending nonce {answer.body['result']} below the nonce at {number}")
        return highest
    if kind == 4:
        with load.lock:
            known = list(mined.items())[-4:]
        for tx_hash, height in known:
            answer = call(url, "eth_getTransactionReceipt", [tx_hash])
            load.calls += 1
            if "error" in answer.body:
                load.failed(f"receipt: {answer.body['error']}")
            elif answer.body["result"] is None:
                if height <= number:
                    load.differs(f"receipt of {tx_hash} (block {height}) null at {number}")
            elif answer.body["result"] != json_rpc(truth, "eth_getTransactionReceipt", [tx_hash]):
                load.differs(f"receipt of {tx_hash} differs")
        return highest
    method, params = (
        ("eth_getBalance", [SINK]),
        ("eth_call", [{"to": SINK, "data": "0x"}]),
        ("eth_getBlockByNumber", [False]),
    )[kind]
    at_latest = [*params, "latest"] if kind < 2 else ["latest", *params]
    answer = call(url, method, at_latest)
    load.calls += 1
    if "error" in answer.body:
        load.failed(f"{method}: {answer.body['error']}")
    elif answer.block is None:
        load.differs(f"{method}: no X-Rpcgate-Block")
    else:
        at_block = [*params, hex(answer.block)] if kind < 2 else [hex(answer.block), *params]
        expected = json_rpc(truth, method, at_block)
        if answer.body["result"] != expected:
            load.differs(
                f"{method} at {answer.block} by {answer.upstream}: "
                f"{answer.body['result']!r:.80}, expected {expected!r:.80}"
            )
    return highest


def run_load(
    url: str,
    chain: ReplicatedChain,
    load: Load,
    mining: Callable[[], AbstractContextManager[None]],
    truth: str,
    seconds: float = LOAD_SECONDS,
) -> None:
    """Readers on threads; this thread sends a transaction through the gateway and mines a
    height about every half second (the follower a block behind), within `mining`."""
    mined: dict[str, int] = {}
    stop = threading.Event()
    readers = [
        threading.Thread(target=read_and_compare, args=(url, truth, mined, load, stop), daemon=True)
        for _ in range(READERS)
    ]
    for reader in readers:
        reader.start()
    nonce = chain.leaders[0].nonce(DEV_ADDRESSES[0])
    sent: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            answer = call(url, "eth_sendRawTransaction", [transfer(nonce)])
            load.calls += 1
            if "error" in answer.body:
                load.failed(f"eth_sendRawTransaction: {answer.body['error']}")
            else:
                sent.append(answer.body["result"])
                nonce += 1
            time.sleep(0.2)  # the broadcast's other sends land
            with mining():
                height = chain.mine()
            with load.lock:
                for tx_hash in sent:
                    if tx_hash not in mined and chain.leaders[0].receipt(tx_hash) is not None:
                        mined[tx_hash] = height
            time.sleep(0.3)
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=35)
    assert len(mined) == len(sent), "every transaction sent through the gateway was mined"


@pytest.mark.timeout(180)
@pytest.mark.parametrize("others", [0, 2], ids=["alone", "among-three"])
def test_a_load_balancer_over_replicas_a_block_apart_fails_no_call_and_answers_as_the_one_ahead(
    others: int,
    anvil_cluster: AnvilClusterFactory,
    load_balancer: LoadBalancerFactory,
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
) -> None:
    cluster = anvil_cluster(2 + others, chain_id=CHAIN_ID)
    leaders = [0, *range(2, 2 + others)]
    chain = ReplicatedChain(cluster, leaders=leaders, followers=[1])
    for _ in range(3):
        chain.mine()
    # Every read reaches the nodes through a gate that mining closes: anvil, while it mines,
    # answers a state read about its head with the state being mined (seen here), which
    # no real node does.
    gate = background_loop.run(_new_gate())
    balancer = load_balancer([cluster[0].url, cluster[1].url], seed=others, gate=gate)
    balancer.transactions_to = cluster[0].url
    others_urls = [load_balancer([cluster[i].url], gate=gate).url for i in leaders[1:]]
    truth = load_balancer([cluster[0].url], gate=gate).url
    gateway = start_gateway([balancer.url, *others_urls])
    # A gateway learns that a URL is replicas at different heights from the heights it
    # shows; until then it is one node (the first poll that lands on the replica behind).
    view = gateway.gateway.chains[0].tracker.views["node0"]
    deadline = time.monotonic() + 10
    while not view.uneven and time.monotonic() < deadline:
        time.sleep(0.05)
    assert view.uneven
    load = Load()

    @contextmanager
    def mining() -> Iterator[None]:
        background_loop.run(gate.close())
        try:
            yield
        finally:
            background_loop.run(gate.reopen())

    run_load(gateway.url, chain, load, mining, truth)
    counts = balancer.counts
    assert counts.get(cluster[1].url, 0) > 50, counts  # the replica behind was asked often
    assert load.calls > 300, load.calls
    assert load.failures == [], load.failures[:10]
    assert load.wrong == [], load.wrong[:10]


def test_replicas_answering_polls_in_turn_keep_the_provider_ok_voting_the_lower_height(
    anvil_cluster: AnvilClusterFactory,
    load_balancer: LoadBalancerFactory,
    start_gateway: GatewayFactory,
) -> None:
    """The head from the replica ahead, then from the one behind: a provider behind a load
    balancer, not a failed poll nor a node that went back."""
    cluster = anvil_cluster(2, chain_id=CHAIN_ID)
    chain = ReplicatedChain(cluster, leaders=[0], followers=[1])
    for _ in range(3):
        chain.mine()
    balancer = load_balancer([cluster[0].url, cluster[1].url], seed=3)
    gateway = start_gateway([balancer.url], head_poll_interval=60)
    tracker = gateway.gateway.chains[0].tracker
    states = set()
    for _ in range(30):
        chain.mine()
        for _ in range(2):
            gateway.sync()
            states.add(str(tracker.views["node0"].state))
    assert states == {"ok"}, states
    view = tracker.views["node0"]
    assert view.uneven  # it was seen to be replicas at different heights
    # It votes with the height every replica behind it has, and says so on /status.json.
    assert tracker.consensus.head is not None
    assert tracker.consensus.head.number <= cluster[1].block_number()
    with urllib.request.urlopen(gateway.url + "/status.json", timeout=10) as reply:
        shown = json.loads(reply.read())["chains"][0]["upstreams"][0]
    assert shown["consistent_height"] <= cluster[1].block_number() < shown["head"]["number"]


def test_a_transaction_is_never_refused_because_of_a_head(
    anvil_cluster: AnvilClusterFactory,
    load_balancer: LoadBalancerFactory,
    start_gateway: GatewayFactory,
) -> None:
    """The upstream holding the consensus head cannot take transactions now (its write path
    is down); the other lags far behind the head: a transaction is about no block, so the
    lagging one takes it."""
    cluster = anvil_cluster(2, chain_id=CHAIN_ID)
    cluster.mine_on([0], 10)
    cluster.mine_on([1], 4)
    reads_only = load_balancer([cluster[0].url])
    reads_only.transactions_to = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gateway = start_gateway(
        [],
        head_poll_interval=60,
        upstreams=[
            {"name": "ahead", "url": reads_only.url, "weight": 2},
            {"name": "behind", "url": cluster[1].url},
        ],
    )
    tracker = gateway.gateway.chains[0].tracker
    assert int(gateway.result("eth_blockNumber"), 16) == 10
    assert str(tracker.views["behind"].state) == "lagging"
    answer = call(gateway.url, "eth_sendRawTransaction", [transfer(0)])
    assert "error" not in answer.body, answer.body
    assert cluster[1].rpc("eth_getTransactionByHash", [answer.body["result"]]) is not None


def test_a_lookup_by_hash_one_upstream_cannot_find_is_found_on_another(
    anvil_cluster: AnvilClusterFactory,
    fault_proxy: FaultProxyFactory,
    start_gateway: GatewayFactory,
) -> None:
    """Both upstreams hold the head; one answers null to every look-up by hash (its index
    lags, or a replica behind it answered): a null is served only when a second agrees."""
    cluster = anvil_cluster(2, chain_id=CHAIN_ID)
    tx_hash = cluster.broadcast_raw_transaction(transfer(0))
    cluster.mine_all(2)
    blind = fault_proxy(cluster[0].url, Fault.NULL_LOOKUPS)
    gateway = start_gateway([blind.url, cluster[1].url], head_poll_interval=60)
    receipt = cluster[1].receipt(tx_hash)
    for _ in range(12):
        for method, params, expected in (
            ("eth_getTransactionReceipt", [tx_hash], receipt),
            ("eth_getBlockByHash", [receipt["blockHash"], False], cluster[1].block(1)),
        ):
            answer = call(gateway.url, method, params)
            assert answer.body.get("result") == expected, (method, answer)
    assert "eth_getTransactionReceipt" in blind.methods  # it was asked, and overruled
    # A hash nobody has: null, after both said so.
    missing = call(gateway.url, "eth_getTransactionReceipt", ["0x" + "ab" * 32])
    assert missing.body["result"] is None and "error" not in missing.body


# -- 2. a node that goes back to an ancestor the gateway saw as its head --


@pytest.mark.parametrize("new_blocks", [4, 1], ids=["longer-branch", "shorter-branch"])
def test_after_a_rewind_every_block_and_receipt_served_is_the_nodes(
    new_blocks: int, anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    node = anvil_cluster(1, chain_id=CHAIN_ID)[0]
    cluster_ts = node.genesis_timestamp
    for height in range(1, 21):
        node.mine(cluster_ts + 12 * height)
    ancestor = node.snapshot()  # at 20
    gateway = start_gateway([node.url], head_poll_interval=60)
    assert int(gateway.result("eth_blockNumber"), 16) == 20  # the ancestor, seen as the head
    dropped = []
    for nonce, height in ((0, 21), (1, 22)):
        dropped.append(node.send_raw_transaction(transfer(nonce)))
        node.mine(cluster_ts + 12 * height)
    gateway.sync()
    assert int(gateway.result("eth_blockNumber"), 16) == 22
    for number in (21, 22):  # served, and cached
        assert gateway.result("eth_getBlockByNumber", [hex(number), False]) is not None
    for tx_hash in dropped:
        assert gateway.result("eth_getTransactionReceipt", [tx_hash]) is not None
    node.revert(ancestor)  # back to 20: the blocks above are gone
    gateway.sync()  # the gateway sees 20 as its head
    assert int(gateway.result("eth_blockNumber"), 16) == 20
    kept = node.send_raw_transaction(transfer(0, value=7))
    for offset in range(1, new_blocks + 1):
        node.mine(cluster_ts + 12 * (20 + offset) + FORK_TIMESTAMP_SKEW)
    gateway.sync()

    def served_equals_the_node() -> None:
        assert int(gateway.result("eth_blockNumber"), 16) == node.block_number()
        for number in range(18, node.block_number() + 3):
            for fresh in (False, True):
                answer = call(gateway.url, "eth_getBlockByNumber", [hex(number), False], fresh)
                assert "error" not in answer.body, (number, answer.body)
                expected = node.rpc("eth_getBlockByNumber", [hex(number), False])
                got = answer.body["result"]
                assert (got or {}).get("hash") == (expected or {}).get("hash"), (number, fresh)
        for tx_hash in [*dropped, kept]:
            for fresh in (False, True):
                answer = call(gateway.url, "eth_getTransactionReceipt", [tx_hash], fresh)
                assert answer.body.get("result") == node.receipt(tx_hash), (tx_hash, fresh)

    served_equals_the_node()
    for height in range(node.block_number() + 1, node.block_number() + 11):
        node.mine(cluster_ts + 12 * height + FORK_TIMESTAMP_SKEW)
    gateway.sync()
    served_equals_the_node()


# -- 3. a replica raised from Redis above its own upstreams --


def test_a_shared_head_above_every_upstream_of_a_replica_never_makes_old_blocks_unservable(
    anvil_cluster: AnvilClusterFactory,
    fault_proxy: FaultProxyFactory,
    start_gateway: GatewayFactory,
    redis_server: RedisServer,
) -> None:
    cluster = anvil_cluster(2, chain_id=CHAIN_ID)
    cluster.mine_on([0], 10)
    cluster.mine_on([1], 6)  # B's only upstream: four blocks behind A's
    proxy_b = fault_proxy(cluster[1].url)
    redis = {"redis_url": redis_server.url}
    a = start_gateway([cluster[0].url], head_poll_interval=60, cache=redis)
    b = start_gateway([proxy_b.url], head_poll_interval=60, cache=redis)
    assert int(b.result("eth_blockNumber"), 16) == 6
    proxy_b.set_fault(Fault.HTTP_5XX)  # B's upstream fails the poll that A's head brings
    cluster.mine_on([0])
    a.sync()  # A serves 11, and says so through Redis; B polls and its poll fails
    time.sleep(0.3)
    proxy_b.heal()
    for number in (1, 5, 6):
        answer = call(b.url, "eth_getBlockByNumber", [hex(number), False])
        assert "error" not in answer.body, answer.body
        assert answer.body["result"]["hash"] == cluster[1].block_hash(number)
    assert int(b.result("eth_blockNumber"), 16) <= 6


def test_cached_calls_on_a_replica_never_wait_for_the_shared_head(
    anvil_cluster: AnvilClusterFactory,
    fault_proxy: FaultProxyFactory,
    start_gateway: GatewayFactory,
    redis_server: RedisServer,
) -> None:
    """A fast chain on A, B's upstream slower and a few blocks behind: heads keep coming
    through Redis, faster than B polls, that B cannot serve; B's cached answers wait for
    none of them."""
    cluster = anvil_cluster(2, chain_id=CHAIN_ID)
    cluster.mine_on([0], 8)
    cluster.mine_on([1], 5)
    redis = {"redis_url": redis_server.url}
    a = start_gateway([cluster[0].url], head_poll_interval=0.05, cache=redis)
    slow = fault_proxy(cluster[1].url)
    slow.set_fault(Fault.LATENCY, delay=0.15)  # each of B's polls outlasts A's next head
    b = start_gateway([slow.url], head_poll_interval=0.5, cache=redis)
    hold = b.config.chains[0].hold_ahead_s
    b.result("eth_chainId")
    b.result("eth_getBlockByNumber", ["0x0", False])  # final: kept
    stop = threading.Event()

    def fast_chain() -> None:
        while not stop.is_set():
            cluster.mine_on([0])
            time.sleep(0.1)

    miner = threading.Thread(target=fast_chain, daemon=True)
    miner.start()
    took = []
    try:
        time.sleep(0.3)
        for _ in range(40):
            for method, params in (("eth_chainId", []), ("eth_getBlockByNumber", ["0x0", False])):
                started = time.monotonic()
                answer = call(b.url, method, params, fresh=False)
                took.append(time.monotonic() - started)
                assert answer.cache == "hit" and "error" not in answer.body, answer
                assert took[-1] < hold / 4, (method, took)
            time.sleep(0.02)
    finally:
        stop.set()
        miner.join()
    assert a.result("eth_blockNumber") != "0x8"  # A's head did move meanwhile
    # Not even one of B's poll rounds (each upstream call of B's takes 0.15 s): a cache hit.
    assert statistics.median(took) < 0.05, sorted(took)


# -- 4. a devnet that restarts behind Redis --


@pytest.mark.parametrize("gateway_restarts", [False, True], ids=["same-gateway", "new-gateway"])
def test_a_devnet_reset_behind_redis_serves_the_new_chains_blocks_at_once(
    gateway_restarts: bool,
    load_balancer: LoadBalancerFactory,
    start_gateway: GatewayFactory,
    redis_server: RedisServer,
    background_loop: Any,
) -> None:
    old = AnvilNode(chain_id=CHAIN_ID, extra_args=("--slots-in-an-epoch", "1")).start()
    new = AnvilNode(
        chain_id=CHAIN_ID,
        genesis_timestamp=old.genesis_timestamp + 1,
        extra_args=("--slots-in-an-epoch", "1"),
    )
    try:
        for height in range(1, 16):
            old.mine(old.genesis_timestamp + 12 * height)
        balancer = load_balancer([old.url])  # the devnet's one URL, whatever runs behind it
        url = balancer.url
        settings: dict[str, Any] = {
            "head_poll_interval": 60,
            "cache": {"redis_url": redis_server.url},
        }
        gateway = start_gateway([url], **settings)
        assert gateway.result("eth_getBlockByNumber", ["0xa", False])["hash"] == old.block_hash(10)
        assert call(gateway.url, "eth_getBlockByNumber", ["0xa", False], False).cache == "hit"
        new.start()
        for height in range(1, 13):
            new.mine(new.genesis_timestamp + 12 * height)
        balancer.backends = [new.url]
        if gateway_restarts:
            background_loop.run(gateway.runner.cleanup())
            gateway = start_gateway([url], **settings)
        else:
            gateway.sync()
        for number in (10, 1):
            answer = call(gateway.url, "eth_getBlockByNumber", [hex(number), False], False)
            assert answer.body["result"]["hash"] == new.block_hash(number), (number, answer)
        assert int(gateway.result("eth_blockNumber"), 16) == 12
        # The new life's head is shared from its first block, not held to the old one's.
        stored = redis_server.client().get(f"rpcgate:v1:{CHAIN_ID}:served-head")
        assert stored is not None and stored.decode().startswith("12:")
    finally:
        old.stop()
        new.stop()


# -- a bare block hash where a number may stand --


def test_a_bare_block_hash_is_not_read_as_a_block_number(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    cluster = anvil_cluster(1, chain_id=CHAIN_ID)
    cluster.mine_all(3)
    gateway = start_gateway(cluster.urls)
    block_hash = cluster[0].block_hash(2)
    reply = gateway.rpc("eth_getBalance", [DEV_ADDRESSES[0], block_hash])
    assert reply.json()["result"] == cluster[0].rpc("eth_getBalance", [DEV_ADDRESSES[0], "0x2"])
    assert reply.headers.get("X-Rpcgate-Block", "-") in ("-", "2")
