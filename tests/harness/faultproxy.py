"""An HTTP proxy in front of one JSON-RPC upstream that fails on demand.

A test puts a `FaultProxy` between the gateway and each anvil node, then flips it between
`Fault` modes to make that upstream look dead, stuck, overloaded or broken, and reads
`request_count` / `methods` to see which upstream the gateway actually used.

The proxy lives on one event loop (whichever awaited `start()`: usually a
`BackgroundLoop` for synchronous tests, or the test's own loop for async tests).
`set_fault()` is synchronous and may be called from any thread, including that loop's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import json
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from tests.harness.tampering import (
    BLOCK_FIELDS,
    at_block,
    fake_block,
    omitted_slots,
    quantity,
    state_block,
    tampered,
    without_omitted_slots,
)
from tests.harness.tools import free_port

GARBAGE_BODY = b"\x00garbage<html>"
UNAVAILABLE_BODY = "upstream unavailable"
TOO_MANY_REQUESTS_CODE = -32005
TOO_MANY_REQUESTS_MESSAGE = "Too Many Requests"
RETRY_AFTER_SECONDS = 1

_JSON = "application/json"
_SET_FAULT_TIMEOUT_SECONDS = 5.0
_SHUTDOWN_TIMEOUT_SECONDS = 0.5


class Fault(enum.Enum):
    HEALTHY = "healthy"
    """Forward every request verbatim to the upstream."""
    REFUSE = "refuse"
    """Not listening: TCP connects are refused. Open connections are dropped too."""
    HANG = "hang"
    """Accept requests and never answer; their connections are dropped when released."""
    HTTP_5XX = "http_5xx"
    """Answer with a 5xx status (503 unless told otherwise) and a plain-text body."""
    HTTP_429 = "http_429"
    """Answer 429 with `Retry-After: 1` and a JSON-RPC -32005 error body."""
    RPC_ERROR = "rpc_error"
    """Answer 200 with a JSON-RPC error object per request (-32603 unless told otherwise)."""
    LATENCY = "latency"
    """Forward, but only after a delay."""
    GARBAGE = "garbage"
    """Answer 200, claiming JSON, with a body that does not parse as JSON."""
    LOGS_RANGE_LIMIT = "logs_range_limit"
    """A provider's eth_getLogs range cap: eth_getLogs over more than `max_blocks` blocks (a
    `blockHash` filter is one) gets a JSON-RPC error (`error_code`, `error_message`, where
    `{from_block}` and `{to_block}` become the first `max_blocks` of the range asked, as
    Infura suggests a range); eth_getLogs whose range holds `failing_block` gets a 503;
    everything else is forwarded."""
    TAMPER_BLOCK = "tamper_block"
    """Forward; in eth_getBlockByNumber/ByHash answers change header `field` ("gasUsed"
    unless told otherwise; a number +1, a hash, an address or bytes their last hex digit
    flipped), keeping the block's `hash`. `field="transaction"` adds 1 wei to the first
    transaction's value in full blocks and in eth_getTransactionBy* answers, keeping the
    transaction's hash and the block's transactionsRoot."""
    FAKE_BLOCK = "fake_block"
    """Forward; eth_getBlockByNumber answers about a numbered block (tags are answered
    honestly, so the proxy stays a voter) get header `field` changed and their `hash`
    recomputed: a self-consistent fake (`tampering.fake_block`). eth_getBlockByHash of a
    hash it made up answers its fake; other look-ups by hash are forwarded."""
    TAMPER_RECEIPT = "tamper_receipt"
    """Forward; flip `status` in eth_getTransactionReceipt and in every receipt of
    eth_getBlockReceipts."""
    TAMPER_BALANCE = "tamper_balance"
    """Forward; +1 wei in eth_getBalance and in eth_getProof's `balance` (proof as is)."""
    TAMPER_NONCE = "tamper_nonce"
    """Forward; +1 in eth_getTransactionCount and in eth_getProof's `nonce`."""
    TAMPER_CODE = "tamper_code"
    """Forward; eth_getCode with its last hex digit changed ("0x" becomes "0x00"), and
    eth_getProof's `codeHash` likewise."""
    TAMPER_STORAGE = "tamper_storage"
    """Forward; +1 in eth_getStorageAt's word and in each eth_getProof storage value."""
    STALE_STATE = "stale_state"
    """State calls (balance, nonce, code, storage, proof, eth_call) are forwarded about the
    block `stale_blocks` (1 unless told otherwise) before the one they name, never below 0,
    as a replica lagging behind its load balancer would answer. Tags and block hashes are
    resolved by asking the node (eth_getBlockByNumber / eth_getBlockByHash, not recorded)."""
    DROP_LOG = "drop_log"
    """Forward; drop the middle log of a non-empty eth_getLogs answer."""
    NULL_LOOKUPS = "null_lookups"
    """Forward, except look-ups by hash (eth_getTransactionReceipt, eth_getTransactionByHash,
    eth_getBlockByHash): answered null, as by a node whose transaction index lags (geth while
    indexing) or a replica behind its load balancer's others."""
    TAMPER_CALL = "tamper_call"
    """Forward; eth_call results with their last hex digit changed (an empty result kept)."""
    OMIT_SLOT = "omit_slot"
    """A liar about state that keeps its story straight: eth_createAccessList answers leave
    out the first storage key of each contract they name, and eth_call is answered as if
    those slots held zero (forwarded with a state override that zeroes them)."""
    GETH_LOG_RANGES = "geth_log_ranges"
    """Forward, except eth_getLogs whose range ends above the node's head: the -32602 error
    geth gives ("block range extends beyond current head block"), where anvil answers with
    the logs it has, as if the rest of the range were empty."""


