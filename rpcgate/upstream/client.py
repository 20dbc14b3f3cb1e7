"""The HTTP client of one upstream: a thin I/O shell that turns an exchange into plain data.

Keep-alive connections per upstream (`upstream_http`). Every answer becomes either a result
or an `UpstreamFailure` for the classifier; nothing here decides what a failure means.

The calls made for the items of one client batch (while `CLIENT_BATCH` is set) travel
together: those queued in one turn of the event loop go out as upstream batches of at most
`max_batch` calls, one HTTP request each, and every call still gets its own `Reply`, so
failover, hedging and health see each item as they see a single call.
"""

from __future__ import annotations

import asyncio
import contextvars
import email.utils
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rpcgate.config.settings import DEFAULT_MAX_BATCH, UpstreamConfig
from rpcgate.consensus.health import UpstreamHealth
from rpcgate.rpc.context import CLIENT_BATCH
from rpcgate.rpc.errors import UpstreamFailure
from rpcgate.rpc.jsonrpc import dumps, loads
from rpcgate.rpc.masking import MASKER, mask_url
from rpcgate.upstream.http_client import (
    ConnectFailure,
    ProtocolError,
    TooLarge,
    UpstreamHttp,
)

USER_AGENT = "rpcgate/0.1"
_BODY_PREFIX = 200  # bytes of a non-JSON body kept for classification and logs


@dataclass(slots=True)  # not frozen: built per call, and a frozen __init__ costs
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
    try:
        parsed = loads(body) if body else None
    except ValueError:
        return _unusable(status, body, retry_after, "bad_json")
    if isinstance(parsed, list):  # one call was sent: a batch of one is tolerated
        if len(parsed) != 1:
            problem = f"a batch of {len(parsed)} answers to one call"
            return _unusable(status, body, retry_after, "bad_response", problem)
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        return _unusable(status, body, retry_after, "bad_response", "not a JSON-RPC answer")
    return _answer_reply(status, body, retry_after, parsed, request_id)


def interpret_batch(
    status: int, body: bytes, headers: dict[str, str], request_ids: Sequence[int]
) -> list[Reply]:
    """Turns the HTTP exchange of one upstream batch into a Reply per call, in the order of
    `request_ids`. Pure, like `interpret`, whose rules each answer meets.

    Answers are matched by id, in any order. A call whose answer is missing, or given twice,
    is this upstream's failure for that call alone (`bad_response`): only it is tried
    elsewhere. An exchange that fails as a whole (an error status without answers, a body
    that is not JSON or not a list of answers) fails every call in it alike.
    """
    retry_after = parse_retry_after(headers.get("retry-after"))
    calls = len(request_ids)
    try:
        parsed = loads(body) if body else None
    except ValueError:
        return [_unusable(status, body, retry_after, "bad_json")] * calls
    if not isinstance(parsed, list):
        shown = {type(None): "nothing", dict: "one object"}.get(
            type(parsed), f"a {type(parsed).__name__}"
        )
        problem = f"{shown} for a batch of {calls} calls" + _error_words(parsed)
        return [_unusable(status, body, retry_after, "bad_response", problem)] * calls
    if status < 300 and len(parsed) == calls:
        in_order = _plain_in_order(parsed, request_ids)
        if in_order is not None:
            return in_order
    return _matched_by_id(status, body, retry_after, parsed, request_ids)


