"""The error classifier, pinned by provider error texts quoted from providers.md.

Each row is a failure as the upstream client would report it (status, code, message, data,
headers) and the class the gateway must give it. Where providers.md does not give a
provider's code or status, the row leaves it out rather than inventing one.
"""

from __future__ import annotations

import ast
import dataclasses
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from rpcgate.rpc import errors
from rpcgate.rpc.errors import (
    MESSAGE_PATTERNS,
    RETRY_ELSEWHERE,
    ErrorClass,
    UpstreamFailure,
    classify,
    suggested_block_range,
)

pytestmark = pytest.mark.unit

C = ErrorClass
F = UpstreamFailure
NOW = datetime(2026, 3, 14, 21, 30, tzinfo=UTC)  # 2 h 30 min before 00:00 UTC
REVERT_DATA = (
    "0x08c379a00000000000000000000000000000000000000000000000000000000000000020"
    "000000000000000000000000000000000000000000000000000000000000000c556e617574686f72697a6564"
)
INFURA_LEGACY_RATE_DATA = {
    "rate": {"allowed_rps": 1, "backoff_seconds": 30, "current_rps": 13.3},
    "see": "https://infura.io/dashboard",
}
ALCHEMY_LOG_RESPONSE_SIZE = (
    "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
    "range and no limit on the response size, or you can request any block range with a cap "
    "of 10K logs in the response. Based on your parameters and the response size limit, this "
    "block range should work: [0x0, 0x87fe9]"
)


def case(failure: UpstreamFailure, expected: ErrorClass, case_id: str) -> object:
    return pytest.param(failure, expected, id=case_id)


