"""structlog set up as a pipeline of small processors, the last but one masking secrets."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from rpcgate.rpc.masking import MASKER


def mask_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
    """Every value of every event, exceptions included, passes through the masker."""
    return {key: MASKER.mask_any(value) for key, value in event.items()}


def _render(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
    return orjson.dumps(event, default=str).decode()


# Whether debug lines are written: the call path skips building them otherwise.
DEBUG = False
# Whether `cache=True` may bind each logger to the configuration for good on its first use
# (faster). The test suite turns it off: it configures logging again and again in one
# process (the CLI run in-process, captured log lines), and a logger bound for good would
# write a later test's lines to an earlier test's stream.
CACHE_ALLOWED = True


def configure_logging(
    level: str = "info",
    stream: TextIO | None = None,
    *,
    cache: bool = True,
    stdlib: bool = True,
) -> None:
    """`cache=False` keeps loggers re-reading the configuration (tests reconfigure it);
    `stdlib=False` leaves the standard library's root logger alone (rpcgate inside another
    program, whose logging is its own)."""
    global DEBUG
    DEBUG = level.lower() == "debug"
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            mask_secrets,
            _render,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=cache and CACHE_ALLOWED,
    )
    if not stdlib:
        return
    # Standard-library loggers (aiohttp's) go through the masker too.
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return MASKER.mask(super().format(record))
