"""RLP encoding of nested lists of bytes and non-negative ints, for the hashes and tries.

pyrlp infers a serializer for every item, which is most of the cost of recomputing a block's
transactions; the encoding itself is a few lines. Ints are minimal big-endian (0 is empty).
"""

from __future__ import annotations

from typing import Any


def encode(item: Any) -> bytes:
    """rlp.encode for bytes, ints and (nested) lists of them."""
    if isinstance(item, bytes):
        return encode_bytes(item)
    if isinstance(item, int) and not isinstance(item, bool):
        if item < 0:
            raise ValueError("RLP encodes no negative number")
        return encode_bytes(item.to_bytes((item.bit_length() + 7) // 8, "big"))
    if isinstance(item, list | tuple):
        return encode_list([encode(element) for element in item])
    raise TypeError(f"RLP encodes no {type(item).__name__}")


def encode_bytes(value: bytes) -> bytes:
    if len(value) == 1 and value[0] < 0x80:
        return value
    return _length_prefix(len(value), 0x80) + value


def encode_list(encoded_items: list[bytes]) -> bytes:
    payload = b"".join(encoded_items)
    return _length_prefix(len(payload), 0xC0) + payload


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    length_bytes = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(length_bytes)]) + length_bytes