PROVIDER_CASES = [
    # anvil, asked about a block above its head (a lagging node)
    case(
        F(
            http_status=200,
            rpc_code=-32602,
            rpc_message="BlockOutOfRangeError: block height is 100 but requested was 4096",
        ),
        C.MISSING_DATA,
        "anvil-block-out-of-range",
    ),
    # Infura
    case(
        F(http_status=401, rpc_message="invalid project id"),
        C.AUTH,
        "infura-401-invalid-project-id",
    ),
    case(
        F(http_status=401, rpc_message="invalid project id or project secret"),
        C.AUTH,
        "infura-401-invalid-project-secret",
    ),
    case(F(http_status=401, rpc_message="invalid JWT"), C.AUTH, "infura-401-invalid-jwt"),
    case(
        F(http_status=403, rpc_code=-32002, rpc_message="rejected due to project ID settings"),
        C.AUTH,
        "infura-403-project-id-settings",
    ),
    case(
        F(rpc_code=-32002, rpc_message="rejected due to project ID settings"),
        C.AUTH,
        "infura-ws-project-id-settings",
    ),
    case(
        F(http_status=402, rpc_code=402, rpc_message="Payment Required"),
        C.QUOTA,
        "infura-402-payment-required",
    ),
    case(
        F(rpc_code=402, rpc_message="Payment Required"), C.QUOTA, "infura-ws-402-payment-required"
    ),
    case(
        F(http_status=429, rpc_code=429, rpc_message="Too Many Requests"),
        C.RATE_LIMITED,
        "infura-429-too-many-requests",
    ),
    case(
        F(
            http_status=429,
            rpc_code=-32005,
            rpc_message="daily request count exceeded, request rate limited",
            rpc_data=INFURA_LEGACY_RATE_DATA,
        ),
        C.RATE_LIMITED,
        "infura-429-legacy-daily-request-count",
    ),
    case(
        F(rpc_code=-32005, rpc_message="project ID request rate exceeded"),
        C.RATE_LIMITED,
        "infura-legacy-project-id-request-rate",
    ),
    case(
        F(
            rpc_code=-32005,
            rpc_message="query returned more than 10000 results. "
            "Try with this block range [0x30CE171, 0x30CE1D4].",
            rpc_data={"from": "0x30CE171", "limit": 10000, "to": "0x30CE1D4"},
        ),
        C.TOO_LARGE,
        "infura-32005-query-returned-more-than",
    ),
    case(
        F(rpc_code=-32005, rpc_message="query timeout exceeded"),
        C.TOO_LARGE,
        "infura-32005-query-timeout",
    ),
    case(
        F(http_status=200, rpc_code=-32602, rpc_message="range 1000000 exceeds limit of 10000"),
        C.TOO_LARGE,
        "infura-32602-range-exceeds-limit",
    ),
    # Alchemy
    case(F(http_status=429, retry_after_s=1.0), C.RATE_LIMITED, "alchemy-429"),
    case(
        F(
            rpc_code=429,
            rpc_message="Your app has exceeded its compute units per second capacity...",
        ),
        C.RATE_LIMITED,
        "alchemy-ws-429-compute-units",
    ),
    case(
        F(http_status=403, rpc_code=-32600, rpc_message="Monthly capacity limit exceeded."),
        C.QUOTA,
        "alchemy-403-monthly-capacity",
    ),
    case(
        F(http_status=401, rpc_code=-32600, rpc_message="Must be authenticated!"),
        C.AUTH,
        "alchemy-401-must-be-authenticated",
    ),
    case(
        F(rpc_code=-32600, rpc_message="Must be authenticated!"),
        C.AUTH,
        "alchemy-ws-32600-must-be-authenticated",
    ),
    case(
        F(http_status=500, rpc_message="Block 123 not processed yet. Please try again."),
        C.MISSING_DATA,
        "alchemy-500-not-processed-yet",
    ),
    case(F(rpc_code=3, rpc_message="Unknown block"), C.MISSING_DATA, "alchemy-code3-unknown-block"),
    case(
        F(rpc_code=3, rpc_message="execution reverted", rpc_data=REVERT_DATA),
        C.REVERT,
        "alchemy-code3-execution-reverted",
    ),
    case(
        F(rpc_code=-32602, rpc_message=ALCHEMY_LOG_RESPONSE_SIZE),
        C.TOO_LARGE,
        "alchemy-32602-log-response-size",
    ),
    case(
        F(
            rpc_code=-32600,
            rpc_message="You can make eth_getLogs requests with up to a 500 block range...",
        ),
        C.TOO_LARGE,
        "alchemy-32600-free-tier-range",
    ),
    # QuickNode
    case(
        F(
            http_status=429,
            rpc_message="The requests per second (RPS) of your requests are higher than your "
            "plan allows.",
        ),
        C.RATE_LIMITED,
        "quicknode-429-rps",
    ),
    case(
        F(
            rpc_message="The requests per second (RPS) of your requests are higher than your "
            "plan allows."
        ),
        C.RATE_LIMITED,
        "quicknode-ws-rps",
    ),
    case(F(rpc_message="credits limited to 50/sec"), C.RATE_LIMITED, "quicknode-credits-limited"),
    case(F(http_status=200, rpc_code=-32007), C.RATE_LIMITED, "quicknode-32007-batch-item"),
    case(F(rpc_code=-32009), C.RATE_LIMITED, "quicknode-32009-capacity"),
    case(F(rpc_code=-32612), C.UNSUPPORTED, "quicknode-32612-unsupported"),
    case(F(rpc_code=-32613), C.UNSUPPORTED, "quicknode-32613-unsupported"),
    case(
        F(
            http_status=413,
            body_text="eth_getLogs and eth_newFilter are limited to a 10,000 blocks range",
        ),
        C.TOO_LARGE,
        "quicknode-413-getlogs-range",
    ),
    case(
        F(http_status=200, rpc_code=-32614, rpc_message="eth_getLogs is limited to a 10,000 range"),
        C.TOO_LARGE,
        "quicknode-32614-getlogs-range",
    ),
    case(F(rpc_code=-32614), C.TOO_LARGE, "quicknode-32614-code-only"),
    # Amazon Managed Blockchain (geth without archive)
    case(
        F(rpc_code=-32000, rpc_message="missing trie node"), C.MISSING_DATA, "amb-missing-trie-node"
    ),
    case(
        F(rpc_code=-32000, rpc_message="header not found"), C.MISSING_DATA, "amb-header-not-found"
    ),
    case(
        F(rpc_message="message response is too large"),
        C.TOO_LARGE,
        "amb-ws-message-response-too-large",
    ),
    # Chainstack
    case(F(http_status=429), C.RATE_LIMITED, "chainstack-429"),
    case(F(http_status=413), C.TOO_LARGE, "chainstack-413-body-over-1mb"),
    case(
        F(http_status=504, body_text="<html>504 Gateway Time-out</html>"),
        C.TRANSIENT,
        "chainstack-504",
    ),
    case(
        F(rpc_code=-32612, rpc_message="Custom tracers are disabled by default"),
        C.UNSUPPORTED,
        "chainstack-32612-custom-tracers",
    ),
    case(
        F(rpc_code=-32000, rpc_message="missing trie node"),
        C.MISSING_DATA,
        "chainstack-simulatev1-missing-trie-node",
    ),
    # Ankr: erpc's case-sensitive "unauthorized" misses this one
    case(
        F(
            http_status=200,
            rpc_code=-32000,
            rpc_message="Unauthorized: You must authenticate your request with an API key...",
        ),
        C.AUTH,
        "ankr-unauthorized-keyless",
    ),
    case(F(rpc_message="block range is too wide"), C.TOO_LARGE, "ankr-block-range-too-wide"),
    # dRPC
    case(
        F(rpc_code=35, rpc_message="ranges over 10000 blocks are not supported on freetier"),
        C.TOO_LARGE,
        "drpc-code35-ranges-over",
    ),
    case(
        F(rpc_message="query exceeds max results 20000, retry with the range 100-200"),
        C.TOO_LARGE,
        "drpc-exceeds-max-results",
    ),
    case(F(rpc_message="token is invalid"), C.AUTH, "drpc-token-is-invalid"),
    case(
        F(rpc_message="ChainException: Unexpected error (code=40000)"),
        C.MISSING_DATA,
        "drpc-chainexception-40000",
    ),
    # Pocket Network PATH: JSON-RPC errors behind HTTP statuses
    case(
        F(http_status=400, rpc_code=-32700, rpc_message="Parse error"),
        C.CLIENT,
        "pokt-path-400-parse-error",
    ),
    case(
        F(http_status=400, rpc_code=-32600, rpc_message="Invalid request"),
        C.CLIENT,
        "pokt-path-400-invalid-request",
    ),
    case(
        F(http_status=400, rpc_code=-32602, rpc_message="Invalid params"),
        C.CLIENT,
        "pokt-path-400-invalid-params",
    ),
    case(
        F(http_status=400, rpc_code=3, rpc_message="execution reverted", rpc_data=REVERT_DATA),
        C.REVERT,
        "pokt-path-400-revert",
    ),
    case(
        F(http_status=404, rpc_code=-32601, rpc_message="Method not found"),
        C.UNSUPPORTED,
        "pokt-path-404-method-not-found",
    ),
    case(
        F(http_status=500, rpc_code=-32603, rpc_message="Internal error"),
        C.TRANSIENT,
        "pokt-path-500-internal-error",
    ),
    case(
        F(http_status=500, rpc_code=-32000, rpc_message="header not found"),
        C.MISSING_DATA,
        "pokt-path-500-header-not-found",
    ),
    case(F(http_status=504, rpc_code=-32098), C.TRANSIENT, "pokt-path-504-timeout"),
    case(F(http_status=429, rpc_code=-32097), C.RATE_LIMITED, "pokt-path-429-rate-limited"),
    case(F(rpc_code=-32097), C.RATE_LIMITED, "pokt-path-32097-code-only"),
    case(F(http_status=502), C.TRANSIENT, "pokt-path-502-chain-unreachable"),
    case(F(http_status=503), C.TRANSIENT, "pokt-path-503-no-suppliers"),
    # BlastAPI (shut down, still listed by erpc and chainlist)
    case(
        F(rpc_message="query exceeds max results 20000, retry with the range START-END"),
        C.TOO_LARGE,
        "blastapi-exceeds-max-results",
    ),
    # LlamaRPC behind Cloudflare
    case(
        F(http_status=429, body_text="error code: 1015"), C.RATE_LIMITED, "llamarpc-cloudflare-1015"
    ),
    # Cloudflare gateway: 403 is both "bad key" and "unsupported method"; the text decides
    case(
        F(
            http_status=403,
            rpc_code=-32601,
            rpc_message="the method eth_newFilter does not exist/is not available",
        ),
        C.UNSUPPORTED,
        "cloudflare-403-unsupported-method",
    ),
    case(F(http_status=403, rpc_code=-32601), C.UNSUPPORTED, "cloudflare-403-code-32601"),
    case(F(http_status=403), C.AUTH, "cloudflare-403-without-body-is-auth"),
]

