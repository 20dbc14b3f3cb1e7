"""Every chain rpcgate knows by name, one row each: what it is, how fast it goes, what its
tags mean, what its blocks carry, and where its public endpoints and providers" URLs are.

One table per fact: a provider"s own facts (URL template, failure domain, kind, batch
limit) live in `presets.py`; what a provider calls a chain (its network slug) and the
public endpoints of a chain live here. A chain named in a config (`chains: [{name: base}]`)
is complete from its row: chain id, public upstreams, timing (`timing`) and finality; every
field written in the config wins over the row.

None of the URLs can be tried from where this was written: each carries the page or file
that documents it (`source`). The research behind the rows (what is certain, what is not,
what changed in 2025-26) is in docs/chains.md.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field

# Where the rows" facts are documented (each row cites one of these or its own page).
_CHAINLIST = (
    "https://github.com/DefiLlama/chainlist/blob/0003ed38478ea9c069a4877dc70d024d27806e5a/"
    "constants/extraRpcs.js"
)
_POKT = "https://github.com/pokt-network/public-rpc/blob/main/supported-chains.json"
_INFURA = "https://docs.metamask.io/services/get-started/endpoints/"
_ALCHEMY_ERPC = "https://github.com/erpc/erpc/blob/main/thirdparty/alchemy.go"
_ANKR_ERPC = "https://github.com/erpc/erpc/blob/main/thirdparty/ankr.go"
_DRPC_ERPC = "https://github.com/erpc/erpc/blob/main/thirdparty/drpc.go"
_CHAINSTACK = "https://github.com/chainstack/dev-portal (docs/nodes-clouds-regions-and-locations)"
_LAVA_GATEWAY = "https://github.com/lavanet/docs (history 2025-02/03: gateway spec ids)"
_LAVA_THIRD_PARTY = "https://alchemy.com/node-providers/lava-network"
_PROVIDERS_MD = "shared/reference/providers.md (chainlist, before 0003ed3)"
_VIEM = "https://github.com/wevm/viem/blob/main/src/chains/definitions/"


@dataclass(frozen=True)
class Finality:
    """What `safe` and `finalized` mean on a chain. `tags`: its nodes answer them; `depth`:
    where they do not, a block this many below the head is taken as final (and safe)."""

    tags: bool
    safe: str
    finalized: str
    depth: int | None = None


@dataclass(frozen=True)
class Public:
    """A keyless public endpoint. `preset`: the provider (a row of presets.py) that runs
    it, whose failure domain and kind it shares; None for the chain"s own operator, whose
    `operator` and `domain` are given here."""

    preset: str | None
    url: str
    ws_url: str | None
    source: str
    operator: str = ""
    domain: str = ""


@dataclass(frozen=True)
class Chain:
    name: str
    title: str
    chain_id: int
    aliases: tuple[str, ...] = ()
    testnet: bool = False
    block_time_s: float = 12.0
    finality: Finality = field(default_factory=lambda: Finality(True, "", ""))
    # Whether keccak(RLP(header)) of the JSON fields in Ethereum"s order is the block"s
    # hash; "avalanche": in Avalanche"s order (coreth"s extra fields); False: the header
    # check is off for this chain. Every chain not False has a real block in
    # tests/fixtures/chains/ that recomputes.
    headers: str | bool = "ethereum"
    # Where old block hashes are kept (verify anchors old blocks on them): "eip2935", the
    # standard history contract; "arbitrum", ArbOS 40's own (L2 blocks, another window), not
    # read; "none". Where the contract is not documented here, "eip2935": the verifier proves
    # its code before it reads it, and falls back by itself where it is absent.
    history: str = "eip2935"
    # Whether eth_call can be executed locally as the chain's nodes execute it: an EVM
    # whose rules and precompiles are Ethereum's (an L2's own precompiles, P256 on the OP
    # stack and Polygon, Arbitrum's ArbSys and its NUMBER, are not).
    execution: bool = False
    # EIP-2718 types beyond Ethereum"s 0x00-0x04 that the chain"s blocks carry.
    tx_types: tuple[int, ...] = ()
    public: tuple[Public, ...] = ()
    # What each provider preset calls this chain in its URL: preset -> (slug, source).
    networks: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def paths(self) -> tuple[str, ...]:
        """Every name the chain answers to (its path segments), the chain id aside."""
        return (self.name, *self.aliases)


CHAINS: tuple[Chain, ...] = (
    Chain(
        "ethereum",
        "Ethereum",
        1,
        aliases=("mainnet", "eth", "ethereum-mainnet", "eth-mainnet"),
        testnet=False,
        block_time_s=12.0,
        finality=Finality(
            True,
            safe="latest justified checkpoint (~1 epoch behind head)",
            finalized="latest finalized checkpoint (~2 epochs, ~13 min)",
            depth=None,
        ),
        headers="ethereum",
        execution=True,  # Pectra (May 2025; Sepolia March 2025): EIP-2935 live
        tx_types=(),
        public=(
            Public(
                "publicnode",
                "https://ethereum-rpc.publicnode.com",
                "wss://ethereum-rpc.publicnode.com",
                _CHAINLIST,
            ),
            Public("drpc", "https://eth.drpc.org", "wss://eth.drpc.org", _CHAINLIST),
            Public("pokt", "https://eth.api.pocket.network", "wss://eth.api.pocket.network", _POKT),
            Public("onerpc", "https://public.1rpc.io/eth", None, _CHAINLIST),
            Public("merkle", "https://eth.merkle.io", None, _CHAINLIST),
            Public("lava", "https://eth1.lava.build", None, _PROVIDERS_MD),
        ),
        networks={
            "infura": ("mainnet", _INFURA),
            "alchemy": ("eth-mainnet", _ALCHEMY_ERPC),
            "chainstack": ("ethereum-mainnet", _CHAINSTACK),
            "ankr": ("eth", _ANKR_ERPC),
            "drpc": ("ethereum", _DRPC_ERPC),
            "pokt": ("eth", _POKT),
            "lava": ("eth1", _LAVA_GATEWAY),
            "publicnode": ("ethereum-rpc", _CHAINLIST),
            "onerpc": ("eth", _CHAINLIST),
        },
    ),
    Chain(
        "base",
        "Base",
        8453,
        aliases=("base-mainnet",),
        testnet=False,
        block_time_s=0.2,
        finality=Finality(
            True,
            safe="L2 block derived from batch data posted to L1",
            finalized="derived from L1 data in a finalized L1 block (~20-30 min)",
            depth=None,
        ),
        headers="ethereum",
        # Isthmus (May 2025) brought EIP-2935; P256VERIFY (Fjord) keeps eth_call remote.
        tx_types=(0x7E,),
        public=(
            Public(
                None,
                "https://mainnet.base.org",
                None,
                _VIEM + "base.ts",
                operator="Base (Coinbase), official",
                domain="coinbase",
            ),
            Public(
                "publicnode",
                "https://base-rpc.publicnode.com",
                "wss://base-rpc.publicnode.com",
                _CHAINLIST,
            ),
            Public("drpc", "https://base.drpc.org", "wss://base.drpc.org", _CHAINLIST),
            Public(
                "pokt", "https://base.api.pocket.network", "wss://base.api.pocket.network", _POKT
            ),
            Public("onerpc", "https://public.1rpc.io/base", None, _CHAINLIST),
            Public("lava", "https://base.lava.build", None, _CHAINLIST),
        ),
        networks={
            "infura": ("base-mainnet", _INFURA),
            "alchemy": ("base-mainnet", _ALCHEMY_ERPC),
            "ankr": ("base", _ANKR_ERPC),
            "drpc": ("base", _DRPC_ERPC),
            "pokt": ("base", _POKT),
            "publicnode": ("base-rpc", _CHAINLIST),
            "onerpc": ("base", _CHAINLIST),
        },
    ),
    Chain(
        "optimism",
        "OP Mainnet",
        10,
        aliases=("op", "op-mainnet", "optimism-mainnet", "opt-mainnet"),
        testnet=False,
        block_time_s=2.0,
        finality=Finality(
            True,
            safe="L2 block derived from batch data posted to L1",
            finalized="derived from L1 data in a finalized L1 block (~20-30 min)",
            depth=None,
        ),
        headers="ethereum",
        # Isthmus (May 2025) brought EIP-2935; P256VERIFY (Fjord) keeps eth_call remote.
        tx_types=(0x7E,),
        public=(
            Public(
                None,
                "https://mainnet.optimism.io",
                None,
                _VIEM + "optimism.ts",
                operator="OP Labs, official",
                domain="op-labs",
            ),
            Public(
                "publicnode",
                "https://optimism-rpc.publicnode.com",
                "wss://optimism-rpc.publicnode.com",
                _CHAINLIST,
            ),
            Public("drpc", "https://optimism.drpc.org", None, _CHAINLIST),
            Public("pokt", "https://op.api.pocket.network", "wss://op.api.pocket.network", _POKT),
            Public("onerpc", "https://public.1rpc.io/op", None, _CHAINLIST),
            Public("lava", "https://optimism.lava.build", None, _CHAINLIST),
        ),
        networks={
            "infura": ("optimism-mainnet", _INFURA),
            "alchemy": ("opt-mainnet", _ALCHEMY_ERPC),
            "ankr": ("optimism", _ANKR_ERPC),
            "drpc": ("optimism", _DRPC_ERPC),
            "pokt": ("op", _POKT),
            "lava": ("optm", _LAVA_THIRD_PARTY),
            "publicnode": ("optimism-rpc", _CHAINLIST),
            "onerpc": ("op", _CHAINLIST),
        },
    ),
    Chain(
        "arbitrum",
        "Arbitrum One",
        42161,
        aliases=("arbitrum-one", "arb", "arb1", "arb-one", "arbitrum-mainnet"),
        testnet=False,
        block_time_s=0.25,
        finality=Finality(
            True,
            safe="latest L2 block whose sequencer batch is in a safe L1 block",
            finalized="latest L2 block whose sequencer batch is in a finalized L1 block",
            depth=None,
        ),
        headers="ethereum",
        history="arbitrum",  # ArbOS 40: its own contract, 393,168 L2 blocks
        tx_types=(0x64, 0x65, 0x66, 0x68, 0x69, 0x6A, 0x78),
        public=(
            Public(
                None,
                "https://arb1.arbitrum.io/rpc",
                None,
                _VIEM + "arbitrum.ts",
                operator="Offchain Labs, official",
                domain="offchain-labs",
            ),
            Public(
                "publicnode",
                "https://arbitrum-one-rpc.publicnode.com",
                "wss://arbitrum-one-rpc.publicnode.com",
                _CHAINLIST,
            ),
            Public("drpc", "https://arbitrum.drpc.org", "wss://arbitrum.drpc.org", _CHAINLIST),
            Public("pokt", "https://arb-one.api.pocket.network", None, _POKT),
            Public("onerpc", "https://public.1rpc.io/arb", None, _CHAINLIST),
            Public("lava", "https://arb1.lava.build", None, _CHAINLIST),
        ),
        networks={
            "infura": ("arbitrum-mainnet", _INFURA),
            "alchemy": ("arb-mainnet", _ALCHEMY_ERPC),
            "ankr": ("arbitrum", _ANKR_ERPC),
            "drpc": ("arbitrum", _DRPC_ERPC),
            "pokt": ("arb-one", _POKT),
            "lava": ("arb1", _LAVA_THIRD_PARTY),
            "publicnode": ("arbitrum-one-rpc", _CHAINLIST),
            "onerpc": ("arb", _CHAINLIST),
        },
    ),
    Chain(
        "polygon",
        "Polygon PoS",
        137,
        aliases=("matic", "polygon-pos", "pol", "poly", "polygon-mainnet"),
        testnet=False,
        block_time_s=2.0,
        finality=Finality(
            True,
            safe="UNCERTAIN (bor; see finalized)",
            finalized="latest block covered by a Heimdall milestone (deterministic)",
            depth=None,
        ),
        headers="ethereum",
        tx_types=(0x7F,),
        public=(
            Public(
                "publicnode",
                "https://polygon-bor-rpc.publicnode.com",
                "wss://polygon-bor-rpc.publicnode.com",
                _CHAINLIST,
            ),
            Public("drpc", "https://polygon.drpc.org", None, _CHAINLIST),
            Public(
                "pokt", "https://poly.api.pocket.network", "wss://poly.api.pocket.network", _POKT
            ),
            Public("onerpc", "https://public.1rpc.io/matic", None, _CHAINLIST),
            Public("lava", "https://polygon.lava.build", None, _CHAINLIST),
        ),
        networks={
            "infura": ("polygon-mainnet", _INFURA),
            "alchemy": ("polygon-mainnet", _ALCHEMY_ERPC),
            "ankr": ("polygon", _ANKR_ERPC),
            "drpc": ("polygon", _DRPC_ERPC),
            "pokt": ("poly", _POKT),
            "lava": ("polygon1", _LAVA_THIRD_PARTY),
            "publicnode": ("polygon-bor-rpc", _CHAINLIST),
            "onerpc": ("matic", _CHAINLIST),
        },
    ),
    Chain(
        "bsc",
        "BNB Smart Chain",
        56,
        aliases=("bnb", "binance", "bnb-smart-chain", "bsc-mainnet"),
        testnet=False,
        block_time_s=0.45,
        finality=Finality(
            True,
            safe="latest justified block (fast finality, BEP-126)",
            finalized="latest finalized block; block n is final by n+2 normally",
            depth=None,
        ),
        headers="ethereum",
        tx_types=(),
        public=(
            Public(
                None,
                "https://bsc-dataseed.bnbchain.org",
                None,
                _CHAINLIST,
                operator="BNB Chain, official",
                domain="bnb-chain",
            ),
            Public(
                "publicnode",
                "https://bsc-rpc.publicnode.com",
                "wss://bsc-rpc.publicnode.com",
                _CHAINLIST,
            ),
            Public("drpc", "https://bsc.drpc.org", "wss://bsc.drpc.org", _CHAINLIST),
            Public("pokt", "https://bsc.api.pocket.network", "wss://bsc.api.pocket.network", _POKT),
            Public("onerpc", "https://public.1rpc.io/bnb", None, _CHAINLIST),
        ),
        networks={
            "infura": ("bsc-mainnet", _INFURA),
            "alchemy": ("bnb-mainnet", "https://www.alchemy.com/rpc/bnb"),
            "ankr": ("bsc", _ANKR_ERPC),
            "drpc": ("bsc", _DRPC_ERPC),
            "pokt": ("bsc", _POKT),
            "publicnode": ("bsc-rpc", _CHAINLIST),
            "onerpc": ("bnb", _CHAINLIST),
        },
    ),
    Chain(
        "avalanche",
        "Avalanche C-Chain",
        43114,
        aliases=("avax", "avalanche-c", "avalanche-c-chain", "avax-c"),
        testnet=False,
        block_time_s=2.0,
        finality=Finality(
            True,
            safe="same as latest: last accepted block",
            finalized="same as latest: last accepted block (single-slot finality)",
            depth=0,
        ),
        headers="avalanche",
        tx_types=(),
        public=(
            Public(
                None,
                "https://api.avax.network/ext/bc/C/rpc",
                "wss://api.avax.network/ext/bc/C/ws",
                _VIEM + "avalanche.ts",
                operator="Ava Labs, official",
                domain="ava-labs",
            ),
            Public(
                "publicnode",
                "https://avalanche-c-chain-rpc.publicnode.com",
                "wss://avalanche-c-chain-rpc.publicnode.com",
                _CHAINLIST,
            ),
            Public("drpc", "https://avalanche.drpc.org", "wss://avalanche.drpc.org", _CHAINLIST),
            Public("pokt", "https://avax.api.pocket.network", None, _POKT),
            Public("onerpc", "https://public.1rpc.io/avax/c", None, _CHAINLIST),
        ),
        networks={
            "infura": ("avalanche-mainnet", _INFURA),
            "alchemy": ("avax-mainnet", "https://www.alchemy.com/rpc/avalanche"),
            "ankr": ("avalanche", _ANKR_ERPC),
            "drpc": ("avalanche", _DRPC_ERPC),
            "pokt": ("avax", _POKT),
            "publicnode": ("avalanche-c-chain-rpc", _CHAINLIST),
            "onerpc": ("avax/c", _CHAINLIST),
        },
    ),
    Chain(
        "gnosis",
        "Gnosis",
        100,
        aliases=("xdai", "gnosis-chain", "gno"),
        testnet=False,
        block_time_s=5.0,
        finality=Finality(
            True,
            safe="latest justified checkpoint",
            finalized="latest finalized checkpoint (~2 epochs)",
            depth=None,
        ),
        headers=False,
        execution=True,  # Pectra on Gnosis (April 2025): EIP-2935 live
        tx_types=(),
        public=(
            Public(
                None,
                "https://rpc.gnosischain.com",
                "wss://rpc.gnosischain.com/wss",
                _VIEM + "gnosis.ts",
                operator="Gnosis, official",
                domain="gnosis",
            ),
            Public(
                "publicnode",
                "https://gnosis-rpc.publicnode.com",
                "wss://gnosis-rpc.publicnode.com",
                _CHAINLIST,
            ),
            Public("drpc", "https://gnosis.drpc.org", "wss://gnosis.drpc.org", _CHAINLIST),
            Public(
                "pokt",
                "https://gnosis.api.pocket.network",
                "wss://gnosis.api.pocket.network",
                _POKT,
            ),
            Public("onerpc", "https://public.1rpc.io/gnosis", None, _CHAINLIST),
        ),
        networks={
            "alchemy": ("gnosis-mainnet", "https://www.alchemy.com/rpc/gnosis"),
            "ankr": ("gnosis", _ANKR_ERPC),
            "drpc": ("gnosis", _DRPC_ERPC),
            "pokt": ("gnosis", _POKT),
            "publicnode": ("gnosis-rpc", _CHAINLIST),
            "onerpc": ("gnosis", _CHAINLIST),
        },
    ),
    Chain(
        "linea",
        "Linea",
        59144,
        aliases=("linea-mainnet",),
        testnet=False,
        block_time_s=1.0,
        finality=Finality(
            True,
            safe="UNCERTAIN (not documented)",
            finalized="L2 block proven on L1 in a finalized L1 block (hard finality, hours)",
            depth=None,
        ),
        headers=False,
        tx_types=(),
        public=(
            Public(
                None,
                "https://rpc.linea.build",
                "wss://rpc.linea.build",
                _VIEM + "linea.ts",
                operator="Consensys, official",
                domain="consensys",
            ),
            Public("publicnode", "https://linea-rpc.publicnode.com", None, _CHAINLIST),
            Public("drpc", "https://linea.drpc.org", None, _CHAINLIST),
            Public("pokt", "https://linea.api.pocket.network", None, _POKT),
            Public("onerpc", "https://public.1rpc.io/linea", None, _CHAINLIST),
        ),
        networks={
            "infura": ("linea-mainnet", _INFURA),
            "alchemy": ("linea-mainnet", _ALCHEMY_ERPC),
            "ankr": ("linea", _ANKR_ERPC),
            "drpc": ("linea", _DRPC_ERPC),
            "pokt": ("linea", _POKT),
            "publicnode": ("linea-rpc", _CHAINLIST),
            "onerpc": ("linea", _CHAINLIST),
        },
    ),
    Chain(
        "scroll",
        "Scroll",
        534352,
        aliases=("scroll-mainnet",),
        testnet=False,
        block_time_s=3.0,
        finality=Finality(
            True,
            safe="UNCERTAIN (possibly: batch committed on L1)",
            finalized="batch proof verified on L1 (Finalized in Scroll's lifecycle)",
            depth=None,
        ),
        headers=False,
        tx_types=(0x7E,),
        public=(
            Public(
                None,
                "https://rpc.scroll.io",
                "wss://wss-rpc.scroll.io/ws",
                _VIEM + "scroll.ts",
                operator="Scroll, official",
                domain="scroll",
            ),
            Public("drpc", "https://scroll.drpc.org", "wss://scroll.drpc.org", _CHAINLIST),
            Public("pokt", "https://scroll.api.pocket.network", None, _POKT),
            Public("onerpc", "https://public.1rpc.io/scroll", None, _CHAINLIST),
        ),
        networks={
            "infura": ("scroll-mainnet", _INFURA),
            "alchemy": ("scroll-mainnet", _ALCHEMY_ERPC),
            "ankr": ("scroll", _ANKR_ERPC),
            "drpc": ("scroll", _DRPC_ERPC),
            "pokt": ("scroll", _POKT),
            "onerpc": ("scroll", _CHAINLIST),
        },
    ),
    Chain(
        "zksync",
        "ZKsync Era",
        324,
        aliases=("zksync-era", "era", "zksync-mainnet"),
        testnet=False,
        block_time_s=1.0,
        finality=Finality(
            True,
            safe="UNCERTAIN (possibly: batch committed to L1)",
            finalized="batch executed on L1 (can lag hours: execution delay)",
            depth=None,
        ),
        headers=False,
        history="none",
        tx_types=(0x71, 0xFF),
        public=(
            Public(
                None,
                "https://mainnet.era.zksync.io",
                "wss://mainnet.era.zksync.io/ws",
                _VIEM + "zksync.ts",
                operator="Matter Labs, official",
                domain="matter-labs",
            ),
            Public("drpc", "https://zksync.drpc.org", None, _CHAINLIST),
            Public(
                "pokt",
                "https://zksync-era.api.pocket.network",
                "wss://zksync-era.api.pocket.network",
                _POKT,
            ),
            Public("onerpc", "https://public.1rpc.io/zksync2-era", None, _CHAINLIST),
        ),
        networks={
            "infura": ("zksync-mainnet", _INFURA),
            "alchemy": ("zksync-mainnet", _ALCHEMY_ERPC),
            "ankr": ("zksync_era", _ANKR_ERPC),
            "drpc": ("zksync", _DRPC_ERPC),
            "pokt": ("zksync-era", _POKT),
            "onerpc": ("zksync2-era", _CHAINLIST),
        },
    ),
    Chain(
        "sepolia",
        "Sepolia",
        11155111,
        aliases=("eth-sepolia", "ethereum-sepolia"),
        testnet=True,
        block_time_s=12.0,
        finality=Finality(
            True,
            safe="latest justified checkpoint",
            finalized="latest finalized checkpoint",
            depth=None,
        ),
        headers=False,
        execution=True,  # Pectra (May 2025; Sepolia March 2025): EIP-2935 live
        tx_types=(),
        public=(
            Public(
                "publicnode",
                "https://ethereum-sepolia-rpc.publicnode.com",
                "wss://ethereum-sepolia-rpc.publicnode.com",
                _CHAINLIST,
            ),
            Public(
                "pokt",
                "https://eth-sepolia-testnet.api.pocket.network",
                "wss://eth-sepolia-testnet.api.pocket.network",
                _POKT,
            ),
            Public("onerpc", "https://public.1rpc.io/sepolia", None, _CHAINLIST),
        ),
        networks={
            "infura": ("sepolia", _INFURA),
            "alchemy": ("eth-sepolia", _ALCHEMY_ERPC),
            "chainstack": ("ethereum-sepolia", _CHAINSTACK),
            "ankr": ("eth_sepolia", _PROVIDERS_MD),
            "drpc": ("sepolia", _DRPC_ERPC),
            "pokt": ("eth-sepolia-testnet", _POKT),
            "publicnode": ("ethereum-sepolia-rpc", _CHAINLIST),
            "onerpc": ("sepolia", _CHAINLIST),
        },
    ),
    Chain(
        "base-sepolia",
        "Base Sepolia",
        84532,
        aliases=("base-sepolia-testnet",),
        testnet=True,
        block_time_s=0.2,
        finality=Finality(
            True,
            safe="L2 block derived from batch data posted to Sepolia",
            finalized="derived from data in a finalized Sepolia block",
            depth=None,
        ),
        headers=False,
        # Isthmus (May 2025) brought EIP-2935; P256VERIFY (Fjord) keeps eth_call remote.
        tx_types=(0x7E,),
        public=(
            Public(
                None,
                "https://sepolia.base.org",
                None,
                _VIEM + "baseSepolia.ts",
                operator="Base (Coinbase), official",
                domain="coinbase",
            ),
            Public(
                "drpc", "https://base-sepolia.drpc.org", "wss://base-sepolia.drpc.org", _CHAINLIST
            ),
            Public("pokt", "https://base-sepolia-testnet.api.pocket.network", None, _POKT),
        ),
        networks={
            "infura": ("base-sepolia", _INFURA),
            "alchemy": ("base-sepolia", "https://www.alchemy.com/rpc/base-sepolia"),
            "drpc": ("base-sepolia", _DRPC_ERPC),
            "pokt": ("base-sepolia-testnet", _POKT),
        },
    ),
    Chain(
        "arbitrum-sepolia",
        "Arbitrum Sepolia",
        421614,
        aliases=("arb-sepolia", "arbitrum-sepolia-testnet"),
        testnet=True,
        block_time_s=0.25,
        finality=Finality(
            True,
            safe="latest L2 block whose batch is in a safe Sepolia block",
            finalized="latest L2 block whose batch is in a finalized Sepolia block",
            depth=None,
        ),
        headers=False,
        history="arbitrum",  # ArbOS 40: its own contract, 393,168 L2 blocks
        tx_types=(0x64, 0x65, 0x66, 0x68, 0x69, 0x6A, 0x78),
        public=(
            Public(
                None,
                "https://sepolia-rollup.arbitrum.io/rpc",
                None,
                _VIEM + "arbitrumSepolia.ts",
                operator="Offchain Labs, official",
                domain="offchain-labs",
            ),
            Public(
                "drpc",
                "https://arbitrum-sepolia.drpc.org",
                "wss://arbitrum-sepolia.drpc.org",
                _CHAINLIST,
            ),
            Public("pokt", "https://arb-sepolia-testnet.api.pocket.network", None, _POKT),
        ),
        networks={
            "infura": ("arbitrum-sepolia", _INFURA),
            "alchemy": ("arb-sepolia", "https://www.alchemy.com/rpc/arbitrum-sepolia"),
            "drpc": ("arbitrum-sepolia", _DRPC_ERPC),
            "pokt": ("arb-sepolia-testnet", _POKT),
        },
    ),
)

BY_NAME: dict[str, Chain] = {path: chain for chain in CHAINS for path in chain.paths}
BY_ID: dict[int, Chain] = {chain.chain_id: chain for chain in CHAINS}


def find_chain(name: str | None, chain_id: int | None = None) -> Chain | None:
    """The row a config"s chain is: by its name (or an alias), else by its chain id."""
    if name is not None and name.lower() in BY_NAME:
        return BY_NAME[name.lower()]
    return BY_ID.get(chain_id) if chain_id is not None else None