TAMPERING = frozenset(
    {
        Fault.TAMPER_BLOCK,
        Fault.TAMPER_RECEIPT,
        Fault.TAMPER_BALANCE,
        Fault.TAMPER_NONCE,
        Fault.TAMPER_CODE,
        Fault.TAMPER_STORAGE,
        Fault.STALE_STATE,
        Fault.DROP_LOG,
        Fault.TAMPER_CALL,
    }
)


@dataclass(frozen=True)
class FaultSettings:
    fault: Fault = Fault.HEALTHY
    status: int = 503
    error_code: int = -32603
    error_message: str = "internal error"
    delay: float = 0.5
    max_blocks: int = 0
    failing_block: int | None = None
    field: str = "gasUsed"
    stale_blocks: int = 1
    # Only requests calling one of these methods get the fault (a batch: when any item
    # does); the rest are forwarded. None: every request.
    methods: frozenset[str] | None = None


class FaultProxy:
    def __init__(
        self,
        upstream_url: str,
        *,
        port: int | None = None,
        upstream_timeout: float = 30.0,
    ) -> None:
        self.upstream_url = upstream_url
        self.upstream_timeout = upstream_timeout
        self._port = port
        self._settings = FaultSettings()
        self._counts_lock = threading.Lock()
        self._request_count = 0
        self._tampered = 0
        self._fakes: dict[str, dict[str, Any]] = {}  # FAKE_BLOCK's fakes by their hash
        self._methods: list[str] = []
        self._calls: list[tuple[str, str]] = []  # (method, params as JSON), per item
        self._requests: list[str | list[str] | None] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: web.Server | None = None
        self._session: aiohttp.ClientSession | None = None
        self._listen_socket: socket.socket | None = None
        self._pending_connections: set[asyncio.Task[Any]] = set()
        self._hung_connections: set[RequestHandler] = set()

    # -- observation --

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("fault proxy not started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def fault(self) -> Fault:
        return self._settings.fault

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    @property
    def request_count(self) -> int:
        """HTTP requests received (in any mode) since start or the last reset_counts()."""
        with self._counts_lock:
            return self._request_count

    @property
    def methods(self) -> list[str]:
        """JSON-RPC methods received, in order, one entry per batch item."""
        with self._counts_lock:
            return list(self._methods)

    def calls_of(self, method: str, params: Any) -> int:
        """How many times this exact call (method and params) was received."""
        wanted = (method, json.dumps(params, sort_keys=True))
        with self._counts_lock:
            return self._calls.count(wanted)

    @property
    def requests(self) -> list[str | list[str] | None]:
        """What each HTTP request carried, in order: a single call's method, a batch's list
        of methods, or None for a body that is neither."""
        with self._counts_lock:
            return [list(r) if isinstance(r, list) else r for r in self._requests]

    @property
    def tampered_answers(self) -> int:
        """Results a tampering mode altered (a batch's items count one each; STALE_STATE
        counts the results it had asked about an older block)."""
        with self._counts_lock:
            return self._tampered

    @property
    def hung_requests(self) -> int:
        """Requests parked by HANG whose client has not hung up yet."""
        return len(self._hung_connections)

    def reset_counts(self) -> None:
        with self._counts_lock:
            self._request_count = 0
            self._tampered = 0
            self._methods.clear()
            self._calls.clear()
            self._requests.clear()

    # -- control --

    def set_fault(
        self,
        fault: Fault,
        *,
        status: int | None = None,
        error_code: int | None = None,
        error_message: str | None = None,
        delay: float | None = None,
        max_blocks: int | None = None,
        failing_block: int | None = None,
        field: str | None = None,
        stale_blocks: int | None = None,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Switch mode; options not given fall back to their defaults. `methods`: only calls
        of these get the fault (to fail a call without failing the head polls, say).

        Blocks until the listening socket is closed or reopened (REFUSE transitions), so the
        very next connect from the calling thread already sees the new state.
        """
        defaults = FaultSettings()
        _require_option_fits(status, "status", fault, Fault.HTTP_5XX)
        limit = Fault.LOGS_RANGE_LIMIT
        _require_option_fits(error_code, "error_code", fault, Fault.RPC_ERROR, limit)
        _require_option_fits(error_message, "error_message", fault, Fault.RPC_ERROR, limit)
        _require_option_fits(delay, "delay", fault, Fault.LATENCY)
        _require_option_fits(max_blocks, "max_blocks", fault, limit)
        _require_option_fits(failing_block, "failing_block", fault, limit)
        _require_option_fits(field, "field", fault, Fault.TAMPER_BLOCK, Fault.FAKE_BLOCK)
        _require_option_fits(stale_blocks, "stale_blocks", fault, Fault.STALE_STATE)
        if methods is not None and fault is Fault.REFUSE:
            raise ValueError("REFUSE closes the port to every call: it cannot pick methods")
        if status is not None and not 500 <= status <= 599:
            raise ValueError(f"HTTP_5XX needs a 5xx status, got {status}")
        if field is not None and field not in BLOCK_FIELDS:
            raise ValueError(f"TAMPER_BLOCK cannot change {field!r}: one of {sorted(BLOCK_FIELDS)}")
        if stale_blocks is not None and stale_blocks < 1:
            raise ValueError(f"STALE_STATE needs stale_blocks >= 1, got {stale_blocks}")
        settings = FaultSettings(
            fault=fault,
            status=defaults.status if status is None else status,
            error_code=defaults.error_code if error_code is None else error_code,
            error_message=defaults.error_message if error_message is None else error_message,
            delay=defaults.delay if delay is None else delay,
            max_blocks=defaults.max_blocks if max_blocks is None else max_blocks,
            failing_block=failing_block,
            field=defaults.field if field is None else field,
            stale_blocks=defaults.stale_blocks if stale_blocks is None else stale_blocks,
            methods=None if methods is None else frozenset(methods),
        )
        self._call_on_loop(lambda: self._apply(settings))

    def heal(self) -> None:
        self.set_fault(Fault.HEALTHY)

    async def start(self) -> FaultProxy:
        """Start serving on the running loop (which then owns the proxy)."""
        if self._loop is not None:
            raise RuntimeError("fault proxy already started")
        self._loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.upstream_timeout)
        )
        # handler_cancellation: a client that gives up on a hung request takes its handler
        # with it instead of leaving it parked until the proxy stops.
        self._server = web.Server(self._handle, handler_cancellation=True, access_log=None)
        self._start_listening()
        if self._settings.fault is Fault.REFUSE:
            self._stop_listening()
        return self

    async def stop(self) -> None:
        """Stop serving and drop every connection; callable from any loop."""
        loop = self._loop
        if loop is None:
            return
        if asyncio.get_running_loop() is loop:
            await self._shutdown()
        elif not loop.is_closed():
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._shutdown(), loop))

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- internals; everything below runs on the proxy's loop --

    def _call_on_loop(self, action: Callable[[], None]) -> None:
        loop = self._loop
        if loop is None or _running_loop() is loop:
            action()
            return
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run_and_report() -> None:
            try:
                action()
            except BaseException as error:
                done.set_exception(error)
            else:
                done.set_result(None)

        loop.call_soon_threadsafe(run_and_report)
        done.result(_SET_FAULT_TIMEOUT_SECONDS)

    def _apply(self, settings: FaultSettings) -> None:
        self._settings = settings
        if self._loop is None:
            return  # start() honours the settings
        if settings.fault is not Fault.HANG:
            self._release_hung_requests()
        if settings.fault is Fault.REFUSE:
            self._stop_listening()
        else:
            self._start_listening()

    async def _shutdown(self) -> None:
        self._stop_listening()
        self._drop_open_connections()  # already done, unless it was refusing
        for pending in self._pending_connections:
            pending.cancel()
        await asyncio.gather(*self._pending_connections, return_exceptions=True)
        if self._server is not None:
            await self._server.shutdown(_SHUTDOWN_TIMEOUT_SECONDS)
        if self._session is not None:
            await self._session.close()
        self._loop = None
        self._server = None
        self._session = None

    def _start_listening(self) -> None:
        if self._listen_socket is not None:
            return
        assert self._loop is not None
        listen_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Reopening the same port right after closing it must not trip over TIME_WAIT.
        listen_socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            # A port of this worker's own (free_port): while it refuses, nobody takes it.
            listen_socket.bind(("127.0.0.1", self._port or free_port()))
            listen_socket.listen(128)
        except OSError:
            listen_socket.close()
            raise
        listen_socket.setblocking(False)
        self._port = listen_socket.getsockname()[1]
        self._listen_socket = listen_socket
        # A hand-rolled accept loop rather than loop.create_server(): opening and closing it
        # is then synchronous, so set_fault() works from the loop's own thread as well.
        self._loop.add_reader(listen_socket.fileno(), self._accept_waiting_connections)

    def _stop_listening(self) -> None:
        listen_socket = self._listen_socket
        if listen_socket is None:
            return
        assert self._loop is not None
        self._listen_socket = None
        self._loop.remove_reader(listen_socket.fileno())
        listen_socket.close()
        self._drop_open_connections()

    def _drop_open_connections(self) -> None:
        # A refused node does not keep serving pooled keep-alive connections either.
        # transport.close() only closes the socket on a later loop iteration; shutting it
        # down now sends the FIN before set_fault() returns.
        if self._server is None:
            return
        for connection in self._server.connections:
            transport = connection.transport
            if transport is not None:
                with contextlib.suppress(OSError):
                    transport.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
            connection.force_close()

    def _accept_waiting_connections(self) -> None:
        assert self._loop is not None and self._server is not None
        listen_socket = self._listen_socket
        while listen_socket is not None:
            try:
                connection, _ = listen_socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. the peer reset before accept; nothing to serve
            connection.setblocking(False)
            wiring = self._loop.create_task(
                self._loop.connect_accepted_socket(self._server, connection)
            )
            self._pending_connections.add(wiring)
            wiring.add_done_callback(self._forget_pending_connection)

    def _forget_pending_connection(self, wiring: asyncio.Task[Any]) -> None:
        self._pending_connections.discard(wiring)
        if not wiring.cancelled():
            wiring.exception()  # retrieved so asyncio does not log it; the client noticed

    def _release_hung_requests(self) -> None:
        # Dropping the connection (rather than forwarding late) keeps a request that the
        # client gave up on from reaching the upstream behind the test's back.
        for connection in list(self._hung_connections):
            connection.force_close()
        self._hung_connections.clear()

    def _record(self, payload: Any) -> list[str]:
        items = payload if isinstance(payload, list) else [payload]
        methods = [
            item["method"]
            for item in items
            if isinstance(item, dict) and isinstance(item.get("method"), str)
        ]
        shape: str | list[str] | None = methods if isinstance(payload, list) else None
        if isinstance(payload, dict) and methods:
            shape = methods[0]
        calls = [
            (item["method"], json.dumps(item.get("params"), sort_keys=True))
            for item in items
            if isinstance(item, dict) and isinstance(item.get("method"), str)
        ]
        with self._counts_lock:
            self._request_count += 1
            self._methods.extend(methods)
            self._calls.extend(calls)
            self._requests.append(shape)
        return methods

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        body = await request.read()
        payload = _parse_json(body)
        methods = self._record(payload)
        settings = self._settings
        if settings.methods is not None and settings.methods.isdisjoint(methods):
            return await self._forward(request, body)
        match settings.fault:
            case Fault.HEALTHY:
                return await self._forward(request, body)
            case Fault.LATENCY:
                await asyncio.sleep(settings.delay)
                return await self._forward(request, body)
            case Fault.HANG:
                return await self._never_answer(request, keep_connection=True)
            case Fault.REFUSE:
                # Only reachable on a connection accepted just before the switch.
                return await self._never_answer(request, keep_connection=False)
            case Fault.HTTP_5XX:
                return web.Response(status=settings.status, text=UNAVAILABLE_BODY)
            case Fault.HTTP_429:
                errors = _error_replies(payload, TOO_MANY_REQUESTS_CODE, TOO_MANY_REQUESTS_MESSAGE)
                return web.Response(
                    status=429,
                    body=json.dumps(errors).encode(),
                    headers={"Content-Type": _JSON, "Retry-After": str(RETRY_AFTER_SECONDS)},
                )
            case Fault.RPC_ERROR:
                errors = _error_replies(payload, settings.error_code, settings.error_message)
                return web.Response(
                    status=200, body=json.dumps(errors).encode(), headers={"Content-Type": _JSON}
                )
            case Fault.GARBAGE:
                return web.Response(status=200, body=GARBAGE_BODY, headers={"Content-Type": _JSON})
            case Fault.LOGS_RANGE_LIMIT:
                return await self._limit_logs(request, body, payload, settings)
            case Fault.NULL_LOOKUPS if isinstance(payload, dict) and payload.get("method") in (
                "eth_getTransactionReceipt",
                "eth_getTransactionByHash",
                "eth_getBlockByHash",
            ):
                answer = {"jsonrpc": "2.0", "id": payload.get("id"), "result": None}
                return web.Response(
                    status=200, body=json.dumps(answer).encode(), headers={"Content-Type": _JSON}
                )
            case Fault.NULL_LOOKUPS:
                return await self._forward(request, body)
            case Fault.FAKE_BLOCK:
                return await self._fake_blocks(request, body, payload, settings)
            case Fault.OMIT_SLOT:
                return await self._omit_slots(request, payload)
            case Fault.GETH_LOG_RANGES:
                blocks = _get_logs_blocks(payload)
                if blocks is not None and blocks.start >= 0:
                    head = quantity(await self._ask("eth_blockNumber", []))
                    if head is not None and blocks.stop - 1 > head:
                        message = "block range extends beyond current head block"
                        errors = _error_replies(payload, -32602, message)
                        return web.Response(
                            status=200,
                            body=json.dumps(errors).encode(),
                            headers={"Content-Type": _JSON},
                        )
                return await self._forward(request, body)
            case _:
                assert settings.fault in TAMPERING, settings.fault
                return await self._tamper(request, body, payload, settings)

    async def _tamper(
        self, request: web.BaseRequest, body: bytes, payload: Any, settings: FaultSettings
    ) -> web.Response:
        """Forwards (STALE_STATE: asking about older blocks), then changes the answers the
        mode is about; a batch's answers are matched to its calls by id."""
        calls = payload if isinstance(payload, list) else [payload]
        methods = {_id_of(c): c.get("method") for c in calls if isinstance(c, dict) and "id" in c}
        stale: set[str] = set()
        if settings.fault is Fault.STALE_STATE:
            older = await self._older_calls(calls, settings.stale_blocks)
            stale = {_id_of(o) for o, c in zip(older, calls, strict=True) if o is not c}
            if stale:
                body = json.dumps(older if isinstance(payload, list) else older[0]).encode()
        response = await self._forward(request, body)
        answer = _parse_json(response.body) if isinstance(response.body, bytes) else None
        if response.status != 200 or answer is None:
            return response
        changed = 0
        for item in answer if isinstance(answer, list) else [answer]:
            if not isinstance(item, dict) or "result" not in item:
                continue
            method = str(methods.get(_id_of(item)))
            new = tampered(settings.fault.value, method, item["result"], settings.field)
            if new is not None:
                item["result"] = new
            if new is not None or _id_of(item) in stale:
                changed += 1
        return self._altered(response, answer, changed)

    async def _fake_blocks(
        self, request: web.BaseRequest, body: bytes, payload: Any, settings: FaultSettings
    ) -> web.Response:
        calls = payload if isinstance(payload, list) else [payload]
        made_up = {
            _id_of(c): self._fakes.get(str(c["params"][0]).lower())
            for c in calls
            if isinstance(c, dict)
            and c.get("method") == "eth_getBlockByHash"
            and isinstance(c.get("params"), list)
            and c["params"]
        }
        if isinstance(payload, dict) and made_up.get(_id_of(payload)) is not None:
            with self._counts_lock:
                self._tampered += 1
            answer = {"jsonrpc": "2.0", "id": payload.get("id"), "result": made_up[_id_of(payload)]}
            return web.Response(status=200, body=json.dumps(answer).encode(), content_type=_JSON)
        numbered = {
            _id_of(c)
            for c in calls
            if isinstance(c, dict)
            and c.get("method") == "eth_getBlockByNumber"
            and isinstance(c.get("params"), list)
            and c["params"]
            and str(c["params"][0]).startswith("0x")
        }
        response = await self._forward(request, body)
        answer = _parse_json(response.body) if isinstance(response.body, bytes) else None
        if response.status != 200 or answer is None or not numbered:
            return response
        changed = 0
        for item in answer if isinstance(answer, list) else [answer]:
            if isinstance(item, dict) and _id_of(item) in numbered:
                fake = fake_block(item.get("result"), settings.field)
                if fake is not None:
                    item["result"] = fake
                    self._fakes[fake["hash"].lower()] = fake
                    changed += 1
        return self._altered(response, answer, changed)

    async def _omit_slots(self, request: web.BaseRequest, payload: Any) -> web.Response:
        calls = payload if isinstance(payload, list) else [payload]
        methods = {_id_of(c): c.get("method") for c in calls if isinstance(c, dict) and "id" in c}
        changed = 0
        sent = []
        for call in calls:
            params = call.get("params") if isinstance(call, dict) else None
            if call.get("method") == "eth_call" and isinstance(params, list) and len(params) == 2:
                listed = await self._ask("eth_createAccessList", params)
                zeroed = {
                    address: {"stateDiff": {key: "0x" + "00" * 32}}
                    for address, key in omitted_slots(listed).items()
                }
                if zeroed:
                    call = {**call, "params": [*params, zeroed]}
                    changed += 1
            sent.append(call)
        body = json.dumps(sent if isinstance(payload, list) else sent[0]).encode()
        response = await self._forward(request, body)
        answer = _parse_json(response.body) if isinstance(response.body, bytes) else None
        if response.status != 200 or answer is None:
            return response
        for item in answer if isinstance(answer, list) else [answer]:
            method = methods.get(_id_of(item)) if isinstance(item, dict) else None
            if method == "eth_createAccessList" and isinstance(item.get("result"), dict):
                item["result"] = without_omitted_slots(item["result"])
                changed += 1
        return self._altered(response, answer, changed)

    def _altered(self, response: web.Response, answer: Any, changed: int) -> web.Response:
        """The answer as altered (`changed` results counted), or the node's as it was."""
        if not changed:
            return response
        with self._counts_lock:
            self._tampered += changed
        return web.Response(status=200, body=json.dumps(answer).encode(), content_type=_JSON)

    def fake_of(self, number: int) -> dict[str, Any] | None:
        """The fake this proxy served for block `number` (FAKE_BLOCK), if any."""
        return next((b for b in self._fakes.values() if b.get("number") == hex(number)), None)

    async def _older_calls(self, calls: list[Any], blocks: int) -> list[Any]:
        """The calls, each state call about `blocks` blocks before the one it names (never
        below 0); a call left as it was is the same object."""
        numbers: dict[str, int | None] = {}  # a batch's calls naming one block: one lookup
        older = []
        for call in calls:
            found = state_block(call)
            if found is None:
                older.append(call)
                continue
            position, block = found
            key = json.dumps(block, sort_keys=True)
            if key not in numbers:
                numbers[key] = await self._block_number(block)
            number = numbers[key]
            if number is None or number == 0:
                older.append(call)
            else:
                older.append(at_block(call, position, max(0, number - blocks)))
        return older

    async def _block_number(self, block: Any) -> int | None:
        """The number of the block a block parameter names; None if the node does not say."""
        if isinstance(block, dict):
            if "blockHash" not in block:
                return quantity(block.get("blockNumber"))
            found = await self._ask("eth_getBlockByHash", [block["blockHash"], False])
        elif isinstance(block, str) and not block.startswith("0x"):
            # A tag, asked as such: "safe" and "finalized" are not the head (on anvil, 32
            # and 64 blocks behind it), "pending" is one past it.
            found = await self._ask("eth_getBlockByNumber", [block, False])
        else:
            return quantity(block)
        return quantity(found.get("number")) if isinstance(found, dict) else None

    async def _ask(self, method: str, params: list[Any]) -> Any:
        """A call of the proxy's own to the node (not recorded); None if it fails."""
        assert self._session is not None
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        try:
            async with self._session.post(self.upstream_url, json=body) as upstream:
                answer = _parse_json(await upstream.read())
        except (aiohttp.ClientError, TimeoutError):
            return None
        return answer.get("result") if isinstance(answer, dict) else None

    async def _limit_logs(
        self, request: web.BaseRequest, body: bytes, payload: Any, settings: FaultSettings
    ) -> web.Response:
        blocks = _get_logs_blocks(payload)
        if blocks is not None and len(blocks) > settings.max_blocks:
            first = hex(blocks.start)
            last = hex(blocks.start + settings.max_blocks - 1)
            message = settings.error_message.replace("{from_block}", first)
            errors = _error_replies(
                payload, settings.error_code, message.replace("{to_block}", last)
            )
            return web.Response(
                status=200, body=json.dumps(errors).encode(), headers={"Content-Type": _JSON}
            )
        failing = settings.failing_block
        if blocks is not None and failing is not None and failing in blocks:
            return web.Response(status=settings.status, text=UNAVAILABLE_BODY)
        return await self._forward(request, body)

    async def _never_answer(
        self, request: web.BaseRequest, *, keep_connection: bool
    ) -> web.StreamResponse:
        # Ends only by cancellation: the connection is dropped (by a release, a stop or the
        # client) and handler_cancellation cancels this handler.
        protocol = request.protocol
        if keep_connection:
            self._hung_connections.add(protocol)
        else:
            protocol.force_close()
        try:
            await asyncio.get_running_loop().create_future()
        finally:
            self._hung_connections.discard(protocol)
        raise AssertionError("unreachable")

    async def _forward(self, request: web.BaseRequest, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {"Content-Type": request.headers.get("Content-Type", _JSON)}
        try:
            async with self._session.request(
                request.method, self.upstream_url, data=body, headers=headers
            ) as upstream:
                reply = await upstream.read()
                content_type = upstream.headers.get("Content-Type", _JSON)
                return web.Response(
                    status=upstream.status, body=reply, headers={"Content-Type": content_type}
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            return web.Response(status=502, text=f"fault proxy: upstream failed: {error!r}")


def _id_of(item: dict[str, Any]) -> str:
    """A call's or an answer's id as a key (JSON-RPC allows strings, numbers and null)."""
    return json.dumps(item.get("id"))


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _require_option_fits(value: object, name: str, fault: Fault, *owners: Fault) -> None:
    if value is not None and fault not in owners:
        names = " or ".join(owner.name for owner in owners)
        raise ValueError(f"{name} only applies to {names}, not {fault.name}")


def _get_logs_blocks(payload: Any) -> range | None:
    """The blocks one eth_getLogs request covers (a `blockHash` filter: one block, of no
    known number); None for anything else, or a bound that is not a number."""
    if not isinstance(payload, dict) or payload.get("method") != "eth_getLogs":
        return None
    params = payload.get("params")
    criteria = params[0] if isinstance(params, list) and params else None
    if not isinstance(criteria, dict):
        return None
    if "blockHash" in criteria:
        return range(-1, 0)
    try:
        first, last = (int(criteria[bound], 16) for bound in ("fromBlock", "toBlock"))
    except (KeyError, TypeError, ValueError):
        return None
    return range(first, last + 1)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _error_replies(payload: Any, code: int, message: str) -> Any:
    """JSON-RPC error replies mirroring the request: an array for a batch, else one object."""

    def error_for(item: Any) -> dict[str, Any]:
        request_id = item.get("id") if isinstance(item, dict) else None
        return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}

    if isinstance(payload, list) and payload:
        return [error_for(item) for item in payload]
    return error_for(payload)
