"""The process around the server: listen, then drain on SIGTERM and reload on SIGHUP.

SIGTERM (what Kubernetes and Docker send): `/readyz` answers 503 at once, the listener
closes after `shutdown.grace_s` (time for a load balancer to notice), calls in flight get up
to `shutdown.timeout_s` to finish, and the process exits 0. SIGINT (Ctrl-C) does the same
without the grace; a second signal stops at once. SIGHUP reads the config file again: a
valid one is swapped in (`reload`), an invalid one is refused with the messages `rpcgate
config validate` prints, and the old config keeps serving.

As one of `serve --workers N`'s processes (`rpcgate.workers`), the listener shares its port
with the other workers (SO_REUSEPORT), and the process also stops when its supervisor is
gone (its stdin, a pipe from the supervisor, closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import socket
import sys
from collections.abc import Callable

import structlog
from aiohttp import web

from rpcgate.config.settings import Config, ConfigError, load_config, split_host_port
from rpcgate.edge.connections import runner_for
from rpcgate.edge.fast_http import rpc_runner
from rpcgate.edge.http_server import (
    GATEWAY,
    INGRESS,
    Gateway,
    build_app,
    build_ops_app,
    build_sibling_app,
)
from rpcgate.edge.siblings import Siblings
from rpcgate.process.reload import reconfigure

log = structlog.get_logger("rpcgate")

EXIT_OK = 0
EXIT_CANNOT_SERVE = 2


def listen_error(host: str, port: int, exc: OSError) -> str:
    """One line an operator can act on, for a listener that could not open."""
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return f"cannot listen on {where}: the port is already in use (another rpcgate?)"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need root)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: no such address on this machine"
    return f"cannot listen on {where}: {exc.strerror or exc}"


def bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """The listening address, taken before the gateway starts (so a port in use fails at
    once, not after the first head polls). `reuse_port`: workers of one supervisor each bind
    the same address and the kernel spreads new connections across them."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def open_listener(host: str, port: int, *, reuse_port: bool = False) -> socket.socket | None:
    """The bound socket, or None once the reason it could not be had is logged (one line)."""
    try:
        return bind(host, port, reuse_port=reuse_port)
    except socket.gaierror as exc:
        log.error("cannot_listen", error=f"cannot listen on {host}:{port}: {exc.strerror}")
    except OSError as exc:
        log.error("cannot_listen", error=listen_error(host, port, exc))
    return None


async def serve(config: Config, config_path: str | None, *, worker: int | None = None) -> int:
    """Serve until a stop signal. `worker`: this process's number among a supervisor's
    workers (see above); None: a process alone."""
    siblings = Siblings.from_env(worker)
    host, port = config.listen_host_port()
    sock = open_listener(host, port, reuse_port=worker is not None)
    if sock is None:
        return EXIT_CANNOT_SERVE
    ops_sock = None
    if config.ops.listen is not None:
        ops_host, ops_port = split_host_port(config.ops.listen)
        ops_sock = open_listener(ops_host, ops_port, reuse_port=worker is not None)
        if ops_sock is None:
            sock.close()
            return EXIT_CANNOT_SERVE
    app = build_app(config, siblings)
    gateway = app[GATEWAY]
    runner = rpc_runner(
        app,
        config,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=config.shutdown.timeout_s,
    )
    await runner.setup()  # starts the gateway: one head-poll round per chain
    await web.SockSite(runner, sock).start()
    ops_runner = None
    if ops_sock is not None:
        ops_runner = runner_for(
            build_ops_app(app[INGRESS], siblings), config, access_log=None, handle_signals=False
        )
        await ops_runner.setup()
        await web.SockSite(ops_runner, ops_sock).start()
        log.info("listening_ops", listen=_where(ops_sock), paths="/metrics /status /admin")
    sibling_runner = None
    if siblings is not None:  # the other workers ask this one over a Unix socket
        sibling_runner = web.AppRunner(
            build_sibling_app(app), access_log=None, handle_signals=False
        )
        await sibling_runner.setup()
        await web.UnixSite(sibling_runner, siblings.socket(siblings.own)).start()
    log.info("listening", listen=f"{host}:{port}", pid=os.getpid())

    loop = asyncio.get_running_loop()
    stopping: asyncio.Future[bool] = loop.create_future()  # result: wait for the grace
    reloads: set[asyncio.Task[None]] = set()

    def on_stop(grace: bool) -> Callable[[], None]:
        def handler() -> None:
            if stopping.done():  # a second signal: stop now
                log.warning("stopping_now")
                raise SystemExit(EXIT_OK)
            stopping.set_result(grace)

        return handler

    def on_reload() -> None:
        task = asyncio.create_task(_reload(gateway, config_path))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    def on_supervisor_gone() -> None:
        log.warning("supervisor_gone", stopping="without the grace")
        if not stopping.done():
            stopping.set_result(False)

    loop.add_signal_handler(signal.SIGTERM, on_stop(True))
    loop.add_signal_handler(signal.SIGINT, on_stop(False))
    loop.add_signal_handler(signal.SIGHUP, on_reload)
    if worker is not None:
        _watch_supervisor(loop, on_supervisor_gone)
    try:
        wait_for_grace = await stopping
        gateway.draining = True
        grace = config.shutdown.grace_s if wait_for_grace else 0.0
        log.info("draining", grace_s=grace, timeout_s=config.shutdown.timeout_s)
        await asyncio.sleep(grace)
        for task in reloads:
            task.cancel()
        # Closes the listener and idle connections, waits for calls in flight (bounded).
        await runner.cleanup()
        if ops_runner is not None:  # metrics and status stay readable while draining
            await ops_runner.cleanup()
        if sibling_runner is not None:
            await sibling_runner.cleanup()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        if worker is not None:
            with contextlib.suppress(ValueError, RuntimeError, OSError):
                loop.remove_reader(sys.stdin.fileno())
    log.info("stopped")
    return EXIT_OK


def _where(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def _watch_supervisor(loop: asyncio.AbstractEventLoop, on_gone: Callable[[], None]) -> None:
    """A worker's stdin is a pipe its supervisor holds open and never writes to: end of file
    means the supervisor is gone (even killed with SIGKILL), and no one would stop this
    worker any more."""
    fd = sys.stdin.fileno()

    def readable() -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            on_gone()

    loop.add_reader(fd, readable)


async def _reload(gateway: Gateway, config_path: str | None) -> None:
    if config_path is None:
        log.warning("reload_skipped", reason="serving the embedded default: no file to read")
        return
    log.info("reloading", config=config_path)
    try:
        new = load_config(config_path)
    except ConfigError as exc:
        log.error(
            "reload_refused",
            config=config_path,
            problems=exc.problems,
            keeps_serving="the config loaded before",
        )
        return
    try:
        await reconfigure(gateway, new)
    except Exception:  # a bug must not take the serving config down with it
        log.exception("reload_failed", config=config_path)
