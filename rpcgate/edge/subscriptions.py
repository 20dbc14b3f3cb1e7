"""One connection's subscriptions, with no transport: `eth_subscribe` and `eth_unsubscribe`
answered, and each notification handed to `send` as the bytes of its JSON-RPC message.
The WebSocket connection (`websocket.py`) and the embedded web3.py provider
(`rpcgate.web3`) each hold one.

Subscriptions are fed by the chain's `HeadFeed` (new heads, and logs from the consensus,
with `removed: true` on a reorg) and `PendingFeed`. Both methods pass the chain's method
policy, with the error a denied call gets over HTTP.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rpcgate.chain.feeds import HeadFeed, Subscriber, parse_log_filter
from rpcgate.edge.answers import answer_item
from rpcgate.ops.call_metrics import CallRecorder
from rpcgate.rpc.context import CLIENT_BATCH, CallContext, ClientBatch
from rpcgate.rpc.jsonrpc import (
    INVALID_PARAMS,
    LIMIT_EXCEEDED,
    Call,
    Invalid,
    Request,
    dumps,
    encode_response,
    response_object,
    rpc_error,
)

if TYPE_CHECKING:
    from rpcgate.chain.runtime import ChainRuntime

SUBSCRIPTION_METHODS = frozenset({"eth_subscribe", "eth_unsubscribe"})


class Subscriptions:
    def __init__(
        self, chain: ChainRuntime, send: Callable[[bytes], None], max_subscriptions: int
    ) -> None:
        self.chain = chain
        self.send = send
        self.max_subscriptions = max_subscriptions
        self.held: dict[str, tuple[Subscriber, Callable[[], None]]] = {}

    def __len__(self) -> int:
        return len(self.held)

    def answer(self, call: Call) -> dict[str, Any] | None:
        """The response object to an `eth_subscribe` or `eth_unsubscribe` (None for a
        notification)."""
        error: dict[str, Any] | None
        denial = self.chain.policy.check(call.method)
        if denial is not None:  # as over HTTP (execute): the chain does not serve it
            self.chain.denied[denial.pattern] += 1
            result, error = None, denial.error()
        else:
            result, error = self._call(call)
        if call.is_notification:
            return None
        return response_object(call.id, result=result, error=error)

    def notify(self, subscription: str) -> Callable[[Any], None]:
        prefix = b'{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"'
        head = prefix + subscription.encode() + b'","result":'

        def deliver(result: Any) -> None:
            self.send(head + dumps(result) + b"}}")

        return deliver

    def release(self) -> None:
        """Every subscription ended (the connection closes)."""
        for _, unsubscribe in self.held.values():
            unsubscribe()
        self.held.clear()

    def _call(self, call: Call) -> tuple[Any, dict[str, Any] | None]:
        params = call.params if isinstance(call.params, list) else []
        if call.method == "eth_unsubscribe":
            if len(params) != 1 or not isinstance(params[0], str):
                return None, rpc_error(INVALID_PARAMS, "eth_unsubscribe takes one subscription id")
            held = self.held.pop(params[0], None)
            if held is not None:
                held[1]()
            return held is not None, None
        if not params or not isinstance(params[0], str):
            return None, rpc_error(
                INVALID_PARAMS, "eth_subscribe takes a kind: newHeads, logs, newPendingTransactions"
            )
        self.chain.wake()  # an on-demand chain is tracked while it has subscribers
        if len(self.held) >= self.max_subscriptions:
            return None, rpc_error(
                LIMIT_EXCEEDED,
                f"too many subscriptions on this connection: {self.max_subscriptions} "
                "(websocket.max_subscriptions)",
            )
        kind = params[0]
        subscription = "0x" + secrets.token_hex(16)
        deliver = self.notify(subscription)
        if kind == "newHeads":
            if len(params) > 1:
                return None, rpc_error(INVALID_PARAMS, "newHeads takes no filter")
            return self._follow(subscription, self.chain.head_feed(), Subscriber(deliver, kind))
        if kind == "logs":
            wanted = parse_log_filter(params[1] if len(params) > 1 else None)
            if isinstance(wanted, str):
                return None, rpc_error(INVALID_PARAMS, f"invalid logs filter: {wanted}")
            return self._follow(
                subscription, self.chain.head_feed(), Subscriber(deliver, kind, wanted)
            )
        if kind == "newPendingTransactions":
            pending = self.chain.pending_feed
            if pending is None or not pending.available:
                return None, rpc_error(
                    -32000,
                    "newPendingTransactions needs an upstream whose WebSocket offers it "
                    f"(upstreams[].ws_url); none does on chain {self.chain.config.name!r}",
                )
            unsubscribe = pending.subscribe(deliver)
            self.held[subscription] = (Subscriber(deliver, kind), unsubscribe)
            return subscription, None
        return None, rpc_error(
            INVALID_PARAMS,
            f"unknown subscription kind {kind!r}: newHeads, logs or newPendingTransactions",
        )

    def _follow(
        self, subscription: str, feed: HeadFeed, subscriber: Subscriber
    ) -> tuple[Any, dict[str, Any] | None]:
        feed.subscribe(subscriber)
        self.held[subscription] = (subscriber, lambda: feed.unsubscribe(subscriber))
        return subscription, None


async def answer_on_connection(
    chain: ChainRuntime,
    parsed: Request,
    subscriptions: Subscriptions,
    budget_s: float,
    metrics: CallRecorder,
) -> bytes | None:
    """A message of a connection answered: subscription methods by the connection's own
    `subscriptions`, every other call by the HTTP path (`answers`), a batch's items as
    upstream batches. None: nothing to send (notifications only)."""
    context = CallContext.arriving(budget_s)

    async def one(item: Call | Invalid) -> dict[str, Any] | None:
        if isinstance(item, Call) and item.method in SUBSCRIPTION_METHODS:
            return subscriptions.answer(item)
        return (await answer_item(chain, item, context, metrics)).body

    in_batch = CLIENT_BATCH.set(ClientBatch() if parsed.is_batch else None)
    try:
        bodies = await asyncio.gather(*(one(item) for item in parsed.items))
    finally:
        CLIENT_BATCH.reset(in_batch)
    return encode_response([b for b in bodies if b is not None], parsed.is_batch)