# One row per line of providers.md section 2's table (codes, client texts, HTTP signals).
TABLE_CASES = [
    case(F(rpc_code=-32700, rpc_message="Parse error"), C.CLIENT, "32700-parse-error"),
    case(F(rpc_code=-32600, rpc_message="Invalid request"), C.CLIENT, "32600-invalid-request"),
    case(
        F(rpc_code=-32600, rpc_message="batch too large"), C.TOO_LARGE, "geth-32600-batch-too-large"
    ),
    case(
        F(rpc_code=-32601, rpc_message="Method not found"), C.UNSUPPORTED, "32601-method-not-found"
    ),
    case(
        F(
            rpc_code=-32601,
            rpc_message="the method debug_traceCall does not exist/is not available",
        ),
        C.UNSUPPORTED,
        "geth-32601-does-not-exist",
    ),
    case(F(rpc_code=-32602, rpc_message="Invalid params"), C.CLIENT, "32602-invalid-params"),
    case(
        F(rpc_code=-32602, rpc_message="invalid block range params"),
        C.CLIENT,
        "geth-32602-invalid-block-range-params",
    ),
    case(
        F(rpc_code=-32602, rpc_message="block range extends beyond current head block"),
        C.MISSING_DATA,
        "geth-32602-beyond-head-is-lag",
    ),
    case(
        F(rpc_code=-32602, rpc_message="exceed maximum block range 10000"),
        C.TOO_LARGE,
        "geth-32602-exceed-maximum-block-range",
    ),
    case(
        F(rpc_code=-32602, rpc_message="query exceeds max block range 100000"),
        C.TOO_LARGE,
        "reth-32602-max-block-range",
    ),
    case(
        F(rpc_code=-32602, rpc_message="query exceeds max results 20000, retry with the range 5-9"),
        C.TOO_LARGE,
        "reth-32602-max-results",
    ),
    case(F(rpc_code=-32603, rpc_message="Internal error"), C.TRANSIENT, "32603-internal-error"),
    case(
        F(rpc_code=-32603, rpc_message="Timeout expired"), C.TRANSIENT, "besu-32603-timeout-expired"
    ),
    case(
        F(rpc_code=-32000, rpc_message="Invalid input"),
        C.TRANSIENT,
        "32000-unknown-text-is-transient",
    ),
    case(
        F(rpc_code=-32000, rpc_message="historical state 8bd6a3e2 is not available"),
        C.MISSING_DATA,
        "geth-32000-historical-state",
    ),
    case(
        F(rpc_code=-32000, rpc_message="transaction indexing is in progress"),
        C.MISSING_DATA,
        "geth-32000-tx-indexing",
    ),
    case(F(rpc_code=-32000, rpc_message="execution reverted"), C.REVERT, "besu-old-32000-revert"),
    case(F(rpc_code=-32000, rpc_message="nonce too low"), C.TXPOOL, "geth-32000-nonce-too-low"),
    case(F(rpc_code=-32000, rpc_message="already known"), C.TXPOOL, "geth-32000-already-known"),
    case(
        F(rpc_code=-32000, rpc_message="replacement transaction underpriced"),
        C.TXPOOL,
        "geth-32000-replacement-underpriced",
    ),
    case(
        F(rpc_code=-32000, rpc_message="transaction underpriced"),
        C.TXPOOL,
        "geth-32000-transaction-underpriced",
    ),
    case(F(rpc_code=-32000, rpc_message="known transaction: 0xabc"), C.TXPOOL, "known-transaction"),
    case(
        F(
            rpc_code=-32000,
            rpc_message="insufficient funds for gas * price + value: address 0x01 have 0 want 1",
        ),
        C.CLIENT,
        "geth-32000-insufficient-funds",
    ),
    case(
        F(rpc_code=-32000, rpc_message="filter not found"), C.CLIENT, "geth-32000-filter-not-found"
    ),
    case(
        F(rpc_code=-32602, rpc_message="invalid argument 0: hex string without 0x prefix"),
        C.CLIENT,
        "geth-32602-invalid-argument",
    ),
    case(
        F(rpc_code=-32000, rpc_message="gas required exceeds allowance (30000000)"),
        C.REVERT,
        "geth-estimategas-exceeds-allowance",
    ),
    case(F(rpc_code=-32000, rpc_message="out of gas"), C.REVERT, "geth-out-of-gas"),
    case(F(rpc_message="EVM error: OutOfFunds"), C.REVERT, "reth-evm-error"),
    case(
        F(rpc_code=-32001, rpc_message="Resource not found"),
        C.MISSING_DATA,
        "32001-resource-not-found",
    ),
    case(F(rpc_code=-32001, rpc_message="Nonce too low"), C.TXPOOL, "besu-32001-nonce-too-low"),
    case(
        F(rpc_code=-32002, rpc_message="request timed out"),
        C.TRANSIENT,
        "geth-32002-request-timed-out",
    ),
    case(
        F(rpc_code=-32002, rpc_message="No state available for block 0x1b4"),
        C.MISSING_DATA,
        "nethermind-32002-no-state",
    ),
    case(
        F(rpc_code=-32003, rpc_message="Transaction rejected"),
        C.TXPOOL,
        "32003-transaction-rejected",
    ),
    case(
        F(rpc_code=-32003, rpc_message="response too large"),
        C.TOO_LARGE,
        "geth-32003-response-too-large",
    ),
    case(
        F(rpc_code=-32004, rpc_message="Method not supported"),
        C.UNSUPPORTED,
        "32004-method-not-supported",
    ),
    case(F(rpc_code=-32005, rpc_message="Limit exceeded"), C.RATE_LIMITED, "32005-limit-exceeded"),
    case(
        F(rpc_code=-32005, rpc_message="Requested range exceeds maximum RPC range limit"),
        C.TOO_LARGE,
        "besu-32005-range-limit",
    ),
    case(
        F(rpc_code=-32005, rpc_message="Number of requests exceeds max batch size"),
        C.TOO_LARGE,
        "besu-32005-max-batch-size",
    ),
    case(
        F(rpc_code=-32005, rpc_message="Transaction gas limit exceeds block gas limit"),
        C.REVERT,
        "besu-32005-gas-limit",
    ),
    case(
        F(rpc_code=-32006, rpc_message="JSON-RPC version not supported"),
        C.CLIENT,
        "32006-jsonrpc-version",
    ),
    case(F(rpc_code=-32006, rpc_message="Nonce too high"), C.TXPOOL, "besu-32006-nonce-too-high"),
    case(F(rpc_code=3, rpc_data=REVERT_DATA), C.REVERT, "geth-code3-without-message"),
    case(
        F(
            rpc_code=-38014,
            rpc_message="insufficient funds for gas * price + value: address 0x01 have 0 want 1",
        ),
        C.REVERT,
        "geth-simulatev1-38014",
    ),
    case(F(rpc_code=-38010, rpc_message="nonce too low"), C.REVERT, "geth-simulatev1-38010"),
    case(F(rpc_code=-38026), C.REVERT, "geth-simulatev1-38026"),
    case(F(rpc_code=4444, rpc_message="pruned history unavailable"), C.MISSING_DATA, "geth-4444"),
    case(F(rpc_code=4444), C.MISSING_DATA, "geth-4444-code-only"),
    case(F(rpc_message="history has expired"), C.MISSING_DATA, "reth-history-has-expired"),
    case(F(rpc_message="state at block #17000000 is pruned"), C.MISSING_DATA, "reth-is-pruned"),
    case(
        F(rpc_code=-32000, rpc_message="World state unavailable"),
        C.MISSING_DATA,
        "besu-world-state-unavailable",
    ),
    case(
        F(http_status=429, rpc_code=-32016, rpc_message="over rate limit"),
        C.RATE_LIMITED,
        "proxyd-429-32016",
    ),
    case(F(http_status=200, rpc_code=-32016), C.AUTH, "erpc-32016-unauthorized"),
    case(
        F(http_status=429, rpc_code=-32017, rpc_message="sender is over rate limit"),
        C.RATE_LIMITED,
        "proxyd-429-32017",
    ),
    case(
        F(rpc_code=-32001, rpc_message="rpc method is not whitelisted"),
        C.UNSUPPORTED,
        "proxyd-not-whitelisted",
    ),
    case(
        F(rpc_code=-32602, rpc_message="block range greater than 100 max"),
        C.TOO_LARGE,
        "proxyd-rewriter-block-range",
    ),
    case(F(rpc_code=-31999, rpc_message="something new"), C.TRANSIENT, "unknown-code-is-transient"),
    case(F(http_status=401), C.AUTH, "http-401"),
    case(F(http_status=500), C.TRANSIENT, "http-500-without-body"),
    case(
        F(http_status=404, body_text="404 page not found"), C.TRANSIENT, "http-404-without-jsonrpc"
    ),
]

