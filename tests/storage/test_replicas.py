"""Replicas behind one Service agree: a client whose calls alternate between two gateway
processes sharing a Redis never sees `eth_blockNumber` (or `latest`) go back, even when one of them
has a stale view of the upstreams."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from rpcgate.chain.head_tracker import HeadTracker
from rpcgate.storage.redis_client import RESUBSCRIBE_S, RETRY_S, RedisLink
from rpcgate.storage.shared_head import SETTLE_S, SharedHeads
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.loop import BackgroundLoop
from tests.harness.redis_server import RedisServer
from tests.harness.slow_link import SlowLink

CHAIN_ID = 31337
KEY = f"rpcgate:v1:{CHAIN_ID}:served-head"  # the served head, and its channel


def _result(url: str, method: str, params: list[Any]) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer = json.loads(resp.read())
    assert "result" in answer, answer
    return answer["result"]


def heads_seen_alternating(
    mine: Callable[[], None], first: str, second: str, rounds: int
) -> list[tuple[str, int]]:
    """A client alternating between two replicas (their URLs), blocks mined meanwhile."""
    seen = []
    for i in range(rounds):
        if i % 3 == 0:
            mine()
            time.sleep(0.15)  # the fast replica polls meanwhile; the other does not
        for name, url in (("fast", first), ("stale", second)):
            seen.append((name, int(_result(url, "eth_blockNumber", []), 16)))
            block = _result(url, "eth_getBlockByNumber", ["latest", False])
            seen.append((name, int(block["number"], 16)))
    return seen


def decreases(seen: list[tuple[str, int]]) -> list[tuple[int, tuple[str, int], int]]:
    highest, found = -1, []
    for index, (name, number) in enumerate(seen):
        if number < highest:
            found.append((index, (name, number), highest))
        highest = max(highest, number)
    return found


def test_alternating_replicas_never_serve_a_lower_head(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
    replica_process: Callable[[list[str], str | None], str],
    redis_server: RedisServer,
) -> None:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=3)
    urls = [p.url for p in proxies]
    fast = start_gateway(urls, head_poll_interval=0.05, cache={"redis_url": redis_server.url})
    # Its own polls come once a minute: everything newer it learns from the other replica.
    stale = replica_process(urls, redis_server.url)
    seen = heads_seen_alternating(cluster.mine_all, fast.url, stale, 15)
    assert decreases(seen) == [], seen
    assert max(n for _, n in seen) == 3 + 5  # and it did move: five blocks were mined
    assert any(name == "stale" and n == 8 for name, n in seen)
    key = f"rpcgate:v1:{CHAIN_ID}:served-head"
    stored = redis_server.client().get(key)
    assert stored is not None and stored.decode().startswith("8:")


def test_without_redis_the_guarantee_is_one_replica(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
    replica_process: Callable[[list[str], str | None], str],
) -> None:
    """The control: the same client against two replicas that share nothing does see the
    head go back (which is why docs/operating.md says: one replica, or Redis)."""
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=3)
    urls = [p.url for p in proxies]
    fast = start_gateway(urls, head_poll_interval=0.05)
    stale = replica_process(urls, None)
    seen = heads_seen_alternating(cluster.mine_all, fast.url, stale, 6)
    assert decreases(seen), seen


def test_a_shared_head_no_voter_holds_is_not_served(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
    redis_server: RedisServer,
) -> None:
    """A head announced by a replica whose upstreams reorganised it away: the others weigh
    it once, do not serve it, and do not keep holding calls for it."""
    _, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=3)
    gateway = start_gateway(
        [p.url for p in proxies], head_poll_interval=60, cache={"redis_url": redis_server.url}
    )
    client = redis_server.client()
    key = f"rpcgate:v1:{CHAIN_ID}:served-head"
    client.publish(key, "9:0x" + "ab" * 32 + ":0x" + "cd" * 32)
    time.sleep(0.2)
    started = time.monotonic()
    assert int(gateway.result("eth_blockNumber"), 16) == 3
    assert time.monotonic() - started < 1.5  # one poll weighed it, not the hold limit
    assert not gateway.gateway.chains[0].tracker.behind_shared


def test_a_head_is_in_redis_before_its_replica_serves_it(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
    replica_process: Callable[[list[str], str | None], str],
    redis_server: RedisServer,
    background_loop: BackgroundLoop,
) -> None:
    """The fast replica reaches Redis over a slow link (0.1 s each way), the stale one
    directly. The fast one serves a new head only once Redis holds it, so the stale one
    has heard of it 0.1 s before any client can: a client that reads the new head from
    the fast replica and goes at once to the stale one reads it there too."""
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=3)
    urls = [p.url for p in proxies]
    link = background_loop.run(SlowLink(redis_server.port, delay_s=0.1).start())
    try:
        fast = start_gateway(
            urls,
            head_poll_interval=0.05,
            cache={"redis_url": f"redis://127.0.0.1:{link.port}/0", "redis_timeout_s": 5.0},
        )
        stale = replica_process(urls, redis_server.url)
        served = int(_result(fast.url, "eth_blockNumber", []), 16)
        for _ in range(3):
            cluster.mine_all()
            deadline = time.monotonic() + 10
            while (new := int(_result(fast.url, "eth_blockNumber", []), 16)) == served:
                assert time.monotonic() < deadline, "the fast replica never served the block"
                time.sleep(0.005)
            served = new
            assert int(_result(stale, "eth_blockNumber", []), 16) >= served
        stored = redis_server.client().get(f"rpcgate:v1:{CHAIN_ID}:served-head")
        assert stored is not None and stored.decode().startswith(f"{served}:")  # never down
    finally:
        background_loop.run(link.stop())


def test_back_from_a_redis_outage_a_replica_waits_for_the_others_before_moving_on(
    proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory
) -> None:
    """Redis dies and comes back; blocks are mined meanwhile. The replica holds its head
    through the outage, and once it finds Redis again it holds a little longer (the other
    replicas find it up to a second apart): had it moved on at once, a replica still
    holding would serve the old head beside it. A head another replica offers ends the
    wait at once."""
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=3)
    redis = RedisServer().start()
    urls = [p.url for p in proxies]
    again: RedisServer | None = None
    try:
        first = start_gateway(urls, head_poll_interval=0.1, cache={"redis_url": redis.url})
        link = first.gateway.redis
        assert link is not None and int(first.result("eth_blockNumber"), 16) == 3
        redis.kill()
        cluster.mine_all(2)
        time.sleep(0.5)
        assert int(first.result("eth_blockNumber"), 16) == 3  # held: Redis unreachable
        again = RedisServer(port=redis.port).start()
        deadline = time.monotonic() + 5
        while not link.up and time.monotonic() < deadline:
            first.result("eth_chainId")  # an operation finds Redis again
            time.sleep(0.05)
        assert link.up
        found_at = time.monotonic()
        time.sleep(0.6)  # several polls and decisions
        assert int(first.result("eth_blockNumber"), 16) == 3, "moved on before the others"

        # Another replica, up with Redis all along, offers the head: the wait ends. (Started
        # once the first has subscribed again, a second at most after it found Redis.)
        time.sleep(max(0.0, found_at + RESUBSCRIBE_S + 0.2 - time.monotonic()))
        second = start_gateway(urls, head_poll_interval=0.1, cache={"redis_url": again.url})
        assert int(second.result("eth_blockNumber"), 16) == 5
        offered_at = time.monotonic()
        assert offered_at - found_at < SETTLE_S - 1.0, "the second replica came too late to tell"
        while int(first.result("eth_blockNumber"), 16) != 5 and time.monotonic() < deadline + 5:
            time.sleep(0.02)
        assert int(first.result("eth_blockNumber"), 16) == 5
        assert time.monotonic() - offered_at < 0.8, "it waited out the settling instead"
    finally:
        redis.stop()
        if again is not None:
            again.stop()


def _own_tracker(
    gateway: RunningGateway, redis_url: str, loop: BackgroundLoop
) -> tuple[HeadTracker, SharedHeads]:
    """A replica's head tracker over the gateway's upstream clients and a Redis link of its
    own, polled only when the test says (`poll_once`), its subscription not started: no
    operation but the tracker's own reaches Redis."""
    chain = gateway.gateway.chains[0]

    async def make() -> tuple[HeadTracker, SharedHeads]:
        shared = SharedHeads(RedisLink(redis_url, "rpcgate:v1:", 0.5), hold_s=5.0)
        return HeadTracker(chain.config, chain.upstreams, 2.0, shared), shared

    return loop.run(make())


