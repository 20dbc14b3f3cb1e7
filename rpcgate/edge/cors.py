"""Browser access (CORS): which pages may call the gateway, and with which headers. Pure.

A browser dApp calls the RPC URL straight from its page; before a call with a header of its
own (`Cache-Control: no-cache`, an API key) it sends a preflight, and reads an answer's
headers only when they are exposed. Only browsers send `Origin`, so other clients are
spared these headers.
"""

from __future__ import annotations

from rpcgate.config.settings import CorsConfig

# The headers browser dApps and SDKs send; `Cache-Control` and `Pragma` come with a fetch
# made with `cache: "no-store"` or a no-cache request, X-Api-Key and Authorization carry
# client keys, the X-Rpcgate ones are rpcgate's own switches.
ALLOWED_HEADERS = (
    "Accept, Content-Type, Authorization, X-Api-Key, Cache-Control, Pragma, "
    "X-Requested-With, X-Rpcgate-Cache-Control, X-Rpcgate-Trace"
)
EXPOSED_HEADERS = (
    "X-Rpcgate-Upstream, X-Rpcgate-Attempts, X-Rpcgate-Cache, X-Rpcgate-Block, "
    "X-Rpcgate-Verified, Retry-After"
)


class CorsPolicy:
    def __init__(self, config: CorsConfig) -> None:
        self.any_origin = "*" in config.allowed_origins
        self.origins = frozenset(o.rstrip("/") for o in config.allowed_origins if o != "*")
        common = {
            "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Expose-Headers": EXPOSED_HEADERS,
            "Access-Control-Max-Age": "86400",
        }
        self._any = {"Access-Control-Allow-Origin": "*", **common}
        self._common = common

    def headers(self, origin: str | None) -> dict[str, str]:
        """The CORS headers for an answer to a page from `origin` (none: not a browser, or
        an origin that is not allowed, which the browser then refuses to read)."""
        if origin is None:
            return {}
        if self.any_origin:
            return self._any
        if origin in self.origins:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin", **self._common}
        return {}
