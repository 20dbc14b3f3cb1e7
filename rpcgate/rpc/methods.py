"""Everything rpcgate knows about a JSON-RPC method, in one table.

The router, the executor, the tag pinner and the cache all read this table. A method that
is not in it is forwarded as an ordinary read and never cached.

Cache policies (how long an answer may be served again, see `cache.py`):
- STATIC: never changes for a chain.
- BLOCK: about one block, pinned to its number: kept long once that block is finalized,
  and before that only while the block is still canonical (its hash is remembered).
- HEAD: about the moving head: lives only until the next head.
- BY_HASH: looked up by a hash; kept only when found, and tied to the block it was found
  in (canonical check until that block is finalized). A null (not mined yet) is not kept.
- NEVER: writes, filters, subscriptions, node-local and account-local answers.
"""

from __future__ import annotations

import enum
import fnmatch
from dataclasses import dataclass


class Kind(enum.StrEnum):
    READ = "read"  # any upstream can answer; safe to retry elsewhere
    WRITE = "write"  # changes the chain; retried elsewhere only when idempotent
    STATEFUL = "stateful"  # state lives on the node that created it (filters)
    LOCAL = "local"  # about the node itself, not the chain; answered per node


class Cache(enum.StrEnum):
    NEVER = "never"
    STATIC = "static"
    BLOCK = "block"
    HEAD = "head"
    BY_HASH = "by_hash"


class Check(enum.StrEnum):
    """What `chains[].verify` can check of an answer (verify.py and verifier.py check it)."""

    PROOF = "proof"  # `proofs`: from eth_getProof checked against the consensus stateRoot, or
    #                  (eth_getLogs) against the range's receipts checked against their roots
    RECOMPUTE = "recompute"  # `integrity`: header hash, transactions and receipts recomputed
    CONSENSUS = "consensus"  # about a block the upstreams agree on; the rest is their word
    NONE = "none"  # nothing to anchor it to (the pool, the node itself, a write)


@dataclass(frozen=True, slots=True)
class MethodInfo:
    kind: Kind
    cache: Cache = Cache.NEVER
    # Position of the block parameter (number, tag or EIP-1898 object), if any.
    block_param: int | None = None
    why: str = ""
    check: Check = Check.NONE
    # A node without the block answers null (not an error): about a block the consensus
    # has, a null is a node (or a replica behind a load balancer) that lacks it.
    null_when_missing: bool = False
    # A null (not found) is asked of a second upstream before it is given: a replica a
    # block behind its load balancer's others answers null about the newest block too.
    null_confirmed: bool = False


def _block(
    position: int, why: str, check: Check = Check.CONSENSUS, *, null_when_missing: bool = False
) -> MethodInfo:
    return MethodInfo(Kind.READ, Cache.BLOCK, position, why, check, null_when_missing)


def _by_hash(why: str, check: Check = Check.CONSENSUS) -> MethodInfo:
    return MethodInfo(Kind.READ, Cache.BY_HASH, None, why, check, null_confirmed=True)


def _never(kind: Kind, why: str) -> MethodInfo:
    return MethodInfo(kind, Cache.NEVER, None, why)


_STATE = "state at a pinned block is fixed while that block is canonical"