TRANSPORT_CASES = [
    case(F(transport=kind), C.TRANSIENT, f"transport-{kind}")
    for kind in ("timeout", "connect", "reset", "bad_json", "batch_mismatch", "bad_response")
] + [
    # Infura may answer a batch with a single object; a transport fault wins over its text.
    case(
        F(
            transport="batch_mismatch",
            http_status=200,
            rpc_code=-32601,
            rpc_message="Method not found",
        ),
        C.TRANSIENT,
        "infura-batch-single-object",
    ),
]

# Overlaps that the pattern order resolves. A revert reason is contract text, so these
# quote plausible reasons rather than provider texts.
ORDERING_CASES = [
    case(
        F(rpc_code=3, rpc_message="execution reverted: Unauthorized"),
        C.REVERT,
        "revert-reason-says-unauthorized",
    ),
    case(
        F(rpc_code=3, rpc_message="execution reverted: rate limit reached"),
        C.REVERT,
        "revert-reason-says-rate-limit",
    ),
    case(
        F(rpc_code=-32000, rpc_message="execution reverted: block not found"),
        C.REVERT,
        "revert-reason-says-block-not-found",
    ),
]


@pytest.mark.parametrize(("failure", "expected"), PROVIDER_CASES)
def test_provider_error_texts_are_classified(
    failure: UpstreamFailure, expected: ErrorClass
) -> None:
    assert classify(failure, now_utc=NOW).error_class is expected


