"""Pure checks of an upstream's answers against the roots of a block: its header's hash
recomputed from its fields (`headers`), its transactions and receipts re-encoded and their
tries' roots recomputed (`transactions`, `receipts`, `tries`), accounts and storage slots by
Merkle proof (`proofs`), old block hashes through EIP-2935's history contract
(`history`), logs through the bloom filter and the receipts (`blooms`). No I/O:
`rpcgate/chain/verifier.py` fetches what they are checked against.

Besides Ethereum's, they know the OP stack's deposit transactions and receipts (0x7e) and
Avalanche's header layout (`header_mismatch(block, layout="avalanche")`).

Every check takes JSON-RPC answers as decoded JSON and never raises on a bad answer: a check
that fails says what differs, in words. (The encoders, `transaction_encoding` and
`receipt_encoding`, raise `BadField`, a ValueError, for a field they cannot encode.)
"""

from rpcgate.verify._hex import BadField
from rpcgate.verify.blooms import bloom_may_contain, logs_matching
from rpcgate.verify.headers import HEADER_LAYOUTS, header_hash, header_mismatch
from rpcgate.verify.history import (
    HISTORY_ADDRESS,
    HISTORY_CODE_HASH,
    hash_from_word,
    history_slot,
    holds,
    hops,
)
from rpcgate.verify.proofs import (
    EMPTY_CODE_HASH,
    AccountState,
    code_matches,
    verify_account,
    verify_storage,
)
from rpcgate.verify.receipts import receipt_encoding, receipts_root_mismatch
from rpcgate.verify.transactions import (
    DEPOSIT_TRANSACTION_TYPE,
    ENCODED_TRANSACTION_TYPES,
    UnknownTransactionType,
    is_encodable,
    transaction_encoding,
    transaction_hash_mismatch,
    transactions_root_mismatch,
)
from rpcgate.verify.tries import EMPTY_TRIE_ROOT, ordered_trie_root

__all__ = [
    "DEPOSIT_TRANSACTION_TYPE",
    "EMPTY_CODE_HASH",
    "EMPTY_TRIE_ROOT",
    "ENCODED_TRANSACTION_TYPES",
    "HEADER_LAYOUTS",
    "HISTORY_ADDRESS",
    "HISTORY_CODE_HASH",
    "AccountState",
    "BadField",
    "UnknownTransactionType",
    "bloom_may_contain",
    "code_matches",
    "hash_from_word",
    "header_hash",
    "header_mismatch",
    "history_slot",
    "holds",
    "hops",
    "is_encodable",
    "logs_matching",
    "ordered_trie_root",
    "receipt_encoding",
    "receipts_root_mismatch",
    "transaction_encoding",
    "transaction_hash_mismatch",
    "transactions_root_mismatch",
    "verify_account",
    "verify_storage",
]
