"""The config schema: every setting, its default and its documentation, in one place.

Loading is validation: `load_config` returns a fully resolved `Config` (presets expanded,
environment variables substituted) or raises `ConfigError` listing every problem with its
key path, e.g. `chains[0].upstreams[2].url: not a URL`. A bad config never starts a
half-working server.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from rpcgate.presets import PRESETS, PresetError, preset_url


def _doc(text: str, required: bool = False, **kwargs: Any) -> Any:
    return field(metadata={"doc": text, "required": required}, **kwargs)


@dataclass(frozen=True)
class UpstreamConfig:
    name: str = _doc(
        "Name shown in logs, headers and status; default: the preset or the host.", default=""
    )
    preset: str | None = _doc(
        "Provider preset that fills url, kind and domain: " + ", ".join(PRESETS) + ".", default=None
    )
    url: str = _doc(
        "HTTP(S) JSON-RPC URL; `${ENV}` substitution keeps keys out of the file.", default=""
    )
    key: str | None = _doc(
        "API key for a preset (placed where that provider expects it).", default=None
    )
    endpoint: str | None = _doc(
        "Endpoint name, for presets that need one (quicknode).", default=None
    )
    node_id: str | None = _doc("Node id, for presets that need one (amb).", default=None)
    region: str | None = _doc("Cloud region, for presets that need one (amb).", default=None)
    kind: Literal["", "centralized", "decentralized"] = _doc(
        "centralized | decentralized; default: from the preset, else centralized.", default=""
    )
    domain: str = _doc(
        "Failure domain: upstreams sharing infrastructure share a tag "
        "(aws, cloudflare, ...); default: from the preset, else the host.",
        default="",
    )
    weight: float = _doc(
        "Vote weight in the block-height agreement (a node you run yourself may count more).",
        default=1.0,
    )
    headers: dict[str, str] = _doc(
        "Extra HTTP headers sent to this upstream (e.g. auth).", default_factory=dict
    )


@dataclass(frozen=True)
class ChainConfig:
    name: str = _doc(
        "Served at /{name}; letters, digits, - and _; not all digits.", required=True, default=""
    )
    chain_id: int = _doc(
        "EIP-155 chain id; the chain is also served at /{chain_id}.", required=True, default=0
    )
    upstreams: tuple[UpstreamConfig, ...] = _doc(
        "The upstreams serving this chain.", required=True, default=()
    )
    head_poll_interval: float = _doc(
        "Seconds between two head polls of each upstream (one eth_blockNumber each when idle).",
        default=1.0,
    )
    max_lag_blocks: int = _doc(
        "An upstream further behind the consensus head than this is `lagging`: it still "
        "serves calls about blocks it has, never `latest`.",
        default=3,
    )


@dataclass(frozen=True)
class CacheConfig:
    redis_url: str | None = _doc(
        "redis://host:6379/0 shares the cache across replicas; null keeps it in-process only.",
        default=None,
    )
    memory_bytes: int = _doc(
        "Budget of the in-process cache; least recently used go first.", default=64 * 1024 * 1024
    )
    redis_prefix: str = _doc(
        "Prefix of every Redis key (then the chain id).", default="rpcgate:v1:"
    )
    redis_timeout_s: float = _doc(
        "Longest wait for one Redis operation; then it is skipped "
        "and Redis is marked down until it answers again.",
        default=0.1,
    )
    ttl_static_s: float = _doc("TTL of answers fixed for a chain (eth_chainId).", default=86400.0)
    ttl_finalized_s: float = _doc("TTL of answers about finalized blocks.", default=3600.0)
    ttl_unfinalized_s: float = _doc(
        "TTL of answers about blocks not yet finalized (they are "
        "also dropped as soon as their block is reorganised).",
        default=600.0,
    )
    ttl_head_s: float = _doc(
        "TTL of answers about the head (gas price); they also die with the next head.", default=60.0
    )


@dataclass(frozen=True)
class LimitsConfig:
    max_body_bytes: int = _doc(
        "Largest request body accepted (HTTP 413, JSON-RPC -32600).", default=5 * 1024 * 1024
    )
    max_batch_items: int = _doc("Most items in one batch (JSON-RPC -32600).", default=100)
    max_response_bytes: int = _doc(
        "Largest upstream answer read; bigger is treated as too large and tried elsewhere.",
        default=64 * 1024 * 1024,
    )
    max_concurrent_upstream_calls: int = _doc(
        "Most calls in flight to one upstream at once.", default=256
    )


@dataclass(frozen=True)
class FailoverConfig:
    attempt_timeout_s: float = _doc("Time one upstream gets to answer one attempt.", default=10.0)
    deadline_s: float = _doc("Total time for a call, across all attempts.", default=30.0)
    max_attempts: int = _doc("Most upstream attempts per call.", default=5)


@dataclass(frozen=True)
class Config:
    listen: str = _doc("HOST:PORT the gateway listens on.", default="127.0.0.1:8545")
    log_level: Literal["debug", "info", "warning", "error"] = _doc(
        "Lowest level logged.", default="info"
    )
    cache: CacheConfig = _doc("Response cache.", default_factory=CacheConfig)
    limits: LimitsConfig = _doc("Request limits.", default_factory=LimitsConfig)
    failover: FailoverConfig = _doc(
        "Timeouts and retries across upstreams.", default_factory=FailoverConfig
    )
    chains: tuple[ChainConfig, ...] = _doc("The chains served; the first is also at /.", default=())

    def listen_host_port(self) -> tuple[str, int]:
        return split_host_port(self.listen)


class ConfigError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


# --- environment substitution -------------------------------------------------------------

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def substitute_env(
    value: Any, env: typing.Mapping[str, str], path: str, problems: list[str]
) -> Any:
    """Replaces ${NAME} and ${NAME:-default} in every string of a parsed YAML tree."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                return default
            problems.append(f"{path or '<root>'}: environment variable {name} is not set")
            return ""

        substituted = _ENV_REF.sub(replace, value)
        if substituted != value and _ENV_REF.fullmatch(value):
            # A value that is one reference takes the variable's YAML type: a port, a
            # count or a flag can come from the environment too.
            try:
                typed = yaml.safe_load(substituted)
            except yaml.YAMLError:
                return substituted
            if isinstance(typed, int | float | bool):
                return typed
        return substituted
    if isinstance(value, dict):
        return {k: substitute_env(v, env, _join(path, str(k)), problems) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_env(v, env, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# --- generic schema loading ---------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp) if a != "")
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    origin = typing.get_origin(tp)
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, str(tp)
    )


def _convert(tp: Any, raw: Any, path: str, problems: list[str]) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if raw is None:
            return None
        return _convert(args[0], raw, path, problems)
    if origin is Literal:
        if raw not in typing.get_args(tp):
            problems.append(f"{path}: must be one of {_type_name(tp)}, not {raw!r}")
        return raw
    if dataclasses.is_dataclass(tp):
        return _load_dataclass(typing.cast(type, tp), raw, path, problems)
    if origin is tuple:
        if not isinstance(raw, list):
            problems.append(f"{path}: must be a list")
            return ()
        (item_type, _) = typing.get_args(tp)
        return tuple(
            _convert(item_type, item, f"{path}[{i}]", problems) for i, item in enumerate(raw)
        )
    if origin is dict:
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            problems.append(f"{path}: must be a mapping of strings to strings")
            return {}
        return dict(raw)
    if tp is float and isinstance(raw, int) and not isinstance(raw, bool):
        return float(raw)
    if (tp is int and isinstance(raw, bool)) or not isinstance(raw, tp):
        problems.append(f"{path}: must be {_type_name(tp)}, not {raw!r}")
        return None
    return raw


def _load_dataclass(cls: type, raw: Any, path: str, problems: list[str]) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{path or '<root>'}: must be a mapping")
        return cls()
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            problems.append(
                f"{_join(path, str(key))}: unknown key (known: {', '.join(sorted(names))})"
            )
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in raw:
            value = _convert(hints[f.name], raw[f.name], _join(path, f.name), problems)
            if value is not None:  # None: invalid (already reported) or null; keep the default
                values[f.name] = value
    return cls(**values)


# --- semantic validation and resolution ---------------------------------------------------

_CHAIN_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def split_host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be HOST:PORT, not {listen!r}")
    return host.strip("[]"), int(port)


def _check_url(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not a URL (expected http:// or https://)"
    try:
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError:
        return "not a URL (bad port)"
    return None


def _resolve_upstream(
    up: UpstreamConfig, chain_id: int, path: str, problems: list[str]
) -> UpstreamConfig:
    url, kind, domain = up.url, up.kind, up.domain
    if up.preset is not None:
        preset = PRESETS.get(up.preset)
        if preset is None:
            problems.append(
                f"{path}.preset: unknown preset {up.preset!r} (known: {', '.join(PRESETS)})"
            )
            return up
        if not url:
            values = {
                k: v
                for k, v in (
                    ("key", up.key),
                    ("endpoint", up.endpoint),
                    ("node_id", up.node_id),
                    ("region", up.region),
                )
                if v
            }
            try:
                url = preset_url(preset, chain_id, values)
            except PresetError as exc:
                problems.append(f"{path}: {exc}")
                return up
        kind = kind or preset.kind
        domain = domain or preset.domain
    elif not url:
        problems.append(f"{path}: needs a `url` or a `preset`")
        return up
    bad = _check_url(url)
    if bad:
        problems.append(f"{path}.url: {bad}")
        return up
    host = urlsplit(url).hostname or ""
    name = up.name or up.preset or host
    return dataclasses.replace(
        up, url=url, name=name, kind=kind or "centralized", domain=domain or host
    )


def _resolve(config: Config, problems: list[str]) -> Config:
    try:
        split_host_port(config.listen)
    except ValueError as exc:
        problems.append(f"listen: {exc}")
    if config.cache.redis_url is not None and urlsplit(config.cache.redis_url).scheme not in (
        "redis",
        "rediss",
        "unix",
    ):
        problems.append("cache.redis_url: must start with redis://, rediss:// or unix://")
    if config.cache.memory_bytes < 0:
        problems.append("cache.memory_bytes: must be 0 or more")
    for key in (
        "redis_timeout_s",
        "ttl_static_s",
        "ttl_finalized_s",
        "ttl_unfinalized_s",
        "ttl_head_s",
    ):
        if getattr(config.cache, key) <= 0:
            problems.append(f"cache.{key}: must be more than 0")
    for key in (
        "max_body_bytes",
        "max_batch_items",
        "max_response_bytes",
        "max_concurrent_upstream_calls",
    ):
        if getattr(config.limits, key) < 1:
            problems.append(f"limits.{key}: must be at least 1")
    fo = config.failover
    if fo.attempt_timeout_s <= 0:
        problems.append("failover.attempt_timeout_s: must be more than 0")
    if fo.deadline_s < fo.attempt_timeout_s:
        problems.append("failover.deadline_s: must be at least failover.attempt_timeout_s")
    if fo.max_attempts < 1:
        problems.append("failover.max_attempts: must be at least 1")
    if not config.chains:
        problems.append("chains: at least one chain is needed")
    chains = []
    seen_names: dict[str, int] = {}
    seen_ids: dict[int, int] = {}
    for i, chain in enumerate(config.chains):
        path = f"chains[{i}]"
        if not _CHAIN_NAME.match(chain.name) or chain.name.isdigit():
            problems.append(
                f"{path}.name: must be letters, digits, - or _ and not all digits, "
                f"not {chain.name!r}"
            )
        elif chain.name in seen_names:
            problems.append(
                f"{path}.name: {chain.name!r} is already chains[{seen_names[chain.name]}]"
            )
        seen_names.setdefault(chain.name, i)
        if chain.chain_id is None or chain.chain_id < 1:
            problems.append(f"{path}.chain_id: must be a positive integer")
        elif chain.chain_id in seen_ids:
            problems.append(
                f"{path}.chain_id: {chain.chain_id} is already chains[{seen_ids[chain.chain_id]}]"
            )
        seen_ids.setdefault(chain.chain_id, i)
        if not chain.upstreams:
            problems.append(f"{path}.upstreams: at least one upstream is needed")
        if chain.head_poll_interval <= 0:
            problems.append(f"{path}.head_poll_interval: must be more than 0")
        if chain.max_lag_blocks < 0:
            problems.append(f"{path}.max_lag_blocks: must be 0 or more")
        for j, up in enumerate(chain.upstreams):
            if up.weight <= 0:
                problems.append(f"{path}.upstreams[{j}].weight: must be more than 0")
        upstreams = [
            _resolve_upstream(up, chain.chain_id or 0, f"{path}.upstreams[{j}]", problems)
            for j, up in enumerate(chain.upstreams)
        ]
        seen_up: dict[str, int] = {}
        for j, up in enumerate(upstreams):
            if not up.name:  # unresolved: its problem is already reported
                continue
            if up.name in seen_up:
                problems.append(
                    f"{path}.upstreams[{j}].name: {up.name!r} is already "
                    f"upstreams[{seen_up[up.name]}]; give each a distinct `name`"
                )
            seen_up.setdefault(up.name, j)
        chains.append(dataclasses.replace(chain, upstreams=tuple(upstreams)))
    return dataclasses.replace(config, chains=tuple(chains))


def parse_config(
    text: str, env: typing.Mapping[str, str] | None = None, source: str = "config"
) -> Config:
    """Parses YAML text into a resolved Config, or raises ConfigError with every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {exc}"]) from None
    problems: list[str] = []
    raw = substitute_env(raw, os.environ if env is None else env, "", problems)
    config = _resolve(_load_dataclass(Config, raw, "", problems), problems)
    if problems:
        # One problem per key path: a value that failed to load also fails later checks.
        first_per_path = {p.split(": ", 1)[0]: p for p in reversed(problems)}
        raise ConfigError([p for p in problems if p in first_per_path.values()])
    return typing.cast(Config, config)


def load_config(path: str | Path | None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Loads FILE, or the embedded zero-config default when path is None."""
    if path is None:
        text = resources.files("rpcgate").joinpath("default.yaml").read_text()
        return parse_config(text, env, "embedded default")
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    return parse_config(text, env, str(path))


def config_reference() -> str:
    """The README's config reference, generated from the schema (a test keeps them equal)."""
    rows = ["| key | default | meaning |", "|---|---|---|"]

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = _join(prefix, f.name)
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(typing.cast(type, tp), key)
                continue
            item = typing.get_args(tp)[0] if typing.get_origin(tp) is tuple else None
            if f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None
            shown = "" if default in ("", (), {}) else f"`{yaml.safe_dump(default).strip()}`"
            if f.metadata.get("required"):
                shown = "required"
            shown = shown.replace("`...`", "").replace("\n...", "")
            doc = f.metadata.get("doc", "").replace("|", "\\|")
            rows.append(f"| `{key}` | {shown} | {doc} |")
            if item is not None and dataclasses.is_dataclass(item):
                walk(typing.cast(type, item), f"{key}[]")

    walk(Config, "")
    return "\n".join(rows) + "\n"