METHODS: dict[str, MethodInfo] = {
    # chain identity
    "eth_chainId": MethodInfo(
        Kind.READ, Cache.STATIC, why="fixed for the chain", check=Check.CONSENSUS
    ),
    "net_version": MethodInfo(
        Kind.READ, Cache.STATIC, why="fixed for the chain", check=Check.CONSENSUS
    ),
    # the head; eth_blockNumber itself is answered from the consensus head
    "eth_blockNumber": MethodInfo(
        Kind.READ,
        Cache.NEVER,
        why="answered from the consensus head, no cache needed",
        check=Check.CONSENSUS,
    ),
    "eth_gasPrice": MethodInfo(Kind.READ, Cache.HEAD, why="a suggestion for the next block"),
    "eth_maxPriorityFeePerGas": MethodInfo(Kind.READ, Cache.HEAD, why="as eth_gasPrice"),
    "eth_blobBaseFee": MethodInfo(Kind.READ, Cache.HEAD, why="follows the head"),
    # state and blocks at a block (tags pinned to numbers first)
    "eth_feeHistory": _block(1, "fees up to a pinned newest block do not change"),
    "eth_getBalance": _block(1, _STATE, Check.PROOF),
    "eth_getCode": _block(1, _STATE, Check.PROOF),
    "eth_getTransactionCount": _block(1, _STATE + "; `pending` is never cached", Check.PROOF),
    "eth_getStorageAt": _block(2, _STATE, Check.PROOF),
    "eth_call": _block(1, _STATE, Check.PROOF),
    "eth_estimateGas": _block(1, _STATE + "; without a block parameter it is not cached"),
    "eth_createAccessList": _block(1, _STATE),
    "eth_getProof": _block(2, _STATE, Check.PROOF),
    "eth_getBlockByNumber": _block(
        0,
        "a block at a canonical height; null is not kept",
        Check.RECOMPUTE,
        null_when_missing=True,
    ),
    "eth_getBlockReceipts": _block(
        0, "the receipts of a canonical block", Check.RECOMPUTE, null_when_missing=True
    ),
    "eth_getBlockTransactionCountByNumber": _block(
        0, "a property of the block", null_when_missing=True
    ),
    "eth_getTransactionByBlockNumberAndIndex": _block(
        0, "a property of the block", Check.RECOMPUTE
    ),
    "eth_getUncleCountByBlockNumber": _block(0, "a property of the block", null_when_missing=True),
    "eth_getLogs": MethodInfo(
        Kind.READ,
        Cache.BLOCK,
        None,
        "a pinned range: its last block's hash covers the whole range",
        Check.PROOF,
    ),
    # by hash: only what was found, tied to the block it is in
    "eth_getBlockByHash": _by_hash("kept while the block is canonical", Check.RECOMPUTE),
    "eth_getTransactionByHash": _by_hash(
        "a pending transaction (no block) is not kept", Check.RECOMPUTE
    ),
    "eth_getTransactionReceipt": _by_hash(
        "may move in a reorg: canonical check until final", Check.RECOMPUTE
    ),
    "eth_getTransactionByBlockHashAndIndex": _by_hash(
        "kept while the block is canonical", Check.RECOMPUTE
    ),
    "eth_getBlockTransactionCountByHash": _never(Kind.READ, "the answer names no block"),
    # writes
    "eth_sendRawTransaction": _never(
        Kind.WRITE,
        "a write. Idempotent: the same signed bytes have the same hash everywhere, so "
        "sending them to a second node after a timeout cannot spend twice",
    ),
    "eth_sendTransaction": _never(Kind.WRITE, "a write signed by the node: account-local"),
    # filters and subscriptions: state on one node, consumed as read
    "eth_newFilter": _never(Kind.STATEFUL, "kept by the gateway, answered from its consensus"),
    "eth_newBlockFilter": _never(Kind.STATEFUL, "kept by the gateway, answered from its consensus"),
    "eth_newPendingTransactionFilter": _never(Kind.STATEFUL, "made on one node: needs its pool"),
    "eth_getFilterChanges": _never(Kind.STATEFUL, "each call consumes changes"),
    "eth_getFilterLogs": _never(Kind.STATEFUL, "the filter's logs, fetched with eth_getLogs"),
    "eth_uninstallFilter": _never(Kind.STATEFUL, "forgets the filter"),
    "eth_subscribe": _never(Kind.STATEFUL, "a subscription lives on one connection"),
    "eth_unsubscribe": _never(Kind.STATEFUL, "a subscription lives on one connection"),
    # about the node or its accounts, not the chain
    "eth_syncing": _never(Kind.LOCAL, "describes one node"),
    "net_peerCount": _never(Kind.LOCAL, "describes one node"),
    "net_listening": _never(Kind.LOCAL, "describes one node"),
    "web3_clientVersion": _never(Kind.LOCAL, "describes one node"),
    "eth_accounts": _never(Kind.LOCAL, "the node's own accounts"),
    "eth_coinbase": _never(Kind.LOCAL, "the node's own account"),
    "eth_mining": _never(Kind.LOCAL, "describes one node"),
    "eth_hashrate": _never(Kind.LOCAL, "describes one node"),
    "eth_sign": _never(Kind.LOCAL, "signed by the node's account"),
    "eth_signTransaction": _never(Kind.LOCAL, "signed by the node's account"),
    "eth_signTypedData_v4": _never(Kind.LOCAL, "signed by the node's account"),
}


class Policy(enum.StrEnum):
    """Why a method is refused by default (a chain's `methods.allow` can serve it)."""

    NODE_KEYS = "node-keys"  # acts with the node's own accounts and keys
    NODE_ADMIN = "node-admin"  # administers or controls the node
    HEAVY = "heavy"  # costly on the node, or about its local pool, not the chain


