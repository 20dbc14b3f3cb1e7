"""rpcgate: a drop-in JSON-RPC gateway for EVM chains."""

__version__ = "0.1.0"
