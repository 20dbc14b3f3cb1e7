"""The `unit` mark kept honest. A unit test is pure: no process, socket, node or Redis
(pyproject's `markers`), so `./scripts/test -m unit` runs in seconds anywhere. A unit test
that asks for a fixture which starts one is refused at collection; one that opens a socket
or starts a process on its own fails, naming what it did. tests/conftest.py installs the
hooks."""

from __future__ import annotations

import sys
import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

# The fixtures that start nodes, proxies, gateways, processes or Redis (or host them).
INTEGRATION_FIXTURES = frozenset(
    {
        "anvil_cluster",
        "background_loop",
        "fault_proxy",
        "load_balancer",
        "proxied_cluster",
        "redis_server",
        "replica_process",
        "serve_process",
        "start_gateway",
    }
)

# Audit events (PEP 578) that mean the test left its process or reached for the network.
# uvloop's sockets raise none: a loop of its own is for an integration test anyway.
IMPURE_EVENTS = frozenset(
    {
        "socket.bind",
        "socket.connect",
        "socket.getaddrinfo",
        "socket.gethostbyname",
        "socket.sendmsg",
        "socket.sendto",
        "subprocess.Popen",
        "os.exec",
        "os.fork",
        "os.forkpty",
        "os.posix_spawn",
        "os.system",
    }
)


class ImpureUnitTest(RuntimeError):
    """Not an OSError: code that retries or wraps network errors must not swallow it."""


class _Guard:
    """Which thread runs a unit test now (None: none does), and what impure it did."""

    thread: int | None = None
    seen: list[str] = []


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event in IMPURE_EVENTS and _Guard.thread == threading.get_ident():
        what = f"{event}{args!r}"[:200]
        _Guard.seen.append(what)
        raise ImpureUnitTest(f"a `unit` test must be pure, yet it did {what}")


sys.addaudithook(_audit)  # hooks stay for the process; one check per event, cheap


@contextmanager
def _pure(item: pytest.Item) -> Iterator[None]:
    outer = (_Guard.thread, _Guard.seen)  # a unit test may run a session of its own
    unit = item.get_closest_marker("unit") is not None
    _Guard.thread, _Guard.seen = threading.get_ident() if unit else None, []
    try:
        yield
        seen = _Guard.seen
    finally:
        _Guard.thread, _Guard.seen = outer
    if seen:  # the test caught ImpureUnitTest and went on: it still failed the rule
        pytest.fail(
            f"a `unit` test must be pure (no process, socket, node or Redis), yet it did "
            f"{'; '.join(seen)}: drop its `unit` mark",
            pytrace=False,
        )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    impure = [
        f"{item.nodeid}: {', '.join(sorted(INTEGRATION_FIXTURES.intersection(fixtures)))}"
        for item in items
        if item.get_closest_marker("unit")
        and INTEGRATION_FIXTURES.intersection(fixtures := getattr(item, "fixturenames", ()))
    ]
    if impure:
        raise pytest.UsageError(
            "`unit` tests must be pure (no process, socket, node or Redis), yet these ask "
            "for fixtures that start one; drop their `unit` mark:\n  " + "\n  ".join(impure)
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    with _pure(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with _pure(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, None, None]:
    with _pure(item):
        return (yield)
