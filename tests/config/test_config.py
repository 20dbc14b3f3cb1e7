"""Loading a config file: what parses, what each mistake is reported as, and the CLI around it.

Loading is validation: every problem comes back at once, each under the key path where it
is, and the commands that read a config refuse to run on a broken one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rpcgate.config.settings import ConfigError, config_reference, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]
ALCHEMY_KEY = "kX3d7pQ9vR2mT8wY4zA6bC1eF5gH0jL"

# The shape of config the gateway was asked to accept: literal upstreams with their kind and
# failure domain, keyless presets, and a keyed preset whose key comes from the environment.
ISSUE_CONFIG = """\
listen: 0.0.0.0:8545
cache:
  redis_url: null
chains:
  - name: ethereum
    chain_id: 1
    upstreams:
      - url: https://ethereum-rpc.publicnode.com
        kind: centralized
        domain: allnodes
      - url: https://eth.drpc.org
        kind: decentralized
        domain: drpc
      - preset: pokt
      - preset: alchemy
        key: ${ALCHEMY_API_KEY}
  - name: sepolia
    chain_id: 11155111
    upstreams:
      - url: https://ethereum-sepolia-rpc.publicnode.com
"""

ONE_UPSTREAM = """\
chains:
  - name: ethereum
    chain_id: 1
    upstreams:
      - url: https://eth.merkle.io
