"""The deployment files: Dockerfile, .dockerignore, docker-compose.yml, deploy/, .env.example.

No container engine runs where the tests run, so nothing here builds an image or starts a
container. Instead: the Dockerfile's own pip commands are run into a fresh venv and the
result is served and health-checked; the compose file is read as YAML and checked service
by service (and given to `docker compose config` as well when a Compose v2 client is
installed); the configs they mount are loaded by rpcgate's loader; and the demo's miner
runs against real anvil nodes started as the compose file starts them, with a gateway on
the demo config in front.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from rpcgate.config.settings import Config, load_config, parse_config
from tests.conftest import GatewayFactory
from tests.harness.anvil import DEV_ADDRESSES, AnvilNode, sign_transaction, transaction_hash
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.redis_server import RedisServer
from tests.harness.tools import ANVIL_VERSION, anvil_binary, free_port, wait_for_http

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE_FILE = REPO / "docker-compose.yml"
CONTAINER_CONFIG = REPO / "deploy" / "config.yaml"
DEMO_CONFIG = REPO / "deploy" / "demo.yaml"
MINER_SCRIPT = REPO / "deploy" / "demo" / "miner.py"
CONTAINER_PORT = 8545
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)


# --- reading a Dockerfile -----------------------------------------------------------------


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, instruction: str) -> list[str]:
        return [args for name, args in self.instructions if name == instruction]

    def last(self, instruction: str) -> str:
        found = self.all(instruction)
        assert found, f"stage {self.name} has no {instruction}"
        return found[-1]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            values.update(dict(token.split("=", 1) for token in shlex.split(args)))
        return values


def dockerfile_stages() -> list[Stage]:
    """The Dockerfile's stages: continuations joined, comments dropped, the ARG defaults
    given before the first FROM substituted into the FROM lines."""
    # A continuation joins the next line, skipping comment lines in between.
    logical = re.sub(r"\\\n(\s*#.*\n)*", " ", DOCKERFILE.read_text())
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction, args = instruction.upper(), args.strip()
        if instruction == "FROM":
            image, _, name = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m[1]], args).partition(
                " AS "
            )
            stages.append(Stage(name.strip() or str(len(stages)), image.strip()))
        elif not stages and instruction == "ARG":
            arg_name, _, default = args.partition("=")
            global_args[arg_name] = default
        else:
            stages[-1].instructions.append((instruction, args))
    return stages


def exec_form(args: str) -> list[str]:
    form = json.loads(args)
    assert isinstance(form, list), f"not the exec form: {args}"
    return [str(item) for item in form]


def healthcheck_command(stage: Stage) -> list[str]:
    _options, _, command = stage.last("HEALTHCHECK").partition("CMD ")
    return exec_form(command)


def copies(stage: Stage) -> list[tuple[list[str], str]]:
    """COPY instructions from the build context (not --from another stage): sources, dest."""
    found = []
    for args in stage.all("COPY"):
        tokens = shlex.split(args)
        if any(t.startswith("--from") for t in tokens):
            continue
        paths = [t for t in tokens if not t.startswith("--")]
        found.append((paths[:-1], paths[-1]))
    return found


def copy_from_context(sources: list[str], dest: Path, into_dir: bool) -> None:
    """What `COPY sources dest` does with the build context: a directory's contents go to
    dest; files go into dest when it is a directory (or there are several), else to it."""
    for source in sources:
        root = REPO / source
        for path in build_context_files(source):
            if root.is_dir():
                target = dest / path.relative_to(root)
            elif into_dir or len(sources) > 1:
                target = dest / path.name
            else:
                target = dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)


def pip_runs(stage: Stage) -> list[list[str]]:
    """The RUN instructions of a stage that run pip, as argument lists (mounts dropped)."""
    runs = []
    for args in stage.all("RUN"):
        tokens = [t for t in shlex.split(args) if not t.startswith("--mount=")]
        if "pip" in tokens:
            runs.append(tokens)
    return runs


# --- .dockerignore: Docker's rules (last matching pattern wins, a match on a parent
# directory counts, `!` re-includes, `**` spans directories) ----------------------------


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negated
    return ignored


def build_context_files(source: str) -> list[Path]:
    """What `COPY source` takes from the build context: the files .dockerignore lets in."""
    patterns = dockerignore_patterns()
    root = REPO / source
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return [p for p in files if not dockerignored(str(p.relative_to(REPO)), patterns)]


# --- reading the compose file and the configs ---------------------------------------------


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return loaded


def services(profile: str | None = None) -> dict[str, dict[str, Any]]:
    """The services that `docker compose [--profile P] up` starts."""
    return {
        name: service
        for name, service in compose()["services"].items()
        if not service.get("profiles") or profile in service["profiles"]
    }


def mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host file, for the service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        found[container] = (REPO / host).resolve()
    return found


def env_refs(text: str) -> set[str]:
    """The variables a YAML file reads as ${NAME}, outside comments."""
    uncommented = re.sub(r"(^|\s)#.*$", "", text, flags=re.M)
    return set(_ENV_REF.findall(uncommented))


def env_example() -> dict[str, str]:
    """The variables .env.example names, commented out or not, with their example values."""
    found = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        match = re.fullmatch(r"#?\s*([A-Z_][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            found[match[1]] = match[2]
    return found


def config_with_keyed_upstreams() -> str:
    """deploy/config.yaml with its commented-out keyed upstreams uncommented."""
    return re.sub(
        r"^( +)# ((?:- |  )[a-z_]+: .*)$", r"\1\2", CONTAINER_CONFIG.read_text(), flags=re.M
    )


def load_miner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("demo_miner", MINER_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the Dockerfile -----------------------------------------------------------------------


@pytest.mark.unit
def test_dockerfile_builds_wheels_in_one_stage_and_runs_them_slim_and_unprivileged() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage: the build tools stay out of the image"
    build, runtime = stages[0], stages[-1]
    for stage in stages:
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", stage.base), stage.base
    # What the install test runs is all that the stages run, but for creating the user.
    assert len(pip_runs(build)) == len(build.all("RUN"))
    assert [run[run.index("pip") + 1] for run in pip_runs(build)] == ["wheel"]
    (install,) = pip_runs(runtime)
    others = [run for run in runtime.all("RUN") if "pip" not in shlex.split(run)]
    assert all(re.fullmatch(r"groupadd .* && useradd .*", run) for run in others), others
    assert install[install.index("pip") + 1] == "install"
    assert "--no-index" in install, "the runtime stage installs the built wheels, nothing else"
    assert any(f"from={build.name}" in run for run in runtime.all("RUN")), "wheels from build"
    assert not any("rpcgate" in sources for sources, _ in copies(runtime)), "no source tree"

    assert runtime.last("USER") == "10001:10001", "not root: a uid of its own"
    assert runtime.last("EXPOSE") == str(CONTAINER_PORT)
    assert runtime.last("STOPSIGNAL") == "SIGTERM"
    assert exec_form(runtime.last("CMD")) == ["rpcgate", "serve"]
    probe = " ".join(healthcheck_command(runtime))
    assert f"http://127.0.0.1:{CONTAINER_PORT}/healthz" in probe

    config_path = runtime.env()["RPCGATE_CONFIG"]
    assert (["deploy/config.yaml"], config_path) in copies(runtime)
    config = load_config(CONTAINER_CONFIG, env={})
    assert config.listen == f"0.0.0.0:{CONTAINER_PORT}", "reachable from outside the container"


@pytest.mark.unit
def test_dockerfile_bakes_in_no_secret() -> None:
    for stage in dockerfile_stages():
        for instruction, args in stage.instructions:
            if instruction in ("ENV", "ARG"):
                names = [token.split("=", 1)[0] for token in shlex.split(args)]
                assert not any(_SECRET_NAME.search(name) for name in names), args
            if instruction in ("COPY", "ADD"):
                assert ".env" not in shlex.split(args), args
    # The config baked into the image names keys only as ${VARIABLES}.
    for line in CONTAINER_CONFIG.read_text().splitlines():
        if re.match(r"\s*#?\s*-?\s*key:", line):
            assert re.search(r"key: \$\{[A-Z_]+\}$", line), line


@pytest.mark.unit
def test_dockerignore_lets_in_only_what_the_dockerfile_copies() -> None:
    patterns = dockerignore_patterns()
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".tools/node_modules/@foundry-rs/anvil/package.json",
        "tests/cli/test_cli.py",
        "tests/test_anything.py",
        ".env",
        "build/lib/rpcgate/cli/commands.py",
        "rpcgate.egg-info/PKG-INFO",
        "rpcgate/__pycache__/cli.cpython-311.pyc",
        ".mypy_cache/3.11/rpcgate/cli.data.json",
        "helm/rpcgate/values.yaml",
    ):
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for stage in dockerfile_stages():
        for sources, _ in copies(stage):
            for source in sources:
                assert not dockerignored(source, patterns), f"COPY {source}: ignored"
                assert build_context_files(source), f"COPY {source}: nothing to copy"
    assert (REPO / "rpcgate" / "cli" / "commands.py") in build_context_files("rpcgate")
    assert (REPO / "rpcgate" / "config" / "default.yaml") in build_context_files("rpcgate")
    assert (REPO / "rpcgate" / "ops" / "status.html") in build_context_files("rpcgate")


@pytest.mark.timeout(600)
def test_dockerfile_install_steps_give_a_working_rpcgate(
    tmp_path: Path, anvil_cluster: AnvilClusterFactory, redis_server: RedisServer
) -> None:
    """The Dockerfile's own pip commands, run as written (paths moved into tmp_path), from
    a build context made by its COPY lines and .dockerignore; then the image's command,
    config and HEALTHCHECK with that install. pip's download cache is kept between runs:
    `--no-cache-dir` only keeps the image small."""
    stages = dockerfile_stages()
    build, runtime = stages[0], stages[-1]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python, bin_dir = venv / "bin" / "python", venv / "bin"
    wheels = tmp_path / "wheels"

    workdir = tmp_path / "src"  # the build stage's WORKDIR, filled by its COPY lines
    assert build.last("WORKDIR").startswith("/")
    for sources, dest in copies(build):
        assert not dest.startswith("/"), "COPY into the WORKDIR"
        copy_from_context(sources, workdir / dest, into_dir=dest.endswith(("/", ".")))

    def run_as_written(tokens: list[str], cwd: Path) -> None:
        command = []
        for token in tokens:
            if token == "--no-cache-dir":
                continue
            token = token.replace("/wheels", str(wheels))
            command.append(str(python) if token == "python" else token)
        done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=540)
        assert done.returncode == 0, f"{shlex.join(command)}\n{done.stdout}\n{done.stderr}"

    for tokens in pip_runs(build):
        run_as_written(tokens, workdir)
    assert any(p.name.startswith("rpcgate-") for p in wheels.glob("*.whl"))
    for tokens in pip_runs(runtime):
        run_as_written(tokens, tmp_path)

    def rpcgate(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(bin_dir / "rpcgate"), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    assert rpcgate("--version").stdout.startswith("rpcgate ")
    where = [str(python), "-c", "import rpcgate; print(rpcgate.__file__)"]
    installed = subprocess.run(where, cwd=tmp_path, capture_output=True, text=True).stdout
    assert installed.startswith(str(venv)), f"rpcgate imported from {installed}, not the wheel"
    for config in (CONTAINER_CONFIG, DEMO_CONFIG):
        validated = rpcgate("config", "validate", str(config))
        assert validated.returncode == 0, validated.stderr

    # The image's command with the demo config, its one upstream a local node and its Redis
    # a local one (the mainnet default would reach for the internet).
    node = anvil_cluster(1)[0]
    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    demo["chains"][0]["upstreams"] = [{"name": "anvil-1", "url": node.url, "domain": "zone-a"}]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(demo))
    port = free_port()
    command = [*exec_form(runtime.last("CMD")), "--listen", f"127.0.0.1:{port}"]
    command[0] = str(bin_dir / command[0])
    env = {**os.environ, "RPCGATE_CONFIG": str(config_file), "REDIS_URL": redis_server.url}
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        try:
            wait_for_http(f"http://127.0.0.1:{port}/healthz", timeout=30)
        except RuntimeError:
            server.kill()
            raise AssertionError(f"{shlex.join(command)}: {server.communicate()[1]}") from None

        def healthcheck(port_now: int) -> int:
            probe = healthcheck_command(runtime)
            probe = [p.replace(f":{CONTAINER_PORT}/", f":{port_now}/") for p in probe]
            probe[0] = str(bin_dir / probe[0])
            return subprocess.run(probe, capture_output=True, timeout=10).returncode

        assert healthcheck(port) == 0
        assert healthcheck(free_port()) != 0, "the check fails when nothing answers"
        deadline = time.monotonic() + 20
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json") as reply:
                status = json.loads(reply.read())
            if status["cache"]["redis"] == "up" or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status["cache"]["redis"] == "up"
        assert status["chains"][0]["chain_id"] == demo["chains"][0]["chain_id"]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --- docker-compose.yml -------------------------------------------------------------------


@pytest.mark.unit
def test_compose_runs_the_gateway_beside_redis_behind_health_gates() -> None:
    runtime = dockerfile_stages()[-1]
    default = services()
    assert set(default) == {"gateway", "redis"}
    gateway, redis = default["gateway"], default["redis"]

    assert gateway["build"] == "."
    assert gateway["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert gateway["healthcheck"]["test"] == ["CMD", *healthcheck_command(runtime)]
    config_path = runtime.env()["RPCGATE_CONFIG"]
    assert mounts(gateway) == {config_path: CONTAINER_CONFIG}
    for volume in gateway["volumes"]:
        assert volume.endswith(":ro")
    assert gateway["env_file"] == [{"path": ".env", "required": False}], (
        "`docker compose up` works without a .env"
    )
    (published,) = gateway["ports"]
    assert published == f"${{RPCGATE_BIND:-127.0.0.1}}:{CONTAINER_PORT}:{CONTAINER_PORT}"

    drain = Config().shutdown  # on SIGTERM: /readyz 503 for grace_s, then calls finish
    stop_grace = int(gateway["stop_grace_period"].removesuffix("s"))
    assert stop_grace > drain.grace_s + drain.timeout_s, "Docker's SIGKILL comes after it"

    assert re.fullmatch(r"redis:\d+(\.\d+)*-alpine", redis["image"]), "the official image"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "ports" not in redis, "only the gateways reach Redis"
    assert load_config(CONTAINER_CONFIG, env={}).cache.redis_url == "redis://redis:6379/0"


@pytest.mark.unit
def test_compose_demo_profile_adds_three_anvils_a_miner_and_a_gateway_on_them() -> None:
    demo_only = set(services("demo")) - set(services())
    assert demo_only == {"anvil-1", "anvil-2", "anvil-3", "miner", "gateway-demo"}
    everything = services("demo")
    anvils = {name: everything[name] for name in ("anvil-1", "anvil-2", "anvil-3")}
    for anvil in anvils.values():
        assert anvil["image"] == f"ghcr.io/foundry-rs/foundry:v{ANVIL_VERSION}", "CI's anvil"
        assert anvil["entrypoint"] == ["anvil"]
        assert anvil["healthcheck"]["test"][:3] == ["CMD", "cast", "block-number"]
        assert "--no-mining" in anvil["command"], "the miner makes every block"
    commands = {tuple(anvil["command"]) for anvil in anvils.values()}
    assert len(commands) == 1, "one genesis: the same chain id, timestamp and base fee"

    healthy = {"condition": "service_healthy"}
    gateway = everything["gateway-demo"]
    assert gateway["depends_on"] == {
        "redis": healthy,
        **dict.fromkeys(anvils, healthy),
        "miner": {"condition": "service_started"},
    }
    assert gateway["healthcheck"] == everything["gateway"]["healthcheck"]
    assert gateway["env_file"] == everything["gateway"]["env_file"]
    config_path = dockerfile_stages()[-1].env()["RPCGATE_CONFIG"]
    assert mounts(gateway) == {config_path: DEMO_CONFIG}
    demo_port = gateway["ports"][0].rsplit(":", 2)[1]
    assert demo_port != everything["gateway"]["ports"][0].rsplit(":", 2)[1]

    miner = everything["miner"]
    assert miner["depends_on"] == dict.fromkeys(anvils, healthy)
    assert mounts(miner) == {miner["command"][1]: MINER_SCRIPT}
    assert miner["image"] == dockerfile_stages()[-1].base, "one Python image to pull"

    # The demo config serves the anvils' chain over exactly these nodes, one failure
    # domain each, and the miner mines exactly these nodes.
    config = load_config(DEMO_CONFIG, env={})
    (chain,) = config.chains
    anvil_flags = dict(
        arg.removeprefix("--").split("=", 1) for arg in next(iter(commands)) if "=" in arg
    )
    assert chain.chain_id == int(anvil_flags["chain-id"])
    urls = [upstream.url for upstream in chain.upstreams]
    assert {urlsplit(url).hostname for url in urls} == set(anvils)
    assert {urlsplit(url).port for url in urls} == {int(anvil_flags["port"])}
    assert len({upstream.domain for upstream in chain.upstreams}) == 3
    assert miner["environment"]["DEMO_NODES"].split(",") == urls
    assert config.listen == f"0.0.0.0:{CONTAINER_PORT}"


def _compose_v2() -> list[str] | None:
    """A Compose client that knows `env_file: {path, required}` (v2.24+), if installed."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        version = subprocess.run([*command, "version"], capture_output=True, text=True)
        found = re.search(r"version v?(\d+)\.(\d+)", version.stdout)
        if version.returncode == 0 and found and (int(found[1]), int(found[2])) >= (2, 24):
            return command
    return None


