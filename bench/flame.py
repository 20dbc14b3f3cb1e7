"""Flame graphs of rpcgate under load: where a pass-through call and a cache hit spend
their CPU. One anvil node, one rpcgate process, wrk over loopback (32 connections), and
py-spy sampling the rpcgate process while wrk runs.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/flame.py [--seconds 15] [--out bench/results]

Writes passthrough-flame.svg, cachehit-flame.svg and batch-flame.svg (50-item batches of
uncacheable calls) under --out, and prints, for each, the share of samples by owner
(aiohttp's server, the upstream client, the event loop, rpcgate's own modules) and
rpcgate's ten largest functions. py-spy needs to read the process's memory (root, or
kernel.yama.ptrace_scope = 0).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from cache_bench import HOT_ACCOUNTS  # noqa: E402
from suite import CHAIN_ID, Servers, post, wrk  # noqa: E402

from tests.harness.anvil import AnvilCluster  # noqa: E402

# Who a sample belongs to, by the file of a frame (the last line: no frame matched).
OWNERS = (
    ("aiohttp server (request parsing, handler dispatch, response writing)", "aiohttp/web_"),
    ("aiohttp server (request parsing, handler dispatch, response writing)", "aiohttp/http_"),
    (
        "the upstream client (rpcgate/upstream/http1.py, upstream_http.py)",
        "rpcgate/upstream/http1.py",
    ),
    (
        "the upstream client (rpcgate/upstream/http1.py, upstream_http.py)",
        "rpcgate/upstream/http_client.py",
    ),
    # The loop runs under the CLI: what it does in C (polling, socket reads, dispatch)
    # shows as the CLI's frame.
    ("the event loop (uvloop) and the rest", "rpcgate/cli/commands.py"),
    ("rpcgate's own layers", "rpcgate/"),
    ("the event loop (uvloop) and the rest", ""),
)


def owner_shares(collapsed: Path) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Shares of samples by owner, and of rpcgate's own functions (the ten largest), from
    py-spy's collapsed stacks ("a;b;c COUNT", root first). A sample belongs to the owner of
    the frame nearest its leaf that has one, so the standard library counts for whoever
    called it."""
    owners: collections.Counter[str] = collections.Counter()
    functions: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        samples = int(number)
        total += samples
        owner, frame = _owner(stack.split(";"))
        owners[owner] += samples
        if frame and owner == "rpcgate's own layers":
            # "function (rpcgate/module.py:123)" -> "module.function"
            function, _, where = frame.partition(" (")
            module = where.rsplit("/", 1)[-1].split(".py", 1)[0]
            functions[f"{module}.{function}"] += samples
    if not total:
        return [], []
    names = dict.fromkeys(name for name, _ in OWNERS)
    return (
        [(name, owners[name] / total) for name in names],
        [(name, count / total) for name, count in functions.most_common(10)],
    )


def _owner(frames: list[str]) -> tuple[str, str | None]:
    for frame in reversed(frames):
        for name, marker in OWNERS[:-1]:
            if marker in frame:
                return name, frame
    return OWNERS[-1][0], None


def profile(
    name: str, url: str, pid: int, body: object, seconds: int, out: Path, work: Path
) -> None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    svg, collapsed = out / f"{name}-flame.svg", work / f"{name}.txt"
    for path, form in ((svg, "flamegraph"), (collapsed, "raw")):
        sampling = ["--pid", str(pid), "--duration", str(seconds), "--rate", "200"]
        sampler = subprocess.Popen(
            [spy, "record", *sampling, "--format", form, "--output", str(path), "--nonblocking"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        result = wrk(url, [body], seconds + 1, 32, False)
        if sampler.wait() != 0:
            raise SystemExit(f"py-spy failed on {name}; it needs ptrace rights (run as root)")
        print(f"{name}: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.2f} ms ({form})")
    owners, functions = owner_shares(collapsed)
    for owner, share in owners:
        print(f"  {share:6.1%}  {owner}")
    print("  of which rpcgate's largest (with what they call outside rpcgate and aiohttp):")
    for function, share in functions:
        print(f"    {share:6.1%}  {function}")
    print(f"  flame graph: {svg}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="rpcgate-flame-"))
    cluster = AnvilCluster(1, chain_id=CHAIN_ID).start()
    servers = Servers(work)
    try:
        cluster.mine_all(70)
        gateway, process = servers.rpcgate([cluster[0].url], pinned=False)
        hit = {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance"}
        hit["params"] = [HOT_ACCOUNTS[0], "0x3"]
        passthrough = {**hit, "params": [HOT_ACCOUNTS[1], "pending"]}
        post(gateway, hit)  # stored: the next ones are hits
        profile("passthrough", gateway, process.pid, passthrough, args.seconds, out, work)
        profile("cachehit", gateway, process.pid, hit, args.seconds, out, work)
        batch = [
            {**passthrough, "id": i, "params": [f"0x{0xB0B0 + i:040x}", "pending"]}
            for i in range(50)
        ]
        profile("batch", gateway, process.pid, batch, args.seconds, out, work)
    finally:
        servers.stop_all()
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
