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
from dataclasses import dataclass, field
from typing import Literal

# Network slugs, per chain id, for providers whose host or path names the network.
_INFURA_NETWORKS = {
    1: "mainnet",
    11155111: "sepolia",
    17000: "holesky",
    137: "polygon-mainnet",
    10: "optimism-mainnet",
    42161: "arbitrum-mainnet",
    8453: "base-mainnet",
}
_ALCHEMY_NETWORKS = {
    1: "eth-mainnet",
    11155111: "eth-sepolia",
    17000: "eth-holesky",
    137: "polygon-mainnet",
    10: "opt-mainnet",
    42161: "arb-mainnet",
    8453: "base-mainnet",
}
_ANKR_NETWORKS = {
    1: "eth",
    11155111: "eth_sepolia",
    137: "polygon",
    10: "optimism",
    42161: "arbitrum",
    8453: "base",
}
_DRPC_NETWORKS = {
    1: "ethereum",
    11155111: "sepolia",
    137: "polygon",
    10: "optimism",
    42161: "arbitrum",
    8453: "base",
}
_CHAINSTACK_NETWORKS = {1: "ethereum-mainnet", 11155111: "ethereum-sepolia"}
_PUBLICNODE_NETWORKS = {
    1: "ethereum-rpc",
    11155111: "ethereum-sepolia-rpc",
    137: "polygon-bor-rpc",
    8453: "base-rpc",
}


@dataclass(frozen=True)
class Preset:
    name: str
    kind: Literal["centralized", "decentralized"]
    domain: str  # failure domain tag
    url: str  # template: {key}, {network}, {endpoint}, {node_id}, {region}
    keyless_url: str | None = None  # used when no key is given (public endpoint)
    ws_url: str | None = None  # WebSocket template of the same node; None: none known
    keyless_ws_url: str | None = None  # the public endpoint's WebSocket; None: none known
    networks: dict[int, str] = field(default_factory=dict)  # chain id -> {network}
    # Largest batch the provider documents for this endpoint (the lowest plan it serves);
    # None: undocumented (the upstream's default applies).
    max_batch: int | None = None
    note: str = ""

    def placeholders(self, keyless: bool) -> set[str]:
        return _placeholders(self.keyless_url if keyless and self.keyless_url else self.url)


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
            networks=_INFURA_NETWORKS,
            note="key in the path; hosted on AWS (hit by the us-east-1 outage of 2025-10-20)",
        ),
        Preset(
            "alchemy",
            "centralized",
            "aws",
            "https://{network}.g.alchemy.com/v2/{key}",
            ws_url="wss://{network}.g.alchemy.com/v2/{key}",
            networks=_ALCHEMY_NETWORKS,
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
            networks=_CHAINSTACK_NETWORKS,
            note="Global Node; a regional node's URLs go in `url` and `ws_url`",
        ),
        Preset(
            "ankr",
            "centralized",
            "ankr",
            "https://rpc.ankr.com/{network}/{key}",
            networks=_ANKR_NETWORKS,
            max_batch=100,  # per plan: Freemium 100, Premium 1,000 (a key is Freemium at least)
            note="the keyless endpoint now answers 'Unauthorized': a key is required; "
            "no ws_url: its WebSocket (Freemium and Premium only) has no documented format",
        ),
        Preset(
            "drpc",
            "decentralized",
            "drpc",
            "https://lb.drpc.live/{network}/{key}",
            keyless_url="https://eth.drpc.org",
            ws_url="wss://lb.drpc.org/ogws?network={network}&dkey={key}",
            keyless_ws_url="wss://eth.drpc.org",
            networks=_DRPC_NETWORKS,
            max_batch=3,
            note="free tier: batches of at most 3, 2 s timeout; keyed WebSocket on lb.drpc.org",
        ),
        Preset(
            "pokt",
            "decentralized",
            "pokt",
            "https://eth.api.pocket.network",
            keyless_url="https://eth.api.pocket.network",
            ws_url="wss://eth.api.pocket.network",
            keyless_ws_url="wss://eth.api.pocket.network",
            note="PATH gateway: JSON-RPC errors behind HTTP 4xx/5xx statuses",
        ),
        Preset(
            "lava",
            "decentralized",
            "lava",
            "https://g.w.lavanet.xyz:443/gateway/eth1/rpc-http/{key}",
            keyless_url="https://eth1.lava.build",
            note="no ws_url: the gateway's WebSocket format is known only from old docs, the "
            "public endpoint's not at all",
        ),
        Preset(
            "publicnode",
            "centralized",
            "allnodes",
            "https://{network}.publicnode.com",
            keyless_url="https://{network}.publicnode.com",
            ws_url="wss://{network}.publicnode.com",
            keyless_ws_url="wss://{network}.publicnode.com",
            networks=_PUBLICNODE_NETWORKS,
        ),
        Preset(
            "onerpc",
            "centralized",
            "automata",
            "https://1rpc.io/{key}/eth",
            keyless_url="https://public.1rpc.io/eth",
            note="Automata 1RPC relay; no ws_url: no WebSocket endpoint documented",
        ),
        Preset(
            "merkle",
            "centralized",
            "merkle",
            "https://eth.merkle.io",
            keyless_url="https://eth.merkle.io",
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
    """The URL a preset gives for a chain, from the upstream's key/endpoint/node_id/region."""
    keyless = not values.get("key")
    if keyless and preset.keyless_url is None:
        raise PresetError(f"preset {preset.name!r} needs a `key`")
    template = preset.keyless_url if keyless and preset.keyless_url else preset.url
    return _fill(preset, template, chain_id, values)


def preset_ws_url(preset: Preset, chain_id: int, values: dict[str, str]) -> str | None:
    """The WebSocket URL of the node `preset_url` gives, from the same values; None where the
    provider has no WebSocket we know of (for that endpoint: keyed or public)."""
    keyless = not values.get("key")
    template = preset.keyless_ws_url if keyless else preset.ws_url
    if template is None:
        return None
    return _fill(preset, template, chain_id, values)


def _fill(preset: Preset, template: str, chain_id: int, values: dict[str, str]) -> str:
    keyless = not values.get("key")
    placeholders = _placeholders(template)
    fields = dict(values)
    if "network" in placeholders:
        if chain_id not in preset.networks:
            known = ", ".join(str(c) for c in sorted(preset.networks))
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