def _matched_by_id(
    status: int,
    body: bytes,
    retry_after: float | None,
    parsed: list[Any],
    request_ids: Sequence[int],
) -> list[Reply]:
    """Each call's Reply from the batch answer whose id is its own (`interpret_batch`)."""
    by_id: dict[int, dict[str, Any]] = {}
    twice: set[int] = set()
    for answer in parsed:
        answer_id = answer.get("id") if isinstance(answer, dict) else None
        if type(answer_id) is int:  # by type too: `true` is not 1
            if answer_id in by_id:
                twice.add(answer_id)
            by_id[answer_id] = answer
    replies = []
    plain = status < 300
    for request_id in request_ids:
        answer = by_id.get(request_id)
        if (
            plain
            and answer is not None
            and "result" in answer
            and "error" not in answer
            and request_id not in twice
        ):  # the common answer: `answer_problem` finds nothing wrong with it
            replies.append(Reply(answer["result"]))
            continue
        if request_id in twice:
            problem = f"id {request_id} answered twice in a batch"
        elif answer is None:
            problem = f"no answer to id {request_id} among {len(parsed)} batch answers"
        else:
            replies.append(_answer_reply(status, body, retry_after, answer, request_id))
            continue
        replies.append(_unusable(status, body, retry_after, "bad_response", problem))
    return replies


def _plain_in_order(parsed: list[Any], request_ids: Sequence[int]) -> list[Reply] | None:
    """The common batch answer, read in one pass: a result for each call, in the order
    asked, with its id (distinct ids, each in its place: none missing, none twice). None
    when it is anything else, and the full reading matches answers by id."""
    replies = []
    for answer, request_id in zip(parsed, request_ids, strict=True):
        if (
            type(answer) is not dict
            or "error" in answer
            or "result" not in answer
            or type(answer.get("id")) is not int
            or answer["id"] != request_id
        ):
            return None
        replies.append(Reply(answer["result"]))
    return replies


def _error_words(parsed: Any) -> str:
    """An error object's code and message, for the log of a batch answered by one."""
    error = parsed.get("error") if isinstance(parsed, dict) else None
    if not isinstance(error, dict):
        return ""
    return f": {str(error.get('code'))[:12]} {str(error.get('message'))[:80]}"


def _unusable(
    status: int,
    body: bytes,
    retry_after: float | None,
    transport: str,
    problem: str | None = None,
) -> Reply:
    # A non-2xx status explains itself (with the body's text, which the classifier reads:
    # "error code: 1015"); on a 2xx, the body is the problem.
    text = body[:_BODY_PREFIX].decode("utf-8", "replace")
    return Reply(
        failure=UpstreamFailure(
            transport=None if status >= 300 else transport,
            http_status=status,
            retry_after_s=retry_after,
            body_text=text if status >= 300 or problem is None else problem,
        )
    )


