"""`rpcgate check`: probe every upstream once and say which ones can serve their chain."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rpcgate.config.settings import Config
from rpcgate.rpc.errors import classify
from rpcgate.rpc.jsonrpc import quantity
from rpcgate.upstream.client import Reply, Upstream

# Balance of the zero address at block 1: only a node that keeps old state can answer.
_OLD_STATE_PROBE = ("eth_getBalance", ["0x0000000000000000000000000000000000000000", "0x1"])


@dataclass(frozen=True)
class ProbeResult:
    chain: str
    upstream: str
    url: str  # masked
    chain_id: int | None
    head: int | None
    latency_ms: float | None
    client_version: str | None
    old_state: bool | None
    problem: str | None  # None: works

    @property
    def works(self) -> bool:
        return self.problem is None


def _why(reply: Reply) -> str:
    assert reply.failure is not None
    c = classify(reply.failure)
    return f"{c.error_class}: {c.reason}"


async def probe(
    chain: str, expected_chain_id: int, upstream: Upstream, timeout_s: float
) -> ProbeResult:
    chain_id_reply, head_reply, version_reply, old_reply = await asyncio.gather(
        upstream.call("eth_chainId", [], timeout_s),
        upstream.call("eth_blockNumber", [], timeout_s),
        upstream.call("web3_clientVersion", [], timeout_s),
        upstream.call(*_OLD_STATE_PROBE, timeout_s),
    )
    chain_id = quantity(chain_id_reply.result)
    head = quantity(head_reply.result)
    problem = None
    if chain_id_reply.failure is not None:
        problem = f"eth_chainId failed: {_why(chain_id_reply)}"
    elif chain_id != expected_chain_id:
        problem = f"wrong chain: chain id {chain_id}, expected {expected_chain_id}"
    elif head_reply.failure is not None:
        problem = f"eth_blockNumber failed: {_why(head_reply)}"
    version = version_reply.result if isinstance(version_reply.result, str) else None
    old_state = None if chain_id_reply.failure else old_reply.failure is None
    return ProbeResult(
        chain,
        upstream.name,
        upstream.display_url,
        chain_id,
        head,
        round(head_reply.latency_s * 1000, 1) if head is not None else None,
        version,
        old_state,
        problem,
    )


async def check_all(config: Config, timeout_s: float = 10.0) -> list[ProbeResult]:
    tasks = []
    upstreams = []
    for chain in config.chains:
        for up_config in chain.upstreams:
            upstream = Upstream(
                up_config, max_response_bytes=config.limits.max_response_bytes, max_concurrent=8
            )
            upstreams.append(upstream)
            tasks.append(probe(chain.name, chain.chain_id, upstream, timeout_s))
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for upstream in upstreams:
            await upstream.close()


def format_table(results: list[ProbeResult]) -> str:
    header = (
        "chain",
        "upstream",
        "chain id",
        "head",
        "latency ms",
        "old state",
        "client",
        "status",
    )
    rows = [header]
    for r in results:
        rows.append(
            (
                r.chain,
                r.upstream,
                "-" if r.chain_id is None else str(r.chain_id),
                "-" if r.head is None else str(r.head),
                "-" if r.latency_ms is None else f"{r.latency_ms:.1f}",
                {True: "yes", False: "no", None: "-"}[r.old_state],
                (r.client_version or "-")[:40],
                "ok" if r.works else str(r.problem),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in rows
    ]
    return "\n".join(lines)


def chains_without_working_upstream(config: Config, results: list[ProbeResult]) -> list[str]:
    working = {r.chain for r in results if r.works}
    return [c.name for c in config.chains if c.name not in working]
