"""Block-height agreement on the lock-step anvil harness: lag, forks, wrong chains, rogue
heads, flapping upstreams, and what polling costs."""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from web3 import HTTPProvider, Web3

from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway, gossip
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, AnvilCluster, sign_transaction
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.fixtures import AnvilClusterFactory, FaultProxyFactory

CHAIN_ID = 31337
ADDR = DEV_ADDRESSES[0]
Devnet = tuple[AnvilCluster, list[FaultProxy], RunningGateway]


@pytest.fixture
def devnet(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
) -> Iterator[Devnet]:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=3)
    # Polls only when the test says (gateway.sync()), so counts and states are exact.
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60, max_lag_blocks=3)
    yield cluster, proxies, gateway


def states(gateway: RunningGateway) -> dict[str, str]:
    return {v.name: str(v.state) for v in gateway.gateway.chains[0].tracker.views.values()}


def status_of(gateway: RunningGateway, name: str) -> dict:  # type: ignore[type-arg]
    body = gateway.loop.run(_get_json(gateway.url + "/status.json"))
    return next(u for u in body["chains"][0]["upstreams"] if u["name"] == name)


async def _get_json(url: str) -> dict:  # type: ignore[type-arg]
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


def test_lagging_node_never_answers_latest_yet_serves_blocks_it_has(devnet: Devnet) -> None:
    cluster, proxies, gateway = devnet
    cluster.mine_on([0, 1], 5)  # node2 stays at 3, five behind
    gateway.sync()
    assert states(gateway)["node2"] == "lagging"
    assert "5 blocks behind" in status_of(gateway, "node2")["reason"]
    for proxy in proxies:
        proxy.reset_counts()
    for _ in range(12):
        balance = gateway.rpc("eth_getBalance", [ADDR, "latest"], fresh=True).json()
        assert balance["result"] == cluster[0].rpc("eth_getBalance", [ADDR, "latest"])
        block = gateway.rpc("eth_getBlockByNumber", ["latest", False], fresh=True).json()["result"]
        assert int(block["number"], 16) == 8
        old = gateway.rpc("eth_getTransactionCount", [ADDR, "0x2"], fresh=True).json()
        assert old["result"] == "0x0"
    assert "eth_getBalance" not in proxies[2].methods
    assert proxies[2].methods.count("eth_getTransactionCount") > 0  # it still serves block 2
    assert proxies[0].methods.count("eth_getBalance") > 0
    assert proxies[1].methods.count("eth_getBalance") > 0


def test_forked_node_never_answers_where_it_disagrees_and_rejoins(devnet: Devnet) -> None:
    cluster, proxies, gateway = devnet
    before_fork = cluster[2].snapshot()
    cluster.fork(2, 1)  # node2's block 4 differs from the others'
    cluster.mine_on([0, 1], 1)
    gateway.sync()
    assert states(gateway) == {"node0": "ok", "node1": "ok", "node2": "forked"}
    assert status_of(gateway, "node2")["fork_height"] == 4
    canonical_4 = cluster[0].block_hash(4)
    for proxy in proxies:
        proxy.reset_counts()
    for _ in range(12):
        assert gateway.rpc("eth_getBalance", [ADDR, "0x4"], fresh=True).json()["result"]
        block = gateway.rpc("eth_getBlockByNumber", ["latest", False], fresh=True).json()["result"]
        assert block["hash"] == canonical_4
        assert gateway.rpc("eth_getTransactionCount", [ADDR, "0x3"], fresh=True).json()["result"]
    assert "eth_getBalance" not in proxies[2].methods
    assert proxies[2].methods.count("eth_getTransactionCount") > 0  # below its fork: fine

    cluster[2].revert(before_fork)
    cluster.mine_on([2], 1)  # the canonical block 4 this time
    gateway.sync()
    assert states(gateway)["node2"] == "ok"
    proxies[2].reset_counts()
    for _ in range(9):
        gateway.rpc("eth_getBalance", [ADDR, "0x4"], fresh=True)
    assert proxies[2].methods.count("eth_getBalance") > 0


