"""How an upstream failure is classified: one pure decision over plain data.

The upstream client reports what it observed (`UpstreamFailure`); `classify` says what the
gateway should do about it (`Classification`). No I/O happens here, so every rule is pinned
by a table of real provider error texts in tests/rpc/test_errors.py.

Order of evidence (the provider reference, providers.md section 2): transport and HTTP
status first, then the message text, and the JSON-RPC code last, because codes collide across
vendors (-32005 is a rate limit at Infura and a range limit at Besu; code 3 is a revert at
geth and "Unknown block" at Alchemy). Matching is case-insensitive: erpc's case-sensitive
"unauthorized" misses Ankr's "Unauthorized:".
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


class ErrorClass(enum.StrEnum):
    CLIENT = "client"  # return to the caller as-is, no retry
    TRANSIENT = "transient"  # retry on another upstream; counts against health
    RATE_LIMITED = "rate_limited"  # back off this upstream, retry elsewhere
    QUOTA = "quota"  # long cooldown variant of rate limited (daily/monthly caps)
    UNSUPPORTED = "unsupported"  # method not served by this upstream: try another
    MISSING_DATA = "missing_data"  # lagging or pruned node: retry elsewhere
    TOO_LARGE = "too_large"  # range/response too large for this upstream: try another
    REVERT = "revert"  # execution reverted: return as-is (data included)
    AUTH = "auth"  # bad key: disable the upstream for a while, try another
    TXPOOL = "txpool"  # nonce too low / already known / underpriced ...: return as-is
    INTEGRITY = "integrity"  # an answer that failed verification (verify.py): ask another


# Which classes may be retried on another upstream with the same call. The three that may
# not are verdicts about the call itself, which every honest node would repeat.
RETRY_ELSEWHERE: frozenset[ErrorClass] = frozenset(
    {
        ErrorClass.TRANSIENT,
        ErrorClass.RATE_LIMITED,
        ErrorClass.QUOTA,
        ErrorClass.UNSUPPORTED,
        ErrorClass.MISSING_DATA,
        ErrorClass.TOO_LARGE,
        ErrorClass.AUTH,
        ErrorClass.INTEGRITY,
    }
)

# Cooldowns when the upstream says nothing more precise.
DEFAULT_RATE_LIMIT_COOLDOWN_S = 1.0  # CU/s buckets refill within about a second
MONTHLY_QUOTA_COOLDOWN_S = 3600.0  # re-probe hourly: a plan upgrade lifts the cap at once
AUTH_COOLDOWN_S = 300.0  # long enough not to hammer a bad key, short enough to notice a fix
# An upstream caught answering falsely rests a little: long enough that calls under load go
# elsewhere, short enough that a false alarm (a chain whose blocks are not shaped as
# Ethereum's, before `verify: off` is set) costs little.
INTEGRITY_COOLDOWN_S = 10.0


@dataclass(frozen=True)
class UpstreamFailure:
    """What the upstream client observed, as plain data."""

    # set when no usable HTTP exchange: "timeout", a connect failure in words ("DNS: name
    # not resolved (host)", "connection refused (host:port)", "TLS: ..."), "reset",
    # "bad_json", "batch_mismatch", "bad_response"
    transport: str | None = None
    http_status: int | None = None
    rpc_code: int | None = None  # JSON-RPC error code if the body carried an error object
    rpc_message: str | None = None
    rpc_data: object = None
    retry_after_s: float | None = None  # from a Retry-After header (the caller parses it)
    body_text: str | None = None  # a short prefix of a non-JSON body ("error code: 1015")
    integrity: str | None = None  # what an answer that failed verification got wrong


@dataclass(frozen=True)
class Classification:
    error_class: ErrorClass
    retry_elsewhere: bool  # may the gateway try another upstream with the same call?
    cooldown_s: float | None  # how long to stop sending to THIS upstream (None = none)
    reason: str  # short human text, e.g. "HTTP 429", "message: header not found"


# Lower-case substrings of the error text, first match wins. Why this order:
#  1. REVERT first: a revert reason is arbitrary contract text ("Unauthorized", "rate limit
#     reached", "not found"), so nothing inside it may steer the class.
#  2. TXPOOL next: definitive verdicts on a transaction, also returned as-is.
#  3. AUTH, QUOTA, RATE: they describe the upstream account, not the call, and beat the
#     code (Alchemy's "-32600 Must be authenticated!" is not a client error).
#  4. MISSING before TOO_LARGE: "block range extends beyond current head block" is lag.
#  5. TOO_LARGE before UNSUPPORTED: dRPC's "ranges over 10000 blocks are not supported".
#  6. TRANSIENT and CLIENT texts, then UNSUPPORTED last: "not supported" is the vaguest.
MESSAGE_PATTERNS: tuple[tuple[str, ErrorClass], ...] = (
    ("revert", ErrorClass.REVERT),  # geth/Besu "execution reverted", ganache "revert"
    ("evm error", ErrorClass.REVERT),  # reth/revm
    ("out of gas", ErrorClass.REVERT),
    # eth_estimateGas: the call fails at every gas limit, so every node would agree
    ("gas required exceeds allowance", ErrorClass.REVERT),
    ("exceeds block gas limit", ErrorClass.REVERT),  # Besu -32005, geth txpool
    ("nonce too low", ErrorClass.TXPOOL),
    ("nonce too high", ErrorClass.TXPOOL),
    ("already known", ErrorClass.TXPOOL),
    ("known transaction", ErrorClass.TXPOOL),
    ("transaction underpriced", ErrorClass.TXPOOL),  # also "replacement transaction ..."
    ("unauthorized", ErrorClass.AUTH),  # Ankr "Unauthorized: You must authenticate ..."
    ("must be authenticated", ErrorClass.AUTH),  # Alchemy -32600
    ("invalid project id", ErrorClass.AUTH),  # Infura, also "... or project secret"
    ("invalid jwt", ErrorClass.AUTH),
    ("token is invalid", ErrorClass.AUTH),  # dRPC
    ("rejected due to project id settings", ErrorClass.AUTH),  # Infura 403 -32002
    ("monthly capacity limit", ErrorClass.QUOTA),  # Alchemy 403
    ("rate limit", ErrorClass.RATE_LIMITED),
    ("too many requests", ErrorClass.RATE_LIMITED),
    ("daily request count exceeded", ErrorClass.RATE_LIMITED),  # Infura legacy
    ("request rate exceeded", ErrorClass.RATE_LIMITED),  # Infura "project ID request rate ..."
    ("credits limited to", ErrorClass.RATE_LIMITED),  # QuickNode
    ("compute units per second", ErrorClass.RATE_LIMITED),  # Alchemy
    ("requests per second (rps)", ErrorClass.RATE_LIMITED),  # QuickNode
    ("code: 1015", ErrorClass.RATE_LIMITED),  # Cloudflare in front of LlamaRPC
    ("missing trie node", ErrorClass.MISSING_DATA),
    ("header not found", ErrorClass.MISSING_DATA),
    ("unknown block", ErrorClass.MISSING_DATA),  # Alchemy code 3 near the tip
    ("block not found", ErrorClass.MISSING_DATA),
    ("no state available", ErrorClass.MISSING_DATA),  # Nethermind
    ("historical state", ErrorClass.MISSING_DATA),  # geth "... is not available"
    ("is pruned", ErrorClass.MISSING_DATA),  # reth
    ("pruned history unavailable", ErrorClass.MISSING_DATA),  # geth 4444
    ("history has expired", ErrorClass.MISSING_DATA),  # reth
    ("world state unavailable", ErrorClass.MISSING_DATA),  # Besu
    ("not processed yet", ErrorClass.MISSING_DATA),  # Alchemy 500
    ("transaction indexing is in progress", ErrorClass.MISSING_DATA),  # geth
    ("extends beyond current head block", ErrorClass.MISSING_DATA),  # geth -32602: lag
    ("unexpected error (code=40000)", ErrorClass.MISSING_DATA),  # dRPC ChainException
    # anvil -32602 "BlockOutOfRangeError: block height is 100 but requested was 4096"
    ("blockoutofrangeerror", ErrorClass.MISSING_DATA),
    ("query returned more than", ErrorClass.TOO_LARGE),  # Infura -32005
    ("query timeout exceeded", ErrorClass.TOO_LARGE),  # Infura -32005: a smaller range helps
    ("exceeds max results", ErrorClass.TOO_LARGE),  # reth, dRPC, BlastAPI
    ("max block range", ErrorClass.TOO_LARGE),  # reth
    ("maximum block range", ErrorClass.TOO_LARGE),  # geth "exceed maximum block range"
    ("block range greater than", ErrorClass.TOO_LARGE),  # proxyd rewriter
    ("block range is too wide", ErrorClass.TOO_LARGE),  # Ankr
    ("limited to a", ErrorClass.TOO_LARGE),  # QuickNode
    ("log response size exceeded", ErrorClass.TOO_LARGE),  # Alchemy
    ("requests with up to a", ErrorClass.TOO_LARGE),  # Alchemy free-tier range
    ("response too large", ErrorClass.TOO_LARGE),  # geth -32003
    ("response is too large", ErrorClass.TOO_LARGE),  # AMB WebSocket
    ("exceeds limit of", ErrorClass.TOO_LARGE),  # Infura -32602 range
    ("ranges over", ErrorClass.TOO_LARGE),  # dRPC code 35
    ("batch too large", ErrorClass.TOO_LARGE),  # geth
    ("exceeds max batch size", ErrorClass.TOO_LARGE),  # Besu
    ("exceeds maximum rpc range limit", ErrorClass.TOO_LARGE),  # Besu
    ("request timed out", ErrorClass.TRANSIENT),  # geth -32002
    ("timeout expired", ErrorClass.TRANSIENT),  # Besu -32603
    # The account cannot pay: a fact about the caller, not an idempotency signal (a re-sent
    # transaction that already landed gets "nonce too low" first), so CLIENT, not TXPOOL.
    ("insufficient funds", ErrorClass.CLIENT),
    ("filter not found", ErrorClass.CLIENT),  # filters live on one node
    ("invalid block range params", ErrorClass.CLIENT),
    ("invalid argument", ErrorClass.CLIENT),
    ("json-rpc version", ErrorClass.CLIENT),  # -32006, before "not supported"
    ("does not exist/is not available", ErrorClass.UNSUPPORTED),  # geth -32601
    ("method not found", ErrorClass.UNSUPPORTED),
    ("unsupported method", ErrorClass.UNSUPPORTED),
    ("not whitelisted", ErrorClass.UNSUPPORTED),  # proxyd
    ("custom tracers are disabled", ErrorClass.UNSUPPORTED),  # Chainstack -32612
    ("not supported", ErrorClass.UNSUPPORTED),
)

# JSON-RPC codes, consulted only when no status rule and no message pattern decided.
CODE_CLASSES: Mapping[int, ErrorClass] = {
    -32700: ErrorClass.CLIENT,
    -32600: ErrorClass.CLIENT,
    -32602: ErrorClass.CLIENT,
    -32006: ErrorClass.CLIENT,
    -32601: ErrorClass.UNSUPPORTED,
    -32004: ErrorClass.UNSUPPORTED,
    -32603: ErrorClass.TRANSIENT,
    -32000: ErrorClass.TRANSIENT,  # geth's generic code: says nothing by itself
    -32001: ErrorClass.MISSING_DATA,
    -32002: ErrorClass.TRANSIENT,
    -32003: ErrorClass.TXPOOL,
    -32005: ErrorClass.RATE_LIMITED,
    3: ErrorClass.REVERT,
    4444: ErrorClass.MISSING_DATA,  # geth pruned history
    35: ErrorClass.TOO_LARGE,  # dRPC free-tier range
    -32007: ErrorClass.RATE_LIMITED,  # QuickNode capacity
    -32009: ErrorClass.RATE_LIMITED,
    -32612: ErrorClass.UNSUPPORTED,  # QuickNode
    -32613: ErrorClass.UNSUPPORTED,
    -32614: ErrorClass.TOO_LARGE,  # QuickNode getLogs range
    -32097: ErrorClass.RATE_LIMITED,  # Pocket PATH
    -32098: ErrorClass.TRANSIENT,  # Pocket PATH timeout
    # proxyd means "over rate limit" but always sends it with HTTP 429, which the status rule
    # takes first; without 429 it is erpc's "unauthorized".
    -32016: ErrorClass.AUTH,
    # HTTP statuses echoed in the body: the only signal over WebSocket or in a batch item.
    402: ErrorClass.QUOTA,  # Infura "Payment Required"
    429: ErrorClass.RATE_LIMITED,  # Alchemy WS, Infura "Too Many Requests"
}

# geth's eth_simulateV1 codes collide with no vendor's, and their messages quote the
# simulated transaction's "nonce too low" / "insufficient funds", so the code decides.
_SIMULATE_CODES = range(-38026, -38009)
_SENDER_RATE_LIMIT_CODE = -32017  # proxyd: the same sequencer sits behind every provider


def classify(failure: UpstreamFailure, *, now_utc: datetime | None = None) -> Classification:
    """Decides what the gateway does about one failed attempt on one upstream."""
    if failure.integrity is not None:
        return _verdict(ErrorClass.INTEGRITY, f"integrity: {failure.integrity}", failure)
    if failure.transport is not None:
        return _verdict(ErrorClass.TRANSIENT, failure.transport, failure)
    text = _error_text(failure)
    code = failure.rpc_code
    if code == _SENDER_RATE_LIMIT_CODE or "sender is over rate limit" in text:
        # Retrying elsewhere only spends the sender's budget faster; the upstream is fine
        # for other senders, so it gets no cooldown either.
        return Classification(ErrorClass.RATE_LIMITED, False, None, "sender is over rate limit")
    if code is not None and code in _SIMULATE_CODES:
        return _verdict(ErrorClass.REVERT, f"code {code}", failure)

    status = _effective_status(failure)
    matched = _match_message(text)
    if status == 402:
        daily = _seconds_until_next_utc_midnight(now_utc or datetime.now(UTC))
        return _verdict(ErrorClass.QUOTA, f"HTTP {status}", failure, quota_cooldown_s=daily)
    if status == 429:
        return _verdict(ErrorClass.RATE_LIMITED, f"HTTP {status}", failure)
    if status in (401, 403):
        # Alchemy's monthly cap and Cloudflare's unsupported method share the status with
        # bad keys; only the text tells them apart.
        if matched is not None and matched[1] in (ErrorClass.QUOTA, ErrorClass.UNSUPPORTED):
            return _verdict(matched[1], f"HTTP {status}, message: {matched[0]}", failure)
        if code is not None and CODE_CLASSES.get(code) is ErrorClass.UNSUPPORTED:
            return _verdict(ErrorClass.UNSUPPORTED, f"HTTP {status}, code {code}", failure)
        return _verdict(ErrorClass.AUTH, f"HTTP {status}", failure)
    if status == 413:
        return _verdict(ErrorClass.TOO_LARGE, f"HTTP {status}", failure)

    # Everything else (2xx, Pocket PATH's 400/404/5xx, no status over WebSocket): the body
    # decides, because PATH puts ordinary JSON-RPC errors behind those statuses.
    if matched is not None:
        return _verdict(matched[1], f"message: {matched[0]}", failure)
    if code is not None:
        return _verdict(CODE_CLASSES.get(code, ErrorClass.TRANSIENT), f"code {code}", failure)
    # No recognisable error at all: another upstream may well answer.
    detail = f"HTTP {failure.http_status}" if failure.http_status else "no error detail"
    return _verdict(ErrorClass.TRANSIENT, detail, failure)


_RANGE_BOUND = r"(0x[0-9a-f]+|\d+)"
_SUGGESTED_RANGE_PATTERNS = (
    # Infura "Try with this block range [0x1, 0x2]." / Alchemy "this block range should
    # work: [0x1, 0x2]"
    re.compile(rf"block range[^\[\]]{{0,20}}\[\s*{_RANGE_BOUND}\s*,\s*{_RANGE_BOUND}\s*\]", re.I),
    # reth / dRPC / BlastAPI "retry with the range 100-200"
    re.compile(rf"retry with the range\s+{_RANGE_BOUND}\s*-\s*{_RANGE_BOUND}\b", re.I),
)


def suggested_block_range(message: str) -> tuple[int, int] | None:
    """The (from, to) block range a provider suggests in a range error, if it names one."""
    for pattern in _SUGGESTED_RANGE_PATTERNS:
        found = pattern.search(message)
        if found is not None:
            start, end = (_parse_block_number(bound) for bound in found.groups())
            return (start, end) if start <= end else None
    return None


def _parse_block_number(text: str) -> int:
    # Not int(text, 0): that rejects decimal with leading zeros.
    return int(text, 16) if text[:2].lower() == "0x" else int(text)


def _error_text(failure: UpstreamFailure) -> str:
    # Some servers put the detail in a string `data` (e.g. a revert reason), proxies in a
    # non-JSON body; hex revert data cannot match any pattern.
    parts = (failure.rpc_message, failure.body_text, failure.rpc_data)
    return " | ".join(part for part in parts if isinstance(part, str)).lower()


def _match_message(text: str) -> tuple[str, ErrorClass] | None:
    for pattern, error_class in MESSAGE_PATTERNS:
        if pattern in text:
            return pattern, error_class
    return None


def _effective_status(failure: UpstreamFailure) -> int | None:
    """The HTTP status, or the HTTP-like code in the body when the transport said nothing.

    Infura sends {"code":402,...} / {"code":429,...} and Alchemy's WebSocket sends code 429;
    over WebSocket and inside an HTTP 200 batch that body code is the only such signal.
    """
    status = failure.http_status
    if (status is None or 200 <= status < 300) and failure.rpc_code in (402, 429):
        return failure.rpc_code
    return status


def _verdict(
    error_class: ErrorClass,
    reason: str,
    failure: UpstreamFailure,
    *,
    quota_cooldown_s: float = MONTHLY_QUOTA_COOLDOWN_S,
) -> Classification:
    return Classification(
        error_class=error_class,
        retry_elsewhere=error_class in RETRY_ELSEWHERE,
        cooldown_s=_cooldown(error_class, failure, quota_cooldown_s),
        reason=reason,
    )


def _cooldown(
    error_class: ErrorClass, failure: UpstreamFailure, quota_cooldown_s: float
) -> float | None:
    # The upstream's own Retry-After is the best estimate for any back-off.
    told = None if failure.retry_after_s is None else max(0.0, failure.retry_after_s)
    if error_class is ErrorClass.RATE_LIMITED:
        if told is not None:
            return told
        backoff = _infura_backoff_seconds(failure.rpc_data)
        return backoff if backoff is not None else DEFAULT_RATE_LIMIT_COOLDOWN_S
    if error_class is ErrorClass.QUOTA:
        return told if told is not None else quota_cooldown_s
    if error_class is ErrorClass.AUTH:
        return AUTH_COOLDOWN_S
    if error_class is ErrorClass.INTEGRITY:
        return INTEGRITY_COOLDOWN_S
    # Other classes concern the call, not the upstream; health scoring handles TRANSIENT.
    return None


def _infura_backoff_seconds(data: object) -> float | None:
    """Infura legacy rate limits carry data.rate.backoff_seconds."""
    rate = data.get("rate") if isinstance(data, dict) else None
    backoff = rate.get("backoff_seconds") if isinstance(rate, dict) else None
    if isinstance(backoff, int | float) and not isinstance(backoff, bool) and backoff >= 0:
        return float(backoff)
    return None


def _seconds_until_next_utc_midnight(now: datetime) -> float:
    # A naive datetime is taken as UTC, the convention of the callers' clocks.
    now = now.astimezone(UTC) if now.tzinfo is not None else now.replace(tzinfo=UTC)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - now).total_seconds()