def test_a_replica_that_finds_redis_again_by_its_offer_still_waits_for_the_others(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
) -> None:
    """The race a Sentinel failover showed (a replica served 11 the moment it reached the
    new primary, beside another still holding 7): the first operation to reach Redis again
    was this replica's offer of its new head, so it never settled, and the head it
    announced reached no replica that was still looking for Redis. Found again, it holds
    the head without announcing one, whatever operation found it."""
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=3)
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60)
    redis = RedisServer().start()
    again: RedisServer | None = None
    tracker, shared = _own_tracker(gateway, redis.url, background_loop)
    link = shared.link
    try:
        background_loop.run(tracker.poll_once())
        assert tracker.consensus.head is not None and tracker.consensus.head.number == 3
        redis.kill()
        cluster.mine_all(2)
        background_loop.run(tracker.poll_once())
        assert not link.up and tracker.consensus.head.number == 3  # held: Redis unreachable
        again = RedisServer(port=redis.port).start()
        heard = again.client().pubsub(ignore_subscribe_messages=True)
        heard.subscribe(KEY)
        time.sleep(RETRY_S + 0.1)  # the next operation tries Redis again
        background_loop.run(tracker.poll_once())  # the tracker's own: nothing else runs
        assert link.up
        assert tracker.consensus.head.number == 3, "moved on before the others found Redis"
        assert heard.get_message(timeout=0.3) is None, "announced a head while settling"
        assert again.client().get(KEY) is None

        time.sleep(SETTLE_S)  # then the next head is offered, heard by all, and served
        background_loop.run(tracker.poll_once())
        assert tracker.consensus.head.number == 5
        message = heard.get_message(timeout=2)
        assert message is not None and message["data"].startswith(b"5:")
    finally:
        background_loop.run(link.close())
        redis.stop()
        if again is not None:
            again.stop()


