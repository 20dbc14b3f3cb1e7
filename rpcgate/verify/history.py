"""Old block hashes anchored to a recent one by EIP-2935's history contract.

Since Prague, a system contract keeps the hashes of the last `HISTORY_SERVE_WINDOW` blocks
in its storage: at the start of block B the hash of block B-1 is written to slot
(B-1) mod 8191. So the state after block A holds the hashes of blocks A-8191 .. A-1, and
one storage proof of one slot against A's `stateRoot` proves one of them, where the
account's proven code is the EIP's own (`HISTORY_CODE_HASH`). A block further
back is reached in hops: the hash of A-8191 (proven at A) names the header whose state
proves hashes 8,191 further back, and so on (`hops`). No I/O here: the verifier
(`chain/verifier.py`) fetches the headers and proofs the hops name.
"""

from __future__ import annotations

HISTORY_ADDRESS = "0x0000F90827F1C53a10cb7A02335B175320002935"
HISTORY_SERVE_WINDOW = 8191
# keccak of the contract's code as EIP-2935 deploys it. Only that code is read by this
# layout: Arbitrum (ArbOS 40) keeps hashes at the same address with code of its own and a
# window of 393,168 blocks, where slot n mod 8191 names another block.
HISTORY_CODE_HASH = bytes.fromhex(
    "6e49e66782037c0555897870e29fa5e552daf4719552131a0abce779daec0a5d"
)


def history_slot(number: int) -> str:
    """The storage key (32 bytes, hex) that holds block `number`'s hash."""
    return f"0x{number % HISTORY_SERVE_WINDOW:064x}"


def holds(anchor: int, number: int) -> bool:
    """Whether the history contract's state after block `anchor` holds `number`'s hash."""
    return anchor - HISTORY_SERVE_WINDOW <= number < anchor


def hops(number: int, anchor: int) -> list[int]:
    """The blocks whose hashes are proven in turn to reach `number` from `anchor` (whose
    hash is known): each proven at the one before (the first at `anchor`); the last is
    `number`. Empty when `number` is not below `anchor`."""
    if number >= anchor or number < 0:
        return []
    steps = []
    at = anchor
    while not holds(at, number):
        at -= HISTORY_SERVE_WINDOW  # the oldest hash `at` holds
        steps.append(at)
    return [*steps, number]


def hash_from_word(value: int) -> str | None:
    """A slot's value as a block hash; None for an empty slot (no hash written there)."""
    if value == 0:
        return None
    return f"0x{value:064x}"