@pytest.mark.parametrize(("failure", "expected"), TABLE_CASES)
def test_classification_table_rows(failure: UpstreamFailure, expected: ErrorClass) -> None:
    assert classify(failure, now_utc=NOW).error_class is expected


@pytest.mark.parametrize(("failure", "expected"), TRANSPORT_CASES)
def test_transport_failures_are_transient(failure: UpstreamFailure, expected: ErrorClass) -> None:
    verdict = classify(failure, now_utc=NOW)
    assert verdict.error_class is expected
    assert verdict.reason == failure.transport


@pytest.mark.parametrize(("failure", "expected"), ORDERING_CASES)
def test_revert_reasons_cannot_steer_the_class(
    failure: UpstreamFailure, expected: ErrorClass
) -> None:
    assert classify(failure, now_utc=NOW).error_class is expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Unauthorized: You must authenticate your request", id="as-sent"),
        pytest.param("UNAUTHORIZED: YOU MUST AUTHENTICATE YOUR REQUEST", id="upper"),
        pytest.param("unauthorized: you must authenticate your request", id="lower"),
    ],
)
def test_message_matching_ignores_case(text: str) -> None:
    assert classify(F(rpc_code=-32000, rpc_message=text)).error_class is C.AUTH


# --- retry elsewhere -------------------------------------------------------------------

