"""The `rpcgate` command: serve, check, config validate."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import signal
import socket
import sys
from typing import TextIO

import structlog

from rpcgate import __version__
from rpcgate.config.settings import Config, ConfigError, load_config, split_host_port
from rpcgate.rpc.logs import configure_logging
from rpcgate.rpc.masking import mask_url

CONFIG_ENV = "RPCGATE_CONFIG"


def _config_path(arg: str | None) -> str | None:
    return arg or os.environ.get(CONFIG_ENV) or None


def _load_or_exit(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        where = path or "the embedded default"
        print(f"rpcgate: invalid config ({where}):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(2) from None


def _workers_or_exit(arg: str | None, listen: str) -> int:
    from rpcgate.process.workers import WORKERS_ENV, available_cores, parse_workers

    source, value = ("--workers", arg) if arg else (f"${WORKERS_ENV}", os.environ.get(WORKERS_ENV))
    try:
        count = parse_workers(value or "1", available_cores())
    except ValueError as exc:
        print(f"rpcgate: {source} {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if count > 1 and split_host_port(listen)[1] == 0:
        print(f"rpcgate: {source} {count} needs a fixed port, not {listen}", file=sys.stderr)
        raise SystemExit(2)
    if count > 1 and not hasattr(socket, "SO_REUSEPORT"):
        print(f"rpcgate: {source} {count} needs SO_REUSEPORT (Linux)", file=sys.stderr)
        raise SystemExit(2)
    return count


def _stderr_one_write_per_line() -> TextIO:
    """stderr, buffered up to each newline: a supervisor and its workers share one stderr,
    and a log line written in one piece is not cut by another process's (sys.stderr writes
    the line and its newline separately)."""
    return open(
        sys.stderr.fileno(),
        "w",
        buffering=1,
        encoding="utf-8",
        errors="backslashreplace",
        closefd=False,
    )


def cmd_serve(args: argparse.Namespace) -> int:
    if args.as_worker is not None:
        # A supervisor's Ctrl-C, forwarded while this worker is still starting: end quietly
        # (the event loop's own handler takes over once it listens).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    path = _config_path(args.config)
    config = _load_or_exit(path)
    if args.listen:
        try:
            split_host_port(args.listen)
        except ValueError as exc:
            print(f"rpcgate: --listen {exc}", file=sys.stderr)
            return 2
        config = dataclasses.replace(config, listen=args.listen)
    workers = 1 if args.as_worker is not None else _workers_or_exit(args.workers, config.listen)
    if workers > 1 or args.as_worker is not None:
        configure_logging(config.log_level, stream=_stderr_one_write_per_line())
    else:
        configure_logging(config.log_level)
    log = structlog.get_logger("rpcgate")
    if args.as_worker is None:
        log.info(
            "starting",
            version=__version__,
            listen=config.listen,
            workers=workers,
            config=path or "embedded default",
            chains=[
                {
                    "name": c.name,
                    "chain_id": c.chain_id,
                    "upstreams": [f"{u.name} {mask_url(u.url)}" for u in c.upstreams],
                }
                for c in config.chains
            ],
        )
    if workers > 1:
        from rpcgate.process.workers import supervise

        return supervise(config, path, workers)
    if args.as_worker is not None:
        # Every line a worker logs says which worker it is (asyncio's tasks copy the context).
        structlog.contextvars.bind_contextvars(worker=args.as_worker)
    try:
        import uvloop  # a faster event loop where it is available

        uvloop.install()
    except ImportError:
        pass
    from rpcgate.process.lifecycle import serve

    # Everything loaded so far lives as long as the process: keep it out of the garbage
    # collector's way (fewer objects to scan on every collection).
    gc.freeze()
    # A call makes a few hundred short-lived objects (futures, tasks, dicts), nearly none in
    # cycles: collecting the youngest generation every 700 allocations (the default) cost a
    # 50-item batch about a quarter of its time (bench/suite.py scenario c: 395 -> 510
    # batches/s; pass-through +9 %). Cycles wait a little longer instead.
    gc.set_threshold(50_000, 50, 100)
    return asyncio.run(serve(config, path, worker=args.as_worker))


def cmd_check(args: argparse.Namespace) -> int:
    from rpcgate.cli.probe import chains_without_working_upstream, check_all, format_table

    config = _load_or_exit(_config_path(args.config))
    configure_logging("error")
    results = asyncio.run(check_all(config, timeout_s=args.timeout))
    print(format_table(results))
    dead = chains_without_working_upstream(config, results)
    if dead:
        print(f"\nno working upstream for: {', '.join(dead)}", file=sys.stderr)
        return 1
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    # The file `serve` and `check` would read: FILE, else $RPCGATE_CONFIG, else the default.
    path = _config_path(args.file)
    where = path or "the embedded default"
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{where}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 1
    upstreams = sum(len(c.upstreams) for c in config.chains)
    print(f"{where}: ok ({len(config.chains)} chain(s), {upstreams} upstream(s))")
    return 0


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="rpcgate",
        description=(
            "A drop-in JSON-RPC gateway for EVM chains over many upstreams: one URL per "
            "chain, block-height agreement, caching and failover."
        ),
        epilog="Run `rpcgate COMMAND --help` for a command's options.",
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"rpcgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the gateway",
        description=(
            "Run the gateway. Without a config it serves Ethereum mainnet over six keyless "
            "public endpoints at http://127.0.0.1:8545 (also /ethereum and /1).\n\n"
            "Signals: SIGTERM drains (readiness turns 503, the listener closes after "
            "shutdown.grace_s, calls in flight finish, exit 0); SIGINT does the same "
            "without the grace; SIGHUP reloads the config file (an invalid one is refused "
            "and the old one keeps serving).\n\n"
            "With --workers N, N processes serve the one port (SO_REUSEPORT) and this one "
            "supervises them: it forwards those signals to each, restarts a worker that "
            "dies, and exits when all have stopped. They share nothing but Redis: set "
            "cache.redis_url, or each worker is a replica of its own (its own cache, filters "
            "and served head)."
        ),
        epilog=(
            "examples:\n"
            "  rpcgate serve\n"
            "  rpcgate serve --config rpcgate.yaml --listen 0.0.0.0:8545\n"
            "  rpcgate serve --config rpcgate.yaml --workers auto\n"
            "exit status: 0 after a drain, 1 when a worker did not stop cleanly, 2 when the "
            "config or --workers is invalid or the port cannot be opened"
        ),
        formatter_class=formatter,
    )
    serve.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML config file (default: ${CONFIG_ENV}, else the embedded mainnet default)",
    )
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="where to listen; overrides the config's `listen`"
    )
    serve.add_argument(
        "--workers",
        metavar="N|auto",
        help=(
            "processes serving the port; auto: one per core this process may use "
            "(default: $RPCGATE_WORKERS, else 1: this process serves alone)"
        ),
    )
    # Internal: how the supervisor starts worker K (see rpcgate/process/workers.py).
    serve.add_argument("--as-worker", type=int, metavar="K", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser(
        "check",
        help="probe every upstream and print a table",
        description=(
            "Probe every configured upstream once (chain id, head, latency, client version, "
            "old state) and print a table; no secret is shown."
        ),
        epilog="exit status: 0, or 1 when a chain has no working upstream",
        formatter_class=formatter,
    )
    check.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML config file (default: ${CONFIG_ENV}, else the embedded mainnet default)",
    )
    check.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="time each probe gets (default: %(default)s)",
    )
    check.set_defaults(func=cmd_check)

    config = sub.add_parser(
        "config",
        help="config tools",
        description="Tools for config files.",
        formatter_class=formatter,
    )
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="COMMAND")
    validate = config_sub.add_parser(
        "validate",
        help="check a config file and list every problem",
        description=(
            "Check a config file without starting anything; every problem is listed with its "
            "key path (e.g. chains[0].upstreams[2].url: not a URL). Without FILE, the file "
            f"`serve` and `check` would read: ${CONFIG_ENV}, else the embedded mainnet default."
        ),
        epilog=(
            "examples:\n"
            "  rpcgate config validate rpcgate.yaml\n"
            f"  {CONFIG_ENV}=rpcgate.yaml rpcgate config validate\n"
            "exit status: 0 when valid, 1 otherwise"
        ),
        formatter_class=formatter,
    )
    validate.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        help=f"YAML config file (default: ${CONFIG_ENV}, else the embedded mainnet default)",
    )
    validate.set_defaults(func=cmd_validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