def _answer_reply(
    status: int, body: bytes, retry_after: float | None, answer: dict[str, Any], request_id: int
) -> Reply:
    """The Reply one JSON-RPC answer object gives to call `request_id`."""
    problem = answer_problem(answer, request_id)
    if problem is not None:
        return _unusable(status, body, retry_after, "bad_response", problem)
    error = answer.get("error")
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
        return _unusable(
            status, body, retry_after, "bad_response", "a result behind an error status"
        )
    return Reply(result=answer["result"])


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
        self.max_batch = DEFAULT_MAX_BATCH if config.max_batch is None else config.max_batch
        self._max_response_bytes = max_response_bytes
        self._limit = asyncio.Semaphore(max_concurrent)  # one slot per HTTP request
        self._ids = itertools.count(1)
        self._http: UpstreamHttp | None = None  # made at start()
        self._queue: list[_Queued] = []  # calls of client batches, until the loop turn ends
        self._sending: set[asyncio.Task[None]] = set()
        MASKER.add_url(config.url)
        MASKER.add(*config.headers.values())

    async def start(self) -> None:
        if self._http is None:
            self._http = UpstreamHttp(
                self.config.url,
                self.config.headers,
                USER_AGENT,
                self._max_response_bytes,
                proxy=self.config.proxy,
            )

    async def close(self) -> None:
        sending = list(self._sending)
        for task in sending:
            task.cancel()
        await asyncio.gather(*sending, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def call(self, method: str, params: Any, timeout_s: float) -> Reply:
        """One attempt. Never raises for upstream trouble: a failure comes back as data.

        Within a client batch, the call waits for the end of the loop turn and travels in
        an upstream batch with the others queued meanwhile; `timeout_s` counts the same.
        """
        started = time.monotonic()
        if self.max_batch > 1 and CLIENT_BATCH.get() is not None:
            reply = await self._batched(method, params, timeout_s)
        else:
            request_id = next(self._ids)
            exchange = await self._post(dumps(_request(request_id, method, params)), timeout_s)
            reply = _replies(exchange, [request_id])[0]
        return Reply(reply.result, reply.failure, reply.error, time.monotonic() - started)

    async def call_many(self, calls: list[tuple[str, Any]], timeout_s: float) -> list[Reply]:
        """Several calls in upstream batches of `max_batch` at most, sent at once: a Reply
        each, in order (the request's time as each one's latency)."""
        started = time.monotonic()
        ids = [next(self._ids) for _ in calls]
        count = -(-len(calls) // max(1, self.max_batch))  # groups of even sizes, as _flush
        groups = [
            list(range(index * len(calls) // count, (index + 1) * len(calls) // count))
            for index in range(count)
        ]

        async def one_group(group: list[int]) -> list[Reply]:
            if len(group) == 1:
                (index,) = group
                data = dumps(_request(ids[index], *calls[index]))
            else:
                data = dumps([_request(ids[i], *calls[i]) for i in group])
            exchange = await self._post(data, timeout_s)
            if len(group) > 1 and isinstance(exchange, tuple) and exchange[1] is None:
                return [  # over max_response_bytes as a whole: one by one
                    _replies(
                        await self._post(dumps(_request(ids[i], *calls[i])), timeout_s), [ids[i]]
                    )[0]
                    for i in group
                ]
            return _replies(exchange, [ids[i] for i in group])

        if len(groups) == 1:
            answered = [await one_group(groups[0])]
        else:
            answered = await asyncio.gather(*(one_group(group) for group in groups))
        latency = time.monotonic() - started
        every = [reply for replies in answered for reply in replies]
        for reply in every:  # each made just now by `_replies`, for these calls only
            reply.latency_s = latency
        return every

    async def _batched(self, method: str, params: Any, timeout_s: float) -> Reply:
        loop = asyncio.get_running_loop()
        reply: asyncio.Future[Reply] = loop.create_future()
        self._queue.append(_Queued(next(self._ids), method, params, timeout_s, reply))
        if len(self._queue) == 1:
            # In a context of its own: the request is every queued call's, not the first's.
            loop.call_soon(self._flush, context=contextvars.Context())
        # The deadline answers the call itself (one timer, no timeout scope per call); the
        # others' request goes on.
        expiry = loop.call_later(timeout_s, _expire, reply)
        try:
            return await reply
        finally:
            expiry.cancel()

    def _flush(self) -> None:
        """Sends the calls queued in this loop turn: as few groups as `max_batch` allows,
        of even sizes (50 calls by 7 are 6 and 7, not a straggler of 1)."""
        waiting = [queued for queued in self._queue if not queued.reply.done()]
        self._queue.clear()
        groups = -(-len(waiting) // self.max_batch)
        for index in range(groups):
            group = waiting[index * len(waiting) // groups : (index + 1) * len(waiting) // groups]
            task = asyncio.create_task(self._send(group))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
            _cancel_when_abandoned(task, group)

    async def _send(self, group: list[_Queued]) -> None:
        """One HTTP request for the group (a plain call for a group of one), and each call's
        Reply from its own answer."""
        timeout_s = max(queued.timeout_s for queued in group)
        request_ids = [queued.request_id for queued in group]
        try:
            if len(group) == 1:
                exchange = await self._post(dumps(group[0].request()), timeout_s)
            else:
                exchange = await self._post(dumps([q.request() for q in group]), timeout_s)
            if len(group) > 1 and isinstance(exchange, tuple) and exchange[1] is None:
                # The whole batch is over max_response_bytes, a bound on each answer: the
                # calls are asked one by one instead.
                replies = await asyncio.gather(*(self._alone(q, timeout_s) for q in group))
            else:
                replies = _replies(exchange, request_ids)
            for queued, reply in zip(group, replies, strict=True):
                if not queued.reply.done():
                    queued.reply.set_result(reply)
        finally:  # cancelled by close(): the calls still waiting fail, as if cut off
            for queued in group:
                if not queued.reply.done():
                    closed = UpstreamFailure(transport="reset", body_text="upstream closed")
                    queued.reply.set_result(Reply(failure=closed))

    async def _alone(self, queued: _Queued, timeout_s: float) -> Reply:
        exchange = await self._post(dumps(queued.request()), timeout_s)
        return _replies(exchange, [queued.request_id])[0]

    async def _post(self, data: bytes, timeout_s: float) -> _Exchange | UpstreamFailure:
        """One HTTP POST within `timeout_s`: its status, body (None: over max_response_bytes)
        and Retry-After; or what kept it from being an HTTP exchange."""
        if self._http is None:
            await self.start()
        assert self._http is not None
        try:
            async with self._limit, asyncio.timeout(timeout_s):
                response = await self._http.post(data)
        except TimeoutError:
            return UpstreamFailure(transport="timeout")
        except TooLarge:
            return 200, None, {}
        except ConnectFailure as exc:
            return UpstreamFailure(
                transport=MASKER.mask(exc.reason), body_text=MASKER.mask(str(exc))
            )
        except (ProtocolError, OSError) as exc:
            return UpstreamFailure(
                transport="reset", body_text=MASKER.mask(f"{type(exc).__name__}: {exc}")
            )
        return response.status, response.body, response.headers


# An HTTP exchange as plain data: status, body (None: over max_response_bytes), headers.
_Exchange = tuple[int, bytes | None, dict[str, str]]
_TOO_LARGE = UpstreamFailure(http_status=413, body_text="response too large")


def _request(request_id: int, method: str, params: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        payload["params"] = params
    return payload


def _replies(exchange: _Exchange | UpstreamFailure, request_ids: list[int]) -> list[Reply]:
    """Each call's Reply from the exchange that carried it (alone, or in a batch), made
    for this exchange only (`call_many` stamps each with the request's time)."""
    if isinstance(exchange, UpstreamFailure):
        return [Reply(failure=exchange)] * len(request_ids)
    status, body, headers = exchange
    if body is None:
        return [Reply(failure=_TOO_LARGE)] * len(request_ids)
    if len(request_ids) == 1:
        return [interpret(status, body, headers, request_ids[0])]
    return interpret_batch(status, body, headers, request_ids)


@dataclass(slots=True)
class _Queued:
    """A call of a client batch, waiting for its upstream batch."""

    request_id: int
    method: str
    params: Any
    timeout_s: float
    reply: asyncio.Future[Reply]

    def request(self) -> dict[str, Any]:
        return _request(self.request_id, self.method, self.params)


_TIMED_OUT = Reply(failure=UpstreamFailure(transport="timeout"))


def _expire(reply: asyncio.Future[Reply]) -> None:
    if not reply.done():
        reply.set_result(_TIMED_OUT)


def _cancel_when_abandoned(task: asyncio.Task[None], group: list[_Queued]) -> None:
    """Ends the request once no call in it waits any more (its callers went away: a hedge's
    loser), as a single call's request ends with its caller. Calls that time out need no
    such care: the request's own deadline is the longest of theirs."""
    waiting = len(group)

    def one_less(reply: asyncio.Future[Reply]) -> None:
        nonlocal waiting
        if reply.cancelled():
            waiting -= 1
            if waiting == 0:
                task.cancel()

    for queued in group:
        queued.reply.add_done_callback(one_less)
