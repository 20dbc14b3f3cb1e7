"""Keep upstream secrets out of every log line, error, metric and page.

Two layers, because one is not enough: `mask_url` gives the display form of an upstream
URL (what logs and pages show), and `SecretMasker` scrubs every known secret string from
any text, so a secret that slips into an exception message (aiohttp puts URLs in them) is
still caught.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"

# Query parameters that carry credentials at known providers (AMB billingtoken, dRPC dkey,
# generic api keys and tokens).
_SECRET_QUERY_KEYS = re.compile(r"key|token|secret|auth|pass|jwt|sig", re.IGNORECASE)
# A path segment that looks like a credential: long and made of key-ish characters.
_SECRET_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]{16,}$")


def url_secrets(url: str) -> list[str]:
    """The parts of an upstream URL that are credentials (path keys, query tokens, password)."""
    parts = urlsplit(url)
    found: list[str] = []
    if parts.password:
        found.append(parts.password)
    if parts.username and parts.password:
        found.append(parts.username)
    for segment in parts.path.split("/"):
        if _SECRET_PATH_SEGMENT.match(segment) and not segment.replace("-", "").isalpha():
            found.append(segment)
    for name, value in parse_qsl(parts.query, keep_blank_values=False):
        if _SECRET_QUERY_KEYS.search(name) and value:
            found.append(value)
    return found


def mask_url(url: str) -> str:
    """The URL as logs and pages may show it: credentials replaced by ***."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username:
        netloc = f"{MASK}@{netloc}"
    secrets = set(url_secrets(url))
    path = "/".join(MASK if seg in secrets else seg for seg in parts.path.split("/"))
    query = urlencode(
        [
            (name, MASK if _SECRET_QUERY_KEYS.search(name) else value)
            for name, value in parse_qsl(parts.query, keep_blank_values=True)
        ],
        safe="*",
    )
    return urlunsplit((parts.scheme, netloc, path, query, ""))


class SecretMasker:
    """Replaces every registered secret in any string, however it got there."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, *secrets: str) -> None:
        # Very short strings would mask innocent text; real keys are long.
        self._secrets.update(s for s in secrets if s and len(s) >= 6)
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def add_url(self, url: str) -> None:
        self.add(*url_secrets(url))

    def mask(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def mask_any(self, value: Any) -> Any:
        """Masks strings inside nested dicts, lists and tuples; other values pass through."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, dict):
            return {k: self.mask_any(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.mask_any(v) for v in value)
        if isinstance(value, BaseException):
            return self.mask(f"{type(value).__name__}: {value}")
        return value


# One process-wide masker: every upstream URL is registered when the config is loaded, and
# the log pipeline and the error path both consult it.
MASKER = SecretMasker()
