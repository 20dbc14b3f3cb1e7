"""What verification costs: extra upstream calls and added latency per call, for each level of
`chains[].verify` (off, integrity, proofs).

    .venv/bin/python bench/verify_bench.py [--calls 40] [--blocks 1000] [--latency-ms 0]

Needs anvil (./scripts/test installs it; or set ANVIL_BIN). Three anvil nodes in lock-step,
`--blocks` blocks high, every 25th block holding transfers and contract calls that log; each
node behind a fault proxy adding `--latency-ms` (a provider's round trip). For each mode, a
fresh `rpcgate serve` (empty cache) answers, one call at a time with `Cache-Control:
no-cache`, calls about blocks not asked before (the checks' own fetches, headers and
receipts, go through the cache, so "cold" is the first call about a block):
  old full blocks (anchored to the head by EIP-2935's history contract), receipts, balances
  at a block, eth_calls (a token balance, a Uniswap V2-style quote over two pairs: the DEX of
  tests/harness/dex.py, executed locally over proven state under `proofs`), eth_getLogs
  over the whole range (cold, then again warm), eth_getLogs over one block by hash.
Prints a Markdown table (median latency, upstream calls and CPU of the gateway's process
tree, its EVM workers included, per client call) and writes it to bench/results/verify.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import yaml  # noqa: E402
from cache_bench import upstream_requests  # noqa: E402
from eth_utils import to_checksum_address  # noqa: E402

from tests.harness.anvil import DEV_ADDRESSES, AnvilCluster, sign_transaction  # noqa: E402
from tests.harness.contract import INIT_CODE, create_address  # noqa: E402
from tests.harness.dex import deploy_dex  # noqa: E402
from tests.harness.faultproxy import Fault, FaultProxy  # noqa: E402
from tests.harness.loop import BackgroundLoop  # noqa: E402
from tests.harness.tools import free_port, wait_for_http  # noqa: E402

CHAIN_ID = 31337
MODES = ("off", "integrity", "proofs")


def post(url: str, method: str, params: list[Any]) -> tuple[Any, dict[str, str]]:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).encode()
    request = urllib.request.Request(
        url, body, {"Content-Type": "application/json", "Cache-Control": "no-cache"}
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        reply = json.loads(resp.read())
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"], dict(resp.headers)


def build_chain(cluster: AnvilCluster, blocks: int, calls: int) -> dict[str, Any]:
    """Transfers and logging contract calls every 25th block; the rest empty. Then the DEX,
    and a block for each eth_call measured (each call about a block not asked before)."""
    contract = create_address(DEV_ADDRESSES[0], 0)
    cluster.broadcast_raw_transaction(sign_transaction(chain_id=CHAIN_ID, nonce=0, data=INIT_CODE))
    cluster.mine_all()
    nonce, tx_hashes, tx_blocks, recipients = 1, [], [], []
    while cluster[0].block_number() < blocks:
        if cluster[0].block_number() % 25 == 0:
            recipient = f"0x{0xBE0000 + nonce:040x}"
            raws = [
                sign_transaction(
                    chain_id=CHAIN_ID, nonce=nonce, to=to_checksum_address(recipient), value=1
                ),
                sign_transaction(chain_id=CHAIN_ID, nonce=nonce + 1, to=contract, data="0x01"),
            ]
            nonce += 2
            tx_hashes += [cluster.broadcast_raw_transaction(raw) for raw in raws]
            recipients.append(recipient)
            cluster.mine_all()
            tx_blocks.append(cluster[0].block_number())
        else:
            cluster.mine_all(min(24, blocks - cluster[0].block_number()) or 1)
    cluster.mine_all(3)
    dex = deploy_dex(cluster)
    cluster.mine_all(2 * calls + 3)
    after = range(dex.deployed_at + 1, dex.deployed_at + 1 + 2 * calls)
    return {
        "dex": dex,
        "call_blocks": list(after),
        "contract": contract,
        "tx_hashes": tx_hashes,
        "tx_blocks": tx_blocks,
        "recipients": recipients,
        "head": cluster[0].block_number(),
    }


def serve(upstreams: list[str], mode: str, workdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    config = {
        "listen": f"127.0.0.1:{port}",
        "log_level": "warning",
        "limits": {"rate_per_s": 0, "max_concurrent_per_client": 0},
        "chains": [
            {
                "name": "devnet",
                "chain_id": CHAIN_ID,
                "head_poll_interval": 0.5,
                "verify": mode,
                "verify_logs_max_blocks": 2000,
                "upstreams": [{"name": f"node{i}", "url": u} for i, u in enumerate(upstreams)],
            }
        ],
    }
    path = workdir / f"verify-{mode}.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [sys.executable, "-m", "rpcgate.cli", "serve", "--config", str(path)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url + "/healthz")
    time.sleep(1.0)  # a poll round or two: the consensus knows the head
    return url, process


def cpu_s(pid: int) -> float:
    """CPU seconds of a process and its children (the EVM workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(c) for c in (task / "children").read_text().split()]
    for each in pids:
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def measure(
    url: str, pid: int, calls: list[tuple[str, list[Any]]]
) -> tuple[float, float, float, set[str]]:
    """(median ms, upstream calls per client call, CPU ms per client call,
    X-Rpcgate-Verified values)."""
    before = upstream_requests(url)
    cpu_before = cpu_s(pid)
    times, levels = [], set()
    for method, params in calls:
        started = time.perf_counter()
        _, headers = post(url + "/", method, params)
        times.append((time.perf_counter() - started) * 1000)
        levels.add(headers.get("X-Rpcgate-Verified", "?"))
    cpu_ms = (cpu_s(pid) - cpu_before) * 1000 / len(calls)
    per_call = (upstream_requests(url) - before) / len(calls)
    return statistics.median(times), per_call, cpu_ms, levels


