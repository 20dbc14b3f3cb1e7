"""Real clients on rpcgate's WebSocket ingress: web3.py (Python) and ethers v6 (Node), over
real anvil nodes behind fault proxies. What they receive is compared with the nodes' own
chain: every head and every log once, in order, through upstream cut-offs and a reorg; and
plain calls answer as they do over HTTP."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from eth_typing import HexStr
from web3 import HTTPProvider, Web3
from web3.types import TxParams

from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES
from tests.harness.contract import RETURN_DATA
from tests.harness.ethers import EthersSubscriber
from tests.harness.logging_chain import (
    CHAIN_ID,
    CONTRACT,
    LOGS_FILTER,
    LoggingChain,
    assert_once_in_order,
    logging_chain,
    settle,
    web3_head,
    web3_log,
)
from tests.harness.web3_socket import Web3Socket

FUNDED = Web3.to_checksum_address(DEV_ADDRESSES[1])
BLOCK_PACE_SECONDS = 0.15  # between blocks: the gateway polls heads every 0.1 s
ROLLBACK_SEEN_SECONDS = 0.6  # several head polls see the rolled-back chain


@dataclass
class GatewayChain(LoggingChain):
    """The logging chain, and a gateway over its proxies."""

    gateway: RunningGateway | None = None

    @property
    def url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url

    def ws_url(self, path: str) -> str:
        return self.url.replace("http://", "ws://", 1) + path


@pytest.fixture
def chain(proxied_cluster: ProxiedClusterFactory, start_gateway: GatewayFactory) -> GatewayChain:
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID, mined=1)
    logged = logging_chain(cluster, proxies)
    gateway = start_gateway([p.url for p in proxies], head_poll_interval=0.1)
    return GatewayChain(logged.cluster, logged.proxies, logged.nonce, gateway)


def _mine_through_cut_offs(chain: GatewayChain, blocks: int) -> list[str]:
    """Mines `blocks` blocks with a log each: a third with every upstream up, a third with
    the one in use cut off, a third with two of three cut off. Returns who was cut."""
    cut = []
    for index in range(blocks):
        if index in (blocks // 3, 2 * blocks // 3):
            cut.append(chain.cut_the_upstream_in_use())
        chain.mine_with_logs()
        time.sleep(BLOCK_PACE_SECONDS)
    return cut


def _ethers_log(entry: dict[str, Any]) -> tuple[int, str, int, str]:
    return entry["blockNumber"], entry["blockHash"], entry["index"], entry["transactionHash"]


def _frame_log(entry: dict[str, Any]) -> tuple[int, str, int, str]:
    """A log as it came over the socket (hex quantities)."""
    return (
        int(entry["blockNumber"], 16),
        entry["blockHash"],
        int(entry["logIndex"], 16),
        entry["transactionHash"],
    )


# -- subscriptions -------------------------------------------------------------------------


def test_web3_new_heads_are_the_nodes_blocks_once_in_order_through_cut_offs(
    chain: GatewayChain,
) -> None:
    with Web3Socket(chain.ws_url("/devnet")) as client:
        heads = client.subscribe("newHeads")
        start = chain.cluster[0].block_number()
        cut = _mine_through_cut_offs(chain, 20)
        expected = chain.node_heads(start + 1, start + 20)
        received = client.notes[heads]
        settle(lambda: len(received) >= len(expected))
        assert_once_in_order(
            f"newHeads (cut off: {cut})", expected, [web3_head(h) for h in received]
        )
        # Header objects as a node sends them: no block body.
        assert all("parentHash" in h and "transactions" not in h for h in received), received[0]


def test_ethers_blocks_and_logs_once_in_order_through_cut_offs(chain: GatewayChain) -> None:
    start = chain.cluster[0].block_number()
    with EthersSubscriber(
        chain.ws_url(f"/{CHAIN_ID}"), chain_id=CHAIN_ID, blocks=True, logs=LOGS_FILTER
    ) as ethers:
        ethers.wait_ready()
        cut = _mine_through_cut_offs(chain, 15)
        heads = chain.node_heads(start + 1, start + 15)
        logs = chain.node_logs(start + 1)
        assert len(logs) == 15, f"the node has {len(logs)} logs, expected one per block"
        settle(lambda: len(ethers.of_kind("block")) >= 15 and len(ethers.of_kind("log")) >= 15)
        assert ethers.of_kind("error") == [], ethers.describe()
        assert_once_in_order(
            f"ethers block events (cut off: {cut})",
            [n for n, _ in heads],
            [b["number"] for b in ethers.of_kind("block")],
        )
        # ethers' block event is a number; the newHeads frames its socket got carry hashes.
        header_frames = [
            f["result"] for f in ethers.of_kind("frame") if "parentHash" in f["result"]
        ]
        assert_once_in_order(
            f"newHeads frames (cut off: {cut})",
            heads,
            [(int(h["number"], 16), h["hash"]) for h in header_frames],
        )
        got_logs = [_ethers_log(e) for e in ethers.of_kind("log")]
        assert_once_in_order(f"ethers log events (cut off: {cut})", logs, got_logs)
        # ethers keeps a removed log from its log listener: what came over its socket tells.
        log_frames = [f["result"] for f in ethers.of_kind("frame") if "logIndex" in f["result"]]
        assert_once_in_order(
            f"logs frames (cut off: {cut})", logs, [_frame_log(e) for e in log_frames]
        )
        assert not any(e["removed"] for e in log_frames), "a log came as removed without a reorg"
        assert ethers.of_kind("orphan") == [], ethers.describe()


@pytest.mark.parametrize(
    "rollback_seen",
    [False, True],
    ids=["new-branch-at-once", "rollback-seen-before-the-new-branch"],
)
def test_a_reorg_sends_the_dropped_logs_removed_then_the_new_chains_logs_and_heads(
    chain: GatewayChain, rollback_seen: bool
) -> None:
    """All nodes go back two blocks and mine three others. With `rollback_seen` the gateway
    polls the rolled-back head (the fork point, a block already sent) a few times before
    the new branch comes: that is no new head, and the fork point's logs stay."""
    with (
        Web3Socket(chain.ws_url("/devnet")) as client,
        EthersSubscriber(
            chain.ws_url(f"/{CHAIN_ID}"), chain_id=CHAIN_ID, blocks=True, logs=LOGS_FILTER
        ) as ethers,
    ):
        heads = client.subscribe("newHeads")
        logs = client.subscribe("logs", LOGS_FILTER)
        ethers.wait_ready()
        fork_point = chain.cluster[0].block_number() + 1
        chain.mine_with_logs()  # kept by the reorg
        snapshot = chain.snapshot()
        chain.mine_with_logs(2)  # dropped by the reorg
        old_heads = chain.node_heads(fork_point, fork_point + 2)
        old_logs = chain.node_logs(fork_point)
        assert len(old_logs) == 3, f"the old chain has {len(old_logs)} logs, expected 3"
        client.wait(lambda: len(client.notes[logs]) >= 3, "the 3 logs before the reorg")
        client.wait(lambda: len(client.notes[heads]) >= 3, "the 3 heads before the reorg")
        ethers.wait(lambda: len(ethers.of_kind("log")) >= 3, "the 3 logs before the reorg")

        # Every node drops the last two blocks and mines three others, with other logs.
        chain.revert(snapshot)
        if rollback_seen:
            time.sleep(ROLLBACK_SEEN_SECONDS)
        chain.mine_with_logs(3, fork=True)
        new_heads = chain.node_heads(fork_point + 1, fork_point + 3)
        new_logs = chain.node_logs(fork_point + 1)
        assert new_heads[0][1] != old_heads[1][1], "the reorg did not change the nodes' chain"
        assert len(new_logs) == 3, f"the new chain has {len(new_logs)} logs, expected 3"

        # web3.py: 3 logs, the 2 of the dropped blocks again with removed: true, 3 new ones.
        received_logs = client.notes[logs]
        settle(lambda: len(received_logs) >= 8 and len(client.notes[heads]) >= 6)
        before, removed, after = received_logs[:3], received_logs[3:5], received_logs[5:]
        flags = [e["removed"] for e in received_logs]
        assert flags == [False] * 3 + [True] * 2 + [False] * 3, (
            f"logs as (block, removed): expected the blocks {fork_point}..{fork_point + 2}, "
            f"then {fork_point + 1}..{fork_point + 2} removed, then the new "
            f"{fork_point + 1}..{fork_point + 3}; "
            f"got {[(e['blockNumber'], e['removed']) for e in received_logs]}"
        )
        assert_once_in_order("logs before the reorg", old_logs, [web3_log(e) for e in before])
        got_removed = sorted(web3_log(e) for e in removed)
        assert got_removed == old_logs[1:], (
            f"removed logs: expected the dropped blocks' {old_logs[1:]}, got {got_removed}"
        )
        assert_once_in_order("logs after the reorg", new_logs, [web3_log(e) for e in after])

        # newHeads: the old heads, then the new canonical ones from the fork point up.
        received_heads = client.notes[heads]
        assert_once_in_order(
            "newHeads through the reorg",
            old_heads + new_heads,
            [web3_head(h) for h in received_heads],
        )
        first_new_parent = received_heads[3]["parentHash"].to_0x_hex()
        assert first_new_parent == old_heads[0][1], (
            f"the first new head's parent: expected the fork point {old_heads[0][1]}, "
            f"got {first_new_parent}"
        )

        # ethers: its socket got the removed logs too; its log listener gets each log of
        # either chain once and never a removed one as if it were new. (ethers 6.17 does
        # not call `log.removedEvent()` listeners: its tag for them never matches.)
        settle(lambda: len(ethers.of_kind("log")) >= 6 and len(ethers.of_kind("block")) >= 6)
        got_logs = [_ethers_log(e) for e in ethers.of_kind("log")]
        assert_once_in_order("ethers log events", old_logs + new_logs, got_logs)
        removed_frames = sorted(
            _frame_log(f["result"]) for f in ethers.of_kind("frame") if f["result"].get("removed")
        )
        assert removed_frames == old_logs[1:], (
            f"removed logs on ethers' socket: expected {old_logs[1:]}, got {removed_frames}"
        )
        assert_once_in_order(
            "ethers block events",
            [n for n, _ in old_heads + new_heads],
            [b["number"] for b in ethers.of_kind("block")],
        )


