"""The demo's miner: three anvil nodes that never talk to each other mine one chain.

anvil nodes do not peer. Started alike (same `--chain-id`, `--timestamp` and base fee, and
`--no-mining`) they share a genesis block, and `evm_mine` with one explicit timestamp over
the same pending transactions gives the same block on each of them. So every round:

1. every node is brought onto the leader's chain (the highest head, the one most nodes
   hold): a node behind (restarted, so back at genesis) replays the leader's blocks, with
   their transactions and timestamps; a node on a fork of its own (a transaction reached
   it between steps 2 and 3 and went into its block only) is rolled back to where it
   agrees, and the transactions of its abandoned blocks go back into its pool;
2. every node gets the transactions any node has pending: what gossip does between real
   nodes (a transaction sent through the gateway reaches one upstream only);
3. every node mines one block, all with the same timestamp.

Standard library only, so it runs in a plain python image:
    python miner.py [--block-time S] [URL ...]     (default: $DEMO_NODES, $DEMO_BLOCK_TIME)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import signal
import sys
import time
import urllib.request
from collections.abc import Sequence
from typing import Any

RPC_TIMEOUT_S = 5.0
# Blocks replayed into one node per round: a node far behind catches up over several
# rounds while the others go on mining.
REPLAY_BLOCKS_PER_ROUND = 256


class NodeError(RuntimeError):
    """A node did not answer, or answered with a JSON-RPC error."""


def rpc(url: str, method: str, params: Sequence[Any] = ()) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=RPC_TIMEOUT_S) as response:
            reply = json.loads(response.read())
    except (OSError, ValueError) as exc:
        raise NodeError(f"{url} {method}: {exc}") from None
    if "error" in reply:
        raise NodeError(f"{url} {method}: {reply['error'].get('message')}")
    return reply["result"]


def log(message: str) -> None:
    print(f"miner: {message}", flush=True)


_unreachable: set[str] = set()  # to log a node's going away and coming back once each


def reachable(urls: Sequence[str]) -> list[str]:
    """The nodes that answer now; a round goes on without the others."""
    up = []
    for url in urls:
        try:
            rpc(url, "eth_blockNumber")
        except NodeError as exc:
            if url not in _unreachable:
                log(f"mining without {url} until it answers: {exc}")
            _unreachable.add(url)
            continue
        if url in _unreachable:
            log(f"{url} answers again")
        _unreachable.discard(url)
        up.append(url)
    return up


# --- blocks and transactions -------------------------------------------------------------


def block(url: str, number: int | str = "latest") -> dict[str, Any]:
    tag = hex(number) if isinstance(number, int) else number
    found: dict[str, Any] | None = rpc(url, "eth_getBlockByNumber", [tag, False])
    if found is None:
        raise NodeError(f"{url} has no block {number}")
    return found


def head(url: str) -> tuple[int, str]:
    latest = block(url)
    return int(latest["number"], 16), str(latest["hash"])


def raw_transactions(url: str, hashes: Sequence[str]) -> list[str]:
    return [rpc(url, "eth_getRawTransactionByHash", [tx_hash]) for tx_hash in hashes]


def send_transactions(url: str, raws: Sequence[str]) -> None:
    for raw in raws:
        # Already known, already mined or replaced: nothing left to send.
        with contextlib.suppress(NodeError):
            rpc(url, "eth_sendRawTransaction", [raw])


def pending_transactions(url: str) -> dict[str, tuple[str, int]]:
    """The transactions `url` holds but has not mined: hash -> (sender, nonce)."""
    content = rpc(url, "txpool_content")
    found = {}
    for pool in ("pending", "queued"):
        for sender, by_nonce in content.get(pool, {}).items():
            for nonce, transaction in by_nonce.items():
                found[transaction["hash"]] = (sender.lower(), int(nonce))
    return found


def share_pending_transactions(urls: Sequence[str]) -> None:
    """Sends every node the pending transactions it lacks."""
    held = {url: pending_transactions(url) for url in urls}
    everything: dict[str, tuple[str, int]] = {}
    for transactions in held.values():
        everything.update(transactions)
    # Sender and nonce order, so that no node sees a nonce gap it has to queue.
    for tx_hash, _ in sorted(everything.items(), key=lambda item: item[1]):
        holder = next(url for url in urls if tx_hash in held[url])
        lacking = [url for url in urls if tx_hash not in held[url]]
        if lacking:
            (raw,) = raw_transactions(holder, [tx_hash])
            for url in lacking:
                send_transactions(url, [raw])


# --- one chain ---------------------------------------------------------------------------


def leader(heads: dict[str, tuple[int, str]]) -> str:
    """The node whose chain the others follow: the highest head, the one most nodes hold."""
    holders = collections.Counter(heads.values())
    return max(heads, key=lambda url: (heads[url][0], holders[heads[url]]))


def agreed_height(url: str, leader_url: str, below: int) -> int:
    """The highest block at or below `below` where `url` has the leader's hash."""
    number = below
    while number > 0 and block(url, number)["hash"] != block(leader_url, number)["hash"]:
        number -= 1
    return number  # the genesis block is shared


