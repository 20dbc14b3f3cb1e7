"""rpcgate inside a Python program: web3.py providers over an embedded gateway, with no
server to run.

`AsyncRpcgateProvider` (for `AsyncWeb3`), `RpcgateProvider` (for `Web3`, the gateway on
its own event loop in a background thread) and `PersistentRpcgateProvider` (for
`AsyncWeb3` with subscriptions, web3.py's persistent-connection API) hand each call to the
same `Gateway` the server runs: consensus head and pinning, failover and hedging, the cache
(in process, and Redis when configured, shared with servers on the same Redis),
verification, method policy and the broadcast of transactions. What the HTTP server adds
around it (keys, rate limits, CORS, sockets) has no place inside one program and is not
here.

This package sits at the top beside the CLI: it may import every layer below, and nothing
in rpcgate imports it. Inside it, `web3` is web3.py (imports are absolute).
"""

from rpcgate.web3.providers import (
    AsyncRpcgateProvider,
    PersistentRpcgateProvider,
    RpcgateProvider,
)

__all__ = ["AsyncRpcgateProvider", "PersistentRpcgateProvider", "RpcgateProvider"]
