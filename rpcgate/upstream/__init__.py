"""Talking to one upstream: HTTP/1.1 framing without I/O (`http1`), the keep-alive
connections and egress proxies (`http_client`), one upstream's calls and batches as plain
data (`client`), its WebSocket head feed (`websocket`), and `attempt`, the one way a
client's call reaches an upstream (timed, counted, classified, recorded, traced). May
import `consensus`, `rpc` and `config`.
"""
