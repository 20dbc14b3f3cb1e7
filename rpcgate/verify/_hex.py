"""Hex fields of JSON-RPC answers as the values RLP encodes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class BadField(ValueError):
    """A field an encoding needs is missing or is not hex."""


def _is_hex(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("0x", "0X"))


def quantity(source: Mapping[str, Any], name: str) -> int:
    """A number field ("0x1a"): the int."""
    return hex_int(source.get(name), f"field {name}")


def hex_int(value: Any, name: str = "value") -> int:
    if not _is_hex(value):
        raise BadField(f"{name} missing or not hex")
    try:
        return int(value, 16)
    except ValueError:
        raise BadField(f"{name} is not a hex number") from None


def same_quantity(left: Any, right: Any) -> bool:
    """Two hex numbers (or hashes) are equal, whatever their case or leading zeros."""
    try:
        return hex_int(left) == hex_int(right)
    except BadField:
        return False


def data(source: Mapping[str, Any], name: str) -> bytes:
    """A data field ("0xabcd"): its bytes."""
    value = source.get(name)
    if not _is_hex(value):
        raise BadField(f"field {name} missing or not hex")
    return hex_bytes(value, f"field {name}")


def optional_data(source: Mapping[str, Any], name: str) -> bytes:
    """A data field that may be null (a transaction's `to` when it creates a contract)."""
    return b"" if source.get(name) is None else data(source, name)


def hex_bytes(value: Any, name: str = "value") -> bytes:
    if not _is_hex(value):
        raise BadField(f"{name} is not hex")
    text = value[2:]
    if len(text) % 2:
        text = "0" + text
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise BadField(f"{name} is not hex") from None


def hex_list(value: Any, name: str) -> list[bytes]:
    """A list of data items (a proof's nodes, a list of hashes)."""
    if not isinstance(value, list):
        raise BadField(f"{name} missing or not a list")
    return [hex_bytes(item, f"an item of {name}") for item in value]


def short(value: bytes | str, keep: int = 10) -> str:
    """A hash for a message: its first bytes and an ellipsis ("0xab12cd34…")."""
    text = value if isinstance(value, str) else "0x" + value.hex()
    return text if len(text) <= keep + 2 else text[: keep + 2] + "…"
