"""Typed settings from plain YAML data: dataclass fields with defaults and documentation,
`${ENV}` substitution, loading with a problem per key path, and a Markdown reference.

Generic over any tree of frozen dataclasses; `config.py` declares rpcgate's own.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import field
from typing import Any, Literal

import yaml


def setting(text: str, required: bool = False, **kwargs: Any) -> Any:
    """A dataclass field with its documentation (and whether a config must give it)."""
    return field(metadata={"doc": text, "required": required}, **kwargs)


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
        if raw is False and "off" in typing.get_args(tp):
            return "off"  # YAML 1.1 reads an unquoted `off` as false
        if raw not in typing.get_args(tp):
            problems.append(f"{path}: must be one of {_type_name(tp)}, not {raw!r}")
        return raw
    if dataclasses.is_dataclass(tp):
        return load_dataclass(typing.cast(type, tp), raw, path, problems)
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
        shown = "the value given" if _is_secret(path) else repr(raw)
        problems.append(f"{path}: must be {_type_name(tp)}, not {shown}")
        return None
    return raw


_SECRET_KEYS = ("token", "key", "password", "secret")


def _is_secret(path: str) -> bool:
    """A setting whose value must never be echoed, even in a type error."""
    return path.rsplit(".", 1)[-1] in _SECRET_KEYS


def load_dataclass(cls: type, raw: Any, path: str, problems: list[str]) -> Any:
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


def reference(root: type) -> str:
    """A Markdown table of every setting under `root`: key path, default, meaning."""
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
            shown = "" if default in ("", (), {}) else f"`{_one_line(default)}`"
            if f.metadata.get("required"):
                shown = "required"
            shown = shown.replace("`...`", "").replace("\n...", "")
            doc = f.metadata.get("doc", "").replace("|", "\\|")
            rows.append(f"| `{key}` | {shown} | {doc} |")
            if item is not None and dataclasses.is_dataclass(item):
                walk(typing.cast(type, item), f"{key}[]")

    walk(root, "")
    return "\n".join(rows) + "\n"


def _one_line(value: object) -> str:
    """A default as YAML on one line (a list in flow style: a table cell holds no newline)."""
    if isinstance(value, tuple | list):
        return yaml.safe_dump(list(value), default_flow_style=True, width=10_000).strip()
    return yaml.safe_dump(value).strip()
