"""The WebSocket client of one upstream: its newHeads, a head signal faster than polling
(polling stays as the check), and its pending transactions where the node offers them.

A thin I/O shell, like `upstream`: `UpstreamSocket` connects, subscribes, hands every
notification to the callbacks it was given, and after any failure reconnects with backoff
and subscribes again. Each failure (a refused connect, an eth_subscribe error, a drop) is
recorded in the upstream's health as that upstream's failure, classified like any other,
and logged once per outage, with the URL masked.

The decisions are pure and tested without sockets: `Backoff` (how long until the next
attempt), `subscribe_reply` (what an eth_subscribe answer says), `parse_notification` (a
head or a pending hash, out of one message) and `PendingMerger` (which pending hashes are new
across every upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from rpcgate.config.settings import UpstreamConfig
from rpcgate.consensus.heads import Block
from rpcgate.consensus.health import UpstreamHealth, record_socket_failure
from rpcgate.rpc.background import Background
from rpcgate.rpc.errors import Classification, UpstreamFailure, classify
from rpcgate.rpc.jsonrpc import dumps, loads
from rpcgate.rpc.masking import MASKER, mask_url
from rpcgate.upstream.client import USER_AGENT, answer_problem, parse_retry_after
from rpcgate.upstream.http_client import connect_error_words

log = structlog.get_logger("rpcgate.upstream_ws")

NEW_HEADS = "newHeads"
NEW_PENDING = "newPendingTransactions"

# A ping every this often; a node that does not answer one within half of it is dropped.
HEARTBEAT_S = 20.0
# Time to connect and have every eth_subscribe answered.
SUBSCRIBE_TIMEOUT_S = 10.0
# Time a closing handshake may take (on stop, and when a node misbehaves).
CLOSE_TIMEOUT_S = 2.0
# Pending hashes remembered for deduplication: a transaction reaches every upstream's pool
# within seconds, far fewer than this many transactions apart even on a busy chain.
PENDING_MEMORY = 10_000

_TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")

HeadCallback = Callable[[str, Block], None]  # (upstream name, its new head)
PendingCallback = Callable[[str, str], None]  # (upstream name, transaction hash)


# --- pure decisions -----------------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """When to try again: `initial_s` doubling to `max_s`, jittered, and the schedule starts
    over after a connection that stayed up `stable_s`."""

    initial_s: float = 0.5
    max_s: float = 30.0
    stable_s: float = 60.0

    def delay(self, attempt: int, rand: float, at_least: float = 0.0) -> float:
        """Seconds before attempt `attempt` (1: the first retry), `rand` in [0, 1): between
        half and all of the schedule's step, so sockets cut at once do not come back at once;
        never less than `at_least` (a cooldown the upstream's answer asked for)."""
        step = min(self.initial_s * 2.0 ** min(max(attempt - 1, 0), 32), self.max_s)
        return max(step * (0.5 + rand / 2), at_least)

    def next_attempt(self, attempt: int, connected_s: float | None) -> int:
        """The attempt number after a failure; `connected_s`: how long the connection that
        just ended was up (None: it never came up)."""
        if connected_s is not None and connected_s >= self.stable_s:
            return 1
        return attempt + 1


def subscribe_reply(answer: Mapping[str, Any], request_id: int) -> str | UpstreamFailure:
    """The subscription id an eth_subscribe answer gives, or what went wrong as a failure."""
    problem = answer_problem(dict(answer), request_id)
    if problem is not None:
        return UpstreamFailure(
            transport="WebSocket: bad answer to eth_subscribe", body_text=problem
        )
    error = answer.get("error")
    if error is not None:
        return UpstreamFailure(
            rpc_code=error["code"], rpc_message=error["message"], rpc_data=error.get("data")
        )
    result = answer["result"]
    if not isinstance(result, str) or not result:
        return UpstreamFailure(
            transport="WebSocket: bad answer to eth_subscribe",
            body_text="the subscription id is not a string",
        )
    return result


def parse_notification(message: Any, kinds: Mapping[str, str]) -> Block | str | None:
    """What one message from the node brings: a `Block` for a newHeads notification, a
    transaction hash (lower case) for a newPendingTransactions one; None for anything else
    (an answer, a subscription we did not make, a malformed notification).

    `kinds` maps this connection's subscription ids to their kind. A pending notification
    may carry the whole transaction (some providers' full-transaction mode): its hash counts.
    """
    if not isinstance(message, dict) or message.get("method") != "eth_subscription":
        return None
    params = message.get("params")
    if not isinstance(params, dict):
        return None
    subscription = params.get("subscription")
    kind = kinds.get(subscription) if isinstance(subscription, str) else None
    result = params.get("result")
    if kind == NEW_HEADS:
        return Block.from_json(result)
    if kind == NEW_PENDING:
        tx_hash = result.get("hash") if isinstance(result, dict) else result
        if isinstance(tx_hash, str) and _TX_HASH.match(tx_hash):
            return tx_hash.lower()
    return None


class PendingMerger:
    """Pending transaction hashes merged from several upstreams: each is new once.

    Bounded: the `capacity` most recently seen hashes are remembered (a hash seen again is
    fresh again), so memory stays flat however long the gateway runs.
    """

    def __init__(self, capacity: int = PENDING_MEMORY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()

    def is_new(self, tx_hash: str) -> bool:
        """True the first time a hash is offered (by any upstream), False after."""
        key = tx_hash.lower()
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._seen)


# --- the I/O shell ------------------------------------------------------------------------


@dataclass
class SocketState:
    """What the status page shows of one upstream's WebSocket."""

    connected: bool = False
    since: float = 0.0  # wall-clock time it connected, or the outage began; 0: not yet
    last_error: str = ""
    reconnects: int = 0  # connections made after the first
    offers_pending: bool | None = None  # None: not asked yet (or not wanted)


class UpstreamSocket:
    """The WebSocket of one upstream (its `ws_url`), kept subscribed until `stop()`."""

    def __init__(
        self,
        config: UpstreamConfig,
        health: UpstreamHealth,
        *,
        on_head: HeadCallback,
        on_pending: PendingCallback | None = None,
        heartbeat_s: float = HEARTBEAT_S,
        subscribe_timeout_s: float = SUBSCRIBE_TIMEOUT_S,
        backoff: Backoff | None = None,
    ) -> None:
        if not config.ws_url:
            raise ValueError(f"upstream {config.name!r} has no ws_url")
        self.name = config.name
        self.display_url = mask_url(config.ws_url)
        self.health = health
        self.state = SocketState()
        self.backoff = backoff or Backoff()
        self._url = config.ws_url
        self._headers = {"User-Agent": USER_AGENT, **config.headers}
        self._on_head = on_head
        self._on_pending = on_pending  # None: newPendingTransactions is not asked for
        self._heartbeat_s = heartbeat_s
        self._subscribe_timeout_s = subscribe_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._connection = Background(f"upstream-ws-{self.name}", self._run)
        self._ever_connected = False
        self._up_since: float | None = None  # loop time the current connection came up
        self._outage_failures = 0  # failures since the socket was last up; 0: it is up
        MASKER.add_url(config.ws_url)
        MASKER.add(*config.headers.values())

    @property
    def supports_pending(self) -> bool:
        """Whether the node answered eth_subscribe newPendingTransactions with a subscription
        (False until it has, and after it refused)."""
        return self.state.offers_pending is True

    async def start(self) -> None:
        """Connects in the background; returns at once (heads arrive through `on_head`)."""
        if self._connection.running:
            return
        self._session = aiohttp.ClientSession(headers=self._headers)
        self._connection.start()

    async def stop(self) -> None:
        await self._connection.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.state.connected = False

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            self._up_since = None
            try:
                failure = await self._connect_and_follow()
            except Exception as exc:  # a bug here must not end the socket for good
                log.exception("upstream_ws_failed", upstream=self.name, url=self.display_url)
                failure = UpstreamFailure(
                    transport="WebSocket: internal error", body_text=MASKER.mask(repr(exc))
                )
            connected_s = None if self._up_since is None else loop.time() - self._up_since
            attempt = self.backoff.next_attempt(attempt, connected_s)
            classification = classify(failure)
            self._went_down(failure, classification)
            await asyncio.sleep(
                self.backoff.delay(attempt, random.random(), classification.cooldown_s or 0.0)
            )

    async def _connect_and_follow(self) -> UpstreamFailure:
        """One connection, from connect to drop; what ended it."""
        assert self._session is not None
        try:
            async with asyncio.timeout(self._subscribe_timeout_s) as subscribing:
                ws = await self._session.ws_connect(
                    self._url,
                    heartbeat=self._heartbeat_s,
                    timeout=aiohttp.ClientWSTimeout(ws_close=CLOSE_TIMEOUT_S),
                )
                try:
                    return await self._follow(ws, subscribing)
                finally:
                    with contextlib.suppress(Exception):
                        await ws.close()
        except TimeoutError:
            return UpstreamFailure(transport="WebSocket: timeout")
        except aiohttp.WSServerHandshakeError as exc:  # an HTTP answer instead of an upgrade
            if exc.status < 300:  # a server that speaks no WebSocket there
                return UpstreamFailure(
                    transport=f"WebSocket: not upgraded (HTTP {exc.status})",
                    body_text=MASKER.mask(exc.message),
                )
            retry_after = exc.headers.get("Retry-After") if exc.headers else None
            return UpstreamFailure(
                http_status=exc.status,
                body_text=MASKER.mask(exc.message),
                retry_after_s=parse_retry_after(retry_after),
            )
        except aiohttp.ClientConnectorError as exc:
            return UpstreamFailure(
                transport=f"WebSocket: {connect_failure(exc)}", body_text=MASKER.mask(str(exc))
            )
        except (aiohttp.ClientError, OSError) as exc:
            return UpstreamFailure(
                transport="WebSocket: reset",
                body_text=MASKER.mask(f"{type(exc).__name__}: {exc}"),
            )

    async def _follow(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        subscribing: asyncio.Timeout,
    ) -> UpstreamFailure:
        """Subscribes, then delivers notifications until the connection ends."""
        awaiting = {1: NEW_HEADS}
        if self._on_pending is not None:
            awaiting[2] = NEW_PENDING
        for request_id, kind in awaiting.items():
            await ws.send_str(
                dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": request_id,
                        "method": "eth_subscribe",
                        "params": [kind],
                    }
                ).decode()
            )
        kinds: dict[str, str] = {}  # subscription id -> kind
        while True:
            msg = await ws.receive()
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                return UpstreamFailure(transport=f"WebSocket: closed (code {ws.close_code})")
            if msg.type is aiohttp.WSMsgType.ERROR:
                error = msg.data
                if isinstance(error, aiohttp.ServerTimeoutError):
                    return UpstreamFailure(transport="WebSocket: no answer to a ping")
                return UpstreamFailure(
                    transport="WebSocket: reset",
                    body_text=MASKER.mask(f"{type(error).__name__}: {error}"),
                )
            if msg.type not in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                continue
            try:
                message = loads(msg.data)
            except ValueError:
                continue  # one garbled frame says little; the heartbeat watches the link
            answered = message.get("id") if isinstance(message, dict) else None
            if type(answered) is int and answered in awaiting:
                kind = awaiting.pop(answered)
                outcome = subscribe_reply(message, answered)
                if isinstance(outcome, str):
                    kinds[outcome] = kind
                    if kind == NEW_PENDING:
                        self.state.offers_pending = True
                elif kind == NEW_HEADS:
                    return outcome  # the reason for this socket: try again later
                else:
                    self._no_pending(outcome)
                if not awaiting:
                    subscribing.reschedule(None)
                    self._came_up()
                continue
            self._deliver(parse_notification(message, kinds))

    def _deliver(self, notice: Block | str | None) -> None:
        try:
            if isinstance(notice, Block):
                self._on_head(self.name, notice)
            elif notice is not None and self._on_pending is not None:
                self._on_pending(self.name, notice)
        except Exception:  # a subscriber's bug must not drop the upstream's socket
            log.exception("upstream_ws_callback_failed", upstream=self.name)

    def _no_pending(self, failure: UpstreamFailure) -> None:
        """The node refused newPendingTransactions: heads still flow, pending ones do not."""
        classification = classify(failure)
        record_socket_failure(self.health, classification, time.monotonic())
        if self.state.offers_pending is not False:
            log.info(
                "upstream_ws_no_pending_transactions",
                upstream=self.name,
                url=self.display_url,
                error=f"{classification.error_class}: {classification.reason}",
            )
        self.state.offers_pending = False

    def _came_up(self) -> None:
        if self._ever_connected:
            self.state.reconnects += 1
        self._ever_connected = True
        self._up_since = asyncio.get_running_loop().time()
        self.state.connected = True
        self.state.since = time.time()
        if self._outage_failures:
            log.info(
                "upstream_ws_up",
                upstream=self.name,
                url=self.display_url,
                failed_attempts=self._outage_failures,
            )
        self._outage_failures = 0

    def _went_down(self, failure: UpstreamFailure, classification: Classification) -> None:
        record_socket_failure(self.health, classification, time.monotonic())
        self.state.connected = False
        self.state.last_error = f"{classification.error_class}: {classification.reason}"
        if self._outage_failures == 0:  # the first failure of this outage: the one logged
            self.state.since = time.time()
            log.warning(
                "upstream_ws_down",
                upstream=self.name,
                url=self.display_url,
                error=self.state.last_error,
                detail=MASKER.mask(failure.body_text or ""),
                retrying="with backoff, logged again when it is back",
            )
        self._outage_failures += 1


def connect_failure(exc: aiohttp.ClientConnectorError) -> str:
    """What went wrong before any HTTP (aiohttp's view of it: the upstream WebSockets)."""
    error: BaseException | None = exc.os_error
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        error = socket.gaierror()
    elif isinstance(exc, aiohttp.ClientConnectorCertificateError):
        certificate_error = exc.certificate_error
        error = (
            certificate_error
            if isinstance(certificate_error, ssl.SSLCertVerificationError)
            else ssl.SSLError()
        )
    elif isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
        error = ssl.SSLError()
    return connect_error_words(error, MASKER.mask(exc.host), exc.port)
