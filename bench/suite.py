"""One benchmark run: each scenario against the node itself, the bare aiohttp floors, nginx
as a reverse proxy (where installed) and rpcgate, in one process tree, with ratios taken
from the same run.

    .venv/bin/python bench/suite.py [--seconds 5] [--rounds 3] [--connections 32]
                                     [--pinning both] [--soak] [--out bench/results]

Scenarios:
  a. cache hits: a finalized eth_getBalance (rpcgate answers from its cache; the bare dict
     server answers the same JSON; nginx and the bare proxy pass it to the node); rpcgate
     also with `server.fast_path: false` (aiohttp serving every request), alone and under
     `--workers 2`;
  b. pass-through: an uncacheable call (eth_getBalance at `pending`);
  c. 50-item batches of uncacheable calls; then 50-item batches of cache hits (against the
     bare dict server answering the same batch), and the mixed batch ethers sends when a
     page loads (16 reads, some of them cached: the chain id, the head, finalized balances;
     the rest `pending` balances), against the bare proxy;
  d. the realistic dApp mix with 30 ms upstreams (a block every 3 s);
  e. the mix with one of three upstreams killed halfway through;
  f. (--soak) 5 minutes of the mix at a steady concurrency; RSS sampled;
  g. what verification costs per call at each `chains[].verify` level (bench/verify_bench.py:
     blocks, receipts, balances, eth_getLogs over 1,000 blocks; 30 ms upstreams).
Load is wrk (Debian: apt-get install wrk) from a separate process over loopback, bounded in
time. With two or more cores, "pinned" runs put the server on core 1 and wrk on core 0.
In scenarios a-c the targets take turns, `--rounds` times each, and the table holds the
medians: on a shared machine one measurement can be a third off the next.
Output: a markdown table (req/s, p50, p99, errors, upstream calls per 1,000 client calls,
peak RSS) and, with matplotlib, a PNG chart, under --out; both printed paths.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import verify_bench  # noqa: E402
import yaml  # noqa: E402
from cache_bench import HOT_ACCOUNTS, dapp_mix, prepare_chain, upstream_requests  # noqa: E402

from tests.harness.anvil import AnvilCluster  # noqa: E402
from tests.harness.faultproxy import Fault, FaultProxy  # noqa: E402
from tests.harness.loop import BackgroundLoop  # noqa: E402
from tests.harness.redis_server import RedisServer  # noqa: E402
from tests.harness.tools import free_port, process_memory, wait_for_http  # noqa: E402

CHAIN_ID = 31337
UPSTREAM_LATENCY_S = 0.030
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
NO_LIMITS = {"rate_per_s": 0, "max_concurrent_per_client": 0}  # one load address, by design
# Limits counted for every client, through Redis, at a rate the load never reaches.
LIMITED_NEVER_REFUSED = {
    "unlimited_networks": [],
    "rate_per_s": 10_000_000,
    "rate_burst": 10_000_000,
    "max_concurrent_per_client": 0,
}


@dataclass
class Row:
    scenario: str
    target: str
    pinned: bool
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    upstream_per_1000: float | None
    peak_rss_mb: float | None


def rss_peak_mb(pid: int) -> float | None:
    try:
        return process_memory(pid, "VmHWM") / 2**20
    except (OSError, AssertionError):
        return None


def wrk(
    url: str, bodies: list[Any], seconds: float, connections: int, pinned: bool
) -> dict[str, Any]:
    # Lua long strings of level 3: a JSON batch ends in `]]`, which would end a `[[` string.
    lua_bodies = ",\n".join("[===[" + json.dumps(b) + "]===]" for b in bodies)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            f"""