RETRY_ELSEWHERE_BY_CLASS = {
    C.CLIENT: False,
    C.TRANSIENT: True,
    C.RATE_LIMITED: True,
    C.QUOTA: True,
    C.UNSUPPORTED: True,
    C.MISSING_DATA: True,
    C.TOO_LARGE: True,
    C.REVERT: False,
    C.AUTH: True,
    C.TXPOOL: False,
    C.INTEGRITY: True,
}

ONE_CASE_PER_CLASS = {
    C.CLIENT: F(rpc_code=-32602, rpc_message="invalid block range params"),
    C.TRANSIENT: F(transport="timeout"),
    C.RATE_LIMITED: F(http_status=429),
    C.QUOTA: F(http_status=402, rpc_code=402, rpc_message="Payment Required"),
    C.UNSUPPORTED: F(http_status=404, rpc_code=-32601, rpc_message="Method not found"),
    C.MISSING_DATA: F(rpc_code=-32000, rpc_message="header not found"),
    C.TOO_LARGE: F(http_status=413),
    C.REVERT: F(rpc_code=3, rpc_message="execution reverted", rpc_data=REVERT_DATA),
    C.AUTH: F(http_status=401, rpc_message="invalid project id"),
    C.TXPOOL: F(rpc_code=-32000, rpc_message="nonce too low"),
    C.INTEGRITY: F(integrity="receipt status is 0x0, its block's receipts say 0x1"),
}


def test_retry_elsewhere_table_covers_every_class() -> None:
    assert set(RETRY_ELSEWHERE_BY_CLASS) == set(ErrorClass)
    assert {c for c, retry in RETRY_ELSEWHERE_BY_CLASS.items() if retry} == RETRY_ELSEWHERE


@pytest.mark.parametrize("error_class", list(ErrorClass), ids=str)
def test_retry_elsewhere_per_class(error_class: ErrorClass) -> None:
    verdict = classify(ONE_CASE_PER_CLASS[error_class], now_utc=NOW)
    assert verdict.error_class is error_class
    assert verdict.retry_elsewhere is RETRY_ELSEWHERE_BY_CLASS[error_class]


def test_sender_over_rate_limit_is_not_retried_elsewhere() -> None:
    # The same sequencer sits behind every provider, and the upstream is fine for others.
    verdict = classify(F(http_status=429, rpc_code=-32017, rpc_message="sender is over rate limit"))
    assert verdict.error_class is C.RATE_LIMITED
    assert verdict.retry_elsewhere is False
    assert verdict.cooldown_s is None


# --- cooldowns -------------------------------------------------------------------------


