"""Hot reload (SIGHUP): what a new config changes, and swapping it in without a failed call.

`plan_reload` is the decision, over plain data: a chain whose settings (or the failover and
limit settings its runtime is built with) changed is replaced, a new one started, a removed
one stopped; settings only a restart applies are named. `reconfigure` does it: the new
runtimes poll their upstreams once before they serve, they replace the old ones in one
step, and the old ones are closed only after the longest a call in flight can take. The
response cache is kept (its keys carry the chain id, its entries are checked against the
new runtime's consensus), and a replaced chain's head tracker starts from the old one's
consensus, so `eth_blockNumber` does not go back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from rpcgate.config.settings import ChainConfig, Config

if TYPE_CHECKING:
    from rpcgate.edge.http_server import Gateway

log = structlog.get_logger("rpcgate.reload")


@dataclass(frozen=True)
class ReloadPlan:
    start: tuple[ChainConfig, ...]  # new chains and new versions of changed ones
    stop: tuple[str, ...]  # names of chains removed or replaced
    keep: tuple[str, ...]  # names of chains served on as they are
    needs_restart: tuple[str, ...]  # settings that changed but only a restart applies


# Settings read once at start: a reload names them and leaves them as they are.
_RESTART_ONLY = ("listen", "log_level", "cache", "ops", "server")


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    old_chains = {c.name: c for c in old.chains}
    runtime_settings_changed = old.failover != new.failover or old.limits != new.limits
    start, keep = [], []
    for chain in new.chains:
        before = old_chains.get(chain.name)
        if before is not None and before == chain and not runtime_settings_changed:
            keep.append(chain.name)
        else:
            start.append(chain)
    stop = [name for name in old_chains if name not in keep]
    needs_restart = [key for key in _RESTART_ONLY if getattr(old, key) != getattr(new, key)]
    return ReloadPlan(tuple(start), tuple(stop), tuple(keep), tuple(needs_restart))


async def reconfigure(gateway: Gateway, new: Config) -> ReloadPlan:
    """Serve `new` from now on (but for the settings only a restart applies)."""
    old = gateway.config
    plan = plan_reload(old, new)
    serving = {runtime.config.name: runtime for runtime in gateway.chains}
    started = {}
    for chain in plan.start:
        runtime = gateway.runtime_for(chain, new)
        previous = serving.get(chain.name)
        if previous is not None and previous.config.chain_id == chain.chain_id:
            runtime.tracker.consensus = previous.tracker.consensus  # never backwards
        started[chain.name] = runtime
    try:
        for runtime in started.values():
            await runtime.start()  # one poll round: nothing unverified serves
    except BaseException:
        for runtime in started.values():
            await runtime.close()
        raise
    chains = [started.get(chain.name) or serving[chain.name] for chain in new.chains]
    gateway.config = dataclasses.replace(
        new, **{key: getattr(old, key) for key in plan.needs_restart}
    )
    gateway.set_chains(chains)
    gateway.retire([serving[name] for name in plan.stop], after_s=old.failover.deadline_s)
    log.info(
        "config_reloaded",
        started=[c.name for c in plan.start],
        stopped=list(plan.stop),
        kept=list(plan.keep),
        upstreams={r.config.name: list(r.upstreams) for r in chains},
    )
    if plan.needs_restart:
        log.warning("reload_needs_restart", settings=list(plan.needs_restart))
    return plan
