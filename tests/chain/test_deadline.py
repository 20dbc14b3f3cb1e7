"""One end-to-end deadline per call (rpc/context.py): from the request's arrival,
`failover.deadline_s` bounds everything the call does — a hold for a block above the served
head, a quorum's asks and the failover after them — where each step used to start a clock
of its own."""

from __future__ import annotations

import time

from tests.conftest import GatewayFactory, ProxiedClusterFactory
from tests.harness.anvil import DEV_ADDRESSES, sign_transaction
from tests.harness.faultproxy import Fault

CHAIN_ID = 31337
SLACK_S = 0.35  # the answer's own way back, on a busy 2-core machine


def test_a_hold_behind_a_slow_upstream_ends_at_the_calls_deadline(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    """The receipt is in a block above the served head (only node0 has mined it, and the
    gateway polls once a minute): the answer is held for the head to reach it, up to
    `hold_ahead_s` (5 s) — but the call has 2 s in all, and node0 took 0.8 of them."""
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    gateway = start_gateway(
        [p.url for p in proxies],
        head_poll_interval=60,
        chain={"hold_ahead_s": 5.0},
        failover={"attempt_timeout_s": 1.5, "deadline_s": 2.0, "hedge_budget": 0},
    )
    raw = sign_transaction(chain_id=CHAIN_ID, nonce=0, to=DEV_ADDRESSES[1], value=1, gas=21000)
    tx_hash = cluster[0].send_raw_transaction(raw)
    cluster.mine_on([0])  # block 3, on node0 alone
    for proxy in proxies[1:]:
        proxy.set_fault(Fault.HTTP_5XX)  # the others cannot say
    proxies[0].set_fault(Fault.LATENCY, delay=0.8)
    started = time.monotonic()
    reply = gateway.rpc("eth_getTransactionReceipt", [tx_hash], fresh=True)
    elapsed = time.monotonic() - started
    assert elapsed < 2.0 + SLACK_S, elapsed  # not 0.8 + 5 s of hold
    assert elapsed > 1.5, elapsed  # it did hold, for what the deadline left
    body = reply.json()
    assert body.get("result") is None  # the head never got there: as a node at the head says


def test_a_quorum_that_timed_out_leaves_failover_only_what_is_left(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    """`mode: max` asks two upstreams at once; both hang for the attempt timeout (1 s), then
    failover tries one at a time: within the 1.5 s the call has left, not 1.5 s more."""
    _, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=2)
    gateway = start_gateway(
        [p.url for p in proxies],
        head_poll_interval=60,
        chain={"quorum": [{"method": "eth_getTransactionCount", "mode": "max", "upstreams": 2}]},
        failover={"attempt_timeout_s": 1.0, "deadline_s": 1.5, "hedge_budget": 0},
    )
    for proxy in proxies:
        proxy.set_fault(Fault.HANG)
    started = time.monotonic()
    reply = gateway.rpc("eth_getTransactionCount", [DEV_ADDRESSES[0], "pending"], fresh=True)
    elapsed = time.monotonic() - started
    assert elapsed < 1.5 + SLACK_S, elapsed  # not 1 s of quorum and then 1.5 s of failover
    assert reply.json()["error"]["code"] == -32051  # the deadline ran out, said as such
