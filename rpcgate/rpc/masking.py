"""Keep upstream secrets out of every log line, error, metric and page.

Two layers, because one is not enough: `mask_url` gives the display form of an upstream
URL (what logs and pages show), and `SecretMasker` scrubs every known secret string from
any text, so a secret that slips into an exception message (aiohttp puts URLs in them) is
still caught.

A secret is caught in every form it travels in: as written in the config, percent-decoded
(yarl shows userinfo and query values decoded, a provider quotes the key it decoded) or
encoded anew, and for an HTTP auth header value, the credential alone (a provider quotes
the token, not the "Bearer " before it).
"""

from __future__ import annotations

import base64
import binascii
import re
import string
from typing import Any
from urllib.parse import parse_qsl, unquote, unquote_plus, urlencode, urlsplit, urlunsplit

MASK = "***"

# Query parameters that carry credentials at known providers (AMB billingtoken, dRPC dkey,
# generic api keys and tokens).
_SECRET_QUERY_KEYS = re.compile(r"key|token|secret|auth|pass|jwt|sig", re.IGNORECASE)
# A path segment that looks like a credential: long and made of key-ish characters.
_SECRET_PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_\-]{16,}$")
# An HTTP auth header value: a scheme, then the credential ("Bearer abc", "Basic dXNlcg==").
_AUTH_HEADER_VALUE = re.compile(r"^([A-Za-z][A-Za-z0-9_-]*)\s+(\S+)$")
# Characters nobody percent-encodes (RFC 3986 "unreserved"); any other one of a secret may
# show up raw or as %XX, depending on who printed it.
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
# Very short strings would mask innocent text; real keys are long.
_MIN_SECRET_CHARS = 6


def url_secrets(url: str) -> list[str]:
    """The parts of an upstream URL that are credentials (path keys, query tokens, password),
    as written in the URL."""
    parts = urlsplit(url)
    found: list[str] = []
    if parts.password:
        found.append(parts.password)
    if parts.username and parts.password:
        found.append(parts.username)
    for segment in parts.path.split("/"):
        if _SECRET_PATH_SEGMENT.match(segment) and not segment.replace("-", "").isalpha():
            found.append(segment)
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if _SECRET_QUERY_KEYS.search(unquote_plus(name)) and value:
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


def basic_credential(url: str) -> str | None:
    """What an HTTP client sends for the URL's userinfo: base64 of user:password, decoded."""
    parts = urlsplit(url)
    if parts.username is None or parts.password is None:
        return None
    pair = f"{unquote(parts.username)}:{unquote(parts.password)}"
    return base64.b64encode(pair.encode()).decode()


def secret_forms(secret: str) -> set[str]:
    """The forms a secret may travel in, besides percent-encoding (which the masker's
    pattern covers by itself): as given, decoded, and an auth header's credential alone."""
    forms = {secret, unquote(secret), unquote_plus(secret)}
    header = _AUTH_HEADER_VALUE.match(secret)
    if header is not None:
        scheme, credential = header.groups()
        forms.add(credential)
        if scheme.lower() == "basic":
            forms.update(_basic_password(credential))
    return {form for form in forms if len(form) >= _MIN_SECRET_CHARS}


def _basic_password(credential: str) -> list[str]:
    try:
        decoded = base64.b64decode(credential, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return []
    _, sep, password = decoded.partition(":")
    return [password] if sep else []


def _any_encoding(text: str) -> str:
    """A pattern matching `text` with each reserved character raw or percent-encoded."""
    pattern = []
    for char in text:
        if char in _UNRESERVED:
            pattern.append(char)
            continue
        forms = [re.escape(char), _percent_encoded(char)]
        if char == " ":
            forms.append(r"\+")  # form encoding
        pattern.append(f"(?:{'|'.join(forms)})")
    return "".join(pattern)


def _percent_encoded(char: str) -> str:
    """The pattern of `char` percent-encoded, its hex digits in either case."""
    return "".join(
        "%" + "".join(f"[{d}{d.lower()}]" if d.isalpha() else d for d in f"{byte:02X}")
        for byte in char.encode()
    )


class SecretMasker:
    """Replaces every registered secret in any string, however it got there."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None

    def add(self, *secrets: str) -> None:
        for secret in secrets:
            self._secrets.update(secret_forms(secret))
        ordered = sorted(self._secrets, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(_any_encoding, ordered))) if ordered else None

    def add_url(self, url: str) -> None:
        credential = basic_credential(url)
        self.add(*url_secrets(url), *([credential] if credential else []))

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