def test_retry_after_is_honoured() -> None:
    assert classify(F(http_status=429, retry_after_s=7.5)).cooldown_s == 7.5


def test_infura_legacy_backoff_seconds_is_honoured() -> None:
    failure = F(
        http_status=429,
        rpc_code=-32005,
        rpc_message="daily request count exceeded, request rate limited",
        rpc_data=INFURA_LEGACY_RATE_DATA,
    )
    assert classify(failure).cooldown_s == 30.0


def test_retry_after_beats_backoff_seconds() -> None:
    failure = F(http_status=429, rpc_data=INFURA_LEGACY_RATE_DATA, retry_after_s=4.0)
    assert classify(failure).cooldown_s == 4.0


def test_an_answer_that_failed_verification_rests_its_upstream_whatever_it_looked_like() -> None:
    # A well-formed result with HTTP 200: only the verifier's finding makes it a failure.
    verdict = classify(F(http_status=200, integrity="header hash recomputed differs"))
    assert verdict.error_class is C.INTEGRITY
    assert verdict.retry_elsewhere
    assert verdict.cooldown_s == errors.INTEGRITY_COOLDOWN_S
    assert verdict.reason == "integrity: header hash recomputed differs"


def test_rate_limit_without_hint_gets_the_default_cooldown() -> None:
    assert classify(F(http_status=429)).cooldown_s == errors.DEFAULT_RATE_LIMIT_COOLDOWN_S
    assert classify(F(rpc_code=-32007)).cooldown_s == errors.DEFAULT_RATE_LIMIT_COOLDOWN_S


@pytest.mark.parametrize(
    ("now", "expected_s"),
    [
        (NOW, 2.5 * 3600),
        (datetime(2026, 3, 14, 23, 30, tzinfo=timezone(timedelta(hours=2))), 2.5 * 3600),
        (datetime(2026, 3, 14, 21, 30), 2.5 * 3600),  # naive is read as UTC
        (datetime(2026, 3, 15, 0, 0, tzinfo=UTC), 24 * 3600),
        (datetime(2026, 12, 31, 23, 59, 30, tzinfo=UTC), 30),
    ],
    ids=["utc", "plus-two-hours", "naive", "at-midnight", "new-year"],
)
def test_infura_402_cools_down_until_next_utc_midnight(now: datetime, expected_s: float) -> None:
    for failure in (
        F(http_status=402, rpc_code=402, rpc_message="Payment Required"),
        F(rpc_code=402, rpc_message="Payment Required"),  # over WebSocket
    ):
        verdict = classify(failure, now_utc=now)
        assert verdict.error_class is C.QUOTA
        assert verdict.cooldown_s == pytest.approx(expected_s)


def test_the_next_utc_midnight_is_the_same_whatever_the_machine_s_time_zone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # UTC+9: local midnight is not UTC midnight
    time.tzset()
    try:
        for now in (NOW, NOW.astimezone(timezone(timedelta(hours=2))), NOW.replace(tzinfo=None)):
            verdict = classify(F(http_status=402), now_utc=now)
            assert verdict.cooldown_s == pytest.approx(2.5 * 3600), now
        now = datetime.now(UTC)  # and the clock's own time, as a call without `now_utc`
        midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
        cooldown = classify(F(http_status=402)).cooldown_s
        assert cooldown == pytest.approx((midnight - now).total_seconds(), abs=5)
    finally:
        monkeypatch.undo()
        time.tzset()


def test_the_wait_until_midnight_counts_the_fraction_of_a_second_too() -> None:
    now = datetime(2026, 3, 14, 23, 59, 59, 250000, tzinfo=UTC)
    assert classify(F(http_status=402), now_utc=now).cooldown_s == 0.75


def test_a_retry_after_beats_the_quota_default_and_zero_means_no_rest() -> None:
    monthly = F(http_status=403, rpc_message="Monthly capacity limit exceeded.")
    assert classify(dataclasses.replace(monthly, retry_after_s=120.0)).cooldown_s == 120.0
    assert classify(F(http_status=429, retry_after_s=0.0)).cooldown_s == 0.0


@pytest.mark.parametrize("seconds", [0, 0.5])
def test_infura_backoff_seconds_below_one_are_honoured(seconds: float) -> None:
    failure = F(http_status=429, rpc_data={"rate": {"backoff_seconds": seconds}})
    assert classify(failure).cooldown_s == seconds


def test_alchemy_monthly_cap_cools_down_for_an_hour() -> None:
    failure = F(http_status=403, rpc_code=-32600, rpc_message="Monthly capacity limit exceeded.")
    assert classify(failure).cooldown_s == 3600.0


