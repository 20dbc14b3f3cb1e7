"""Everything rpcgate knows about a JSON-RPC method, in one table.

The router, the executor (and later the cache and the tag pinner) all read this table; a
method that is not in it is forwarded as an ordinary read.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Kind(enum.StrEnum):
    READ = "read"  # any upstream can answer; safe to retry elsewhere
    WRITE = "write"  # changes the chain; retried elsewhere only when idempotent
    STATEFUL = "stateful"  # state lives on the node that created it (filters)
    LOCAL = "local"  # about the node itself, not the chain; answered per node


@dataclass(frozen=True, slots=True)
class MethodInfo:
    kind: Kind
    # Position of the block parameter (number, tag or EIP-1898 object), if any.
    block_param: int | None = None
    why: str = ""


_READ = MethodInfo(Kind.READ)

METHODS: dict[str, MethodInfo] = {
    "eth_chainId": _READ,
    "net_version": _READ,
    "eth_blockNumber": _READ,
    "eth_gasPrice": _READ,
    "eth_maxPriorityFeePerGas": _READ,
    "eth_feeHistory": MethodInfo(Kind.READ, block_param=1),
    "eth_getBalance": MethodInfo(Kind.READ, block_param=1),
    "eth_getCode": MethodInfo(Kind.READ, block_param=1),
    "eth_getTransactionCount": MethodInfo(Kind.READ, block_param=1),
    "eth_getStorageAt": MethodInfo(Kind.READ, block_param=2),
    "eth_call": MethodInfo(Kind.READ, block_param=1),
    "eth_estimateGas": MethodInfo(Kind.READ, block_param=1),
    "eth_createAccessList": MethodInfo(Kind.READ, block_param=1),
    "eth_getProof": MethodInfo(Kind.READ, block_param=2),
    "eth_getBlockByNumber": MethodInfo(Kind.READ, block_param=0),
    "eth_getBlockReceipts": MethodInfo(Kind.READ, block_param=0),
    "eth_getBlockTransactionCountByNumber": MethodInfo(Kind.READ, block_param=0),
    "eth_getTransactionByBlockNumberAndIndex": MethodInfo(Kind.READ, block_param=0),
    "eth_getUncleCountByBlockNumber": MethodInfo(Kind.READ, block_param=0),
    "eth_getBlockByHash": _READ,
    "eth_getTransactionByHash": _READ,
    "eth_getTransactionReceipt": _READ,
    "eth_getLogs": _READ,
    "eth_sendRawTransaction": MethodInfo(
        Kind.WRITE,
        why="idempotent: the same signed bytes have the same hash everywhere, so sending "
        "them to a second node after a timeout cannot spend twice",
    ),
    "eth_newFilter": MethodInfo(Kind.STATEFUL, why="the filter id exists on one node only"),
    "eth_newBlockFilter": MethodInfo(Kind.STATEFUL, why="the filter id exists on one node"),
    "eth_newPendingTransactionFilter": MethodInfo(Kind.STATEFUL, why="per node"),
    "eth_getFilterChanges": MethodInfo(Kind.STATEFUL, why="per node"),
    "eth_getFilterLogs": MethodInfo(Kind.STATEFUL, why="per node"),
    "eth_uninstallFilter": MethodInfo(Kind.STATEFUL, why="per node"),
    "eth_syncing": MethodInfo(Kind.LOCAL, why="describes one node"),
    "net_peerCount": MethodInfo(Kind.LOCAL, why="describes one node"),
    "web3_clientVersion": MethodInfo(Kind.LOCAL, why="describes one node"),
}


def method_info(method: str) -> MethodInfo:
    return METHODS.get(method, _READ)


# Answers to eth_sendRawTransaction that mean "the network has this transaction already":
# after a retry, the first attempt may have delivered it. These count as success.
ALREADY_KNOWN_MESSAGES = (
    "already known",
    "known transaction",
    "already imported",
    "transaction already exists",
)
