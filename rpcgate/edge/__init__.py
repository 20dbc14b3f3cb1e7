"""What clients touch: the running gateway without HTTP (`gateway`), the fast path for
RPC POSTs (`fast_http`) in front of the aiohttp server (`http_server`), one RPC POST
answered whichever serves it (`rpc_post`), WebSocket ingress (`websocket`), a parsed
request answered (`answers`) and written (`responses`), client connections and their
limits (`connections`), CORS (`cors`), who is calling (`clients`) and whether they may now
(`admission`, `rate_limits`). May import `ops`, `chain` and everything below.
"""
