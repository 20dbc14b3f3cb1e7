"""What a chain's name fills in: a chain entry of a config completed from its row of the
chain table (`chains.py`) before the entry is loaded, so that `chains: [{name: base}]` is a
whole chain. Only what the entry leaves out is filled: the chain id, the public upstreams,
the other names it is served at, the timing that follows its block time, its finality
depth and how its headers hash. An entry whose name the table does not know is a chain of
the user's own: it needs a `chain_id` (and upstreams), and its timing follows its
`block_time_s` (12 s unless given).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from rpcgate.config.chains import Chain, Public, find_chain, timing, unknown_chain_message

DEFAULT_BLOCK_TIME_S = 12.0


def complete_chains(raw: Any, problems: list[str]) -> Any:
    """The raw config (parsed YAML) with every chain entry completed from its row."""
    if not isinstance(raw, dict) or not isinstance(raw.get("chains"), list):
        return raw
    chains = [
        complete_chain(entry, f"chains[{i}]", problems) for i, entry in enumerate(raw["chains"])
    ]
    return {**raw, "chains": chains}


def complete_chain(entry: Any, path: str, problems: list[str]) -> Any:
    if not isinstance(entry, dict):
        return entry  # the loader says what is wrong with it
    row = row_of(entry)
    name = entry.get("name")
    if row is None:
        if isinstance(name, str) and name and "chain_id" not in entry:
            problems.append(f"{path}.name: {unknown_chain_message(name)}")
        block_time = entry.get("block_time_s", DEFAULT_BLOCK_TIME_S)
        if (
            not isinstance(block_time, int | float)
            or isinstance(block_time, bool)
            or block_time <= 0
        ):
            return entry  # settings reports the bad block time
        return {**timing(block_time), **entry}
    filled: dict[str, Any] = {
        "chain_id": row.chain_id,
        "aliases": [p for p in row.paths if p != name],
        "upstreams": [public_upstream(p) for p in row.public],
        "block_time_s": row.block_time_s,
        "header_format": row.headers or "none",
        "execute_calls": row.execution,
        "history_contract": row.history == "eip2935",
    }
    if row.finality.depth is not None and not row.finality.tags:
        filled["finality_depth"] = row.finality.depth
    block_time = entry.get("block_time_s", row.block_time_s)
    if isinstance(block_time, int | float) and not isinstance(block_time, bool) and block_time > 0:
        filled.update(timing(block_time))
    return {**filled, **entry}


def row_of(entry: dict[str, Any]) -> Chain | None:
    """The table's row for a chain entry: by its name or alias where the entry gives no
    other chain id (a devnet may be named `base`), else by its chain id."""
    name = entry.get("name")
    chain_id = entry.get("chain_id")
    chain_id = chain_id if isinstance(chain_id, int) and not isinstance(chain_id, bool) else None
    by_name = find_chain(name) if isinstance(name, str) else None
    if by_name is not None and chain_id in (None, by_name.chain_id):
        return by_name
    return find_chain(None, chain_id)


def public_upstream(public: Public) -> dict[str, Any]:
    """An upstream entry for a public endpoint, named for its host (so that two chains'
    endpoints of one provider read apart in logs and errors)."""
    host = urlsplit(public.url).hostname or public.url
    if public.preset is not None:
        return {"preset": public.preset, "name": host}
    entry: dict[str, Any] = {
        "url": public.url,
        "name": host,
        "kind": "centralized",
        "domain": public.domain,
    }
    if public.ws_url:
        entry["ws_url"] = public.ws_url
    return entry
