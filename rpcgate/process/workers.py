"""`serve --workers N`: N gateway processes on one port, started and watched by a supervisor.

Each worker is the whole gateway in a process of its own (`rpcgate serve --as-worker K` in a
fresh interpreter, so no event loop is ever forked) that binds the same address with
SO_REUSEPORT: the kernel spreads new connections across the workers. They share nothing but
Redis, exactly like replicas behind a load balancer (docs/operating.md, "Replicas agree"):
each tracks its own heads, and the served head in Redis keeps what they answer consistent.

The supervisor serves nothing. It takes the address once without SO_REUSEPORT and lets it go
(so a port in use fails at once, with a single process's message), starts the workers,
forwards SIGTERM, SIGINT and SIGHUP to each (each drains or reloads as a single process
does), restarts a worker that exits on its own (after a delay that doubles with each crash
in a row), and exits once every worker has exited after a stop signal. Workers run in a
process group of their own, so a terminal's Ctrl-C reaches them once, through the
supervisor. A worker's stdin is a pipe from the supervisor: if the supervisor dies, even by
SIGKILL, the workers see it close and stop.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import FrameType

import structlog

from rpcgate.config.settings import Config, split_host_port
from rpcgate.edge.siblings import COUNT_ENV, DIR_ENV
from rpcgate.process.lifecycle import EXIT_CANNOT_SERVE, EXIT_OK, open_listener

log = structlog.get_logger("rpcgate")

WORKERS_ENV = "RPCGATE_WORKERS"
EXIT_UNCLEAN_STOP = 1  # a worker ended otherwise than by draining after the stop signal

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
RESTART_FIRST_S = 0.5
RESTART_MAX_S = 30.0
STABLE_AFTER_S = 60.0  # a worker that ran this long before exiting starts a new crash count
POLL_S = 0.05


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under `taskset` or a
    cpuset), else the machine's count. A cgroup CPU quota is not seen: give a number then."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def parse_workers(value: str, cores: int) -> int:
    """`--workers` (or $RPCGATE_WORKERS): a whole number of 1 or more, or `auto` (`cores`)."""
    text = value.strip().lower()
    if text == "auto":
        return max(1, cores)
    if text.isascii() and text.isdigit() and int(text) >= 1:
        return int(text)
    raise ValueError(f"must be a number of processes (1 or more) or auto, not {value!r}")


def restart_delay(crashes_in_a_row: int) -> float:
    """Seconds before restarting a worker that exited on its own, the n-th time in a row."""
    return min(RESTART_MAX_S, RESTART_FIRST_S * 2.0 ** min(max(crashes_in_a_row - 1, 0), 16))


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit {returncode}"


def stopped_cleanly(returncode: int) -> bool:
    """After a stop signal: a drain's exit 0, or death by the forwarded signal itself (a
    worker still starting has no handler for it yet, and nothing in flight)."""
    return returncode in (EXIT_OK, -signal.SIGTERM, -signal.SIGINT)


def worker_command(number: int, config_path: str | None, listen: str) -> list[str]:
    """The same interpreter and package as the supervisor, whatever PATH says."""
    command = [sys.executable, "-m", "rpcgate.cli", "serve", "--as-worker", str(number)]
    if config_path is not None:
        command += ["--config", config_path]
    return [*command, "--listen", listen]


@dataclass
class _Worker:
    number: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    crashes_in_a_row: int = 0
    restart_at: float = 0.0


class Supervisor:
    """Runs `count` workers until a stop signal, then waits for every one to exit."""

    def __init__(self, command: Callable[[int], Sequence[str]], count: int) -> None:
        self._command = command
        self._workers = [_Worker(number) for number in range(count)]
        self._signals: deque[int] = deque()
        self._stop_signal: int | None = None
        self._clean = True

    def run(self) -> int:
        def received(signum: int, _frame: FrameType | None) -> None:
            self._signals.append(signum)  # acted on by the loop, outside the handler

        previous = {sig: signal.signal(sig, received) for sig in FORWARDED_SIGNALS}
        try:
            for worker in self._workers:
                self._start(worker)
            while not self._all_stopped():
                self._forward_signals()
                self._reap_and_restart(time.monotonic())
                time.sleep(POLL_S)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self._clean:
            log.info("stopped", workers=len(self._workers))
            return EXIT_OK
        log.warning("stopped", workers=len(self._workers), clean=False)
        return EXIT_UNCLEAN_STOP

    def _all_stopped(self) -> bool:
        return self._stop_signal is not None and all(w.process is None for w in self._workers)

    def _start(self, worker: _Worker) -> None:
        try:
            worker.process = subprocess.Popen(
                self._command(worker.number),
                stdin=subprocess.PIPE,  # never written: closes when the supervisor is gone
                process_group=0,  # a terminal's Ctrl-C reaches the workers through us, once
            )
        except OSError as exc:  # out of processes or memory: try again later, as for a crash
            worker.crashes_in_a_row += 1
            delay = restart_delay(worker.crashes_in_a_row)
            worker.restart_at = time.monotonic() + delay
            log.error("worker_not_started", worker=worker.number, error=str(exc), retry_in_s=delay)
            return
        worker.started_at = time.monotonic()
        log.info("worker_started", worker=worker.number, pid=worker.process.pid)

    def _forward_signals(self) -> None:
        while self._signals:
            sig = self._signals.popleft()
            live = [w.process for w in self._workers if w.process is not None]
            if sig != signal.SIGHUP and self._stop_signal is None:
                self._stop_signal = sig
                log.info("stopping", signal=signal.Signals(sig).name, workers=len(live))
            elif sig == signal.SIGHUP:
                # A worker still starting has no handler yet and dies of it: it is restarted
                # like any other, and reads the new file.
                log.info("reload_forwarded", workers=len(live))
            for process in live:
                process.send_signal(sig)

    def _reap_and_restart(self, now: float) -> None:
        for worker in self._workers:
            if worker.process is None:
                if self._stop_signal is None and now >= worker.restart_at:
                    self._start(worker)
                continue
            returncode = worker.process.poll()
            if returncode is None:
                continue
            pid, ran_s = worker.process.pid, now - worker.started_at
            if worker.process.stdin is not None:
                worker.process.stdin.close()
            worker.process = None
            if self._stop_signal is not None:
                clean = stopped_cleanly(returncode)
                self._clean = self._clean and clean
                (log.info if clean else log.warning)(
                    "worker_stopped", worker=worker.number, pid=pid, exit=describe_exit(returncode)
                )
                continue
            worker.crashes_in_a_row = 1 if ran_s >= STABLE_AFTER_S else worker.crashes_in_a_row + 1
            delay = restart_delay(worker.crashes_in_a_row)
            worker.restart_at = now + delay
            log.warning(
                "worker_exited",
                worker=worker.number,
                pid=pid,
                exit=describe_exit(returncode),
                ran_s=round(ran_s, 1),
                restart_in_s=delay,
            )


def supervise(config: Config, config_path: str | None, count: int) -> int:
    """`serve --workers N` with N > 1: check the address, then run the workers."""
    host, port = config.listen_host_port()
    probe = open_listener(host, port)  # without SO_REUSEPORT: any listener there refuses it
    if probe is None:
        return EXIT_CANNOT_SERVE
    probe.close()
    if config.ops.listen is not None:
        probe = open_listener(*split_host_port(config.ops.listen))
        if probe is None:
            return EXIT_CANNOT_SERVE
        probe.close()
    if config.cache.redis_url is None:
        log.warning(
            "workers_share_nothing",
            workers=count,
            detail=(
                "without cache.redis_url each worker is a replica of its own: caches, "
                "filters, rate limits and served heads are not shared, so eth_blockNumber "
                "may go back between two calls and a filter may be unknown to the next "
                "connection; set cache.redis_url"
            ),
        )

    def command(number: int) -> list[str]:
        return worker_command(number, config_path, config.listen)

    # A private directory (0700) for the workers' Unix sockets: through them the worker a
    # request reaches asks the others (metrics, status, drills: edge/siblings.py).
    directory = tempfile.mkdtemp(prefix="rpcgate-workers-")
    os.environ[DIR_ENV], os.environ[COUNT_ENV] = directory, str(count)
    try:
        return Supervisor(command, count).run()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