def follow(url: str, leader_url: str, node_head: tuple[int, str], top: int) -> None:
    """Moves `url` onto the leader's chain: back to where they agree, then forward."""
    agreed = agreed_height(url, leader_url, min(node_head[0], top))
    abandoned = []
    if agreed < node_head[0]:
        for number in range(agreed + 1, node_head[0] + 1):
            abandoned += raw_transactions(url, block(url, number)["transactions"])
        log(f"{url} left the chain above block {agreed}: rolling back {node_head[0] - agreed}")
        rpc(url, "anvil_rollback", [node_head[0] - agreed])
    elif agreed < top:
        log(f"{url} is at block {agreed}, catching up to {top}")
    # The replayed blocks must hold exactly the leader's transactions: set the others
    # aside while replaying, and give them back after.
    pending = list(pending_transactions(url))
    set_aside = raw_transactions(url, pending) + abandoned
    rpc(url, "anvil_dropAllTransactions")
    for number in range(agreed + 1, min(top, agreed + REPLAY_BLOCKS_PER_ROUND) + 1):
        canonical = block(leader_url, number)
        send_transactions(url, raw_transactions(leader_url, canonical["transactions"]))
        rpc(url, "evm_mine", [int(canonical["timestamp"], 16)])
        if block(url, number)["hash"] != canonical["hash"]:
            log(f"{url} replayed block {number} differently; trying again next round")
            break
    send_transactions(url, set_aside)


def mine_round(urls: Sequence[str], now: float | None = None) -> int:
    """One round over the nodes that answer: onto the leader's chain, share the pending
    transactions, one block on each. Returns the new height (-1 when no node answered)."""
    up = reachable(urls)
    if not up:
        return -1
    heads = {url: head(url) for url in up}
    leader_url = leader(heads)
    top = heads[leader_url][0]
    for url in up:
        if heads[url] != heads[leader_url]:
            follow(url, leader_url, heads[url], top)
    in_step = [url for url in up if head(url) == heads[leader_url]]
    share_pending_transactions(in_step)
    # Wall-clock time, and always after the parent (two rounds may fall in one second).
    parent_time = int(block(leader_url)["timestamp"], 16)
    timestamp = max(int(time.time() if now is None else now), parent_time + 1)
    for url in in_step:
        rpc(url, "evm_mine", [timestamp])
    mined = {block(url, top + 1)["hash"] for url in in_step}
    if len(mined) > 1:  # a transaction came in between sharing and mining
        log(f"the nodes differ at block {top + 1}; the next round puts them together")
    return top + 1


def run(urls: Sequence[str], block_time_s: float) -> None:
    log(f"mining a block every {block_time_s} s on {', '.join(urls)}")
    while True:
        started = time.monotonic()
        try:
            mine_round(urls)
        except NodeError as exc:  # a node went away in the middle of a round
            log(f"round cut short: {exc}")
        time.sleep(max(0.0, block_time_s - (time.monotonic() - started)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Mine the same blocks on several anvil nodes.")
    parser.add_argument(
        "--block-time",
        type=float,
        default=float(os.environ.get("DEMO_BLOCK_TIME", "2")),
        help="seconds between blocks (default: $DEMO_BLOCK_TIME or 2)",
    )
    parser.add_argument(
        "urls",
        nargs="*",
        default=[u for u in os.environ.get("DEMO_NODES", "").split(",") if u],
        help="the nodes' JSON-RPC URLs (default: $DEMO_NODES, comma-separated)",
    )
    args = parser.parse_args(argv)
    if not args.urls:
        parser.error("no nodes: give URLs or set DEMO_NODES")
    # As PID 1 in a container, SIGTERM would be ignored without a handler of our own.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        run(args.urls, args.block_time)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