"""


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        parse_config(textwrap.dedent(text), env={} if env is None else env)
    return raised.value.problems


# --- what parses -----------------------------------------------------------------------------


@pytest.mark.unit
def test_issue_config_parses_into_chains_and_upstreams() -> None:
    config = parse_config(ISSUE_CONFIG, env={"ALCHEMY_API_KEY": ALCHEMY_KEY})
    assert config.listen_host_port() == ("0.0.0.0", 8545)
    assert config.cache.redis_url is None
    assert [(chain.name, chain.chain_id) for chain in config.chains] == [
        ("ethereum", 1),
        ("sepolia", 11155111),
    ]
    ethereum = config.chains[0].upstreams
    assert [(up.name, up.url, up.kind, up.domain) for up in ethereum] == [
        (
            "ethereum-rpc.publicnode.com",
            "https://ethereum-rpc.publicnode.com",
            "centralized",
            "allnodes",
        ),
        ("eth.drpc.org", "https://eth.drpc.org", "decentralized", "drpc"),
        ("pokt", "https://eth.api.pocket.network", "decentralized", "pokt"),
        ("alchemy", f"https://eth-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}", "centralized", "aws"),
    ]


@pytest.mark.unit
def test_omitted_settings_take_their_defaults() -> None:
    config = parse_config(ONE_UPSTREAM, env={})
    assert (config.listen, config.log_level, config.cache.redis_url) == (
        "127.0.0.1:8545",
        "info",
        None,
    )
    assert (
        config.limits.max_body_bytes,
        config.limits.max_batch_items,
        config.limits.max_response_bytes,
        config.limits.max_concurrent_upstream_calls,
    ) == (5 * 1024 * 1024, 100, 64 * 1024 * 1024, 256)
    assert (
        config.failover.attempt_timeout_s,
        config.failover.deadline_s,
        config.failover.max_attempts,
    ) == (10.0, 30.0, 5)
    (upstream,) = config.chains[0].upstreams
    # Without a preset, an upstream is its own operator: its host names it and is its domain.
    assert (upstream.name, upstream.kind, upstream.domain, upstream.headers) == (
        "eth.merkle.io",
        "centralized",
        "eth.merkle.io",
        {},
    )


@pytest.mark.unit
def test_a_partly_written_section_keeps_the_defaults_of_the_rest() -> None:
    config = parse_config("failover:\n  max_attempts: 2\n" + ONE_UPSTREAM, env={})
    assert (
        config.failover.attempt_timeout_s,
        config.failover.deadline_s,
        config.failover.max_attempts,
    ) == (10.0, 30.0, 2)


@pytest.mark.unit
def test_integer_seconds_are_accepted_where_a_number_is_expected() -> None:
    config = parse_config("failover:\n  attempt_timeout_s: 3\n" + ONE_UPSTREAM, env={})
    assert config.failover.attempt_timeout_s == 3.0


NAMES = [
    pytest.param({"preset": "drpc"}, "drpc", id="preset"),
    pytest.param({"url": "https://eth.merkle.io"}, "eth.merkle.io", id="host"),
    pytest.param({"url": "https://lb.drpc.live/ethereum/k3y"}, "lb.drpc.live", id="host-not-key"),
    pytest.param({"preset": "drpc", "name": "drpc-paid", "key": "k3y"}, "drpc-paid", id="given"),
]


@pytest.mark.unit
@pytest.mark.parametrize(("entry", "name"), NAMES)
def test_upstream_name_defaults_to_its_preset_or_host(entry: dict[str, str], name: str) -> None:
    fields = "\n".join(f"        {key}: {value}" for key, value in entry.items())
    text = f"chains:\n  - name: ethereum\n    chain_id: 1\n    upstreams:\n      -\n{fields}\n"
    assert parse_config(text, env={}).chains[0].upstreams[0].name == name


@pytest.mark.unit
def test_upstreams_sharing_a_host_are_named_for_host_and_port() -> None:
    text = """\
        chains:
          - name: ethereum
            chain_id: 1
            upstreams:
              - url: http://127.0.0.1:8545
              - url: http://127.0.0.1:8546/
              - {url: "http://127.0.0.1:8547", name: mine}
              - url: http://[::1]:8545
              - url: http://[::1]:8546
              - url: https://node.internal/rpc
              - url: https://node.internal:8443/rpc
              - url: https://eth.drpc.org
              - preset: drpc
              - url: https://lonely.example/rpc
        """
    config = parse_config(textwrap.dedent(text), env={})
    assert [up.name for up in config.chains[0].upstreams] == [
        "127.0.0.1:8545",
        "127.0.0.1:8546",
        "mine",
        "[::1]:8545",
        "[::1]:8546",
        "node.internal:443",
        "node.internal:8443",
        "eth.drpc.org:443",  # the drpc preset is on that host too
        "drpc",
        "lonely.example",
    ]
    # Hosts are counted per chain: one upstream on a host keeps the host alone.
    single = "chains:\n  - {name: a, chain_id: 1, upstreams: [{url: 'http://127.0.0.1:8545'}]}\n"
    assert parse_config(single, env={}).chains[0].upstreams[0].name == "127.0.0.1"


@pytest.mark.unit
def test_upstreams_on_one_host_and_port_still_ask_for_names() -> None:
    problems = problems_of(
        """\
        chains:
          - name: devnet
            chain_id: 31337
            upstreams:
              - url: http://127.0.0.1:8545/a
              - url: http://127.0.0.1:8545/b
        """
    )
    assert problems == [
        "chains[0].upstreams[1].name: '127.0.0.1:8545' is already upstreams[0]; "
        "give each a distinct `name`"
    ]


@pytest.mark.unit
def test_two_upstreams_of_one_preset_are_told_apart_by_name() -> None:
    text = """\
        chains:
          - name: ethereum
            chain_id: 1
            upstreams:
              - {preset: alchemy, name: alchemy-a, key: key-a}
              - {preset: alchemy, name: alchemy-b, key: key-b}
        """
    config = parse_config(textwrap.dedent(text), env={})
    assert [up.name for up in config.chains[0].upstreams] == ["alchemy-a", "alchemy-b"]


# --- environment substitution ----------------------------------------------------------------

SUBSTITUTIONS = [
    pytest.param(
        "listen: ${RPCGATE_LISTEN}",
        {"RPCGATE_LISTEN": "0.0.0.0:9000"},
        "0.0.0.0:9000",
        id="whole-value",
    ),
    pytest.param(
        "listen: ${HOST:-127.0.0.1}:${PORT:-8545}",
        {},
        "127.0.0.1:8545",
        id="defaults",
    ),
    pytest.param(
        "listen: ${HOST:-127.0.0.1}:${PORT:-8545}",
        {"PORT": "9000"},
        "127.0.0.1:9000",
        id="set-variable-wins-over-default",
    ),
    pytest.param(
        "listen: ${HOST:-}127.0.0.1:8545",
        {},
        "127.0.0.1:8545",
        id="empty-default",
    ),
]


@pytest.mark.unit
@pytest.mark.parametrize(("line", "env", "listen"), SUBSTITUTIONS)
def test_env_references_are_substituted(line: str, env: dict[str, str], listen: str) -> None:
    assert parse_config(line + "\n" + ONE_UPSTREAM, env=env).listen == listen


@pytest.mark.unit
def test_env_substitution_reaches_into_urls_and_headers() -> None:
    config = parse_config(
        textwrap.dedent(
            """\
            chains:
              - name: ethereum
                chain_id: 1
                upstreams:
                  - url: https://${NODE_HOST}/rpc
                    headers:
                      Authorization: Bearer ${NODE_TOKEN}
            """
        ),
        env={"NODE_HOST": "node.internal:8545", "NODE_TOKEN": "t0ken"},
    )
    (upstream,) = config.chains[0].upstreams
    assert (upstream.url, upstream.headers) == (
        "https://node.internal:8545/rpc",
        {"Authorization": "Bearer t0ken"},
    )


@pytest.mark.unit
def test_missing_env_variable_is_named_with_its_key_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # The env passed in is the whole environment: the process's own is not consulted.
    monkeypatch.setenv("ALCHEMY_API_KEY", ALCHEMY_KEY)
    assert "chains[0].upstreams[3].key: environment variable ALCHEMY_API_KEY is not set" in (
        problems_of(ISSUE_CONFIG, env={})
    )


@pytest.mark.unit
def test_missing_env_variable_in_a_header_is_named_with_its_key_path() -> None:
    problems = problems_of(
        """\
        chains:
          - name: ethereum
            chain_id: 1
            upstreams:
              - url: https://node.internal/rpc
                headers: {Authorization: "Bearer ${NODE_TOKEN}"}
        """
    )
    assert problems == [
        "chains[0].upstreams[0].headers.Authorization: environment variable NODE_TOKEN is not set"
    ]


# --- every problem, with its key path --------------------------------------------------------

UPSTREAM_KEYS = (
    "domain, endpoint, headers, key, kind, max_batch, name, node_id, preset, proxy, region, url, "
    "weight, ws_url"
)
ROOT_KEYS = (
    "admin, auth, cache, chains, cors, failover, filters, limits, listen, log_level, ops, "
    "server, shutdown, websocket"
)
PRESET_NAMES = (
    "infura, alchemy, quicknode, chainstack, ankr, drpc, pokt, lava, publicnode, onerpc, "
    "merkle, amb"
)


def chain_with(upstream: str) -> str:
    return f"chains:\n  - name: ethereum\n    chain_id: 1\n    upstreams:\n      - {upstream}\n"


SINGLE_PROBLEMS = [
    pytest.param(
        chain_with("url: ethereum-rpc.publicnode.com"),
        "chains[0].upstreams[0].url: not a URL (expected http:// or https://)",
        id="url-without-scheme",
    ),
    pytest.param(
        chain_with("url: wss://eth.drpc.org"),
        "chains[0].upstreams[0].url: not a URL (expected http:// or https://)",
        id="websocket-url",
    ),
    pytest.param(
        chain_with("url: https://eth.merkle.io:99999"),
        "chains[0].upstreams[0].url: not a URL (bad port)",
        id="url-bad-port",
    ),
    pytest.param(
        chain_with("{name: my-node}"),
        "chains[0].upstreams[0]: needs a `url` or a `preset`",
        id="upstream-without-url-or-preset",
    ),
    pytest.param(
        chain_with("{url: https://eth.merkle.io, priority: 2}"),
        f"chains[0].upstreams[0].priority: unknown key (known: {UPSTREAM_KEYS})",
        id="unknown-upstream-key",
    ),
    pytest.param(
        chain_with("{url: https://eth.merkle.io, kind: private}"),
        "chains[0].upstreams[0].kind: must be one of 'centralized' | 'decentralized', "
        "not 'private'",
        id="unknown-kind",
    ),
    pytest.param(
        chain_with("{url: https://eth.merkle.io, headers: [Authorization]}"),
        "chains[0].upstreams[0].headers: must be a mapping of strings to strings",
        id="headers-not-a-mapping",
    ),
    pytest.param(
        chain_with("preset: infura-v3"),
        f"chains[0].upstreams[0].preset: unknown preset 'infura-v3' (known: {PRESET_NAMES})",
        id="unknown-preset",
    ),
    pytest.param(
        chain_with("https://eth.merkle.io"),
        "chains[0].upstreams[0]: must be a mapping",
        id="upstream-written-as-a-bare-url",
    ),
    pytest.param(
        "chains:\n  - {name: ethereum, chain_id: 1, upstreams: []}\n",
        "chains[0].upstreams: at least one upstream is needed",
        id="no-upstreams",
    ),
    pytest.param(
        "chains:\n  - {name: devnet, chain_id: 31337}\n",
        "chains[0].upstreams: at least one upstream is needed",
        id="upstreams-omitted",
    ),
    pytest.param(
        "chains:\n  - {name: ethereum, chain_id: 1, upstreams: https://eth.merkle.io}\n",
        "chains[0].upstreams: must be a list",
        id="upstreams-not-a-list",
    ),
    pytest.param(
        "chains: []\n",
        "chains: at least one chain is needed",
        id="no-chains",
    ),
    pytest.param(
        "listen: 127.0.0.1:8545\n",
        "chains: at least one chain is needed",
        id="chains-omitted",
    ),
    pytest.param(
        chain_with("url: https://eth.merkle.io").replace("chain_id: 1", 'chain_id: "1"'),
        "chains[0].chain_id: must be an integer, not '1'",
        id="chain-id-quoted",
    ),
    pytest.param(
        chain_with("url: https://eth.merkle.io").replace("chain_id: 1", "chain_id: -1"),
        "chains[0].chain_id: must be a positive integer",
        id="chain-id-negative",
    ),
    pytest.param(
        chain_with("url: https://eth.merkle.io").replace("name: ethereum", 'name: "137"'),
        "chains[0].name: must be letters, digits, - or _ and not all digits, not '137'",
        id="numeric-chain-name",
    ),
    pytest.param(
        chain_with("url: https://eth.merkle.io").replace("name: ethereum", "name: 137"),
        "chains[0].name: must be a string, not 137",
        id="chain-name-an-integer",
    ),
    pytest.param(
        chain_with("url: https://eth.merkle.io").replace("name: ethereum", "name: eth/main"),
        "chains[0].name: must be letters, digits, - or _ and not all digits, not 'eth/main'",
        id="chain-name-with-slash",
    ),
    pytest.param(
        "listen: localhost\n" + chain_with("url: https://eth.merkle.io"),
        "listen: must be HOST:PORT, not 'localhost'",
        id="listen-without-port",
    ),
    pytest.param(
        "listen: 127.0.0.1:70000\n" + chain_with("url: https://eth.merkle.io"),
        "listen: must be HOST:PORT, not '127.0.0.1:70000'",
        id="listen-port-out-of-range",
    ),
    pytest.param(
        "listen: 8545\n" + chain_with("url: https://eth.merkle.io"),
        "listen: must be a string, not 8545",
        id="listen-a-bare-port",
    ),
    pytest.param(
        "log_level: verbose\n" + chain_with("url: https://eth.merkle.io"),
        "log_level: must be one of 'debug' | 'info' | 'warning' | 'error', not 'verbose'",
        id="unknown-log-level",
    ),
    pytest.param(
        "cache:\n  redis_url: http://cache:6379/0\n" + chain_with("url: https://eth.merkle.io"),
        "cache.redis_url: must start with redis://, rediss://, unix://, redis+sentinel://, "
        "rediss+sentinel://, redis+cluster://, rediss+cluster://",
        id="redis-url-http",
    ),
    pytest.param(
        "failover:\n  attempt_timeout_s: 10\n  deadline_s: 5\n"
        + chain_with("url: https://eth.merkle.io"),
        "failover.deadline_s: must be at least failover.attempt_timeout_s",
        id="deadline-below-attempt-timeout",
    ),
    pytest.param(
        "failover:\n  deadline_s: 30s\n" + chain_with("url: https://eth.merkle.io"),
        "failover.deadline_s: must be a number, not '30s'",
        id="deadline-with-unit",
    ),
    pytest.param(
        "failover:\n  max_attempts: true\n" + chain_with("url: https://eth.merkle.io"),
        "failover.max_attempts: must be an integer, not True",
        id="max-attempts-boolean",
    ),
    pytest.param(
        "limits:\n  max_batch_items: 0\n" + chain_with("url: https://eth.merkle.io"),
        "limits.max_batch_items: must be at least 1",
        id="zero-batch-items",
    ),
    pytest.param(
        "cache: redis://cache:6379/0\n" + chain_with("url: https://eth.merkle.io"),
        "cache: must be a mapping",
        id="cache-written-as-a-url",
    ),
]


@pytest.mark.unit
@pytest.mark.parametrize(("text", "problem"), SINGLE_PROBLEMS)
def test_a_mistake_is_reported_once_under_its_key_path(text: str, problem: str) -> None:
    assert problems_of(text) == [problem]


@pytest.mark.unit
def test_misspelled_top_level_key_is_reported_with_what_it_leaves_missing() -> None:
    text = chain_with("url: https://eth.merkle.io").replace("chains:", "chain:")
    assert problems_of(text) == [
        f"chain: unknown key (known: {ROOT_KEYS})",
        "chains: at least one chain is needed",
    ]


@pytest.mark.unit
def test_duplicate_chain_names_and_ids_name_the_first_chain() -> None:
    problems = problems_of(
        """\
        chains:
          - {name: ethereum, chain_id: 1, upstreams: [{preset: drpc}]}
          - {name: ethereum, chain_id: 11155111, upstreams: [{url: https://sepolia.drpc.org}]}
          - {name: mainnet, chain_id: 1, upstreams: [{preset: pokt}]}
        """
    )
    assert problems == [
        "chains[1].name: 'ethereum' is already chains[0]",
        "chains[2].chain_id: 1 is already chains[0]",
    ]


@pytest.mark.unit
def test_duplicate_upstream_names_ask_for_distinct_names() -> None:
    problems = problems_of(
        """\
        chains:
          - name: ethereum
            chain_id: 1
            upstreams:
              - preset: drpc
              - url: https://eth.drpc.org
              - preset: drpc
                key: k3y
        """
    )
    assert problems == [
        "chains[0].upstreams[2].name: 'drpc' is already upstreams[0]; give each a distinct `name`"
    ]


@pytest.mark.unit
def test_every_problem_in_a_file_is_reported_at_once() -> None:
    problems = problems_of(
        """\
        listen: localhost
        tracing: true
        cache:
          redis_url: http://cache:6379
        failover:
          attempt_timeout_s: 10
          deadline_s: 5
          max_attempts: "3"
        chains:
          - name: ethereum
            chain_id: 1
            upstreams:
              - url: https://ethereum-rpc.publicnode.com
              - preset: pokt
              - url: ethereum-rpc.publicnode.com
              - preset: pokt
              - preset: infura-v3
                priority: 2
              - preset: alchemy
                key: ${ALCHEMY_API_KEY}
          - name: ethereum
            chain_id: 1
            upstreams: []
          - name: "137"
            chain_id: 137
            upstreams:
              - url: https://polygon-bor-rpc.publicnode.com
        """
    )
    expected = [
        "listen: must be HOST:PORT, not 'localhost'",
        f"tracing: unknown key (known: {ROOT_KEYS})",
        "cache.redis_url: must start with redis://, rediss://, unix://, redis+sentinel://, "
        "rediss+sentinel://, redis+cluster://, rediss+cluster://",
        "failover.deadline_s: must be at least failover.attempt_timeout_s",
        "failover.max_attempts: must be an integer, not '3'",
        "chains[0].upstreams[2].url: not a URL (expected http:// or https://)",
        "chains[0].upstreams[3].name: 'pokt' is already upstreams[1]; give each a distinct `name`",
        f"chains[0].upstreams[4].preset: unknown preset 'infura-v3' (known: {PRESET_NAMES})",
        f"chains[0].upstreams[4].priority: unknown key (known: {UPSTREAM_KEYS})",
        "chains[0].upstreams[5].key: environment variable ALCHEMY_API_KEY is not set",
        "chains[1].name: 'ethereum' is already chains[0]",
        "chains[1].chain_id: 1 is already chains[0]",
        "chains[1].upstreams: at least one upstream is needed",
        "chains[2].name: must be letters, digits, - or _ and not all digits, not '137'",
    ]
    missing = [problem for problem in expected if problem not in problems]
    assert missing == []
    # Anything else reported must be about one of these key paths, not a new invention.
    paths = {problem.split(": ", 1)[0] for problem in expected} | {"chains[0].upstreams[5]"}
    assert {problem.split(": ", 1)[0] for problem in problems} <= paths


@pytest.mark.unit
def test_text_that_is_not_yaml_is_reported_with_its_source() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("chains: [\n", env={}, source="gateway.yaml")
    (problem,) = raised.value.problems
    assert problem.startswith("gateway.yaml: not valid YAML:")


@pytest.mark.unit
def test_a_file_that_cannot_be_read_is_a_config_problem(tmp_path: Path) -> None:
    missing = tmp_path / "gateway.yaml"
    with pytest.raises(ConfigError) as raised:
        load_config(missing, env={})
    assert raised.value.problems == [f"{missing}: cannot read: No such file or directory"]


@pytest.mark.unit
def test_load_config_reads_the_file_with_the_env_given(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(ISSUE_CONFIG)
    config = load_config(path, env={"ALCHEMY_API_KEY": ALCHEMY_KEY})
    assert config.chains[0].upstreams[3].url == (
        f"https://eth-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}"
    )


# --- the CLI refuses a broken config ---------------------------------------------------------

BROKEN = """\
listen: localhost
chains:
  - name: ethereum
    chain_id: 1
    upstreams:
      - url: https://ethereum-rpc.publicnode.com
      - preset: pokt
      - url: ethereum-rpc.publicnode.com
"""
BROKEN_PROBLEMS = [
    "listen: must be HOST:PORT, not 'localhost'",
    "chains[0].upstreams[2].url: not a URL (expected http:// or https://)",
]


def rpcgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs the CLI as a user would; a server started by mistake is killed by the timeout."""
    base = {k: v for k, v in os.environ.items() if k not in ("RPCGATE_CONFIG", "ALCHEMY_API_KEY")}
    return subprocess.run(
        [sys.executable, "-m", "rpcgate.cli", *args],
        env={**base, **(env or {})},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def broken_file(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    return path


def test_config_validate_lists_every_problem_and_fails(broken_file: Path) -> None:
    result = rpcgate("config", "validate", str(broken_file))
    assert result.returncode != 0
    for problem in BROKEN_PROBLEMS:
        assert problem in result.stderr.splitlines()


def test_config_validate_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(ISSUE_CONFIG)
    result = rpcgate("config", "validate", str(path), env={"ALCHEMY_API_KEY": ALCHEMY_KEY})
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == f"{path}: ok (2 chain(s), 5 upstream(s))"


def test_serve_refuses_a_broken_config_without_starting(broken_file: Path) -> None:
    result = rpcgate("serve", "--config", str(broken_file), "--listen", "127.0.0.1:0")
    assert result.returncode != 0
    for problem in BROKEN_PROBLEMS:
        assert problem in result.stderr


def test_serve_reads_the_config_named_by_rpcgate_config(broken_file: Path) -> None:
    result = rpcgate("serve", "--listen", "127.0.0.1:0", env={"RPCGATE_CONFIG": str(broken_file)})
    assert result.returncode != 0
    assert str(broken_file) in result.stderr
    assert BROKEN_PROBLEMS[1] in result.stderr


# --- the documented reference is the schema's ------------------------------------------------

START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
CONFIG_PAGE = REPO / "docs" / "configuration.md"


@pytest.mark.unit
def test_documented_config_reference_is_generated_from_the_schema() -> None:
    page = CONFIG_PAGE.read_text()
    assert START in page and END in page, f"docs/configuration.md needs {START} ... {END}"
    documented = page.split(START, 1)[1].split(END, 1)[0]
    assert documented.strip() == config_reference().strip()


@pytest.mark.unit
def test_config_reference_documents_the_keys_a_config_file_uses() -> None:
    reference = config_reference()
    for key in (
        "listen",
        "cache.redis_url",
        "failover.deadline_s",
        "chains[].name",
        "chains[].chain_id",
        "chains[].upstreams[].url",
        "chains[].upstreams[].preset",
        "chains[].upstreams[].key",
        "chains[].upstreams[].kind",
        "chains[].upstreams[].domain",
    ):
        assert f"| `{key}` |" in reference, key


@pytest.mark.unit
def test_a_secret_of_the_wrong_type_is_not_echoed() -> None:
    text = "admin:\n  token: 12345678901234567890\n" + chain_with("url: https://eth.merkle.io")
    problems = problems_of(text)
    assert problems == ["admin.token: must be a string, not the value given"]