def test_compose_file_is_a_valid_compose_project(tmp_path: Path) -> None:
    """Checked by hand here; also by `docker compose config` where a Compose v2 client is
    installed (this machine has none unless someone installed one)."""
    project = compose()
    assert set(project) - {"name", "services", "volumes", "networks"} <= {
        key for key in project if key.startswith("x-")
    }
    known = {
        "build", "image", "command", "entrypoint", "environment", "env_file", "ports",
        "volumes", "depends_on", "healthcheck", "profiles", "restart", "stop_grace_period",
        "user",
    }  # fmt: skip
    for name, service in project["services"].items():
        assert set(service) <= known, f"{name}: {set(service) - known}"
        assert "image" in service or "build" in service, name
        assert "healthcheck" in service or name == "miner", f"{name} has no healthcheck"
        for dependency in service.get("depends_on", {}):
            needed = project["services"][dependency]
            assert not needed.get("profiles") or set(needed["profiles"]) <= set(
                service.get("profiles", [])
            ), f"{name} needs {dependency}, which its profile does not start"
        for host_path in mounts(service).values():
            assert host_path.is_file(), f"{name} mounts {host_path}, which does not exist"
    assert env_refs(COMPOSE_FILE.read_text()) <= set(env_example())

    command = _compose_v2()
    if command is None:
        return
    shutil.copy2(COMPOSE_FILE, tmp_path)
    shutil.copy2(DOCKERFILE, tmp_path)
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    for dot_env in (None, REPO / ".env.example"):  # without a .env, and with the example
        if dot_env is not None:
            shutil.copy2(dot_env, tmp_path / ".env")
        for profile in ([], ["--profile", "demo"]):
            checked = subprocess.run(
                [*command, *profile, "config", "--quiet"],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert checked.returncode == 0, checked.stderr


# --- the configs and the environment ------------------------------------------------------


@pytest.mark.unit
def test_container_config_is_the_zero_config_default_with_keys_from_the_environment() -> None:
    config = load_config(CONTAINER_CONFIG, env={})

    def served(chains: Any) -> list[Any]:
        return [
            (c.name, c.chain_id, c.on_demand, [(u.url, u.ws_url, u.domain) for u in c.upstreams])
            for c in chains
        ]

    assert served(config.chains) == served(load_config(None, env={}).chains)
    elsewhere = load_config(CONTAINER_CONFIG, env={"REDIS_URL": "redis://cache:6380/1"})
    assert elsewhere.cache.redis_url == "redis://cache:6380/1"

    # The keyed upstreams it shows, once uncommented, load with .env.example's variables.
    keyed_text = config_with_keyed_upstreams()
    keyed_refs = env_refs(keyed_text) - {"REDIS_URL"}
    assert keyed_refs, "the file shows how provider keys come in"
    assert keyed_refs <= set(env_example())
    example = {name: f"example-{name.lower()}" for name in keyed_refs}
    keyed = parse_config(keyed_text, example, "deploy/config.yaml, keyed upstreams uncommented")
    added = keyed.chains[0].upstreams[len(config.chains[0].upstreams) :]
    assert {u.preset for u in added} == {"infura", "alchemy", "quicknode", "chainstack"}
    for upstream in added:
        assert any(value in upstream.url for value in example.values()), upstream.url


def test_env_example_names_every_variable_and_dot_env_stays_out_of_git() -> None:
    referenced = set()
    for text in (config_with_keyed_upstreams(), DEMO_CONFIG.read_text(), COMPOSE_FILE.read_text()):
        referenced |= env_refs(text)
    assert referenced <= set(env_example()), referenced - set(env_example())
    # A value given in .env.example would be taken for a real one: keys are blank.
    for name, value in env_example().items():
        assert value == "" or not _SECRET_NAME.search(name), name
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", ".env"], cwd=REPO, capture_output=True
    )
    assert tracked.returncode != 0, ".env is tracked by git"