bodies = {{ {lua_bodies} }}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json"}},
                    bodies[(counter % #bodies) + 1])
end
"""
        )
    pin = ["taskset", "-c", "0"] if pinned else []
    out = subprocess.run(
        [
            *pin,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, int(seconds))}s",
            "--latency",
            "-s",
            script.name,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    os.unlink(script.name)
    text = out.stdout

    def ms(label: str) -> float:
        match = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)\b", text)
        if match is None:
            return float("nan")
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))  # type: ignore[union-attr]
    return {
        "requests": requests,
        "rps": rps,
        "p50_ms": ms("50"),
        "p99_ms": ms("99"),
        "errors": errors,
    }


class Servers:
    """The processes under test; all stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, command: list[str], pinned: bool, health: str | None = None
    ) -> subprocess.Popen[bytes]:
        pin = ["taskset", "-c", "1"] if pinned else []
        process = subprocess.Popen(
            [*pin, *command], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.processes.append(process)
        if health:
            wait_for_http(health)
        return process

    def rpcgate(
        self,
        upstreams: list[str],
        pinned: bool,
        workers: int = 1,
        mined_every: bool = False,
        redis_url: str | None = None,
        fast_path: bool = True,
    ) -> tuple[str, subprocess.Popen[bytes]]:
        """A gateway; with `redis_url`, sharing Redis and with rate limits on for every
        client (the load's own too, at a rate it never reaches); `fast_path=False`: aiohttp
        serves every request (`server.fast_path`)."""
        port = free_port()
        config: dict[str, Any] = {
            "listen": f"127.0.0.1:{port}",
            "log_level": "warning",
            "limits": NO_LIMITS if redis_url is None else LIMITED_NEVER_REFUSED,
            "chains": [
                {
                    "name": "devnet",
                    "chain_id": CHAIN_ID,
                    "head_poll_interval": 0.5,
                    "upstreams": [{"name": f"node{i}", "url": u} for i, u in enumerate(upstreams)],
                }
            ],
        }
        if redis_url is not None:
            config["cache"] = {"redis_url": redis_url}
        if not fast_path:
            config["server"] = {"fast_path": False}
        path = self.workdir / f"rpcgate-{port}.yaml"
        path.write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "rpcgate.cli", "serve", "--config", str(path)]
        if workers > 1:
            command += ["--workers", str(workers)]
        url = f"http://127.0.0.1:{port}"
        process = self.spawn(command, pinned and workers == 1, url + "/healthz")
        return url + "/", process

    def bare_proxy(self, upstream: str, pinned: bool) -> tuple[str, subprocess.Popen[bytes]]:
        port = free_port()
        process = self.spawn(
            [sys.executable, str(REPO / "bench" / "bare_proxy.py"), upstream, str(port)], pinned
        )
        _wait_port(port)
        return f"http://127.0.0.1:{port}/", process

    def bare_dict(
        self, answers: list[list[Any]], pinned: bool, processes: int = 1
    ) -> tuple[str, subprocess.Popen[bytes]]:
        """The dict server; with processes > 1, that many on one port (SO_REUSEPORT)."""
        port = free_port()
        path = self.workdir / f"answers-{port}.json"
        path.write_text(json.dumps(answers))
        command = [sys.executable, str(REPO / "bench" / "bare_server.py"), str(path), str(port)]
        if processes > 1:
            command.append("--reuse-port")
        first = self.spawn(command, pinned)
        _wait_port(port)
        for _ in range(processes - 1):
            self.spawn(command, pinned)
        if processes > 1:
            time.sleep(1.0)  # the others bound too (they cannot be told apart by a probe)
        return f"http://127.0.0.1:{port}/", first

    def nginx(self, upstream: str, pinned: bool) -> tuple[str, subprocess.Popen[bytes]] | None:
        binary = shutil.which("nginx") or (
            "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
        )
        if binary is None:
            return None
        port = free_port()
        root = self.workdir / f"nginx-{port}"
        root.mkdir()
        target = upstream.removeprefix("http://").rstrip("/")
        (root / "nginx.conf").write_text(
            f"""
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {root};
  proxy_temp_path {root};
  upstream node {{ server {target}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://node;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""
        )
        process = self.spawn([binary, "-c", str(root / "nginx.conf"), "-p", str(root)], pinned)
        _wait_port(port)
        return f"http://127.0.0.1:{port}/", process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


def _wait_port(port: int, timeout: float = 15.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def post(url: str, body: Any) -> Any:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


@contextmanager
def mining(cluster: AnvilCluster, every_s: float) -> Iterator[None]:
    stop = threading.Event()

    def mine() -> None:
        while not stop.wait(every_s):
            cluster.mine_all()

    thread = threading.Thread(target=mine, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def measure(
    rows: list[Row],
    scenario: str,
    target: str,
    url: str,
    process: subprocess.Popen[bytes] | None,
    bodies: list[Any],
    args: argparse.Namespace,
    pinned: bool,
    items_per_request: int = 1,
    upstream_count: Callable[[], int] | None = None,
) -> None:
    before = upstream_count() if upstream_count else 0
    result = wrk(url, bodies, args.seconds, args.connections, pinned)
    per_1000 = None
    if upstream_count is not None and result["requests"]:
        per_1000 = 1000 * (upstream_count() - before) / (result["requests"] * items_per_request)
    rows.append(
        Row(
            scenario,
            target,
            pinned,
            result["rps"],
            result["p50_ms"],
            result["p99_ms"],
            result["errors"],
            per_1000,
            rss_peak_mb(process.pid) if process else None,
        )
    )
    print(
        f"  {scenario:<14} {target:<16} {'pinned' if pinned else 'unpinned':<8} "
        f"{result['rps']:>9.0f} req/s  p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms"
        f"  errors {result['errors']}",
        flush=True,
    )


Target = tuple[str, str, "subprocess.Popen[bytes] | None", "Callable[[], int] | None"]


def compare(
    rows: list[Row],
    scenario: str,
    targets: list[Target],
    bodies: list[Any],
    args: argparse.Namespace,
    pinned: bool,
    items_per_request: int = 1,
) -> None:
    """Each target measured `args.rounds` times, the targets taking turns in each round (so
    a slow spell of the machine falls on all of them alike); a row per target holds the
    median req/s, p50 and p99 over its rounds, the errors of all of them."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in targets}
    calls: dict[str, float] = {name: 0 for name, *_ in targets}
    for round_index in range(args.rounds):
        for name, url, _, count in targets:
            before = count() if count else 0
            result = wrk(url, bodies, args.seconds, args.connections, pinned)
            runs[name].append(result)
            if count is not None:
                calls[name] += count() - before
            print(
                f"  {scenario:<18} {name:<16} {'pinned' if pinned else 'unpinned':<8} "
                f"round {round_index + 1}: {result['rps']:>9.0f} req/s  "
                f"p50 {result['p50_ms']:.2f} ms  errors {result['errors']}",
                flush=True,
            )
    for name, _, process, count in targets:
        results = runs[name]
        requests = sum(r["requests"] for r in results)
        per_1000 = None
        if count is not None and requests:
            per_1000 = 1000 * calls[name] / (requests * items_per_request)
        rows.append(
            Row(
                scenario,
                name,
                pinned,
                statistics.median(r["rps"] for r in results),
                statistics.median(r["p50_ms"] for r in results),
                statistics.median(r["p99_ms"] for r in results),
                sum(r["errors"] for r in results),
                per_1000,
                rss_peak_mb(process.pid) if process else None,
            )
        )


def dict_answers(node: str, call: dict[str, Any]) -> list[list[Any]]:
    """The bare dict server's table for `call`: its key (as bare_server.py makes it) and
    the node's answer."""
    key = call["method"] + json.dumps(call["params"], separators=(",", ":"))
    return [[key, post(node, call)["result"]]]


def cache_figures(url: str) -> dict[str, Any]:
    """What /status.json says of the response cache (memory counted, entries, budget)."""
    with urllib.request.urlopen(url.rstrip("/") + "/status.json", timeout=5) as resp:
        return json.loads(resp.read())["cache"]  # type: ignore[no-any-return]


def path_bodies() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """Scenarios a-c's requests: a finalized eth_getBalance (a cache hit once stored), one
    at `pending` (never cached), and a batch of 50 of those for 50 accounts."""
    hit = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_getBalance",
        "params": [HOT_ACCOUNTS[0], "0x3"],
    }
    passthrough = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_getBalance",
        "params": [HOT_ACCOUNTS[1], "pending"],
    }
    batch = [
        {
            "jsonrpc": "2.0",
            "id": i,
            "method": "eth_getBalance",
            "params": [f"0x{0xB0B0 + i:040x}", "pending"],
        }
        for i in range(50)
    ]
    return hit, passthrough, batch


