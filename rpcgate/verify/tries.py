"""The root of an ordered Merkle-Patricia trie: a block's transactions or receipts root.

Item i is stored under the key rlp(i). The root is built in one pass over the sorted keys
rather than by inserting into `trie.HexaryTrie` one item at a time: the same hash in a sixth
of the time (1 ms for 100 transactions), which matters for blocks of hundreds of transactions
checked on the request path (tests/verify/test_verify.py compares the two).
"""

from __future__ import annotations

from collections.abc import Sequence

from eth_utils import keccak

from rpcgate.verify._rlp import encode, encode_bytes, encode_list

EMPTY_TRIE_ROOT = keccak(encode(b""))  # 0x56e81f…, the root of a trie with no items
_HASH_LENGTH = 32


def ordered_trie_root(items: Sequence[bytes]) -> bytes:
    """The root hash of the trie holding items[i] under rlp(i), as in a block header."""
    if not items:
        return EMPTY_TRIE_ROOT
    entries = sorted((_nibbles(encode(index)), item) for index, item in enumerate(items))
    return keccak(_node(entries, 0))


def _nibbles(key: bytes) -> bytes:
    return bytes(nibble for byte in key for nibble in (byte >> 4, byte & 0x0F))


def _node(entries: list[tuple[bytes, bytes]], depth: int) -> bytes:
    """The RLP encoding of the node holding `entries` (sorted, sharing key[:depth])."""
    if len(entries) == 1:
        key, value = entries[0]
        return encode_list([encode_bytes(_hex_prefix(key[depth:], leaf=True)), encode_bytes(value)])
    shared = _shared_prefix_length(entries[0][0], entries[-1][0], depth)
    if shared > depth:
        path = entries[0][0][depth:shared]
        child = _reference(_node(entries, shared))
        return encode_list([encode_bytes(_hex_prefix(path, leaf=False)), child])
    slots = [encode_bytes(b"")] * 17
    start = 0
    if len(entries[0][0]) == depth:  # a key that ends here keeps its value in the branch
        slots[16] = encode_bytes(entries[0][1])
        start = 1
    while start < len(entries):
        nibble = entries[start][0][depth]
        end = start
        while end < len(entries) and entries[end][0][depth] == nibble:
            end += 1
        slots[nibble] = _reference(_node(entries[start:end], depth + 1))
        start = end
    return encode_list(slots)


def _shared_prefix_length(first: bytes, last: bytes, depth: int) -> int:
    # Keys are sorted, so what the first and the last share, every key shares.
    length = depth
    while length < len(first) and length < len(last) and first[length] == last[length]:
        length += 1
    return length


def _reference(encoded_node: bytes) -> bytes:
    """How a parent holds a child: inline when its encoding is under 32 bytes, else by hash."""
    if len(encoded_node) < _HASH_LENGTH:
        return encoded_node
    return encode_bytes(keccak(encoded_node))


def _hex_prefix(nibbles: bytes, *, leaf: bool) -> bytes:
    """A path's compact encoding: a flag nibble (leaf, odd length) and the nibbles packed."""
    flag = 2 if leaf else 0
    # An odd path takes its first nibble beside the flag; an even one pads with a zero.
    nibbles = bytes([flag + 1]) + nibbles if len(nibbles) % 2 else bytes([flag, 0]) + nibbles
    return bytes(nibbles[i] << 4 | nibbles[i + 1] for i in range(0, len(nibbles), 2))