def scenarios(facts: dict[str, Any], count: int, cluster: AnvilCluster) -> list[Any]:
    tx_blocks = facts["tx_blocks"]
    half = len(tx_blocks) // 2
    blocks = [("eth_getBlockByNumber", [hex(n), True]) for n in tx_blocks[:half]][:count]
    receipts = [("eth_getTransactionReceipt", [h]) for h in facts["tx_hashes"][1::2]][:count]
    balances = [
        ("eth_getBalance", [r, hex(n)])
        for r, n in zip(facts["recipients"][half:], tx_blocks[half:], strict=False)
    ][:count]
    whole = {"fromBlock": "0x1", "toBlock": hex(facts["head"] - 3), "address": facts["contract"]}
    by_hash = [
        ("eth_getLogs", [{"blockHash": cluster[0].block_hash(hex(n))}]) for n in tx_blocks[half:]
    ][:count]
    dex, call_blocks = facts["dex"], facts["call_blocks"]
    token = [("eth_call", [dex.balance_call(0, dex.pairs[0]), hex(n)]) for n in call_blocks[0::2]][
        :count
    ]
    quote = [("eth_call", [dex.quote_call(), hex(n)]) for n in call_blocks[1::2]][:count]
    return [
        (f"old full block (by number, {facts['head'] - tx_blocks[half]}+ deep)", blocks),
        ("receipt (by hash)", receipts),
        ("balance at a block", balances),
        ("eth_call: token balance", token),
        ("eth_call: swap quote over 2 pairs", quote),
        (f"eth_getLogs over {facts['head'] - 3} blocks, cold", [("eth_getLogs", [whole])]),
        (f"eth_getLogs over {facts['head'] - 3} blocks, warm", [("eth_getLogs", [whole])] * 3),
        ("eth_getLogs by block hash", by_hash),
    ]


def run(calls: int, blocks: int, latency_ms: float) -> str:
    """The Markdown table of what each level costs (one run, one process tree)."""
    loop = BackgroundLoop()
    cluster = AnvilCluster(3, chain_id=CHAIN_ID).start()
    workdir = Path(tempfile.mkdtemp(prefix="rpcgate-verify-"))
    rows: list[str] = []
    try:
        facts = build_chain(cluster, blocks, calls)
        proxies = [loop.run(FaultProxy(u).start()) for u in cluster.urls]
        if latency_ms:
            for proxy in proxies:
                proxy.set_fault(Fault.LATENCY, delay=latency_ms / 1000)
        results: dict[tuple[str, str], tuple[float, float, float, set[str]]] = {}
        for mode in MODES:
            url, process = serve([p.url for p in proxies], mode, workdir)
            try:
                # The first eth_call under `proofs` starts the EVM workers (two Python
                # processes): started before measuring, as in a gateway that has served.
                dex = facts["dex"]
                post(url + "/", "eth_call", [dex.balance_call(1, dex.pairs[1]), "latest"])
                for name, sent in scenarios(facts, calls, cluster):
                    results[(name, mode)] = measure(url, process.pid, sent)
                    ms, per_call, cpu, _ = results[(name, mode)]
                    print(
                        f"  {mode:<9} {name:<40} {ms:7.1f} ms  {per_call:6.1f} calls "
                        f"{cpu:6.2f} ms CPU",
                        flush=True,
                    )
            finally:
                process.terminate()
                process.wait(10)
        names = [name for name, _ in scenarios(facts, calls, cluster)]
        rows.append(
            "| call | "
            + " | ".join(f"{m}: ms p50 | {m}: upstream calls | {m}: CPU ms" for m in MODES)
            + " |"
        )
        rows.append("|---|" + "---:|---:|---:|" * len(MODES))
        for name in names:
            cells = []
            for mode in MODES:
                ms, per_call, cpu, levels = results[(name, mode)]
                cells.append(f"{ms:.1f} ({','.join(sorted(levels))}) | {per_call:.1f} | {cpu:.1f}")
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
        for proxy in proxies:
            loop.run(proxy.stop())
    finally:
        cluster.stop()
        loop.stop()
    return (
        f"Upstream latency added by the proxies: {latency_ms:g} ms. In brackets: the "
        "X-Rpcgate-Verified header the answers carried. Upstream calls and CPU are per client "
        "call, the checks' own fetches included (headers and receipts are cached like any "
        "answer: a warm range costs the blocks not yet finalized); CPU is the gateway's "
        "process and its EVM workers, client and nodes excluded.\n\n" + "\n".join(rows) + "\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--blocks", type=int, default=1000)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "verify.md"))
    args = parser.parse_args()
    table = run(args.calls, args.blocks, args.latency_ms)
    command = "bench/verify_bench.py " + " ".join(sys.argv[1:])
    report = (
        f"# What verification costs ({time.strftime('%Y-%m-%d')}, `{command.strip()}`)\n\n" + table
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
