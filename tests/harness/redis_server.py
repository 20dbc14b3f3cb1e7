"""A throwaway redis-server for one test: its own port, no persistence, killed after."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence

import redis

from tests.harness.tools import free_port

REDIS_INSTALL_HINT = (
    "redis-server not found: install it (Debian: apt-get install redis-server); "
    "./scripts/test installs it when it can"
)


def redis_binary() -> str:
    found = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if found is None:
        raise RuntimeError(REDIS_INSTALL_HINT)
    return found


class RedisServer:
    def __init__(self, port: int | None = None, extra_args: Sequence[str] = ()) -> None:
        self.port = port or free_port()
        self.extra_args = list(extra_args)
        self._dir = tempfile.TemporaryDirectory(prefix="rpcgate-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def directory(self) -> str:
        return self._dir.name

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self._process = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir.name,
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def kill(self) -> None:
        """SIGKILL: what a crashed or OOM-killed Redis looks like to its clients."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(5)
            self._process = None

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a hung Redis)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)
        self.kill()
        self._dir.cleanup()


class SentinelSet:
    """A primary, a replica of it and three sentinels watching them (service `rpcgate`),
    all throwaway: what `redis+sentinel://` is tested against. A primary killed is seen as
    down after `down_after_ms` and a replica promoted in its place."""

    SERVICE = "rpcgate"

    def __init__(self, down_after_ms: int = 1000) -> None:
        self.primary = RedisServer()
        self.replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(self.primary.port)])
        self.down_after_ms = down_after_ms
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._sentinels: list[subprocess.Popen[bytes]] = []
        self._dir = tempfile.TemporaryDirectory(prefix="rpcgate-sentinel-")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def start(self) -> SentinelSet:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> SentinelSet:
        self.primary.start()
        self.replica.start()
        for port in self.sentinel_ports:
            conf = os.path.join(self._dir.name, f"sentinel-{port}.conf")
            with open(conf, "w") as out:
                out.write(
                    f"port {port}\nbind 127.0.0.1\ndir {self._dir.name}\n"
                    f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                    f"sentinel down-after-milliseconds {self.SERVICE} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {self.SERVICE} 5000\n"
                )
            self._sentinels.append(
                subprocess.Popen(
                    [redis_binary(), conf, "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self._replica_in_sync() and all(self._knows_replica(p) for p in self.sentinel_ports):
                return self
            time.sleep(0.1)
        raise RuntimeError("the sentinel set did not come up (replica in sync, sentinels told)")

    def _replica_in_sync(self) -> bool:
        try:
            info = self.replica.client().info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up"

    def _knows_replica(self, port: int) -> bool:
        try:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
            return bool(client.sentinel_slaves(self.SERVICE))
        except redis.RedisError:
            return False

    def primary_port(self) -> int | None:
        """The primary's port as the sentinels name it now."""
        for port in self.sentinel_ports:
            try:
                client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
                host_port = client.sentinel_get_master_addr_by_name(self.SERVICE)
            except redis.RedisError:
                continue
            if isinstance(host_port, tuple):
                return int(host_port[1])
        return None

    def wait_for_failover(self, timeout: float = 20) -> float:
        """Seconds until the sentinels name the replica as the primary."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.primary_port() == self.replica.port:
                return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError("no failover: the sentinels still name the old primary")

    def stop(self) -> None:
        for process in self._sentinels:
            process.kill()
            process.wait(5)
        self.replica.stop()
        self.primary.stop()
        self._dir.cleanup()


class ClusterSet:
    """A Redis Cluster of three primaries (no replicas), throwaway: what
    `redis+cluster://` is tested against."""

    def __init__(self, size: int = 3) -> None:
        self.nodes = [
            RedisServer(
                port=_cluster_port(),
                extra_args=[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
            )
            for _ in range(size)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> ClusterSet:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> ClusterSet:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in self.nodes),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(_cluster_ok(n) for n in self.nodes):
                return self
            time.sleep(0.1)
        raise RuntimeError("the cluster did not reach cluster_state:ok")

    def client(self) -> redis.RedisCluster:
        return redis.RedisCluster(host="127.0.0.1", port=self.nodes[0].port, socket_timeout=2)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_ok(node: RedisServer) -> bool:
    info = node.client().execute_command("CLUSTER INFO")  # redis-py parses it into a dict
    state = info.get("cluster_state") if isinstance(info, dict) else None
    return state in ("ok", b"ok")


def _cluster_port() -> int:
    """A free port whose cluster bus port (the port + 10000) is a port too, and free."""
    import socket

    while True:
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