@dataclass(frozen=True, slots=True)
class DenyRule:
    pattern: str  # a method name, `*` matching any run of characters; case is ignored
    policy: Policy
    why: str


_SIGN = "use eth_sendRawTransaction with a transaction signed by the wallet"

# What a public URL must not forward by default: a shared upstream would sign with, unlock
# or administer a node for whoever asks. docs/methods.md's policy table is generated from this.
DENY_RULES: tuple[DenyRule, ...] = (
    DenyRule("eth_sendTransaction", Policy.NODE_KEYS, f"signed by the node's account; {_SIGN}"),
    DenyRule("eth_sign*", Policy.NODE_KEYS, f"signed by the node's account; {_SIGN}"),
    DenyRule("personal_*", Policy.NODE_KEYS, "the node's accounts, passwords and keys"),
    DenyRule("eth_accounts", Policy.NODE_KEYS, "the node's own accounts"),
    DenyRule("eth_coinbase", Policy.NODE_KEYS, "the node's own account"),
    DenyRule("admin_*", Policy.NODE_ADMIN, "administers the node (peers, RPC servers, files)"),
    DenyRule("miner_*", Policy.NODE_ADMIN, "starts, stops or configures block production"),
    DenyRule("eth_submitWork", Policy.NODE_ADMIN, "proof-of-work mining"),
    DenyRule("eth_submitHashrate", Policy.NODE_ADMIN, "proof-of-work mining"),
    DenyRule("eth_getWork", Policy.NODE_ADMIN, "proof-of-work mining"),
    DenyRule("engine_*", Policy.NODE_ADMIN, "the consensus client's API to the node"),
    DenyRule("clique_*", Policy.NODE_ADMIN, "votes on proof-of-authority signers"),
    DenyRule("les_*", Policy.NODE_ADMIN, "light-server administration"),
    DenyRule("anvil_*", Policy.NODE_ADMIN, "rewrites a development node's chain"),
    DenyRule("hardhat_*", Policy.NODE_ADMIN, "rewrites a development node's chain"),
    DenyRule("evm_*", Policy.NODE_ADMIN, "rewrites a development node's chain"),
    DenyRule("debug_*", Policy.HEAVY, "re-executes blocks and transactions: costly per call"),
    DenyRule("trace_*", Policy.HEAVY, "re-executes blocks and transactions: costly per call"),
    DenyRule("txpool_*", Policy.HEAVY, "the whole pool of one node: large and differs per node"),
)


def policy_reference() -> str:
    """docs/methods.md's policy table, generated from DENY_RULES (a test keeps them equal)."""
    rows = ["| denied by default | policy | why |", "|---|---|---|"]
    rows += [f"| `{rule.pattern}` | {rule.policy} | {rule.why} |" for rule in DENY_RULES]
    return "\n".join(rows) + "\n"


_UNKNOWN = MethodInfo(Kind.READ, Cache.NEVER, why="not in the table: forwarded, never cached")


def method_info(method: str) -> MethodInfo:
    return METHODS.get(method, _UNKNOWN)


def denying_rule(method: str) -> DenyRule | None:
    """The default rule that refuses `method` (docs/methods.md's tables; `method_policy`
    decides)."""
    name = method.lower()
    return next(
        (rule for rule in DENY_RULES if fnmatch.fnmatchcase(name, rule.pattern.lower())), None
    )


def methods_reference() -> str:
    """docs/methods.md's method table, generated from METHODS (a test keeps them equal)."""
    rows = [
        "| method | kind | cache | block parameter | by default | verified | why |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, info in METHODS.items():
        position = "" if info.block_param is None else str(info.block_param)
        rule = denying_rule(name)
        served = "served" if rule is None else f"denied (`{rule.pattern}`, {rule.policy})"
        rows.append(
            f"| `{name}` | {info.kind} | {info.cache} | {position} | {served} | {info.check} "
            f"| {info.why} |"
        )
    rows.append(f"| anything else | read | never | | served | none | {_UNKNOWN.why} |")
    return "\n".join(rows) + "\n"


# Answers to eth_sendRawTransaction that mean "the network has this transaction already":
# after a retry, the first attempt may have delivered it. These count as success.
ALREADY_KNOWN_MESSAGES = (
    "already known",
    "known transaction",
    "already imported",
    "transaction already exists",
)
