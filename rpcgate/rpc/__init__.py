"""What every layer speaks: JSON-RPC 2.0 framing (`jsonrpc`), the one table of methods
(`methods`) and a chain's method policy over it (`method_policy`), how an upstream failure is
classified (`errors`), secrets kept out of every output (`masking`, and the log pipeline
that ends in it, `logs`), a call's routing trace (`trace`), and background tasks started
and stopped one way (`background`). Pure but for `background`'s tasks. May import `config`.
"""
