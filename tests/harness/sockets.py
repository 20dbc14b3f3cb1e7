"""This process's open TCP connections, read from /proc (Linux): what a test checks to see
that a client closed everything it opened."""

from __future__ import annotations

import os
from collections.abc import Iterable

_ESTABLISHED = "01"


def _own_socket_inodes() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def connections_to(ports: Iterable[int]) -> int:
    """Established connections this process holds to any of `ports` (as the client: the
    port is the remote end), IPv4 and IPv6."""
    wanted = {f"{port:04X}" for port in ports}
    own = _own_socket_inodes()
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as rows:
                lines = rows.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote_port = fields[2].rsplit(":", 1)[1]
            if remote_port in wanted and fields[3] == _ESTABLISHED and fields[9] in own:
                count += 1
    return count
