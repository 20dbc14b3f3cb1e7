"""The documentation: a short README that is the front door, a reference site under docs/
(mkdocs.yml) that builds with --strict, links that resolve, the module table that lists
every module, and the README's recipes run as written: the config parses with rpcgate's
own parser, the miner answers --help, and three anvil nodes, the miner and rpcgate started
by the README's own commands serve one chain."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from rpcgate.config.settings import parse_config
from tests.harness.tools import anvil_binary, free_port, rpcgate_command, status_json

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
PACKAGE = REPO / "rpcgate"
MINER = REPO / "deploy" / "demo" / "miner.py"

README_MAX_LINES = 260
RUN_COMMAND = "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/rpcgate serve"

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
# [text](target) and ![alt](target); the target ends at whitespace or the closing paren.
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced code block as (language, body)."""
    return [(m[1], m[2]) for m in FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text without code blocks and inline code, where a link is not a link."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def heading_anchors(text: str) -> set[str]:
    """The anchors of a page's headings, as GitHub and mkdocs' toc spell them."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *$", FENCE.sub("", text), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).strip().replace(" ", "-")
        anchors.add(slug)
    return anchors


def readme_recipe() -> tuple[str, str]:
    """The README's first-config recipe: the shell block that runs the miner, and the YAML
    block after it (my-nodes.yaml)."""
    blocks = fenced_blocks(README.read_text())
    for i, (language, body) in enumerate(blocks):
        if language == "sh" and "deploy/demo/miner.py" in body:
            following = [b for lang, b in blocks[i + 1 :] if lang == "yaml"]
            assert following, "the recipe's config (a yaml block after the commands)"
            return body, following[0]
    raise AssertionError("README.md has no shell block running deploy/demo/miner.py")


# --- the README is the front door -----------------------------------------------------------


@pytest.mark.unit
def test_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines < README_MAX_LINES, f"README.md has {lines} lines: move reference to docs/"


@pytest.mark.unit
def test_readme_gives_the_run_and_test_commands() -> None:
    blocks = [body for language, body in fenced_blocks(README.read_text()) if language == "sh"]
    assert RUN_COMMAND in [line.strip() for b in blocks for line in b.splitlines()]
    assert "./scripts/test" in [b.strip() for b in blocks]
    assert os.access(REPO / "scripts" / "test", os.X_OK)
    # `.venv/bin/rpcgate` is the console script `pip install .` puts there.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "rpcgate" in project["scripts"]


@pytest.mark.unit
def test_every_relative_link_resolves() -> None:
    """README.md and every docs page: a relative link names an existing file, and an anchor
    into a Markdown page names one of its headings. Pages under docs/ link only within it
    (mkdocs publishes nothing else)."""
    broken = []
    checked = 0
    for page in markdown_files():
        for target in LINK.findall(prose(page.read_text())):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            checked += 1
            where = f"{page.relative_to(REPO)}: {target}"
            if not resolved.exists():
                broken.append(f"{where}: no such file")
            elif page.parent == DOCS and not resolved.is_relative_to(DOCS):
                broken.append(f"{where}: outside docs/, not on the site")
            elif (
                anchor
                and resolved.suffix == ".md"
                and anchor not in heading_anchors(resolved.read_text())
            ):
                broken.append(f"{where}: no heading with that anchor")
    assert checked >= 40, f"only {checked} links found: is the link pattern still right?"
    assert broken == []


@pytest.mark.unit
def test_readme_links_every_docs_page() -> None:
    linked = {
        (README.parent / target.partition("#")[0]).resolve()
        for target in LINK.findall(prose(README.read_text()))
    }
    assert set(DOCS.glob("*.md")) - {DOCS / "index.md"} <= linked
    assert DOCS / "index.md" in linked


# --- the README's recipes run ---------------------------------------------------------------


@pytest.mark.unit
def test_readme_config_parses_and_lists_the_recipes_nodes() -> None:
    commands, config_text = readme_recipe()
    config = parse_config(config_text, env={}, source="README.md, my-nodes.yaml")
    (chain,) = config.chains
    ports = re.search(r"^for port in ([\d ]+); do$", commands, re.M)
    assert ports, "the recipe starts its anvil nodes in a `for port in ...` loop"
    anvil_ports = [int(p) for p in ports[1].split()]
    assert len(anvil_ports) == 3
    assert [u.url for u in chain.upstreams] == [f"http://127.0.0.1:{p}" for p in anvil_ports]
    assert f"--chain-id {chain.chain_id}" in commands
    assert len({u.domain for u in chain.upstreams}) == 3, "three failure domains"
    miner_line = next(line for line in commands.splitlines() if "miner.py" in line)
    assert [f"http://127.0.0.1:{p}" for p in anvil_ports] == [
        word for word in shlex.split(miner_line) if word.startswith("http")
    ]
    assert "--config my-nodes.yaml" in commands
    assert "`my-nodes.yaml`" in README.read_text()


def test_demo_miner_answers_help() -> None:
    result = subprocess.run(
        [sys.executable, str(MINER), "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "--block-time" in result.stdout and "urls" in result.stdout


def test_readme_recipe_serves_one_chain_over_three_anvil_nodes(tmp_path: Path) -> None:
    """The README's commands, run by bash as written, on free ports instead of the ones it
    names: three anvil nodes, the miner (a block every 0.3 s here, through its
    $DEMO_BLOCK_TIME), and rpcgate over the README's config; every node `ok` and the head
    moving."""
    commands, config_text = readme_recipe()
    listen = parse_config(config_text, env={}).listen_host_port()[1]
    anvil_ports = re.findall(r"^for port in ([\d ]+); do$", commands, re.M)[0].split()
    free = {int(port): free_port() for port in [listen, *anvil_ports]}

    def on_free_ports(text: str) -> str:
        return re.sub(r"\b(\d{4,5})\b", lambda m: str(free.get(int(m[1]), m[1])), text)

    config = tmp_path / "my-nodes.yaml"
    config.write_text(on_free_ports(config_text))
    script = on_free_ports(commands).replace("my-nodes.yaml", shlex.quote(str(config)))
    script = script.replace(".venv/bin/rpcgate", shlex.join(rpcgate_command()))
    tools = tmp_path / "bin"  # `anvil` and `python3` as the README's commands name them
    tools.mkdir()
    (tools / "anvil").symlink_to(anvil_binary())
    (tools / "python3").symlink_to(sys.executable)
    env = {**os.environ, "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}"}
    env["DEMO_BLOCK_TIME"] = "0.3"
    log = (tmp_path / "recipe.log").open("wb")
    recipe = subprocess.Popen(
        ["bash", "-c", script],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # one process group: the nodes and the miner stop with it
    )
    url = f"http://127.0.0.1:{free[listen]}"
    try:
        chain = wait_for_chain(url, recipe, tmp_path / "recipe.log")
        assert chain["consensus"]["head"]["number"] >= 2
        assert [u["state"] for u in chain["upstreams"]] == ["ok", "ok", "ok"]
        assert [u["domain"] for u in chain["upstreams"]] == ["zone-a", "zone-b", "zone-c"]
        number = rpc(url + "/devnet", "eth_blockNumber")
        block = rpc(url + "/31337", "eth_getBlockByNumber", [number, False])
        assert block["number"] == number and int(number, 16) >= 2
    finally:
        stop_group(recipe)
        log.close()


def wait_for_chain(url: str, recipe: subprocess.Popen[bytes], log: Path) -> dict[str, Any]:
    """The chain's status once every upstream is `ok` at a head of 2 or more."""
    deadline = time.monotonic() + 60
    chain: dict[str, Any] = {}
    while time.monotonic() < deadline:
        if recipe.poll() is not None:
            raise AssertionError(f"the recipe stopped ({recipe.returncode}):\n{log.read_text()}")
        with contextlib.suppress(OSError, ValueError):
            chain = status_json(url, timeout=2)["chains"][0]
            head = (chain.get("consensus") or {}).get("head") or {}
            states = [u["state"] for u in chain["upstreams"]]
            if (head.get("number") or 0) >= 2 and states == ["ok"] * 3:
                return chain
        time.sleep(0.2)
    raise AssertionError(f"no chain of three `ok` nodes: {chain}\n{log.read_text()}")


def rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []})
    request = urllib.request.Request(
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        answer = json.loads(reply.read())
    assert "error" not in answer, answer
    return answer["result"]


def stop_group(recipe: subprocess.Popen[bytes]) -> None:
    """rpcgate (the shell's foreground job) on SIGINT, which skips the drain's grace; the
    nodes and the miner (background jobs: a shell without job control has them ignore
    SIGINT) on SIGTERM; whatever is left of the group after 10 s on SIGKILL."""
    group = recipe.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        recipe.wait(15)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        recipe.wait(5)


# --- the site -------------------------------------------------------------------------------


def test_the_site_builds_strict(tmp_path: Path) -> None:
    """A broken link or anchor, or a page out of the nav, is a warning, and --strict makes
    it a failure (mkdocs.yml's `validation`)."""
    missing = [m for m in ("mkdocs", "material") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: pip install '.[docs]' (scripts/test does)")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    for page in DOCS.glob("*.md"):
        built = tmp_path / "index.html" if page.stem == "index" else tmp_path / page.stem
        assert built.exists(), f"{page.name} was not built"


# --- the architecture page ------------------------------------------------------------------


def _section(text: str, heading: str) -> str:
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.unit
def test_module_table_lists_every_module_of_the_package() -> None:
    table = _section((DOCS / "architecture.md").read_text(), "Modules")
    documented = {
        path
        for row in table.splitlines()
        if row.startswith("| `")
        for path in re.findall(r"`([\w/]+\.\w+)`", row.split(" | ")[0])
    }
    modules = {
        path.relative_to(PACKAGE).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.name not in ("__init__.py", "py.typed")
        and path.parent != PACKAGE
    }
    assert modules - documented == set(), "modules missing from docs/architecture.md"
    assert documented - modules == set(), "docs/architecture.md names modules that are gone"


@pytest.mark.unit
def test_the_layers_on_the_architecture_page_are_the_contracts() -> None:
    contract = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = (c["layers"] for c in contract["contracts"] if c["type"] == "layers")
    section = _section((DOCS / "architecture.md").read_text(), "The layers")
    (text,) = (body for language, body in fenced_blocks(section) if language == "text")
    documented = [line.split("(")[0].strip() for line in text.strip().splitlines()]
    assert documented == [layer.replace("rpcgate.", "") for layer in layers]
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert {name for line in documented for name in line.split(" | ")} == subpackages
