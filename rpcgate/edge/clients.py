"""Who is calling: a client key (when keys are configured) or an address, decided from
plain request data. Pure; the server hands in the path, headers and query it read.

A key is taken from the path (`/{chain}/{key}`), the `X-Api-Key` header,
`Authorization: Bearer {key}` or the query (`?key=`), in that order, and compared with every
configured key in constant time, so the time an answer takes says nothing about how much of
a guess was right. Keys are never logged: a client is named by its key's `name`.

Without keys the gateway is open, and a client is its address: the peer's address, or,
when the peer is a trusted proxy (`limits.trusted_proxies`), the last address in
`X-Forwarded-For` that is not one of those proxies (the one a trusted proxy saw). Every
`X-Forwarded-For` line counts, joined in order: a proxy that adds a line of its own
(HAProxy's `option forwardfor`) leaves the client's forged line first, and the last line
is the one to believe.

Per-client limits apply to clients with a public address: one whose address is in
`limits.unlimited_networks` (loopback and the private ranges by default: the operator's own
backends) is not limited, unless its key has a rate of its own.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from rpcgate.config.settings import AuthConfig, ClientKey

# The JSON-RPC error of a refused key (HTTP 401 or 403), in rpcgate's range (jsonrpc.py).
UNAUTHORIZED = -32056
HEADER_KEY = "X-Api-Key"
QUERY_KEY = "key"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Caller:
    """A client as rate limits and logs see it."""

    identity: str  # "key:{name}" or "ip:{address}": what its limits are counted under
    key: ClientKey | None = None
    limited: bool = True  # whether the per-client rate and in-flight limits apply


@dataclass(frozen=True, slots=True)
class Refusal:
    status: int  # 401: no key or an unknown one; 403: a key not allowed on this chain
    message: str
    reason: str  # for metrics: no_key | unknown_key | chain_not_allowed


def presented_key(
    path_key: str | None, headers: Mapping[str, str], query: Mapping[str, str]
) -> str | None:
    if path_key:
        return path_key
    header = headers.get(HEADER_KEY)
    if header:
        return header.strip()
    authorization = headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return query.get(QUERY_KEY) or None


def find_key(keys: Iterable[ClientKey], presented: str) -> ClientKey | None:
    """The configured key equal to `presented`; every key is compared, in constant time."""
    given = presented.encode("utf-8", "surrogateescape")
    found = None
    for client in keys:
        if hmac.compare_digest(given, client.key.encode()):
            found = client
    return found


def authenticate(
    auth: AuthConfig, presented: str | None, chain_name: str, chain_id: int
) -> Caller | Refusal | None:
    """The caller with a key; None when keys are not configured (the address decides)."""
    if not auth.keys:
        return None
    if presented is None:
        return Refusal(
            401,
            "an API key is needed: put it in the path (/{chain}/{key}), the X-Api-Key "
            "header, Authorization: Bearer, or ?key=",
            "no_key",
        )
    client = find_key(auth.keys, presented)
    if client is None:
        return Refusal(401, "unknown API key", "unknown_key")
    if client.chains and chain_name not in client.chains and str(chain_id) not in client.chains:
        return Refusal(
            403,
            f"the API key of {client.name!r} may not call chain {chain_name!r}",
            "chain_not_allowed",
        )
    return Caller(f"key:{client.name}", client)


def trusted_networks(proxies: Iterable[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: tuple[Network, ...]
) -> str:
    """The address a client is counted under (`X-Forwarded-For`, every line of it in
    order, believed only from a trusted proxy, read from the right: every hop before it
    may be forged)."""
    address = peer or "unknown"
    if not trusted or not forwarded_for or not _is_trusted(address, trusted):
        return address
    hops = [h.strip() for line in forwarded_for for h in line.split(",")]
    for hop in reversed(hops):
        if not hop:
            continue
        address = hop
        if not _is_trusted(hop, trusted):
            break
    return address


def is_limited(caller: Caller, address: str, unlimited: tuple[Network, ...]) -> bool:
    """Whether the per-client limits apply to this caller: not to an address in one of the
    `unlimited` networks (an IPv4 address mapped into IPv6 counts as itself), unless its
    key has a rate of its own."""
    if caller.key is not None and caller.key.rate_per_s is not None:
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not any(ip in network for network in unlimited)
