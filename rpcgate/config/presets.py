"""Everything rpcgate knows about a provider, one row each.

A preset fills an upstream's url, ws_url, kind and failure domain. Hosting facts come from
shared/reference/providers.md: where a provider's hosting is undocumented, the provider
itself is its own failure domain (we know of no infrastructure it shares with others). A
WebSocket URL is filled only where providers.md documents the provider's format (for dRPC's
keyed endpoint, the `ogws` twin of its documented `ogrpc` form); where it does not, the row has
none and its note says so (a user who knows it writes `ws_url`).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Literal

from rpcgate.config.chains import BY_ID, CHAINS, Public, networks_of, public_endpoint


@dataclass(frozen=True)
class Preset:
    name: str
    kind: Literal["centralized", "decentralized"]
    domain: str  # failure domain tag
    url: str  # template: {key}, {network}, {endpoint}, {node_id}, {region}
    ws_url: str | None = None  # WebSocket template of the same node; None: none known
    # Largest batch the provider documents for this endpoint (the lowest plan it serves);
    # None: undocumented (the upstream's default applies).
    max_batch: int | None = None
    note: str = ""

    @property
    def networks(self) -> dict[int, str]:
        """Chain id -> {network}: what this provider calls each chain (the chain table)."""
        return networks_of(self.name)

    @property
    def keyless(self) -> bool:
        """Whether the provider runs a public (keyless) endpoint of some chain."""
        return any(public_endpoint(self.name, chain.chain_id) for chain in CHAINS)


def _placeholders(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            "infura",
            "centralized",
            "aws",
            "https://{network}.infura.io/v3/{key}",
            ws_url="wss://{network}.infura.io/ws/v3/{key}",
            note="key in the path; hosted on AWS (hit by the us-east-1 outage of 2025-10-20)",
        ),
        Preset(
            "alchemy",
            "centralized",
            "aws",
            "https://{network}.g.alchemy.com/v2/{key}",
            ws_url="wss://{network}.g.alchemy.com/v2/{key}",
            max_batch=1000,
            note="key in the path; AWS-related incident on 2025-10-20",
        ),
        Preset(
            "quicknode",
            "centralized",
            "quicknode",
            "https://{endpoint}.quiknode.pro/{key}/",
            ws_url="wss://{endpoint}.quiknode.pro/{key}/",
            note="set `endpoint` (your endpoint's name) and `key` (its token)",
        ),
        Preset(
            "chainstack",
            "centralized",
            "chainstack",
            "https://{network}.core.chainstack.com/{key}",
            ws_url="wss://{network}.core.chainstack.com/{key}",
            note="Global Node; a regional node's URLs go in `url` and `ws_url`",
        ),
        Preset(
            "ankr",
            "centralized",
            "ankr",
            "https://rpc.ankr.com/{network}/{key}",
            max_batch=100,  # per plan: Freemium 100, Premium 1,000 (a key is Freemium at least)
            note="the keyless endpoint now answers 'Unauthorized': a key is required; "
            "no ws_url: its WebSocket (Freemium and Premium only) has no documented format",
        ),
        Preset(
            "drpc",
            "decentralized",
            "drpc",
            "https://lb.drpc.live/{network}/{key}",
            ws_url="wss://lb.drpc.org/ogws?network={network}&dkey={key}",
            max_batch=3,
            note="free tier: batches of at most 3, 2 s timeout; keyed WebSocket on lb.drpc.org",
        ),
        Preset(
            "pokt",
            "decentralized",
            "pokt",
            "https://{network}.api.pocket.network",
            ws_url="wss://{network}.api.pocket.network",
            note="PATH gateway: JSON-RPC errors behind HTTP 4xx/5xx statuses",
        ),
        Preset(
            "lava",
            "decentralized",
            "lava",
            "https://g.w.lavanet.xyz:443/gateway/{network}/rpc-http/{key}",
            note="no ws_url: the gateway's WebSocket format is known only from old docs, the "
            "public endpoint's not at all",
        ),
        Preset(
            "publicnode",
            "centralized",
            "allnodes",
            "https://{network}.publicnode.com",
            ws_url="wss://{network}.publicnode.com",
        ),
        Preset(
            "onerpc",
            "centralized",
            "automata",
            "https://1rpc.io/{key}/{network}",
            note="Automata 1RPC relay; no ws_url: no WebSocket endpoint documented",
        ),
        Preset(
            "merkle",
            "centralized",
            "merkle",
            "https://eth.merkle.io",
            note="no ws_url: no WebSocket endpoint documented",
        ),
        Preset(
            "amb",
            "centralized",
            "aws",
            "https://{node_id}.t.ethereum.managedblockchain.{region}.amazonaws.com/"
            "?billingtoken={key}",
            ws_url="wss://{node_id}.wss.t.ethereum.managedblockchain.{region}.amazonaws.com/"
            "?billingtoken={key}",
            max_batch=1,
            note="Amazon Managed Blockchain, accessor token in the query; no batches; "
            "access ends 2027-09-29",
        ),
    )
}


class PresetError(ValueError):
    """A preset cannot produce a URL from what the config gives; the message says why."""


def preset_url(preset: Preset, chain_id: int, values: dict[str, str]) -> str:
    """The URL a preset gives for a chain, from the upstream's key/endpoint/node_id/region;
    with no key, the provider's public endpoint of that chain (the chain table's)."""
    public = _public(preset, chain_id, values)
    if public is not None:
        return public.url
    return _fill(preset, preset.url, chain_id, values)


def preset_ws_url(preset: Preset, chain_id: int, values: dict[str, str]) -> str | None:
    """The WebSocket URL of the node `preset_url` gives, from the same values; None where the
    provider has no WebSocket we know of (for that endpoint: keyed or public)."""
    public = _public(preset, chain_id, values)
    if public is not None:
        return public.ws_url
    if preset.ws_url is None:
        return None
    return _fill(preset, preset.ws_url, chain_id, values)


def _public(preset: Preset, chain_id: int, values: dict[str, str]) -> Public | None:
    """The public endpoint an entry without a key means, for a provider whose URL takes one
    (None for a keyed entry, or a provider whose URL takes no key: its URL is the one)."""
    if values.get("key") or "key" not in _placeholders(preset.url):
        return None
    public = public_endpoint(preset.name, chain_id)
    if public is not None:
        return public
    if not preset.keyless:
        raise PresetError(f"preset {preset.name!r} needs a `key`")
    served = ", ".join(
        f"{c.name} ({c.chain_id})" for c in CHAINS if public_endpoint(preset.name, c.chain_id)
    )
    raise PresetError(
        f"preset {preset.name!r} has no public endpoint for chain id {chain_id} "
        f"(it has one for {served}); give a `key` or a `url`"
    )


def _fill(preset: Preset, template: str, chain_id: int, values: dict[str, str]) -> str:
    keyless = not values.get("key")
    placeholders = _placeholders(template)
    fields = dict(values)
    if "network" in placeholders:
        if chain_id not in preset.networks:
            known = ", ".join(f"{BY_ID[c].name} ({c})" for c in sorted(preset.networks))
            raise PresetError(
                f"preset {preset.name!r} has no network for chain id {chain_id} "
                f"(known: {known}); give a `url` instead"
            )
        fields["network"] = preset.networks[chain_id]
    elif chain_id != 1 and not placeholders & {"endpoint", "node_id"}:
        # A URL naming neither a network nor the user's own node is Ethereum mainnet's:
        # using it for another chain would answer that chain's calls with mainnet's data.
        raise PresetError(
            f"preset {preset.name!r} {'keyless ' if keyless else ''}serves Ethereum mainnet "
            f"(chain id 1) only, not chain id {chain_id}; give a `url` instead"
        )
    if not keyless and "key" not in placeholders:
        # A key the URL has no place for would be silently dropped: say so instead.
        raise PresetError(f"preset {preset.name!r} takes no `key` (its endpoint is public)")
    missing = sorted(p for p in placeholders if not fields.get(p))
    if missing:
        raise PresetError(
            f"preset {preset.name!r} needs {', '.join('`' + m + '`' for m in missing)}"
        )
    return template.format(**fields)