def test_auth_cools_down_for_minutes() -> None:
    verdict = classify(F(http_status=401, rpc_message="invalid project id"))
    assert verdict.cooldown_s == 300.0


@pytest.mark.parametrize(
    "error_class",
    [C.CLIENT, C.TRANSIENT, C.UNSUPPORTED, C.MISSING_DATA, C.TOO_LARGE, C.REVERT, C.TXPOOL],
    ids=str,
)
def test_call_level_classes_do_not_cool_the_upstream(error_class: ErrorClass) -> None:
    # An unsupported method or a pruned block says nothing about the upstream's other calls.
    assert classify(ONE_CASE_PER_CLASS[error_class], now_utc=NOW).cooldown_s is None


def test_reason_names_the_deciding_signal() -> None:
    assert classify(F(http_status=429)).reason == "HTTP 429"
    assert classify(F(rpc_code=-32000, rpc_message="header not found")).reason == (
        "message: header not found"
    )
    assert classify(F(rpc_code=-32601)).reason == "code -32601"


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (F(http_status=413), "HTTP 413"),
        (F(http_status=402), "HTTP 402"),
        (F(http_status=401), "HTTP 401"),
        (F(http_status=403, rpc_message="Monthly capacity limit exceeded."), None),
        (F(http_status=401, rpc_code=-32601), "HTTP 401, code -32601"),
        (F(http_status=500), "HTTP 500"),
        (F(), "no error detail"),
        (F(rpc_code=-38011, rpc_message="nonce too low"), "code -38011"),
        (F(rpc_message="sender is over rate limit"), "sender is over rate limit"),
        (F(http_status=200, rpc_code=429), "HTTP 429"),  # the body's HTTP-like code
        (F(rpc_code=429), "HTTP 429"),  # over WebSocket
        (F(http_status=300, rpc_code=429), "code 429"),  # not a 2xx: the status stands
        (F(http_status=503, rpc_code=402), "code 402"),
    ],
)
def test_each_reason_in_words(failure: UpstreamFailure, reason: str | None) -> None:
    expected = reason or "HTTP 403, message: monthly capacity limit"
    assert classify(failure, now_utc=NOW).reason == expected


def test_the_sender_rate_limit_is_known_by_its_code_or_its_words() -> None:
    for failure in (
        F(rpc_code=-32017, rpc_message="slow down"),
        F(rpc_message="sender is over rate limit"),
    ):
        verdict = classify(failure)
        assert (verdict.error_class, verdict.retry_elsewhere) == (C.RATE_LIMITED, False)


# --- suggested block range -------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(
            "query returned more than 10000 results. Try with this block range "
            "[0x30CE171, 0x30CE1D4].",
            (0x30CE171, 0x30CE1D4),
            id="infura",
        ),
        pytest.param(ALCHEMY_LOG_RESPONSE_SIZE, (0x0, 0x87FE9), id="alchemy"),
        pytest.param(
            "query exceeds max results 20000, retry with the range 18000000-18000999",
            (18000000, 18000999),
            id="reth-drpc",
        ),
        pytest.param(
            "query exceeds max results 20000, retry with the range START-END",
            None,
            id="blastapi-doc-placeholder",
        ),
        pytest.param(
            "ranges over 10000 blocks are not supported on freetier", None, id="drpc-no-suggestion"
        ),
        pytest.param("Try with this block range [0x20, 0x10].", None, id="reversed-range"),
        pytest.param("Try with this block range [0x20, 0x20].", (0x20, 0x20), id="one-block"),
        pytest.param("execution reverted: [0x1, 0x2]", None, id="brackets-without-block-range"),
    ],
)
def test_suggested_block_range(message: str, expected: tuple[int, int] | None) -> None:
    assert suggested_block_range(message) == expected


# --- the pattern table itself ----------------------------------------------------------


def test_patterns_are_lower_case_so_they_can_match() -> None:
    # The text is lower-cased before matching; an upper-case pattern would never fire.
    assert [p for p, _ in MESSAGE_PATTERNS if p != p.lower()] == []


def test_no_pattern_is_shadowed_by_an_earlier_one_of_another_class() -> None:
    for pattern, error_class in MESSAGE_PATTERNS:
        assert classify(F(rpc_message=pattern)).error_class is error_class, pattern


def test_module_is_pure() -> None:
    tree = ast.parse(Path(errors.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported <= {"__future__", "enum", "re", "collections", "dataclasses", "datetime"}