# --- the demo: the miner and the gateway on real anvil nodes -------------------------------


class ComposeAnvil(AnvilNode):
    """anvil run with the compose file's command line (host and port made local)."""

    def __init__(self, args: list[str]) -> None:
        flags = dict(a.removeprefix("--").split("=", 1) for a in args if "=" in a)
        super().__init__(chain_id=int(flags["chain-id"]), genesis_timestamp=int(flags["timestamp"]))
        self.compose_args = args

    def command(self, port: int) -> list[str]:
        local = {"--host": "--host=127.0.0.1", "--port": f"--port={port}"}
        return [anvil_binary(), *(local.get(a.split("=")[0], a) for a in self.compose_args)]


@pytest.fixture
def demo_nodes(anvil_cluster: AnvilClusterFactory) -> Iterator[list[AnvilNode]]:
    """Three anvil nodes on the compose file's genesis (the harness's lock-step cluster,
    checked against one node started with the compose file's own command line)."""
    args = services("demo")["anvil-1"]["command"]
    with ComposeAnvil(args) as as_composed:
        cluster = anvil_cluster(
            3, chain_id=as_composed.chain_id, genesis_timestamp=as_composed.genesis_timestamp
        )
        assert cluster.block_hashes(0) == [as_composed.block_hash(0)] * 3
    yield list(cluster)


