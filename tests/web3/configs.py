"""The configuration the web3 provider tests hand to a provider: the YAML's structure, as a
program would write it, for one devnet chain over the given fault proxies."""

from __future__ import annotations

from typing import Any

from tests.harness.faultproxy import FaultProxy

CHAIN_ID = 31337


def devnet_config(
    proxies: list[FaultProxy], head_poll_interval: float = 0.2, **chain: Any
) -> dict[str, Any]:
    return {
        "failover": {"attempt_timeout_s": 1.0, "deadline_s": 10.0},
        "chains": [
            {
                "name": "devnet",
                "chain_id": CHAIN_ID,
                "head_poll_interval": head_poll_interval,
                "upstreams": [{"name": f"node{i}", "url": p.url} for i, p in enumerate(proxies)],
                **chain,
            }
        ],
    }