def cached_batch() -> list[dict[str, Any]]:
    """50 balances of 50 accounts at a finalized block: cache hits once stored."""
    return [
        {
            "jsonrpc": "2.0",
            "id": i,
            "method": "eth_getBalance",
            "params": [f"0x{0xCAC0 + i:040x}", "0x3"],
        }
        for i in range(50)
    ]


def page_load_batch() -> list[dict[str, Any]]:
    """What ethers v6 sends in one batch when a page loads: 16 reads, 8 of them cacheable
    (the chain id, the head, finalized balances) and 8 not (`pending` balances)."""
    calls: list[tuple[str, list[Any]]] = [("eth_chainId", []), ("eth_blockNumber", [])]
    calls += [("eth_getBalance", [f"0x{0xCAC0 + i:040x}", "0x3"]) for i in range(6)]
    calls += [("eth_getBalance", [f"0x{0xFEE0 + i:040x}", "pending"]) for i in range(8)]
    return [
        {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
        for i, (method, params) in enumerate(calls)
    ]


def run(args: argparse.Namespace, notes: list[str]) -> list[Row]:
    """The measured rows; what the table cannot hold goes into `notes`, a line each."""
    rows: list[Row] = []
    loop = BackgroundLoop()
    cluster = AnvilCluster(3, chain_id=CHAIN_ID).start()
    workdir = Path(tempfile.mkdtemp(prefix="rpcgate-suite-"))
    servers = Servers(workdir)
    pinnings = {"both": [False, True], "pinned": [True], "unpinned": [False]}[args.pinning]
    if CORES < 2:
        pinnings = [False]
    try:
        cluster.mine_all(3)
        contracts, receipts = prepare_chain(cluster)
        cluster.mine_all(70)  # the prepared blocks are far below the head: finalized
        node = cluster[0].url
        hit, passthrough, batch = path_bodies()
        for pinned in pinnings:
            print(f"== {'pinned' if pinned else 'unpinned'}", flush=True)
            gateway, gateway_process = servers.rpcgate([node], pinned)
            status_url = gateway.rstrip("/")
            count = lambda url=status_url: upstream_requests(url)  # noqa: E731
            proxy, proxy_process = servers.bare_proxy(node, pinned)
            nginx = servers.nginx(node, pinned)
            bare, bare_process = servers.bare_dict(dict_answers(node, hit), pinned)
            post(gateway, hit)  # stored; the next ones are hits
            targets: list[Target] = [
                ("node", node, None, None),
                ("bare dict", bare, bare_process, None),
                ("bare proxy", proxy, proxy_process, None),
                ("rpcgate", gateway, gateway_process, count),
            ]
            if nginx:
                targets.insert(3, ("nginx", nginx[0], nginx[1], None))
            if "a" in args.scenarios:
                hit_targets = list(targets)
                # The same gateway with aiohttp serving every request: the fast path's share.
                slow, slow_process = servers.rpcgate([node], pinned, fast_path=False)
                post(slow, hit)
                hit_targets.append(("rpcgate aiohttp only", slow, slow_process, None))
                redis = RedisServer().start() if shutil.which("redis-server") else None
                if redis is not None:  # the same gateway, with Redis and rate limits on
                    shared, shared_process = servers.rpcgate([node], pinned, redis_url=redis.url)
                    post(shared, hit)
                    hit_targets.append(("rpcgate redis+limits", shared, shared_process, None))
                compare(rows, "a cache hit", hit_targets, [hit], args, pinned)
                if redis is not None:
                    redis.stop()
            forwarding = [t for t in targets if t[0] != "bare dict"]
            if "b" in args.scenarios:
                compare(rows, "b pass-through", forwarding, [passthrough], args, pinned)
                # One connection: what rpcgate adds to one call.
                one = argparse.Namespace(**{**vars(args), "connections": 1})
                alone = [t for t in targets if t[0] in ("node", "bare proxy", "rpcgate")]
                compare(rows, "b pass-through c=1", alone, [passthrough], one, pinned)
            if "c" in args.scenarios:
                compare(rows, "c batch of 50", forwarding, [batch], args, pinned, 50)
                hits, page = cached_batch(), page_load_batch()
                post(gateway, hits)  # stored: the next ones are hits
                post(gateway, page)
                bare_batch, bare_batch_process = servers.bare_dict(
                    [pair for call in hits for pair in dict_answers(node, call)], pinned
                )
                cached_targets: list[Target] = [
                    ("bare dict", bare_batch, bare_batch_process, None),
                    ("rpcgate", gateway, gateway_process, count),
                ]
                compare(rows, "c cached batch of 50", cached_targets, [hits], args, pinned, 50)
                page_targets = [t for t in forwarding if t[0] in ("bare proxy", "rpcgate")]
                compare(rows, "c page-load batch", page_targets, [page], args, pinned, 16)
            servers.stop_all()
        if "a" in args.scenarios and CORES >= 2:
            # All cores: two workers on one port against nginx (one worker process, the
            # machine's other core free to it), both unpinned, wrk on the same machine.
            print("== rpcgate --workers 2", flush=True)
            node = cluster[0].url
            gateway, gateway_process = servers.rpcgate([node], False, workers=2)
            slow, slow_process = servers.rpcgate([node], False, workers=2, fast_path=False)
            for _ in range(8):  # each worker stores the answer once; the rest are hits
                post(gateway, hit)
                post(slow, hit)
            nginx = servers.nginx(node, False)
            # The framework's own ceiling on both cores: the dict server, two processes.
            bare, bare_process = servers.bare_dict(dict_answers(node, hit), False, processes=2)
            pair: list[Target] = [
                ("bare dict x2", bare, bare_process, None),
                ("rpcgate x2", gateway, gateway_process, None),
                ("rpcgate x2 aiohttp only", slow, slow_process, None),
            ]
            if nginx:
                pair.insert(0, ("nginx beside x2", nginx[0], nginx[1], None))
            compare(rows, "a cache hit", pair, [hit], args, False)
            servers.stop_all()
        if not set(args.scenarios) & set("de") and not args.soak:
            return rows

        # d, e, f: three upstreams 30 ms away, a block every 3 s; unpinned (many processes).
        proxies = [loop.run(FaultProxy(u).start()) for u in cluster.urls]
        for p in proxies:
            p.set_fault(Fault.LATENCY, delay=UPSTREAM_LATENCY_S)
        bodies = dapp_mix(contracts, receipts)
        gateway, gateway_process = servers.rpcgate([p.url for p in proxies], False)
        count = lambda: upstream_requests(gateway.rstrip("/"))  # noqa: E731
        nginx = servers.nginx(proxies[0].url, False)
        with mining(cluster, 3.0):
            print("== 30 ms upstreams", flush=True)
            if nginx and "d" in args.scenarios:
                measure(rows, "d dApp mix", "nginx", nginx[0], nginx[1], bodies, args, False)
            if "d" in args.scenarios:
                measure(
                    rows,
                    "d dApp mix",
                    "rpcgate",
                    gateway,
                    gateway_process,
                    bodies,
                    args,
                    False,
                    upstream_count=count,
                )
            if "e" in args.scenarios:
                kill = lambda: proxies[2].set_fault(Fault.REFUSE)  # noqa: E731
                killer = threading.Timer(args.seconds / 2, kill)
                killer.start()
                measure(
                    rows,
                    "e one killed",
                    "rpcgate",
                    gateway,
                    gateway_process,
                    bodies,
                    args,
                    False,
                    upstream_count=count,
                )
                killer.join()
                proxies[2].heal()
            if args.soak:
                soak = argparse.Namespace(**{**vars(args), "seconds": 300, "connections": 8})
                samples: list[float] = []
                sampling = threading.Event()

                def sample() -> None:
                    while not sampling.wait(10):
                        samples.append(_rss_now(gateway_process.pid))

                sampler = threading.Thread(target=sample, daemon=True)
                before = cache_figures(gateway)
                sampler.start()
                measure(
                    rows,
                    "f soak 5 min",
                    "rpcgate",
                    gateway,
                    gateway_process,
                    bodies,
                    soak,
                    False,
                    upstream_count=count,
                )
                sampling.set()
                sampler.join()
                after = cache_figures(gateway)
                if samples:
                    print(f"  soak RSS MB every 10 s: {[round(s, 1) for s in samples]}")
                    notes.append(
                        f"- f soak: RSS {samples[0]:.1f} -> {samples[-1]:.1f} MB (every 10 s: "
                        f"{min(samples):.1f}-{max(samples):.1f}); the cache's own count "
                        f"{before['memory_bytes'] / 1e6:.2f} -> {after['memory_bytes'] / 1e6:.2f}"
                        f" MB, {before['memory_entries']} -> {after['memory_entries']} entries "
                        f"(budget {after['memory_budget_bytes'] / 1e6:.0f} MB)"
                    )
        servers.stop_all()
        for p in proxies:
            loop.run(p.stop())
    finally:
        servers.stop_all()
        cluster.stop()
    return rows


def _rss_now(pid: int) -> float:
    return process_memory(pid) / 2**20


def table(rows: list[Row]) -> str:
    lines = [
        "| scenario | target | pinning | req/s | p50 ms | p99 ms | errors "
        "| upstream calls / 1,000 | peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        per = "" if r.upstream_per_1000 is None else f"{r.upstream_per_1000:.0f}"
        rss = "" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}"
        lines.append(
            f"| {r.scenario} | {r.target} | {'pinned' if r.pinned else 'unpinned'} | {r.rps:.0f} | "
            f"{r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.errors} | {per} | {rss} |"
        )
    return "\n".join(lines) + "\n"


def ratios(rows: list[Row]) -> str:
    def rps(scenario: str, target: str, pinned: bool) -> float | None:
        found = [
            r.rps
            for r in rows
            if r.scenario == scenario and r.target == target and r.pinned == pinned
        ]
        return found[0] if found else None

    lines = []
    for pinned in (False, True):
        label = "pinned" if pinned else "unpinned"
        for scenario, floor in (
            ("a cache hit", "bare dict"),
            ("b pass-through", "bare proxy"),
            ("c batch of 50", "bare proxy"),
            ("c cached batch of 50", "bare dict"),
            ("c page-load batch", "bare proxy"),
        ):
            ours, base = rps(scenario, "rpcgate", pinned), rps(scenario, floor, pinned)
            if ours and base:
                lines.append(f"- {scenario}, {label}: rpcgate / {floor} = {ours / base:.2f}")
            nginx = rps(scenario, "nginx", pinned)
            if ours and nginx:
                lines.append(f"- {scenario}, {label}: rpcgate / nginx = {ours / nginx:.2f}")
    for pinned in (False, True):
        cached = rps("c cached batch of 50", "rpcgate", pinned)
        uncached = rps("c batch of 50", "rpcgate", pinned)
        if cached and uncached:
            label = "pinned" if pinned else "unpinned"
            lines.append(
                f"- c cached batch of 50 / c batch of 50 (items per second), {label}: "
                f"{cached / uncached:.1f}"
            )
    for pinned in (False, True):
        limited = rps("a cache hit", "rpcgate redis+limits", pinned)
        alone = rps("a cache hit", "rpcgate", pinned)
        if limited and alone:
            label = "pinned" if pinned else "unpinned"
            lines.append(
                f"- a cache hit, {label}: rpcgate with Redis and rate limits / without = "
                f"{limited / alone:.2f}"
            )
    workers = rps("a cache hit", "rpcgate x2", False)
    nginx = rps("a cache hit", "nginx beside x2", False)
    bare_x2 = rps("a cache hit", "bare dict x2", False)
    if workers and nginx:
        lines.append(f"- a cache hit, rpcgate --workers 2 / nginx = {workers / nginx:.2f}")
    if bare_x2 and nginx:
        lines.append(f"- a cache hit, bare dict x2 / nginx = {bare_x2 / nginx:.2f}")
    if workers and bare_x2:
        lines.append(f"- a cache hit, rpcgate --workers 2 / bare dict x2 = {workers / bare_x2:.2f}")
    slow_x2 = rps("a cache hit", "rpcgate x2 aiohttp only", False)
    if slow_x2 and nginx:
        lines.append(
            f"- a cache hit, rpcgate --workers 2 aiohttp only (server.fast_path: false) / nginx "
            f"= {slow_x2 / nginx:.2f}"
        )
    for pinned in (False, True):
        fast, slow = (
            rps("a cache hit", "rpcgate", pinned),
            rps("a cache hit", "rpcgate aiohttp only", pinned),
        )
        if fast and slow:
            label = "pinned" if pinned else "unpinned"
            lines.append(
                f"- a cache hit, {label}: rpcgate / rpcgate aiohttp only (the fast path) = "
                f"{fast / slow:.2f}"
            )
    for pinned in (False, True):
        one = {
            r.target: r.p50_ms
            for r in rows
            if r.scenario == "b pass-through c=1" and r.pinned == pinned
        }
        if "node" in one and "rpcgate" in one:
            added = one["rpcgate"] - one["node"]
            label = "pinned" if pinned else "unpinned"
            lines.append(
                f"- b pass-through at concurrency 1, {label}: rpcgate adds {added:.3f} ms p50 "
                f"to a direct call ({one['rpcgate']:.3f} vs {one['node']:.3f} ms)"
            )
    return "\n".join(lines) + "\n"


def chart(rows: list[Row], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    unpinned = [r for r in rows if not r.pinned]
    scenarios = list(dict.fromkeys(r.scenario for r in unpinned))
    targets = list(dict.fromkeys(r.target for r in unpinned))
    colors = {t: f"C{i % 10}" for i, t in enumerate(targets)}
    fig, ax = plt.subplots(figsize=(11, 5))
    widest = max(sum(r.scenario == s for r in unpinned) for s in scenarios)
    width = 0.8 / max(1, widest)
    labelled: set[str] = set()
    for x, scenario in enumerate(scenarios):
        here = [r for r in unpinned if r.scenario == scenario]  # each scenario's own bars,
        for i, r in enumerate(here):  # centred on its tick
            offset = (i - (len(here) - 1) / 2) * width
            label = None if r.target in labelled else r.target
            labelled.add(r.target)
            ax.bar(x + offset, r.rps, width, color=colors[r.target], label=label)
    ax.set_xticks(range(len(scenarios)), scenarios)
    ax.set_ylabel("requests / s (unpinned)")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("rpcgate against the node, the bare aiohttp floors and nginx (medians)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="scenarios a-c: measurements per target, taking turns (medians reported)",
    )
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--pinning", choices=("both", "pinned", "unpinned"), default="both")
    parser.add_argument(
        "--scenarios", default="abcdeg", help="which of a-e and g to run (f is --soak)"
    )
    parser.add_argument("--soak", action="store_true", help="add the 5-minute soak (f)")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("bench/suite.py needs wrk: apt-get install wrk")
    notes: list[str] = []
    rows = run(args, notes)
    verification = ""
    if "g" in args.scenarios:
        print("== g: verification", flush=True)
        verification = "\n## g. What verification costs\n\n" + verify_bench.run(30, 1000, 30.0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "bench/suite.py " + " ".join(sys.argv[1:])
    report = (
        f"# Benchmark ({time.strftime('%Y-%m-%d')}, {CORES} cores, `{command.strip()}`)\n\n"
        + table(rows)
        + "\nRatios from this run:\n\n"
        + ratios(rows)
        + "".join(line + "\n" for line in notes)
        + verification
    )
    (out / "latest.md").write_text(report)
    print(report)
    print(f"wrote {out / 'latest.md'}")
    if chart(rows, out / "latest.png"):
        print(f"wrote {out / 'latest.png'}")
    else:
        print("no chart: pip install matplotlib (the `bench` extra)")


if __name__ == "__main__":
    main()