def test_node_on_another_chain_never_answers_anything(
    anvil_cluster: AnvilClusterFactory,
    fault_proxy: FaultProxyFactory,
    start_gateway: GatewayFactory,
) -> None:
    cluster = anvil_cluster(2, chain_id=CHAIN_ID)
    other = anvil_cluster(1, chain_id=5)
    cluster.mine_all(2)
    other.mine_all(2)
    proxies = [fault_proxy(url) for url in [*cluster.urls, *other.urls]]
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=0.1)
    assert states(gateway)["node2"] == "wrong-chain"
    assert status_of(gateway, "node2")["reason"] == f"chain id 5, expected {CHAIN_ID}"
    w3 = Web3(HTTPProvider(gateway.url))
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=1, key=DEV_KEYS[0], gas=21000
    )
    for _ in range(6):
        assert w3.eth.chain_id == CHAIN_ID
        assert w3.eth.get_balance(ADDR) > 0
        w3.eth.get_block("latest")
        w3.eth.get_transaction_count(ADDR, "0x1")
    w3.eth.send_raw_transaction(raw)
    time.sleep(0.5)  # a few background polls
    assert set(proxies[2].methods) == {"eth_chainId"}


def test_node_that_mined_fifty_blocks_alone_does_not_move_the_head(devnet: Devnet) -> None:
    cluster, _, gateway = devnet
    cluster.mine_on([2], 50)
    gateway.sync()
    assert gateway.rpc("eth_blockNumber").json()["result"] == hex(3)
    assert states(gateway) == {"node0": "ok", "node1": "ok", "node2": "ok"}
    assert status_of(gateway, "node2")["reason"] == "50 blocks ahead of the consensus head"
    assert status_of(gateway, "node0")["lag"] == 0


def test_node_forked_fifty_blocks_ahead_moves_nothing_and_is_marked(devnet: Devnet) -> None:
    cluster, _, gateway = devnet
    cluster.fork(2, 50)
    cluster.mine_all(1)
    gateway.sync()
    assert gateway.rpc("eth_blockNumber").json()["result"] == hex(4)
    assert states(gateway) == {"node0": "ok", "node1": "ok", "node2": "forked"}


def test_block_number_never_decreases_under_a_flapping_upstream(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
) -> None:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=5)
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=0.05, max_lag_blocks=3)
    stop = threading.Event()
    saw_node0_down = threading.Event()

    def churn() -> None:
        """node0 flaps; node0 and node1 mine; node2 trails them by a block."""
        while not stop.is_set():
            cluster.mine_on([0, 1], 1)
            time.sleep(0.15)  # node0 and node1 carry the head up while node2 trails
            proxies[0].set_fault(Fault.REFUSE)  # now only node1 has the head block
            time.sleep(0.2)
            if states(gateway)["node0"] == "down":
                saw_node0_down.set()
            cluster.mine_on([2], 1)
            proxies[0].heal()
            time.sleep(0.1)

    churner = threading.Thread(target=churn, daemon=True)
    w3 = Web3(HTTPProvider(gateway.url))
    answers: list[int] = []
    churner.start()
    try:
        for _ in range(1000):
            answers.append(w3.eth.block_number)
            if len(answers) % 100 == 0:
                time.sleep(0.1)  # let the churn go through a few cycles
    finally:
        stop.set()
        churner.join(5)
    decreases = [(a, b) for a, b in itertools.pairwise(answers) if b < a]
    assert decreases == []
    assert answers[-1] > answers[0]  # the head really moved while we watched
    assert saw_node0_down.is_set()  # and the flapping really happened


def test_polling_costs_one_request_per_upstream_per_poll_and_one_more_per_new_block(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
) -> None:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=3)
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60)
    tracker = gateway.gateway.chains[0].tracker
    for proxy in proxies:
        proxy.reset_counts()
    polls = 20
    for _ in range(polls):
        gateway.sync()
    for proxy in proxies:  # idle chain: one head header per poll, nothing else
        assert Counter(proxy.methods) == {"eth_getBlockByNumber": polls}

    for proxy in proxies:
        proxy.reset_counts()
    new_blocks = 16
    for _ in range(new_blocks):
        cluster.mine_all()
        gateway.sync()
    for proxy in proxies:
        counts = Counter(proxy.methods)
        # One head header per poll (a new block is in it), plus safe+finalized every 8, and
        # the height asked again at each new block (a replica behind a load balancer?).
        assert counts["eth_getBlockByNumber"] <= new_blocks * 1.25 + 1
        assert counts["eth_blockNumber"] == new_blocks
        assert set(counts) == {"eth_getBlockByNumber", "eth_blockNumber"}
    assert tracker.consensus.head is not None and tracker.consensus.head.number == 19


