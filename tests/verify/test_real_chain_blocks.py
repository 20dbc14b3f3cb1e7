"""Every real block of tests/fixtures/chains/<chain>/block_<number>.json (and header-only
answers, header_<number>.json: answers of public chains' nodes; tests/fixtures/chains/
SOURCES.md says where each came from) recomputes to its `hash` under its chain's header
layout and fails with any header field changed; a block with its full transactions
recomputes to its transactionsRoot.

A new chain's block is checked as soon as its file is added: a directory named for a chain
hashes Ethereum's header unless HEADER_LAYOUT_OF_CHAIN says otherwise (the chain table's
`headers` says the same of each chain, and can replace this table).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from rpcgate.verify import HEADER_LAYOUTS, header_mismatch, transactions_root_mismatch
from rpcgate.verify.headers import DEFAULT_HEADER_LAYOUT

pytestmark = pytest.mark.unit

CHAIN_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chains"
# The chains whose headers are not laid out as Ethereum's (rpcgate/verify/headers.py), by
# fixture directory. None: rpcgate does not recompute that chain's headers.
HEADER_LAYOUT_OF_CHAIN: dict[str, str | None] = {
    "avalanche": "avalanche",
    "gnosis": None,  # AuRa blocks: sealFields [step, signature] where mixHash and nonce are
}


def real_blocks() -> list[tuple[str, Path]]:
    """(chain, file) of every real block or header fixture, the chain being its directory."""
    paths = [*CHAIN_FIXTURES.glob("*/block_*.json"), *CHAIN_FIXTURES.glob("*/header_*.json")]
    return [(path.parent.name, path) for path in sorted(paths)]


def header_layout_of(chain: str) -> str | None:
    return HEADER_LAYOUT_OF_CHAIN.get(chain, DEFAULT_HEADER_LAYOUT)


def _load(path: Path) -> dict[str, Any]:
    block: dict[str, Any] = json.loads(path.read_text())
    return block


def _ids(blocks: list[tuple[str, Path]]) -> list[str]:
    return [f"{chain}/{path.stem}" for chain, path in blocks]


REAL_BLOCKS = real_blocks()
RECOMPUTABLE = [(c, p) for c, p in REAL_BLOCKS if header_layout_of(c) is not None]
ETHEREUM_LAYOUT = [(c, p) for c, p in REAL_BLOCKS if header_layout_of(c) == DEFAULT_HEADER_LAYOUT]
NOT_RECOMPUTABLE = [(c, p) for c, p in REAL_BLOCKS if header_layout_of(c) is None]
FULL_BLOCKS = [
    (c, p)
    for c, p in REAL_BLOCKS
    if any(isinstance(tx, dict) for tx in _load(p).get("transactions") or [])
]


def test_the_real_blocks_span_several_chains() -> None:
    # Guards the parametrisations below against a glob that finds nothing.
    chains = {chain for chain, _ in REAL_BLOCKS}
    assert {"ethereum", "avalanche", "arbitrum", "bsc", "polygon"} <= chains
    layouts = {header_layout_of(chain) for chain in chains} - {None}
    assert layouts <= set(HEADER_LAYOUTS) and len(layouts) >= 2


@pytest.mark.parametrize(("chain", "path"), RECOMPUTABLE, ids=_ids(RECOMPUTABLE))
def test_a_real_block_recomputes_under_its_chains_layout(chain: str, path: Path) -> None:
    layout = header_layout_of(chain)
    assert layout is not None
    assert header_mismatch(_load(path), layout) is None


@pytest.mark.parametrize(("chain", "path"), ETHEREUM_LAYOUT, ids=_ids(ETHEREUM_LAYOUT))
def test_a_non_avalanche_real_block_recomputes_with_the_default_layout(
    chain: str, path: Path
) -> None:
    assert header_mismatch(_load(path)) is None


@pytest.mark.parametrize(("chain", "path"), NOT_RECOMPUTABLE, ids=_ids(NOT_RECOMPUTABLE))
def test_a_real_block_of_a_chain_without_a_layout_does_not_recompute(
    chain: str, path: Path
) -> None:
    # When one does, its chain can have its header checked: give it a layout above.
    block = _load(path)
    assert all(header_mismatch(block, layout) is not None for layout in HEADER_LAYOUTS)


def _changed_hex(value: str) -> str:
    if value == "0x":
        return "0x01"
    return f"{value[:-1]}{int(value[-1], 16) ^ 1:x}"


@pytest.mark.parametrize(("chain", "path"), RECOMPUTABLE, ids=_ids(RECOMPUTABLE))
def test_a_real_block_with_any_header_field_changed_fails(chain: str, path: Path) -> None:
    block = _load(path)
    layout_name = header_layout_of(chain)
    assert layout_name is not None
    layout = HEADER_LAYOUTS[layout_name]
    present = [name for name, _ in (*layout.fields, *layout.fork_fields) if name in block]
    assert len(present) >= len(layout.fields)
    for name in present:
        changed = copy.deepcopy(block)
        changed[name] = _changed_hex(block[name])
        problem = header_mismatch(changed, layout_name)
        assert problem is not None and "header hash" in problem, name


@pytest.mark.parametrize(("chain", "path"), FULL_BLOCKS, ids=_ids(FULL_BLOCKS))
def test_a_real_block_with_full_transactions_recomputes_its_transactions_root(
    chain: str, path: Path
) -> None:
    assert transactions_root_mismatch(_load(path)) is None
