"""The chain table (rpcgate/config/chains.py) and what a chain's name fills in
(chain_defaults.py): zero config serves every chain, a name is a whole chain, timing follows
the block time, and the documented table is the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from rpcgate.config.chains import BY_NAME, CHAINS, chains_reference, timing
from rpcgate.config.presets import PRESETS
from rpcgate.config.settings import ConfigError, load_config, parse_config

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "chains"

THE_CHAINS_THE_ISSUE_NAMES = {
    "ethereum": 1,
    "base": 8453,
    "optimism": 10,
    "arbitrum": 42161,
    "polygon": 137,
    "bsc": 56,
    "avalanche": 43114,
    "gnosis": 100,
    "linea": 59144,
    "scroll": 534352,
    "zksync": 324,
    "sepolia": 11155111,
    "base-sepolia": 84532,
    "arbitrum-sepolia": 421614,
}


def parse(chains: list[dict[str, Any]]) -> Any:
    return parse_config(yaml.safe_dump({"chains": chains}), env={})


def problems_of(chains: list[dict[str, Any]]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse(chains)
    return raised.value.problems


# --- the table ----------------------------------------------------------------------------------


def test_the_table_has_every_chain_the_issue_names_with_its_chain_id() -> None:
    assert {c.name: c.chain_id for c in CHAINS} == THE_CHAINS_THE_ISSUE_NAMES


def test_no_two_chains_share_a_name_an_alias_or_a_chain_id() -> None:
    paths = [p for c in CHAINS for p in c.paths]
    assert len(paths) == len(set(paths))
    assert len({c.chain_id for c in CHAINS}) == len(CHAINS)
    assert all(not p.isdigit() and p == p.lower() for p in paths)


def test_every_chain_has_public_endpoints_from_several_operators_each_documented() -> None:
    for chain in CHAINS:
        operators = {p.preset or p.operator for p in chain.public}
        assert len(operators) >= 3, chain.name
        decentralized = [
            p for p in chain.public if p.preset and PRESETS[p.preset].kind == "decentralized"
        ]
        assert decentralized, f"{chain.name}: no decentralized network among its endpoints"
        for public in chain.public:
            assert public.url.startswith("https://"), public.url
            assert public.source, f"{chain.name}: {public.url} says nowhere where it is documented"
            assert public.preset is None or public.preset in PRESETS
            assert public.preset is not None or (public.operator and public.domain)


def test_every_provider_slug_names_a_preset_and_where_it_is_documented() -> None:
    for chain in CHAINS:
        for preset, (slug, source) in chain.networks.items():
            assert preset in PRESETS and slug and source, (chain.name, preset)


def test_timing_follows_the_block_time() -> None:
    ethereum, arbitrum, base = timing(12.0), timing(0.25), timing(0.2)
    # Ethereum keeps the defaults it always had.
    assert ethereum == {"head_poll_interval": 1.0, "max_lag_blocks": 3, "hold_ahead_s": 2.0}
    # A fast chain: an upstream one poll behind is not lagging; about 2 s behind is.
    assert arbitrum["head_poll_interval"] == 0.25
    assert arbitrum["max_lag_blocks"] * 0.25 == pytest.approx(2.0)
    assert base["max_lag_blocks"] * 0.2 == pytest.approx(2.0)
    assert arbitrum["hold_ahead_s"] == 1.0


def test_the_documented_chain_table_is_generated_from_the_table() -> None:
    page = (REPO / "docs" / "chains.md").read_text()
    start, end = "<!-- chains-reference:start -->", "<!-- chains-reference:end -->"
    documented = page.split(start, 1)[1].split(end, 1)[0]
    assert documented.strip() == chains_reference().strip()


# --- zero config --------------------------------------------------------------------------------


def test_zero_config_serves_every_chain_of_the_table_on_demand() -> None:
    config = load_config(None, env={})
    assert [c.name for c in config.chains] == [c.name for c in CHAINS]
    for served, row in zip(config.chains, CHAINS, strict=True):
        assert served.chain_id == row.chain_id
        assert served.on_demand
        assert [u.url for u in served.upstreams] == [p.url for p in row.public]
        assert set(served.aliases) == set(row.aliases)


def test_public_upstreams_are_named_for_their_hosts_and_keep_their_operators_domain() -> None:
    base = parse([{"name": "base"}]).chains[0]
    by_name = {u.name: u for u in base.upstreams}
    assert by_name["base.drpc.org"].domain == "drpc"
    assert by_name["base.drpc.org"].kind == "decentralized"
    assert by_name["base.drpc.org"].ws_url == "wss://base.drpc.org"
    assert by_name["mainnet.base.org"].domain == "coinbase"


# --- a chain by name ----------------------------------------------------------------------------


def test_a_chain_by_name_is_a_whole_chain_with_its_rows_defaults() -> None:
    arbitrum = parse([{"name": "arbitrum"}]).chains[0]
    assert arbitrum.chain_id == 42161
    assert (arbitrum.head_poll_interval, arbitrum.max_lag_blocks, arbitrum.hold_ahead_s) == (
        0.25,
        8,
        1.0,
    )
    assert arbitrum.block_time_s == 0.25
    assert "arb1" in arbitrum.aliases
    assert not arbitrum.on_demand  # a chain written in a config is polled from the start


def test_an_alias_names_the_same_chain() -> None:
    op = parse([{"name": "op"}]).chains[0]
    assert op.chain_id == 10 and "optimism" in op.aliases and "op" not in op.aliases


def test_what_the_entry_says_wins_over_the_row() -> None:
    entry = {
        "name": "base",
        "upstreams": [{"url": "http://127.0.0.1:8545"}],
        "head_poll_interval": 0.1,
        "max_lag_blocks": 50,
        "header_format": "ethereum",
    }
    base = parse([entry]).chains[0]
    assert [u.url for u in base.upstreams] == ["http://127.0.0.1:8545"]  # no public ones
    assert (base.head_poll_interval, base.max_lag_blocks) == (0.1, 50)
    assert base.hold_ahead_s == timing(0.2)["hold_ahead_s"]


def test_a_preset_with_a_key_under_a_named_chain_uses_its_url_for_that_chain() -> None:
    base = parse([{"name": "base", "upstreams": [{"preset": "alchemy", "key": "k3y"}]}]).chains[0]
    assert base.upstreams[0].url == "https://base-mainnet.g.alchemy.com/v2/k3y"


def test_a_devnet_named_like_a_chain_of_the_table_keeps_its_own_chain_id() -> None:
    devnet = parse(
        [{"name": "base", "chain_id": 31337, "upstreams": [{"url": "http://127.0.0.1:8545"}]}]
    ).chains[0]
    assert devnet.chain_id == 31337
    assert devnet.aliases == () and devnet.head_poll_interval == 1.0


def test_a_chain_of_ones_own_gets_timing_from_its_block_time() -> None:
    own = parse(
        [{"name": "l3", "chain_id": 777, "block_time_s": 0.5, "upstreams": [{"url": "http://n"}]}]
    ).chains[0]
    assert (own.head_poll_interval, own.max_lag_blocks) == (0.25, 4)


def test_a_known_chain_id_under_another_name_gets_the_rows_defaults() -> None:
    mine = parse([{"name": "my-arb", "chain_id": 42161}]).chains[0]
    assert mine.max_lag_blocks == 8 and "arbitrum" in mine.aliases
    assert len(mine.upstreams) == len(BY_NAME["arbitrum"].public)


def test_an_unknown_name_gets_the_known_ones_and_the_closest() -> None:
    (problem,) = problems_of([{"name": "bsae"}])
    assert problem.startswith("chains[0].name: unknown chain 'bsae' (did you mean 'base'?)")
    for chain in CHAINS:
        assert chain.name in problem
    assert "chain_id" in problem  # how to serve a chain of one's own


def test_an_alias_another_chain_is_named_is_dropped() -> None:
    config = parse(
        [
            {"name": "eth", "chain_id": 31337, "upstreams": [{"url": "http://127.0.0.1:8545"}]},
            {"name": "ethereum"},
        ]
    )
    assert "eth" not in config.chains[1].aliases and "mainnet" in config.chains[1].aliases


# --- headers: every chain marked recomputable has a real block that recomputes --------------------


def test_every_chain_whose_headers_are_checked_has_a_real_block_that_recomputes() -> None:
    from rpcgate.verify.headers import header_mismatch

    for chain in CHAINS:
        if chain.headers is False:
            continue
        found = (
            sorted((FIXTURES / chain.name).glob("*.json"))
            if (FIXTURES / chain.name).exists()
            else []
        )
        blocks = [
            json.loads(p.read_text()) for p in found if p.name.startswith(("block_", "header_"))
        ]
        assert blocks, (
            f"{chain.name} is marked headers={chain.headers!r}: keep a real block of it in "
            f"{FIXTURES / chain.name}"
        )
        for block in blocks:
            assert header_mismatch(block, layout=chain.headers) is None, chain.name