def test_status_shows_consensus_and_upstreams_without_secrets(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
) -> None:
    key = "0123456789abcdef0123456789abcdef"
    cluster, proxies = proxied_cluster(2, chain_id=CHAIN_ID, mined=70)
    gateway = start_gateway(
        [],
        upstreams=[
            {"name": "keyed", "url": f"{proxies[0].url}/v3/{key}", "domain": "aws"},
            {"name": "plain", "url": proxies[1].url},
        ],
    )
    body = gateway.loop.run(_get_json(gateway.url + "/status.json"))
    assert key not in str(body)
    chain = body["chains"][0]
    assert chain["consensus"]["head"] == {"number": 70, "hash": cluster[0].block_hash(70)}
    assert chain["consensus"]["safe"]["number"] == 38  # anvil: safe = head - 32
    assert chain["consensus"]["finalized"]["number"] == 6  # anvil: finalized = head - 64
    keyed = chain["upstreams"][0]
    assert keyed["url"].endswith("/v3/***")
    assert keyed["state"] == "ok" and keyed["lag"] == 0 and keyed["head"]["number"] == 70
    for field in ("reason", "since", "last_poll", "latency_ms", "error_rate", "domain"):
        assert field in keyed
    # A transaction through the gateway, then the status sees a new head after a poll.
    raw = sign_transaction(
        chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=1, key=DEV_KEYS[0], gas=21000
    )
    gateway.result("eth_sendRawTransaction", [raw])
    gossip(cluster, raw)
    cluster.mine_all()
    gateway.sync()
    body = gateway.loop.run(_get_json(gateway.url + "/status.json"))
    assert body["chains"][0]["consensus"]["head"]["number"] == 71


def test_upstream_that_switches_to_another_chain_is_caught_by_its_head_jump(
    anvil_cluster: AnvilClusterFactory,
    fault_proxy: FaultProxyFactory,
    start_gateway: GatewayFactory,
) -> None:
    cluster = anvil_cluster(3, chain_id=CHAIN_ID)
    cluster.mine_all(3)
    other = anvil_cluster(1, chain_id=5)
    other[0].rpc("anvil_mine", ["0x7d0"])  # 2,000 blocks: an implausible jump from 3
    proxies = [fault_proxy(url) for url in cluster.urls]
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60)
    assert states(gateway)["node2"] == "ok"
    proxies[2].upstream_url = other.urls[0]  # the provider silently changed networks
    gateway.sync()
    assert states(gateway)["node2"] == "wrong-chain"
    assert status_of(gateway, "node2")["reason"] == f"chain id 5, expected {CHAIN_ID}"
    assert gateway.rpc("eth_blockNumber").json()["result"] == hex(3)
    proxies[2].reset_counts()
    for _ in range(9):
        assert gateway.rpc("eth_getBalance", [ADDR, "latest"], fresh=True).json()["result"]
    assert "eth_getBalance" not in proxies[2].methods


def test_a_fork_longer_than_a_poll_is_never_served_below_where_it_was_noticed(
    devnet: Devnet,
) -> None:
    cluster, proxies, gateway = devnet  # all at 3, polled there
    cluster.fork(2, 3)  # node2 mines 4..6 of its own between two polls
    cluster.mine_on([0, 1], 3)
    gateway.sync()
    assert states(gateway)["node2"] == "forked"
    assert status_of(gateway, "node2")["fork_height"] == 4  # found, not guessed from 6
    canonical = {n: cluster[0].block_hash(n) for n in range(1, 7)}
    assert cluster[2].block_hash(4) != canonical[4]
    for proxy in proxies:
        proxy.reset_counts()
    for _ in range(6):
        for number in range(1, 7):
            reply = gateway.rpc("eth_getBlockByNumber", [hex(number), False], fresh=True).json()
            assert reply["result"]["hash"] == canonical[number], number
    asked = [m for m in proxies[2].methods if m == "eth_getBlockByNumber"]
    assert asked, "node2 still serves the blocks below its fork"
