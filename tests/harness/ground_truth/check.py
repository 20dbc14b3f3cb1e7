"""The check: each step, a set of calls through the gateway, every answer compared with
the truth node at the block the gateway says it served (`X-Rpcgate-Block`, which must name
that block); `eth_blockNumber` and `latest` must never go backwards.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import requests

from rpcgate.rpc.methods import method_info
from tests.harness.contract import LOG_TOPIC
from tests.harness.ground_truth.world import ADDRESSES, CONTRACT, FORK_ADDRESS, World

if TYPE_CHECKING:
    from tests.conftest import RunningGateway

HEADER_BLOCK = "X-Rpcgate-Block"


@dataclass(frozen=True)
class WrongAnswer:
    step: int
    method: str
    params: Any
    fresh: bool
    served: str  # the block the answer was judged at
    gateway: Any
    truth: Any
    why: str

    def __str__(self) -> str:
        cache = "no-cache" if self.fresh else "cache allowed"
        return (
            f"step {self.step}: {self.method}{_short(self.params)} [{cache}] "
            f"served={self.served}: {self.why}\n"
            f"      gateway: {_short(_brief(self.gateway, self.truth))}\n"
            f"      truth:   {_short(_brief(self.truth, self.gateway))}"
        )


# What identifies a block, a receipt or a log: shown even where both sides agree.
_IDENTITY = ("number", "hash", "blockNumber", "blockHash", "transactionHash", "logIndex")


def _brief(value: Any, other: Any = None) -> Any:
    """Blocks, receipts and logs cut down to what identifies them and what differs."""
    if isinstance(value, dict):
        keys = [k for k in _IDENTITY if k in value]
        if isinstance(other, dict):
            keys += [k for k in value if k not in keys and value[k] != other.get(k)]
        return {k: _brief(value[k]) for k in keys} if keys else value
    if isinstance(value, list | tuple):
        others = other if isinstance(other, list | tuple) else []
        return type(value)(
            _brief(v, others[i] if i < len(others) else None) for i, v in enumerate(value)
        )
    return value


def _short(value: Any, limit: int = 600) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class Reply:
    """One answer, and the block its X-Rpcgate-Block (item) names: None when absent or
    `-` (about no block)."""

    result: Any = None
    error: Any = None
    header: str | None = None

    @property
    def served(self) -> int | None:
        try:
            return int(self.header) if self.header is not None else None
        except ValueError:
            return None  # "-" or unreadable: named no block


def _reply(answer: Any, header: str | None) -> Reply:
    if not isinstance(answer, dict):
        return Reply(error={"not a JSON-RPC answer": answer}, header=header)
    return Reply(answer.get("result"), answer.get("error"), header)


def _block_param(method: str, params: list[Any]) -> Any:
    """The block a call names (a log filter: its toBlock), where the method table says."""
    position = method_info(method).block_param
    return params[0]["toBlock"] if position is None else params[position]


def _pin(method: str, params: list[Any], number: int) -> list[Any]:
    """The call with its block (a log filter: its toBlock) set to `number`."""
    pinned = list(params)
    position = method_info(method).block_param
    if position is None:
        pinned[0] = {**pinned[0], "toBlock": hex(number)}
    else:
        pinned[position] = hex(number)
    return pinned


Judge = Callable[[str, list[Any], bool, Reply], None]


class Checker:
    """Each step, a set of calls through the gateway (singly, some also in one batch, half
    of them with `Cache-Control: no-cache`), each answer judged against the truth node at
    the block the gateway says it served. Remembers what must never go backwards, and
    every wrong answer."""

    def __init__(self, truth_url: str, seed: int) -> None:
        self.truth_url = truth_url
        self.seed = seed
        self.wrong: list[WrongAnswer] = []
        self.calls = 0
        self.rounds = 0
        self.highest_head = -1  # eth_blockNumber and `latest`, across restarts too
        self._highest_tag: dict[str, int] = {}  # safe and finalized, per gateway
        self._session = requests.Session()
        self._gateway_url = ""
        self._step = 0
        self._in_batch = False
        self._head_before = -1  # the highest head seen before the call being judged
        self._rng = random.Random()

    def close(self) -> None:
        self._session.close()

    def describe(self) -> str:
        return (
            f"{self.rounds} checks, {self.calls} calls through the gateway, {len(self.wrong)} wrong"
        )

    def check(self, gateway: RunningGateway, world: World, step: int) -> None:
        if gateway.url != self._gateway_url:  # a new gateway: its own safe and finalized
            self._gateway_url, self._highest_tag = gateway.url, {}
        self._step, self._rng = step, random.Random(f"{self.seed}:{step}")
        head = self._gateway_head()
        if head is not None:
            probes = self._probes(world, min(head, world.head))
            for method, params, judge in probes:
                fresh = self._rng.random() < 0.5
                self._head_before = self.highest_head
                judge(method, params, fresh, self._call(method, params, fresh))
            self._batch(self._rng.sample(probes, min(6, len(probes))))
        self.rounds += 1

    # -- what is asked --

    def _probes(self, world: World, head: int) -> list[tuple[str, list[Any], Judge]]:
        rng = self._rng
        probes: list[tuple[str, list[Any], Judge]] = [("eth_blockNumber", [], self._judge_head)]
        for tag in ("latest", "safe", "finalized"):
            probes.append(("eth_getBlockByNumber", [tag, False], self._judge_tagged_block))
        # The head and just below, the latest eventful heights, two random older ones.
        eventful = [h for h in world.eventful if h <= head][-6:]
        heights = sorted(
            {head, max(head - 1, 0), max(head - 2, 0), *eventful}
            | {rng.randint(1, head) for _ in range(2)}
        )
        explicit = self._judge_explicit
        for height in heights:
            probes.append(("eth_getBlockByNumber", [hex(height), rng.random() < 0.2], explicit))
            for address in (FORK_ADDRESS, CONTRACT, rng.choice(ADDRESSES)):
                probes.append(("eth_getBalance", [address, hex(height)], explicit))
        for height in rng.sample(heights, min(3, len(heights))):
            block_hash = world.truth.block_hash(height)
            probes.append(("eth_getBlockByHash", [block_hash, False], self._judge_by_hash))
        for address in ADDRESSES:
            probes.append(("eth_getBalance", [address, "latest"], self._judge_latest))
        ranges = [(max(head - 3, 0), head), (1, head)]
        ranges += [(h, h) for h in rng.sample(heights, min(3, len(heights)))]
        for low, high in ranges:
            criteria: dict[str, Any] = {"fromBlock": hex(low), "toBlock": hex(high)}
            if rng.random() < 0.5:
                criteria |= {"address": CONTRACT, "topics": [LOG_TOPIC]}
            probes.append(("eth_getLogs", [criteria], explicit))
        latest_logs = {"fromBlock": hex(max(head - 4, 0)), "toBlock": "latest"}
        probes.append(("eth_getLogs", [latest_logs], self._judge_latest))
        # Receipts: near and above the gateway's head, at eventful heights, a few older;
        # and transactions that only ever were on a fork.
        txs = world.canonical_txs
        near = [tx for tx, h in txs.items() if h >= head - 2]
        at_events = [tx for tx, h in txs.items() if h in eventful][-4:]
        older = rng.sample(list(txs), min(3, len(txs)))
        for tx in dict.fromkeys([*near, *at_events, *older, *world.fork_txs[-4:]]):
            probes.append(("eth_getTransactionReceipt", [tx], self._judge_receipt))
        return probes

    # -- transport --

    def _post(self, url: str, body: Any, fresh: bool = False) -> tuple[Any, str | None]:
        headers = {"Cache-Control": "no-cache"} if fresh else {}
        response = self._session.post(url, json=body, headers=headers)
        return response.json(), response.headers.get(HEADER_BLOCK)

    def _call(self, method: str, params: list[Any], fresh: bool) -> Reply:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        self.calls += 1
        return _reply(*self._post(self._gateway_url, body, fresh))

    def _truth(self, method: str, params: list[Any]) -> Reply:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        return _reply(self._post(self.truth_url, body)[0], None)

    def _batch(self, probes: list[tuple[str, list[Any], Judge]]) -> None:
        """The same calls again in one batch: each item judged with its own header item."""
        fresh = self._rng.random() < 0.5
        body = [
            {"jsonrpc": "2.0", "id": i, "method": method, "params": params}
            for i, (method, params, _) in enumerate(probes)
        ]
        self._head_before = self.highest_head
        answer, header = self._post(self._gateway_url, body, fresh)
        self.calls += len(body)
        answers = {a.get("id"): a for a in answer} if isinstance(answer, list) else {}
        items: list[str | None] = list(header.split(",")) if header is not None else []
        self._in_batch = True
        try:
            if len(items) != len(body):
                why = f"{HEADER_BLOCK} has {len(items)} items for {len(body)} answers"
                self._wrong("batch", [m for m, _, _ in probes], fresh, header, None, None, why)
                items = [None] * len(body)
            for i, (method, params, judge) in enumerate(probes):
                judge(method, params, fresh, _reply(answers.get(i), items[i]))
        finally:
            self._in_batch = False

    def _wrong(
        self, method: str, params: Any, fresh: bool, served: Any, gateway: Any, truth: Any, why: str
    ) -> None:
        label = f"{method} (batch)" if self._in_batch else method
        served_text = "-" if served is None else str(served)
        self.wrong.append(
            WrongAnswer(self._step, label, params, fresh, served_text, gateway, truth, why)
        )

    # -- judges: is this answer the truth's at the block it was served at? --

    def _gateway_head(self) -> int | None:
        reply = self._call("eth_blockNumber", [], False)
        self._judge_head("eth_blockNumber", [], False, reply)
        return int(reply.result, 16) if isinstance(reply.result, str) else None

    def _judge_head(self, method: str, params: list[Any], fresh: bool, reply: Reply) -> None:
        truth_head = int(self._truth("eth_blockNumber", []).result, 16)
        if not isinstance(reply.result, str):
            self._wrong(method, params, fresh, None, reply.error, hex(truth_head), "no head")
            return
        head = int(reply.result, 16)
        self._never_backwards(method, params, fresh, head)
        if head > truth_head:
            self._wrong(method, params, fresh, head, head, truth_head, "above the truth's head")
        self._header_names(method, params, fresh, reply, head)

    def _never_backwards(self, method: str, params: list[Any], fresh: bool, head: int) -> None:
        # A batch's items are judged after it returns, some asking the head meanwhile: each
        # is held to the highest head seen before the batch was sent.
        floor = self._head_before if self._in_batch else self.highest_head
        if head < floor:
            why = f"the head went back from {floor}"
            self._wrong(method, params, fresh, head, head, floor, why)
        self.highest_head = max(self.highest_head, head)

    def _header_names(
        self, method: str, params: list[Any], fresh: bool, reply: Reply, number: int | None
    ) -> bool:
        """The answer's X-Rpcgate-Block names `number` (None: names no block)."""
        if reply.served == number and (number is not None or reply.header in (None, "-")):
            return True
        why = f"{HEADER_BLOCK} is {reply.header!r}, the answer is about {number}"
        self._wrong(method, params, fresh, reply.header, reply.result, number, why)
        return False

    def _judge_against(
        self, method: str, params: list[Any], fresh: bool, reply: Reply, number: int, truth: Reply
    ) -> None:
        if reply.error is None and truth.error is None and reply.result == truth.result:
            return
        if reply.error is not None and truth.error is not None:
            return  # both refuse the call: no answer to be wrong
        why = "an error where the truth answers" if reply.error is not None else "differs"
        answer = reply.result if reply.error is None else reply.error
        self._wrong(method, params, fresh, number, answer, truth.result or truth.error, why)

    def _judge_explicit(self, method: str, params: list[Any], fresh: bool, reply: Reply) -> None:
        """About an explicit block (a log range: its toBlock): the truth's answer to the
        very same call."""
        number = int(_block_param(method, params), 16)
        if reply.error is None:
            self._header_names(method, params, fresh, reply, number)
        self._judge_against(method, params, fresh, reply, number, self._truth(method, params))

    def _judge_latest(self, method: str, params: list[Any], fresh: bool, reply: Reply) -> None:
        """`latest` (a balance, a log range to it): the truth's answer at the number the
        gateway pinned it to."""
        served = reply.served
        if served is None:
            why = "an error" if reply.error is not None else f"no {HEADER_BLOCK} for `latest`"
            self._wrong(method, params, fresh, reply.header, reply.result or reply.error, None, why)
            return
        self._never_backwards(method, params, fresh, served)
        truth = self._truth(method, _pin(method, params, served))
        self._judge_against(method, params, fresh, reply, served, truth)

    def _judge_tagged_block(
        self, method: str, params: list[Any], fresh: bool, reply: Reply
    ) -> None:
        """`latest`/`safe`/`finalized`: the truth's block at the number served; none of
        them goes backwards."""
        tag = params[0]
        if not isinstance(reply.result, dict):
            self._wrong(method, params, fresh, reply.header, reply.error, None, "no block")
            return
        number = int(reply.result["number"], 16)
        self._header_names(method, params, fresh, reply, number)
        truth = self._truth(method, [hex(number), False])
        self._judge_against(method, params, fresh, reply, number, truth)
        if tag == "latest":
            self._never_backwards(method, params, fresh, number)
            return
        highest = self._highest_tag.get(tag, -1)
        if number < highest:
            self._wrong(method, params, fresh, number, number, highest, f"{tag} went back")
        self._highest_tag[tag] = max(highest, number)

    def _judge_by_hash(self, method: str, params: list[Any], fresh: bool, reply: Reply) -> None:
        truth = self._truth(method, params)
        number = int(truth.result["number"], 16)
        if reply.error is None:
            self._header_names(method, params, fresh, reply, number)
        self._judge_against(method, params, fresh, reply, number, truth)

    def _judge_receipt(self, method: str, params: list[Any], fresh: bool, reply: Reply) -> None:
        """The truth's receipt; null only while its block is above the gateway's head
        (as seen before the call), never a receipt from a block above its head (as seen
        after the call)."""
        head_after = self._gateway_head() or 0  # after: a head that moved is no alarm
        truth = self._truth(method, params).result
        receipt = reply.result
        if reply.error is not None:
            self._wrong(method, params, fresh, None, reply.error, truth, "an error")
        elif receipt is None:
            self._header_names(method, params, fresh, reply, None)
            if truth is not None and int(truth["blockNumber"], 16) <= self._head_before:
                why = "null, though its block is at or below the gateway's head"
                self._wrong(method, params, fresh, self._head_before, None, truth, why)
        else:
            number = int(receipt["blockNumber"], 16)
            self._header_names(method, params, fresh, reply, number)
            if number > head_after:
                why = f"from block {number}, above the gateway's head {head_after}"
                self._wrong(method, params, fresh, number, receipt, truth, why)
            elif receipt != truth:
                self._wrong(method, params, fresh, number, receipt, truth, "differs")
