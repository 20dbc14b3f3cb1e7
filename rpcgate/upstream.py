"""The HTTP client of one upstream: a thin I/O shell that turns an exchange into plain data.

One keep-alive aiohttp session per upstream. Every answer becomes either a result or an
`UpstreamFailure` for the classifier; nothing here decides what a failure means.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import itertools
import socket
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from rpcgate.config import UpstreamConfig
from rpcgate.errors import UpstreamFailure
from rpcgate.health import UpstreamHealth
from rpcgate.jsonrpc import dumps, loads
from rpcgate.masking import MASKER, mask_url

USER_AGENT = "rpcgate/0.1"
_BODY_PREFIX = 200  # bytes of a non-JSON body kept for classification and logs


@dataclass(frozen=True, slots=True)
class Reply:
    """One attempt's outcome: a result, or a failure (with the upstream's error object)."""

    result: Any = None
    failure: UpstreamFailure | None = None
    error: dict[str, Any] | None = None  # the JSON-RPC error object, verbatim
    latency_s: float = 0.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.replace(".", "", 1).isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def interpret(status: int, body: bytes, headers: dict[str, str], request_id: int) -> Reply:
    """Turns one HTTP exchange into a Reply. Pure, so it is tested without sockets.

    An upstream's answer is not trusted: only a well-formed JSON-RPC answer to this very
    call (its id, exactly one of `result` and `error`, an error object with an integer
    code and a string message) is taken. Anything else is this upstream's failure, tried
    elsewhere, and never reaches the client.
    """
    retry_after = parse_retry_after(headers.get("retry-after"))

    def unusable(transport: str, problem: str | None = None) -> Reply:
        # A non-2xx status explains itself (with the body's text, which the classifier
        # reads: "error code: 1015"); on a 2xx, the body is the problem.
        text = body[:_BODY_PREFIX].decode("utf-8", "replace")
        return Reply(
            failure=UpstreamFailure(
                transport=None if status >= 300 else transport,
                http_status=status,
                retry_after_s=retry_after,
                body_text=text if status >= 300 or problem is None else problem,
            )
        )

    try:
        parsed = loads(body) if body else None
    except ValueError:
        return unusable("bad_json")
    if isinstance(parsed, list):  # one call was sent: a batch of one is tolerated
        if len(parsed) != 1:
            return unusable("bad_response", f"a batch of {len(parsed)} answers to one call")
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        return unusable("bad_response", "not a JSON-RPC answer")
    problem = answer_problem(parsed, request_id)
    if problem is not None:
        return unusable("bad_response", problem)
    error = parsed.get("error")
    if error is not None:
        return Reply(
            error=error,
            failure=UpstreamFailure(
                http_status=status,
                rpc_code=error["code"],
                rpc_message=error["message"],
                rpc_data=error.get("data"),
                retry_after_s=retry_after,
            ),
        )
    if status >= 300:
        return unusable("bad_response", "a result behind an error status")
    return Reply(result=parsed["result"])


def answer_problem(answer: dict[str, Any], request_id: int) -> str | None:
    """What makes `answer` no JSON-RPC answer to call `request_id`, in words; None if it is one.

    An error may carry a null id (or none): the specification's id for a request the
    server could not read, and over one HTTP exchange it can only be about this call. A
    result must carry the call's id, by type too (`true` is not 1).
    """
    has_result, has_error = "result" in answer, "error" in answer
    if has_result and has_error:
        return 'both "result" and "error"'
    if not has_result and not has_error:
        return 'neither "result" nor "error"'
    answer_id = answer.get("id")
    if has_error:
        error = answer["error"]
        if not (
            type(error) is dict
            and type(error.get("code")) is int
            and type(error.get("message")) is str
        ):
            return '"error" is not an error object (an integer code, a string message)'
        if answer_id is None:
            return None
    if type(answer_id) is not int or answer_id != request_id:
        scalar = answer_id is None or type(answer_id) in (int, float, str, bool)
        shown = repr(answer_id)[:40] if scalar else f"a {type(answer_id).__name__}"
        return f"id mismatch: asked {request_id}, answered {shown}"
    return None


class Upstream:
    """One upstream of one chain: its config, its session and its health."""

    def __init__(
        self, config: UpstreamConfig, *, max_response_bytes: int, max_concurrent: int
    ) -> None:
        self.config = config
        self.name = config.name
        self.domain = config.domain
        self.display_url = mask_url(config.url)
        self.health = UpstreamHealth()
        self._max_response_bytes = max_response_bytes
        self._limit = asyncio.Semaphore(max_concurrent)
        self._ids = itertools.count(1)
        self._session: aiohttp.ClientSession | None = None
        MASKER.add_url(config.url)
        MASKER.add(*config.headers.values())

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60, ttl_dns_cache=300)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            **self.config.headers,
        }
        self._session = aiohttp.ClientSession(
            connector=connector,
            headers=headers,
            skip_auto_headers=("Accept-Encoding",),
            auto_decompress=True,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, method: str, params: Any, timeout_s: float) -> Reply:
        """One attempt. Never raises for upstream trouble: a failure comes back as data."""
        if self._session is None:
            await self.start()
        assert self._session is not None
        request_id = next(self._ids)
        payload: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            payload["params"] = params
        started = time.monotonic()
        try:
            async with (
                self._limit,
                asyncio.timeout(timeout_s),
                self._session.post(self.config.url, data=dumps(payload)) as resp,
            ):
                body = await self._read_body(resp)
                if body is None:
                    reply = Reply(
                        failure=UpstreamFailure(http_status=413, body_text="response too large")
                    )
                else:
                    retry_after = resp.headers.get("Retry-After", "")
                    reply = interpret(resp.status, body, {"retry-after": retry_after}, request_id)
        except TimeoutError:
            reply = Reply(failure=UpstreamFailure(transport="timeout"))
        except aiohttp.ClientConnectorError as exc:
            reply = Reply(
                failure=UpstreamFailure(
                    transport=connect_failure(exc), body_text=MASKER.mask(str(exc))
                )
            )
        except (aiohttp.ClientError, OSError) as exc:
            reply = Reply(
                failure=UpstreamFailure(
                    transport="reset", body_text=MASKER.mask(f"{type(exc).__name__}: {exc}")
                )
            )
        return dataclasses.replace(reply, latency_s=time.monotonic() - started)

    async def _read_body(self, resp: aiohttp.ClientResponse) -> bytes | None:
        declared = resp.content_length
        if declared is not None and declared > self._max_response_bytes:
            return None
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > self._max_response_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)


def connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    """What went wrong before any HTTP, in the words an operator searches for."""
    host = MASKER.mask(exc.host)
    if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(
        exc.os_error, socket.gaierror
    ):
        return f"DNS: name not resolved ({host})"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS: certificate not accepted ({host}: {exc.certificate_error})"
    if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        return f"TLS: handshake failed ({host})"
    if isinstance(exc.os_error, ConnectionRefusedError):
        return f"connection refused ({host}:{exc.port})"
    return f"cannot connect ({host}:{exc.port}: {exc.os_error.strerror or exc.os_error})"