# -- calls ---------------------------------------------------------------------------------


def test_web3_calls_and_batches_over_a_websocket_answer_as_over_http(
    chain: GatewayChain,
) -> None:
    over_http = Web3(HTTPProvider(chain.url))
    with Web3Socket(chain.ws_url("/")) as client:
        assert client.call(lambda w3: w3.eth.chain_id) == over_http.eth.chain_id == CHAIN_ID
        block_number = client.call(lambda w3: w3.eth.block_number)
        assert block_number == over_http.eth.block_number == chain.cluster[0].block_number()
        balance = client.call(lambda w3: w3.eth.get_balance(FUNDED))
        assert balance == over_http.eth.get_balance(FUNDED) > 0
        call: TxParams = {"to": CONTRACT, "data": HexStr("0x01")}
        answer = client.call(lambda w3: w3.eth.call(call))
        assert answer.hex() == over_http.eth.call(call).hex() == RETURN_DATA[2:]

        async def batch_over_ws(w3: Any) -> list[Any]:
            async with w3.batch_requests() as batch:
                batch.add(w3.eth.get_block_number())
                batch.add(w3.eth.get_balance(FUNDED))
                batch.add(w3.eth.get_block(1))
                batch.add(w3.eth.call(call))
                return list(await batch.async_execute())

        with over_http.batch_requests() as batch:
            batch.add(over_http.eth.get_block_number())
            batch.add(over_http.eth.get_balance(FUNDED))
            batch.add(over_http.eth.get_block(1))
            batch.add(over_http.eth.call(call))
            http_answers = list(batch.execute())
        ws_answers = client.call(batch_over_ws)
        assert ws_answers == http_answers, (
            f"a batch over WS: {ws_answers}, over HTTP: {http_answers}"
        )
