"""The chart's Redis with Sentinel (redis.sentinel.enabled), run: the start scripts it renders
run here, each "pod" on a loopback address of its own (127.0.0.2-4 stand for the pods' DNS
names), with the environment the StatefulSet gives them. Pod 0 starts as the primary and the
others as its replicas; when pod 0 dies the sentinels elect another; pod 0 started again
joins that one as a replica; and the gateway's redis+sentinel:// URL finds the primary."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.sentinel import Sentinel

from rpcgate.config.redis_url import parse_redis_url
from rpcgate.config.settings import parse_config
from tests.harness.helm import SENTINEL_VALUES, find, pod_spec, render
from tests.harness.tools import free_port

# Pod 0, 1, 2. Not 127.0.0.1: the other tests (other xdist workers too) take their ports
# there, and one taking pod 0's port while it is down would answer the sentinels for it.
HOSTS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")
# Faster than the default 5 s, so that the failover happens within the test.
FAST = ["redis.sentinel.downAfterMilliseconds=1000", "redis.sentinel.failoverTimeout=3000"]


class Pod:
    """One pod of the StatefulSet: its redis and sentinel containers, as processes."""

    def __init__(
        self, index: int, root: Path, rendered: list[dict[str, Any]], ports: dict[str, int]
    ):
        self.index, self.host = index, HOSTS[index]
        self.dir = root / f"pod-{index}"
        self.rendered, self.ports = rendered, ports
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, sentinel_service: str) -> Pod:
        statefulset = find(self.rendered, "StatefulSet", "-redis")
        scripts = find(self.rendered, "ConfigMap", "-redis-scripts")["data"]
        shutil.rmtree(self.dir, ignore_errors=True)
        for mount in ("scripts", "sentinel", "data"):
            (self.dir / mount).mkdir(parents=True)
        for name, text in scripts.items():  # the pod's mounts, mapped into its directory
            text = text.replace("/scripts/", f"{self.dir}/scripts/")
            (self.dir / "scripts" / name).write_text(
                text.replace("/sentinel/", f"{self.dir}/sentinel/")
            )
        for container in pod_spec(statefulset)["containers"]:
            env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
            for variable in container["env"]:
                env[variable["name"]] = variable.get("value", "")
            # DNS names and ports of the cluster, as this machine has them.
            env.update(
                MY_HOST=self.host,
                FIRST_PRIMARY=HOSTS[0],
                SENTINEL_SERVICE=sentinel_service,
                REDIS_PORT=str(self.ports["redis"]),
                SENTINEL_PORT=str(self.ports["sentinel"]),
            )
            shell, script = container["command"]
            command = [shell, script.replace("/scripts/", f"{self.dir}/scripts/")]
            self.processes.append(
                subprocess.Popen(
                    [*command, "--bind", self.host],  # the pod's own address only
                    cwd=self.dir / "data",
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        return self

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(10)
        self.processes = []

    def server(self) -> redis.Redis:
        return redis.Redis(self.host, self.ports["redis"], socket_timeout=2, decode_responses=True)

    def sentinel_server(self) -> redis.Redis:
        return redis.Redis(
            self.host, self.ports["sentinel"], socket_timeout=2, decode_responses=True
        )


def _eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except redis.RedisError:
            pass
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[list[Pod]]:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server not found: apt-get install redis-server")
    rendered = render([SENTINEL_VALUES], set_values=FAST)
    ports = {"redis": free_port(), "sentinel": free_port()}
    started = [Pod(i, tmp_path, rendered, ports) for i in range(len(HOSTS))]
    yield started
    for pod in started:
        pod.stop()


def _primary_named_by(pod: Pod) -> str:
    master = pod.sentinel_server().execute_command("SENTINEL", "get-master-addr-by-name", "rpcgate")
    return str(master[0]) if master else ""


def test_sentinels_fail_over_and_a_returning_pod_0_joins_the_new_primary(
    pods: list[Pod],
) -> None:
    rendered = pods[0].rendered
    assert find(rendered, "StatefulSet", "-redis")["spec"]["replicas"] == len(pods) == 3
    for pod in pods:  # a first start: no sentinel answers yet, so pod 0 is the primary
        pod.start(sentinel_service=HOSTS[0])
    first, *others = pods

    def settled() -> bool:
        return (
            all(_primary_named_by(p) == first.host for p in pods)
            and all(p.server().execute_command("ROLE")[0] == "slave" for p in others)
            and all(
                len(p.sentinel_server().execute_command("SENTINEL", "sentinels", "rpcgate")) == 2
                for p in pods
            )
            # Each sentinel knows both replicas (it learns them from the primary's INFO,
            # every 10 s): one that knows none has nobody to promote, for good, once the
            # primary is gone ("-failover-abort-no-good-slave").
            and all(
                len(p.sentinel_server().execute_command("SENTINEL", "replicas", "rpcgate")) == 2
                for p in pods
            )
        )

    _eventually(settled, "pod 0 the primary, pods 1 and 2 its replicas, 3 sentinels knowing both")

    # The gateway's URL, as the chart renders it, names the sentinels' Service: here, pod 1's.
    url = parse_config(find(rendered, "ConfigMap")["data"]["config.yaml"], env={}).cache.redis_url
    assert url is not None
    target = parse_redis_url(url)
    assert (target.kind, target.service, target.hosts[0][1]) == ("sentinel", "rpcgate", 26379)
    sentinel = Sentinel([(HOSTS[1], pods[1].ports["sentinel"])], socket_timeout=2)
    sentinel.master_for(target.service, socket_timeout=2).set("head", "0x10")
    _eventually(lambda: others[0].server().get("head") == "0x10", "the write on a replica")

    first.stop()  # pod 0 dies: the two sentinels left agree (quorum 2) and elect a replica
    _eventually(
        lambda: (
            all(_primary_named_by(p) in HOSTS[1:] for p in others)
            and _primary_named_by(others[0]) == _primary_named_by(others[1])
        ),
        "a new primary among pods 1 and 2",
        # Two sentinels that both stand for leader split the vote; each tries again after
        # twice the failover timeout (6 s): a few such rounds happen on a busy machine.
        timeout=45.0,
    )
    elected = _primary_named_by(others[0])
    _eventually(
        lambda: sentinel.discover_master(target.service)[0] == elected,
        "the gateway's sentinel client finds the new primary",
    )
    sentinel.master_for(target.service, socket_timeout=2).set("head", "0x11")

    first.start(sentinel_service=HOSTS[1])  # the Service now reaches pods 1 and 2 only
    # A replica from its first answer: never a second primary taking writes meanwhile.
    _eventually(lambda: bool(first.server().ping()), "pod 0's redis answers")
    assert first.server().execute_command("ROLE")[0] == "slave"
    _eventually(
        lambda: (
            first.server().execute_command("ROLE")[:2] == ["slave", elected]
            and first.server().get("head") == "0x11"
            and _primary_named_by(first) == elected
        ),
        "pod 0 back as a replica of the new primary, its sentinel watching that one",
    )
