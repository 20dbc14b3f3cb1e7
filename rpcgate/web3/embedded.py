"""One embedded gateway: the configuration made a `Gateway`, started on the loop that first
uses it, one chain chosen, request bodies answered as the HTTP server answers them, and
everything stopped by `close`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from rpcgate.chain.runtime import ChainRuntime
from rpcgate.config.settings import Config, config_from_data, load_config
from rpcgate.edge.answers import answer_body
from rpcgate.edge.gateway import Gateway
from rpcgate.ops.status import gateway_status
from rpcgate.rpc.logs import configure_logging

ConfigSource = str | Path | Mapping[str, Any] | Config | None


def resolve_config(source: ConfigSource) -> Config:
    """A path to a YAML file, a mapping of the YAML's structure, a Config, or None (the
    embedded zero-config default, as `rpcgate serve` with no --config)."""
    if isinstance(source, Config):
        return source
    if source is None or isinstance(source, str | Path):
        return load_config(source)
    return config_from_data(dict(source))


class UnknownChain(ValueError):
    pass


class EmbeddedGateway:
    """A gateway with no HTTP in front, answering one chain's request bodies."""

    def __init__(self, config: ConfigSource = None, chain: str | int | None = None) -> None:
        self.config = resolve_config(config)
        self.chain_key = None if chain is None else str(chain)
        self.gateway: Gateway | None = None
        self.chain: ChainRuntime | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._starting: asyncio.Lock | None = None
        self.closed = False
        names = {str(c.chain_id) for c in self.config.chains} | {
            n for c in self.config.chains for n in (c.name, *c.aliases)
        }
        if self.chain_key is not None and self.chain_key not in names:
            served = ", ".join(f"{c.name} ({c.chain_id})" for c in self.config.chains)
            raise UnknownChain(f"unknown chain {self.chain_key!r}; configured: {served}")

    async def ready(self) -> ChainRuntime:
        """The chain, its gateway started on the running loop the first time."""
        if self.chain is not None:
            return self.chain
        if self.closed:
            raise RuntimeError("this rpcgate provider is closed")
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop, self._starting = loop, asyncio.Lock()
        elif self.loop is not loop:
            raise RuntimeError("an rpcgate provider is used on the event loop that started it")
        assert self._starting is not None
        async with self._starting:
            if self.chain is None:
                if not structlog.is_configured():  # the program's own logging stays its own
                    configure_logging(self.config.log_level, stdlib=False)
                gateway = Gateway(self.config)
                self.gateway = gateway
                await gateway.start()
                chain = gateway.chain_for(self.chain_key)
                assert chain is not None  # checked against the configuration
                self.chain = chain
        return self.chain

    async def answer(self, body: bytes, read_cache: bool = True) -> bytes | None:
        chain = await self.ready()
        assert self.gateway is not None
        limits = self.gateway.config.limits
        return await answer_body(
            chain,
            body,
            budget_s=self.gateway.config.failover.deadline_s,
            max_batch_items=limits.max_batch_items,
            max_depth=limits.max_json_depth,
            metrics=self.gateway.metrics,
            read_cache=read_cache,
        )

    def status(self) -> dict[str, Any]:
        """What `/status.json` shows (no clients: nothing stands in front)."""
        if self.gateway is None:
            return {"started": False, "chains": []}
        gateway = self.gateway
        status = gateway_status(
            gateway.chains, gateway.cache, gateway.drills, history=gateway.metrics.history
        )
        return {"started": True, **status}

    async def close(self) -> None:
        """Stops every task and connection of the gateway; a second close does nothing."""
        self.closed = True
        gateway, self.gateway, self.chain = self.gateway, None, None
        if gateway is not None:
            await gateway.close()
            # A transport closed lets its socket go on the loop's next turn: that turn is
            # taken here, so no socket is open once close returns.
            await asyncio.sleep(0)
