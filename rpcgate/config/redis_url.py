"""What a `cache.redis_url` names: one server, a Sentinel-watched primary, or a Cluster.

- `redis://[user:password@]host:port[/DB]`, `rediss://…` (TLS), `unix:///path.sock`: one
  server, as redis-py reads it.
- `redis+sentinel://[user:password@]host:port[,host:port...]/SERVICE_NAME[/DB]` (and
  `rediss+sentinel://`): the primary the sentinels name for SERVICE_NAME, found again by
  asking them after a failover. The user and password are the data nodes'; sentinels are
  asked without them.
- `redis+cluster://[user:password@]host:port[,host:port...]` (and `rediss+cluster://`):
  a Redis Cluster, found from any of the nodes given. A cluster has database 0 only.

Pure: parsing only (`storage.redis_client` makes the client).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

Kind = Literal["single", "sentinel", "cluster"]

_SCHEMES: dict[str, tuple[Kind, bool]] = {  # scheme -> (kind, TLS)
    "redis": ("single", False),
    "rediss": ("single", True),
    "unix": ("single", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
SCHEMES = tuple(_SCHEMES)


@dataclass(frozen=True)
class RedisTarget:
    kind: Kind
    url: str  # as written (a single server's URL goes to redis-py as is)
    hosts: tuple[tuple[str, int], ...] = ()  # sentinels, or cluster nodes
    service: str = ""  # sentinel: the primary's name
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False


class RedisUrlError(ValueError):
    """What is wrong with the URL, said without the URL (it may hold a password)."""


def parse_redis_url(url: str) -> RedisTarget:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in _SCHEMES:
        raise RedisUrlError("must start with " + ", ".join(f"{s}://" for s in SCHEMES))
    kind, tls = _SCHEMES[scheme]
    if kind == "single":
        return RedisTarget("single", url, tls=tls)
    rest = url.split("://", 1)[1]
    where, _, path = rest.partition("/")
    credentials, _, hostlist = where.rpartition("@")
    username = password = None
    if credentials:
        user, _, secret = credentials.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    hosts = tuple(_host_port(part) for part in hostlist.split(",") if part)
    if not hosts:
        raise RedisUrlError(f"{scheme}:// needs at least one host:port")
    parts = [p for p in path.split("/") if p]
    service, db = "", 0
    if kind == "sentinel":
        if not parts:
            raise RedisUrlError(f"{scheme}:// needs the service name: …/SERVICE_NAME[/DB]")
        service = unquote(parts[0])
        if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
            raise RedisUrlError("after the service name only a database number may follow")
        db = int(parts[1]) if len(parts) == 2 else 0
    elif parts:
        raise RedisUrlError("a cluster URL names nodes only (a cluster has database 0 only)")
    return RedisTarget(kind, url, hosts, service, db, username, password, tls)


def _host_port(part: str) -> tuple[str, int]:
    host, sep, port = part.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RedisUrlError(f"each node must be host:port, not {part.split('@')[-1]!r}")
    return host.strip("[]"), int(port)
