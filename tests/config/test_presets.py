"""Provider presets, pinned against shared/reference/providers.md.

Each row is what a user writes in an upstream entry and the URL the gateway then calls: the
format providers.md section 1 documents for that provider, or the keyless endpoint section 5
lists. Presets are resolved through `parse_config`, the way a config file reaches them, so a
row also pins the key path a problem is reported under.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from rpcgate.config.presets import PRESETS
from rpcgate.config.settings import ConfigError, UpstreamConfig, load_config, parse_config

pytestmark = pytest.mark.unit

INFURA_KEY = "9aa3d95b3bc440fa88ea12eaa4456161"
ALCHEMY_KEY = "kX3d7pQ9vR2mT8wY4zA6bC1eF5gH0jL"
CHAINSTACK_KEY = "3f2b8c0e6d1a4e7f9b5c2a8d0e4f6a1b"
ANKR_TOKEN = "b1f4c7e9a2d5f8b3c6e9a1d4f7b2c5e8a3d6f9b4c7e1a5d8f2b6c9e3a7d1f5b8"
DRPC_KEY = "AnJsaW7kCkQBn7mP3tX9-QvR2sUeYw4ZcLhT6bNfGdK"
LAVA_KEY = "4c1d8e2f9a3b7c6d5e0f1a2b3c4d5e6f"
QUICKNODE_ENDPOINT = "withered-cool-sound"
QUICKNODE_TOKEN = "6a1e3c9f0b2d4e8a7c5f1b3d9e0a2c4f6b8d1e3a"
AMB_NODE = "nd-6eaj5va43jggnpxouzp7y47e4y"
AMB_REGION = "us-east-1"
AMB_TOKEN = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4"


def resolve(entry: dict[str, Any], chain_id: int = 1) -> UpstreamConfig:
    """The upstream the gateway builds from one upstream entry of a config file."""
    config = {"chains": [{"name": "chain", "chain_id": chain_id, "upstreams": [entry]}]}
    return parse_config(yaml.safe_dump(config), env={}).chains[0].upstreams[0]


def problems_of(entry: dict[str, Any], chain_id: int = 1) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        resolve(entry, chain_id)
    return raised.value.problems


# --- URLs ------------------------------------------------------------------------------------

KEYED_URLS = [
    pytest.param(
        {"preset": "infura", "key": INFURA_KEY},
        f"https://mainnet.infura.io/v3/{INFURA_KEY}",
        id="infura",
    ),
    pytest.param(
        {"preset": "alchemy", "key": ALCHEMY_KEY},
        f"https://eth-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
        id="alchemy",
    ),
    pytest.param(
        {"preset": "quicknode", "endpoint": QUICKNODE_ENDPOINT, "key": QUICKNODE_TOKEN},
        f"https://{QUICKNODE_ENDPOINT}.quiknode.pro/{QUICKNODE_TOKEN}/",
        id="quicknode",
    ),
    pytest.param(
        {"preset": "chainstack", "key": CHAINSTACK_KEY},
        f"https://ethereum-mainnet.core.chainstack.com/{CHAINSTACK_KEY}",
        id="chainstack-global-node",
    ),
    pytest.param(
        {"preset": "ankr", "key": ANKR_TOKEN},
        f"https://rpc.ankr.com/eth/{ANKR_TOKEN}",
        id="ankr",
    ),
    pytest.param(
        {"preset": "drpc", "key": DRPC_KEY},
        f"https://lb.drpc.live/ethereum/{DRPC_KEY}",
        id="drpc",
    ),
    pytest.param(
        {"preset": "lava", "key": LAVA_KEY},
        f"https://g.w.lavanet.xyz:443/gateway/eth1/rpc-http/{LAVA_KEY}",
        id="lava-gateway",
    ),
    pytest.param(
        {"preset": "amb", "node_id": AMB_NODE, "region": AMB_REGION, "key": AMB_TOKEN},
        f"https://{AMB_NODE}.t.ethereum.managedblockchain.{AMB_REGION}.amazonaws.com/"
        f"?billingtoken={AMB_TOKEN}",
        id="amb-accessor-token",
    ),
]

KEYLESS_URLS = [
    pytest.param("drpc", "https://eth.drpc.org", id="drpc"),
    pytest.param("pokt", "https://eth.api.pocket.network", id="pokt"),
    pytest.param("lava", "https://eth1.lava.build", id="lava"),
    pytest.param("publicnode", "https://ethereum-rpc.publicnode.com", id="publicnode"),
    pytest.param("onerpc", "https://public.1rpc.io/eth", id="onerpc"),
    pytest.param("merkle", "https://eth.merkle.io", id="merkle"),
]


@pytest.mark.parametrize(("entry", "url"), KEYED_URLS)
def test_keyed_preset_calls_the_url_its_provider_documents(entry: dict[str, Any], url: str) -> None:
    assert resolve(entry).url == url


@pytest.mark.parametrize(("preset", "url"), KEYLESS_URLS)
def test_keyless_preset_calls_the_public_endpoint(preset: str, url: str) -> None:
    assert resolve({"preset": preset}).url == url


def test_an_explicit_url_wins_over_the_preset_url_but_keeps_kind_and_domain() -> None:
    regional = f"https://nd-123-456-789.p2pify.com/{CHAINSTACK_KEY}"
    upstream = resolve({"preset": "chainstack", "url": regional})
    assert (upstream.url, upstream.kind, upstream.domain) == (regional, "centralized", "chainstack")


# --- WebSocket URLs --------------------------------------------------------------------------

KEYED_WS_URLS = [
    pytest.param(
        {"preset": "infura", "key": INFURA_KEY},
        f"wss://mainnet.infura.io/ws/v3/{INFURA_KEY}",
        id="infura",
    ),
    pytest.param(
        {"preset": "alchemy", "key": ALCHEMY_KEY},
        f"wss://eth-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
        id="alchemy",
    ),
    pytest.param(
        {"preset": "quicknode", "endpoint": QUICKNODE_ENDPOINT, "key": QUICKNODE_TOKEN},
        f"wss://{QUICKNODE_ENDPOINT}.quiknode.pro/{QUICKNODE_TOKEN}/",
        id="quicknode",
    ),
    pytest.param(
        {"preset": "chainstack", "key": CHAINSTACK_KEY},
        f"wss://ethereum-mainnet.core.chainstack.com/{CHAINSTACK_KEY}",
        id="chainstack-global-node",
    ),
    pytest.param(
        {"preset": "drpc", "key": DRPC_KEY},
        f"wss://lb.drpc.org/ogws?network=ethereum&dkey={DRPC_KEY}",
        id="drpc",
    ),
    pytest.param(
        {"preset": "amb", "node_id": AMB_NODE, "region": AMB_REGION, "key": AMB_TOKEN},
        f"wss://{AMB_NODE}.wss.t.ethereum.managedblockchain.{AMB_REGION}.amazonaws.com/"
        f"?billingtoken={AMB_TOKEN}",
        id="amb-accessor-token",
    ),
]

KEYLESS_WS_URLS = [
    pytest.param("drpc", "wss://eth.drpc.org", id="drpc"),
    pytest.param("pokt", "wss://eth.api.pocket.network", id="pokt"),
    pytest.param("publicnode", "wss://ethereum-rpc.publicnode.com", id="publicnode"),
]

# providers.md gives no WebSocket format for these: they get none rather than a guess.
NO_WS_URL = [
    pytest.param({"preset": "ankr", "key": ANKR_TOKEN}, id="ankr"),
    pytest.param({"preset": "lava", "key": LAVA_KEY}, id="lava-gateway"),
    pytest.param({"preset": "lava"}, id="lava-keyless"),
    pytest.param({"preset": "onerpc"}, id="onerpc-keyless"),
    pytest.param({"preset": "onerpc", "key": "my-1rpc-key"}, id="onerpc"),
    pytest.param({"preset": "merkle"}, id="merkle"),
]


@pytest.mark.parametrize(("entry", "ws_url"), KEYED_WS_URLS)
def test_keyed_preset_fills_the_websocket_its_provider_documents(
    entry: dict[str, Any], ws_url: str
) -> None:
    assert resolve(entry).ws_url == ws_url


@pytest.mark.parametrize(("preset", "ws_url"), KEYLESS_WS_URLS)
def test_keyless_preset_fills_the_public_websocket(preset: str, ws_url: str) -> None:
    assert resolve({"preset": preset}).ws_url == ws_url


@pytest.mark.parametrize("entry", NO_WS_URL)
def test_preset_without_a_known_websocket_fills_none(entry: dict[str, Any]) -> None:
    assert resolve(entry).ws_url == ""


def test_every_preset_without_a_websocket_says_why_in_its_note() -> None:
    lacking = [
        name
        for name, preset in PRESETS.items()
        if preset.ws_url is None or (preset.keyless and resolve({"preset": name}).ws_url == "")
    ]
    assert lacking == ["ankr", "lava", "onerpc", "merkle"]
    assert [name for name in lacking if "no ws_url" not in PRESETS[name].note] == []


WS_ON_OTHER_CHAINS = [
    pytest.param(
        {"preset": "infura", "key": INFURA_KEY},
        11155111,
        f"wss://sepolia.infura.io/ws/v3/{INFURA_KEY}",
        id="infura-sepolia",
    ),
    pytest.param(
        {"preset": "alchemy", "key": ALCHEMY_KEY},
        8453,
        f"wss://base-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
        id="alchemy-base",
    ),
    pytest.param(
        {"preset": "drpc", "key": DRPC_KEY},
        137,
        f"wss://lb.drpc.org/ogws?network=polygon&dkey={DRPC_KEY}",
        id="drpc-polygon",
    ),
    pytest.param({"preset": "publicnode"}, 137, "wss://polygon-bor-rpc.publicnode.com", id="pn"),
    pytest.param(
        {"preset": "quicknode", "endpoint": "polygon-endpoint", "key": QUICKNODE_TOKEN},
        137,
        f"wss://polygon-endpoint.quiknode.pro/{QUICKNODE_TOKEN}/",
        id="quicknode-own-node",
    ),
]


@pytest.mark.parametrize(("entry", "chain_id", "ws_url"), WS_ON_OTHER_CHAINS)
def test_preset_websocket_names_the_same_network_as_its_url(
    entry: dict[str, Any], chain_id: int, ws_url: str
) -> None:
    assert resolve(entry, chain_id).ws_url == ws_url


def test_a_websocket_written_in_the_entry_wins_over_the_preset() -> None:
    own = "wss://my-node.example.com/ws"
    assert resolve({"preset": "infura", "key": INFURA_KEY, "ws_url": own}).ws_url == own


def test_an_explicit_url_gets_no_websocket_from_the_preset() -> None:
    # A regional node's URL is another node than the preset's: its WebSocket is unknown.
    regional = f"https://nd-123-456-789.p2pify.com/{CHAINSTACK_KEY}"
    assert resolve({"preset": "chainstack", "key": CHAINSTACK_KEY, "url": regional}).ws_url == ""


def test_a_bad_websocket_url_is_reported_under_its_key() -> None:
    assert problems_of({"url": "https://node.example.com", "ws_url": "https://x.example"}) == [
        "chains[0].upstreams[0].ws_url: not a WebSocket URL (expected ws:// or wss://)"
    ]


# --- kind and failure domain -----------------------------------------------------------------

KIND_AND_DOMAIN = {
    # preset: (kind, failure domain); AWS hosting is documented for Infura, Alchemy and AMB
    "infura": ("centralized", "aws"),
    "alchemy": ("centralized", "aws"),
    "amb": ("centralized", "aws"),
    "quicknode": ("centralized", "quicknode"),
    "chainstack": ("centralized", "chainstack"),
    "ankr": ("centralized", "ankr"),
    "drpc": ("decentralized", "drpc"),
    "pokt": ("decentralized", "pokt"),
    "lava": ("decentralized", "lava"),
    "publicnode": ("centralized", "allnodes"),
    "onerpc": ("centralized", "automata"),
    "merkle": ("centralized", "merkle"),
}

# Enough for every preset to produce a URL for chain id 1.
FULL_ENTRY = {"key": "k3y", "endpoint": "my-endpoint", "node_id": AMB_NODE, "region": AMB_REGION}


def test_every_preset_has_a_row_here() -> None:
    assert set(PRESETS) == set(KIND_AND_DOMAIN)


@pytest.mark.parametrize(("preset", "expected"), KIND_AND_DOMAIN.items())
def test_preset_gives_its_upstream_kind_and_failure_domain(
    preset: str, expected: tuple[str, str]
) -> None:
    takes_key = "{key}" in PRESETS[preset].url
    entry = {k: v for k, v in FULL_ENTRY.items() if takes_key or k != "key"}
    upstream = resolve({"preset": preset, **entry})
    assert (upstream.kind, upstream.domain) == expected


def test_only_aws_hosted_providers_share_a_failure_domain() -> None:
    by_domain: dict[str, set[str]] = {}
    for name, preset in PRESETS.items():
        by_domain.setdefault(preset.domain, set()).add(name)
    shared = {domain: names for domain, names in by_domain.items() if len(names) > 1}
    assert shared == {"aws": {"infura", "alchemy", "amb"}}


def test_kind_and_domain_written_in_the_entry_override_the_preset() -> None:
    upstream = resolve({"preset": "drpc", "kind": "centralized", "domain": "cloudflare"})
    assert (upstream.kind, upstream.domain) == ("centralized", "cloudflare")


def test_upstream_is_named_after_its_preset() -> None:
    assert resolve({"preset": "alchemy", "key": ALCHEMY_KEY}).name == "alchemy"


# --- what a preset cannot do -----------------------------------------------------------------

PRESET_PROBLEMS = [
    pytest.param(
        {"preset": "infura"},
        1,
        "chains[0].upstreams[0]: preset 'infura' needs a `key`",
        id="infura-without-key",
    ),
    pytest.param(
        {"preset": "alchemy"},
        1,
        "chains[0].upstreams[0]: preset 'alchemy' needs a `key`",
        id="alchemy-without-key",
    ),
    pytest.param(
        {"preset": "ankr"},  # its keyless endpoint answers 'Unauthorized' since 2025-03
        1,
        "chains[0].upstreams[0]: preset 'ankr' needs a `key`",
        id="ankr-without-key",
    ),
    pytest.param(
        {"preset": "amb", "node_id": AMB_NODE, "region": AMB_REGION},
        1,
        "chains[0].upstreams[0]: preset 'amb' needs a `key`",
        id="amb-without-token",
    ),
    pytest.param(
        {"preset": "quicknode", "key": QUICKNODE_TOKEN},
        1,
        "chains[0].upstreams[0]: preset 'quicknode' needs `endpoint`",
        id="quicknode-without-endpoint",
    ),
    pytest.param(
        {"preset": "amb", "node_id": AMB_NODE, "key": AMB_TOKEN},
        1,
        "chains[0].upstreams[0]: preset 'amb' needs `region`",
        id="amb-without-region",
    ),
    pytest.param(
        {"preset": "amb", "key": AMB_TOKEN},
        1,
        "chains[0].upstreams[0]: preset 'amb' needs `node_id`, `region`",
        id="amb-without-node-or-region",
    ),
    pytest.param(
        {"preset": "chainstack", "key": CHAINSTACK_KEY},
        137,
        "chains[0].upstreams[0]: preset 'chainstack' has no network for chain id 137 "
        "(known: ethereum (1), sepolia (11155111)); give a `url` instead",
        id="chainstack-polygon",
    ),
    pytest.param(
        {"preset": "infura", "key": INFURA_KEY},
        100,  # Infura documents no Gnosis endpoint
        "chains[0].upstreams[0]: preset 'infura' has no network for chain id 100 (known: "
        "ethereum (1), optimism (10), bsc (56), polygon (137), zksync (324), base (8453), "
        "arbitrum (42161), avalanche (43114), linea (59144), base-sepolia (84532), "
        "arbitrum-sepolia (421614), scroll (534352), sepolia (11155111)); give a `url` instead",
        id="infura-gnosis",
    ),
    pytest.param(
        {"preset": "drpc"},
        250,  # a chain the table does not have
        "chains[0].upstreams[0]: preset 'drpc' has no public endpoint for chain id 250 (it "
        "has one for ethereum (1), base (8453), optimism (10), arbitrum (42161), polygon "
        "(137), bsc (56), avalanche (43114), gnosis (100), linea (59144), scroll (534352), "
        "zksync (324), base-sepolia (84532), arbitrum-sepolia (421614)); give a `key` or a `url`",
        id="drpc-keyless-unknown-chain",
    ),
    pytest.param(
        {"preset": "lava", "key": LAVA_KEY},  # no gateway spec id documented for Base
        8453,
        "chains[0].upstreams[0]: preset 'lava' has no network for chain id 8453 (known: "
        "ethereum (1), optimism (10), polygon (137), arbitrum (42161)); give a `url` instead",
        id="lava-keyed-base",
    ),
    pytest.param(
        {"preset": "pokt", "key": "app-key"},
        8453,
        "chains[0].upstreams[0]: preset 'pokt' takes no `key` (its endpoint is public)",
        id="pokt-key-would-be-dropped",
    ),
    pytest.param(
        {"preset": "merkle"},
        8453,
        "chains[0].upstreams[0]: preset 'merkle' keyless serves Ethereum mainnet (chain id 1) "
        "only, not chain id 8453; give a `url` instead",
        id="merkle-base",
    ),
    pytest.param(
        {"preset": "merkle", "key": "a-key-with-no-place"},
        1,
        "chains[0].upstreams[0]: preset 'merkle' takes no `key` (its endpoint is public)",
        id="merkle-key-would-be-dropped",
    ),
]


@pytest.mark.parametrize(("entry", "chain_id", "problem"), PRESET_PROBLEMS)
def test_preset_that_cannot_produce_a_url_says_what_is_missing(
    entry: dict[str, Any], chain_id: int, problem: str
) -> None:
    assert problems_of(entry, chain_id) == [problem]


def test_preset_with_a_network_table_serves_other_chains() -> None:
    assert resolve({"preset": "drpc", "key": DRPC_KEY}, chain_id=137).url == (
        f"https://lb.drpc.live/polygon/{DRPC_KEY}"
    )


def test_preset_naming_the_users_own_node_serves_whatever_chain_that_node_is_on() -> None:
    entry = {"preset": "quicknode", "endpoint": "polygon-endpoint", "key": QUICKNODE_TOKEN}
    assert resolve(entry, chain_id=137).url == (
        f"https://polygon-endpoint.quiknode.pro/{QUICKNODE_TOKEN}/"
    )


# --- the zero-config default -----------------------------------------------------------------

# providers.md section 5, "Exclude": keyed, delisted, deprecated, shut down, a shared demo key.
EXCLUDED_ENDPOINTS = (
    "rpc.ankr.com/eth",
    "eth.llamarpc.com",
    "cloudflare-eth.com",
    "blastapi.io",
    "/v2/demo",
)


@pytest.fixture(scope="module")
def default_mainnet() -> tuple[UpstreamConfig, ...]:
    config = load_config(None, env={})
    (mainnet,) = [chain for chain in config.chains if chain.chain_id == 1]
    return mainnet.upstreams


def test_default_serves_mainnet_over_at_least_four_failure_domains(
    default_mainnet: tuple[UpstreamConfig, ...],
) -> None:
    assert len({upstream.domain for upstream in default_mainnet}) >= 4


def test_default_has_at_least_two_decentralized_operators(
    default_mainnet: tuple[UpstreamConfig, ...],
) -> None:
    decentralized = {up.domain for up in default_mainnet if up.kind == "decentralized"}
    assert len(decentralized) >= 2


def test_default_upstreams_are_keyless_https(default_mainnet: tuple[UpstreamConfig, ...]) -> None:
    for upstream in default_mainnet:
        assert urlsplit(upstream.url).scheme == "https", upstream.url
        assert upstream.key is None and not upstream.headers, upstream.name


def test_default_uses_no_endpoint_providers_md_excludes(
    default_mainnet: tuple[UpstreamConfig, ...],
) -> None:
    used = [
        (upstream.url, excluded)
        for upstream in default_mainnet
        for excluded in EXCLUDED_ENDPOINTS
        if excluded in upstream.url
    ]
    assert used == []


# --- other chains: each preset's documented URL, per chain of the table -------------------------

# Written out by hand from the providers' documentation (the chain table cites each page), so
# that a slug changed in the table by mistake fails here.
URLS_ON_OTHER_CHAINS = [
    # Base (8453)
    (
        {"preset": "infura", "key": INFURA_KEY},
        8453,
        f"https://base-mainnet.infura.io/v3/{INFURA_KEY}",
    ),
    (
        {"preset": "alchemy", "key": ALCHEMY_KEY},
        8453,
        f"https://base-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
    ),
    ({"preset": "ankr", "key": ANKR_TOKEN}, 8453, f"https://rpc.ankr.com/base/{ANKR_TOKEN}"),
    ({"preset": "drpc", "key": DRPC_KEY}, 8453, f"https://lb.drpc.live/base/{DRPC_KEY}"),
    ({"preset": "drpc"}, 8453, "https://base.drpc.org"),
    ({"preset": "pokt"}, 8453, "https://base.api.pocket.network"),
    ({"preset": "lava"}, 8453, "https://base.lava.build"),
    ({"preset": "publicnode"}, 8453, "https://base-rpc.publicnode.com"),
    ({"preset": "onerpc"}, 8453, "https://public.1rpc.io/base"),
    ({"preset": "onerpc", "key": "my-1rpc-key"}, 8453, "https://1rpc.io/my-1rpc-key/base"),
    # OP Mainnet (10)
    (
        {"preset": "infura", "key": INFURA_KEY},
        10,
        f"https://optimism-mainnet.infura.io/v3/{INFURA_KEY}",
    ),
    (
        {"preset": "alchemy", "key": ALCHEMY_KEY},
        10,
        f"https://opt-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
    ),
    ({"preset": "pokt"}, 10, "https://op.api.pocket.network"),
    # Arbitrum One (42161)
    (
        {"preset": "infura", "key": INFURA_KEY},
        42161,
        f"https://arbitrum-mainnet.infura.io/v3/{INFURA_KEY}",
    ),
    (
        {"preset": "alchemy", "key": ALCHEMY_KEY},
        42161,
        f"https://arb-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
    ),
    (
        {"preset": "lava", "key": LAVA_KEY},
        42161,
        f"https://g.w.lavanet.xyz:443/gateway/arb1/rpc-http/{LAVA_KEY}",
    ),
    ({"preset": "pokt"}, 42161, "https://arb-one.api.pocket.network"),
    # Polygon PoS (137), BNB Smart Chain (56), Avalanche C-Chain (43114), Gnosis (100)
    (
        {"preset": "alchemy", "key": ALCHEMY_KEY},
        137,
        f"https://polygon-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
    ),
    ({"preset": "publicnode"}, 137, "https://polygon-bor-rpc.publicnode.com"),
    ({"preset": "ankr", "key": ANKR_TOKEN}, 56, f"https://rpc.ankr.com/bsc/{ANKR_TOKEN}"),
    (
        {"preset": "alchemy", "key": ALCHEMY_KEY},
        56,
        f"https://bnb-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
    ),
    (
        {"preset": "infura", "key": INFURA_KEY},
        43114,
        f"https://avalanche-mainnet.infura.io/v3/{INFURA_KEY}",
    ),
    ({"preset": "onerpc"}, 43114, "https://public.1rpc.io/avax/c"),
    ({"preset": "drpc", "key": DRPC_KEY}, 100, f"https://lb.drpc.live/gnosis/{DRPC_KEY}"),
    # Linea (59144), Scroll (534352), zkSync Era (324)
    (
        {"preset": "infura", "key": INFURA_KEY},
        59144,
        f"https://linea-mainnet.infura.io/v3/{INFURA_KEY}",
    ),
    (
        {"preset": "alchemy", "key": ALCHEMY_KEY},
        534352,
        f"https://scroll-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
    ),
    ({"preset": "ankr", "key": ANKR_TOKEN}, 324, f"https://rpc.ankr.com/zksync_era/{ANKR_TOKEN}"),
    # the testnets
    (
        {"preset": "infura", "key": INFURA_KEY},
        11155111,
        f"https://sepolia.infura.io/v3/{INFURA_KEY}",
    ),
    (
        {"preset": "alchemy", "key": ALCHEMY_KEY},
        84532,
        f"https://base-sepolia.g.alchemy.com/v2/{ALCHEMY_KEY}",
    ),
    (
        {"preset": "alchemy", "key": ALCHEMY_KEY},
        421614,
        f"https://arb-sepolia.g.alchemy.com/v2/{ALCHEMY_KEY}",
    ),
    ({"preset": "pokt"}, 421614, "https://arb-sepolia-testnet.api.pocket.network"),
]


@pytest.mark.parametrize(
    ("entry", "chain_id", "url"),
    [
        pytest.param(
            *row, id=f"{row[0]['preset']}-{row[1]}-{'keyed' if 'key' in row[0] else 'keyless'}"
        )
        for row in URLS_ON_OTHER_CHAINS
    ],
)
def test_a_preset_renders_its_documented_url_for_each_chain(
    entry: dict[str, Any], chain_id: int, url: str
) -> None:
    assert resolve(entry, chain_id).url == url


def test_every_provider_slug_and_public_endpoint_of_the_table_gives_a_url_of_that_provider() -> (
    None
):
    """Each (preset, chain) the chain table names resolves, keyed where the provider takes a
    key and keyless where it runs a public endpoint, to a URL on a host of that provider."""
    from rpcgate.config.chains import CHAINS

    hosts = {
        "infura": "infura.io",
        "alchemy": "alchemy.com",
        "chainstack": "chainstack.com",
        "ankr": "ankr.com",
        "drpc": "drpc.",
        "pokt": "pocket.network",
        "lava": "lava",
        "publicnode": "publicnode.com",
        "onerpc": "1rpc.io",
        "merkle": "merkle.io",
    }
    seen = 0
    for chain in CHAINS:
        for preset in chain.networks:
            entry = {"preset": preset, **({"key": "k3y"} if "{key}" in PRESETS[preset].url else {})}
            assert hosts[preset] in (urlsplit(resolve(entry, chain.chain_id).url).hostname or "")
            seen += 1
        for public in chain.public:
            if public.preset is not None:
                upstream = resolve({"preset": public.preset}, chain.chain_id)
                assert upstream.url == public.url
                assert hosts[public.preset] in (urlsplit(upstream.url).hostname or "")
                seen += 1
    assert seen > 100