def one_chain(nodes: list[AnvilNode], below: int | None = None) -> bool:
    """Whether the nodes hold the same blocks (up to the lowest head, or below `below`)."""
    top = min(node.block_number() for node in nodes) if below is None else below - 1
    return all(len({node.block_hash(n) for node in nodes}) == 1 for n in range(top + 1))


def test_demo_miner_script_keeps_three_anvil_nodes_on_one_chain(
    demo_nodes: list[AnvilNode],
) -> None:
    """The script as compose runs it: nodes from DEMO_NODES, a block every DEMO_BLOCK_TIME;
    a transaction sent to one node only is mined by all three; SIGTERM stops it."""
    env = {
        **os.environ,
        "DEMO_NODES": ",".join(node.url for node in demo_nodes),
        "DEMO_BLOCK_TIME": "0.2",
    }
    miner = subprocess.Popen(
        [sys.executable, str(MINER_SCRIPT)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until(lambda: min(n.block_number() for n in demo_nodes) >= 2, "blocks mined")
        raw = sign_transaction(chain_id=demo_nodes[0].chain_id, nonce=0, to=DEV_ADDRESSES[1])
        tx_hash = demo_nodes[0].send_raw_transaction(raw)
        wait_until(lambda: all(n.receipt(tx_hash) for n in demo_nodes), "mined everywhere")
        mined_in = max(block_of(node, tx_hash) for node in demo_nodes)
        wait_until(lambda: min(n.block_number() for n in demo_nodes) > mined_in + 1, "2 more")
    finally:
        miner.send_signal(signal.SIGTERM)
        output, _ = miner.communicate(timeout=10)
    assert miner.returncode == 0, output
    # Stopped in the middle of a round, the nodes may differ at the top block only.
    assert one_chain(demo_nodes, below=min(n.block_number() for n in demo_nodes)), output
    assert {block_of(node, tx_hash) for node in demo_nodes} == {mined_in}


def block_of(node: AnvilNode, tx_hash: str) -> int:
    receipt = node.receipt(tx_hash)
    assert receipt is not None, f"{tx_hash} is not mined on {node.url}"
    return int(receipt["blockNumber"], 16)


def test_demo_miner_catches_up_a_restarted_node_and_mends_a_fork(
    demo_nodes: list[AnvilNode],
) -> None:
    """What keeps the demo on one chain when Docker restarts a node, or a transaction
    races the miner; round by round, through the script's own functions."""
    miner = load_miner()
    urls = [node.url for node in demo_nodes]
    nonces = iter(range(10))

    def transaction() -> str:
        return sign_transaction(
            chain_id=demo_nodes[0].chain_id, nonce=next(nonces), to=DEV_ADDRESSES[1]
        )

    # Restarted by Docker, a node comes back at genesis while the others have mined on,
    # transactions included: it replays their blocks.
    demo_nodes[0].send_raw_transaction(transaction())
    for _ in range(3):
        miner.mine_round(urls[:2])
    assert [n.block_number() for n in demo_nodes] == [3, 3, 0]
    assert miner.mine_round(urls) == 4
    assert one_chain(demo_nodes) and {n.block_number() for n in demo_nodes} == {4}

    # A transaction that reaches one node between the sharing and the mining goes into
    # its block only: the next round rolls that node back and all three mine it.
    late = transaction()
    demo_nodes[2].send_raw_transaction(late)
    for node in demo_nodes:
        node.mine(int(node.block()["timestamp"], 16) + 1)
    assert len({n.block_hash(5) for n in demo_nodes}) == 2
    assert miner.mine_round(urls) == 6
    assert one_chain(demo_nodes) and {n.block_number() for n in demo_nodes} == {6}
    assert {block_of(node, transaction_hash(late)) for node in demo_nodes} == {6}


def test_demo_gateway_serves_the_mined_chain_and_goes_on_without_a_stopped_node(
    demo_nodes: list[AnvilNode], start_gateway: GatewayFactory
) -> None:
    """deploy/demo.yaml over the miner's nodes: every upstream `ok`, a transaction sent
    through it mined everywhere; then what docs/deploy.md's `docker compose stop anvil-2`
    shows."""
    miner = load_miner()
    urls = [node.url for node in demo_nodes]
    for _ in range(3):
        miner.mine_round(urls)

    demo = yaml.safe_load(DEMO_CONFIG.read_text())
    (chain,) = demo["chains"]
    local = {
        urlsplit(u["url"]).hostname: node.url
        for u, node in zip(chain["upstreams"], demo_nodes, strict=True)
    }
    upstreams = [{**u, "url": local[urlsplit(u["url"]).hostname]} for u in chain["upstreams"]]
    settings = {k: v for k, v in chain.items() if k not in ("upstreams", "chain_id")}
    gateway = start_gateway([], upstreams=upstreams, chain_id=chain["chain_id"], chain=settings)
    gateway.sync()
    assert int(gateway.result("eth_blockNumber"), 16) == 3

    raw = sign_transaction(chain_id=chain["chain_id"], nonce=0, to=DEV_ADDRESSES[1], value=1)
    tx_hash = gateway.result("eth_sendRawTransaction", [raw])
    assert miner.mine_round(urls) == 4
    gateway.sync()
    receipt = gateway.result("eth_getTransactionReceipt", [tx_hash])
    assert (int(receipt["blockNumber"], 16), receipt["status"]) == (4, "0x1")

    status = chain_status(gateway.url)
    assert status["consensus"]["head"]["number"] == 4
    names = [u["name"] for u in upstreams]
    assert {u["name"]: u["state"] for u in status["upstreams"]} == dict.fromkeys(names, "ok")
    assert {u["domain"] for u in status["upstreams"]} == {u["domain"] for u in upstreams}

    demo_nodes[1].stop()
    assert miner.mine_round(urls) == 5, "the miner goes on with the nodes that answer"
    for _ in range(2):  # two failed polls make an upstream `down`
        gateway.sync()
    assert {u["name"]: u["state"] for u in chain_status(gateway.url)["upstreams"]} == {
        names[0]: "ok",
        names[1]: "down",
        names[2]: "ok",
    }
    assert int(gateway.result("eth_blockNumber"), 16) == 5
    assert gateway.result("eth_getBlockByNumber", ["latest", False])["hash"] == (
        demo_nodes[0].block_hash(5)
    )


def chain_status(gateway_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(gateway_url + "/status.json", timeout=10) as reply:
        chain: dict[str, Any] = json.loads(reply.read())["chains"][0]
    return chain


def wait_until(condition: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting: {what}")
        time.sleep(0.05)