def unknown_chain_message(name: str) -> str:
    """What `config validate` says of a name the table does not know."""
    close = difflib.get_close_matches(name.lower(), list(BY_NAME), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    known = ", ".join(chain.name for chain in CHAINS)
    return (
        f"unknown chain {name!r}{hint}; known chains: {known}; "
        "or give a `chain_id` and `upstreams` for a chain of your own"
    )


def network_slug(preset: str, chain_id: int) -> str | None:
    """What provider `preset` calls chain `chain_id` in its URLs; None: no documented one."""
    chain = BY_ID.get(chain_id)
    if chain is None or preset not in chain.networks:
        return None
    return chain.networks[preset][0]


def networks_of(preset: str) -> dict[int, str]:
    """Every chain id a provider has a documented slug for."""
    return {c.chain_id: c.networks[preset][0] for c in CHAINS if preset in c.networks}


def public_endpoint(preset: str, chain_id: int) -> Public | None:
    """The keyless endpoint provider `preset` runs for a chain, if the table has one."""
    chain = BY_ID.get(chain_id)
    if chain is None:
        return None
    return next((p for p in chain.public if p.preset == preset), None)


# Timing from the block time: the defaults a chain"s row gives to the settings of the same
# names (a value written in the config wins). A lag threshold of about two seconds, or
# three blocks where three blocks are longer; polls at half a block, between a quarter of
# a second and a second; a hold of four blocks, between one and two seconds.
LAG_THRESHOLD_S = 2.0
MIN_LAG_BLOCKS = 3


def timing(block_time_s: float) -> dict[str, float | int]:
    return {
        "head_poll_interval": round(min(1.0, max(0.25, block_time_s / 2)), 3),
        "max_lag_blocks": max(MIN_LAG_BLOCKS, math.ceil(LAG_THRESHOLD_S / block_time_s)),
        "hold_ahead_s": round(min(2.0, max(1.0, 4 * block_time_s)), 3),
    }


def chains_reference() -> str:
    """The chain tables of docs/chains.md, generated from `CHAINS` (a test keeps them equal)."""
    lines = [
        "| Chain | Served at | Chain id | Block time | Poll / lag / hold | `safe`, `finalized` "
        "| Headers checked | Types it adds | Old blocks anchored by | eth_call executed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    anchors = {
        "eip2935": "EIP-2935's contract",
        "arbitrum": "not read (ArbOS 40's own contract)",
        "none": "nothing: parent hashes walked",
    }
    for chain in CHAINS:
        t = timing(chain.block_time_s)
        paths = ", ".join(f"`/{p}`" for p in (*chain.paths, str(chain.chain_id)))
        tags = (
            "answered"
            if chain.finality.tags
            else f"not answered: final at depth {chain.finality.depth}"
        )
        headers = {"ethereum": "yes", "avalanche": "yes (Avalanche's fields)"}.get(
            str(chain.headers), "no"
        )
        types = ", ".join(f"`{t:#x}`" for t in chain.tx_types) or "none"
        lines.append(
            f"| {chain.title}{' (testnet)' if chain.testnet else ''} | {paths} | "
            f"{chain.chain_id} | {chain.block_time_s:g} s | {t['head_poll_interval']:g} s / "
            f"{t['max_lag_blocks']} blocks / {t['hold_ahead_s']:g} s | {tags} | {headers} | "
            f"{types} | {anchors[chain.history]} | {'yes' if chain.execution else 'no'} |"
        )
    for chain in CHAINS:
        lines += ["", f"### {chain.title}", ""]
        lines.append(f"- `safe`: {chain.finality.safe}")
        lines.append(f"- `finalized`: {chain.finality.finalized}")
        lines += [
            "",
            "| Public endpoint | Operator | WebSocket | Documented at |",
            "|---|---|---|---|",
        ]
        for public in chain.public:
            operator = public.operator or f"preset `{public.preset}`"
            ws = f"`{public.ws_url}`" if public.ws_url else "none known"
            lines.append(f"| `{public.url}` | {operator} | {ws} | {_cite(public.source)} |")
        if chain.networks:
            lines += ["", "| Preset | Its name for the chain | Documented at |", "|---|---|---|"]
            for preset, (slug, source) in chain.networks.items():
                lines.append(f"| `{preset}` | `{slug}` | {_cite(source)} |")
    return "\n".join(lines) + "\n"


def _cite(source: str) -> str:
    if source.startswith("https://"):
        url = source.split(" ", 1)[0]
        return f"<{url}>" if url == source else f"<{url}> {source[len(url) + 1 :]}"
    return source