def test_while_redis_is_unreachable_a_head_another_replica_served_is_held_not_passed(
    proxied_cluster: ProxiedClusterFactory,
    start_gateway: GatewayFactory,
    background_loop: BackgroundLoop,
    redis_server: RedisServer,
) -> None:
    """Another replica offered block 4 (and serves it); this one heard it, then Redis died
    before its next poll, which finds the upstreams at 6. It serves 4, where the replicas
    last agreed: not 3 (behind the other), not 6 (ahead of a replica holding 4), and it
    does not keep calls about the head waiting on a head it has weighed (they would give
    up and ask an upstream, which answers 6)."""
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=3)
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=60)
    tracker, shared = _own_tracker(gateway, redis_server.url, background_loop)
    link, client = shared.link, redis_server.client()
    try:
        background_loop.run(tracker.poll_once())
        background_loop.run(shared.start())  # it subscribes: it hears the other replica
        deadline = time.monotonic() + 5
        while client.pubsub_numsub(KEY) != [(KEY.encode(), 1)] and time.monotonic() < deadline:
            time.sleep(0.02)
        cluster.mine_all(3)
        four = cluster[0].block(4)
        client.publish(KEY, f"4:{four['hash']}:{four['parentHash']}")
        while not tracker.behind_shared and time.monotonic() < deadline:
            time.sleep(0.02)
        assert tracker.behind_shared  # heard, not yet weighed
        redis_server.kill()
        while link.up and time.monotonic() < deadline:
            time.sleep(0.02)  # the subscription finds it gone
        assert not link.up
        background_loop.run(tracker.poll_once())
        assert tracker.consensus.head is not None and tracker.consensus.head.number == 4
        assert not tracker.behind_shared
    finally:
        background_loop.run(shared.close())
        background_loop.run(link.close())
