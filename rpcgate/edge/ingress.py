"""What stands between clients and a gateway: who may call (admission: client keys and rate
limits), which browser origins may read the answers (CORS), and the WebSocket connections
open. The gateway itself knows nothing of these (it also runs with no HTTP in front of it);
one ingress is built per gateway, by the HTTP server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rpcgate.edge.admission import Admission
from rpcgate.edge.cors import CorsPolicy
from rpcgate.edge.gateway import Gateway

if TYPE_CHECKING:
    from rpcgate.edge.websocket import Connection


class Ingress:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.admission = Admission(gateway.config, gateway.redis)
        self.cors = CorsPolicy(gateway.config.cors)
        self.websockets: set[Connection] = set()
        gateway.metrics.clients = self  # refusals and connections, read at scrape

    def websocket_counts(self) -> dict[str, int]:
        return {
            "websocket_connections": len(self.websockets),
            "websocket_subscriptions": sum(len(c.subscriptions) for c in self.websockets),
        }

    def status(self) -> dict[str, Any]:
        """What `/status.json` says of clients: refusals, where limits are counted, sockets."""
        return {**self.admission.status, **self.websocket_counts()}
