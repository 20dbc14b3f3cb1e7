"""Quorum, opt-in per method: ask several upstreams in different failure domains and decide
from what they said. Pure decisions; `execute` makes the attempts (through `attempt`, as
every upstream call).

What an upstream said is a result, or a verdict about the call itself (an execution revert,
bad params, a txpool refusal: the error classes that are not retried elsewhere, which every
honest node gives alike), kept as its error object. A failure that says nothing about the
call (a timeout, a 5xx, a rate limit, ...) is not an answer.

- `max`: the highest result wins (`eth_getTransactionCount` with `pending`: each node knows
  the transactions its own pool has seen, so the highest nonce is the one that is safe to
  build on). A verdict counts only when no upstream gave a result: then it is returned as
  the node gave it.
- `agree`: what they said must be the same (`eth_call`, `eth_getBalance`, ...): one provider
  with a bug, a stale replica behind its load balancer or a tampered node cannot hand out a
  wrong answer alone. The same result, or the same verdict (its class and `data`: a revert's
  payload; codes and messages are vendor dialect, geth's code 3 is another node's -32000),
  which comes back as the node gave it, code, message and data. A result beside a revert is
  a dispute like any other: `on_dispute` says what the caller gets, an error naming who said
  what, or what a strict majority said.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from rpcgate.rpc.errors import RETRY_ELSEWHERE, ErrorClass
from rpcgate.rpc.jsonrpc import quantity, rpc_error

UPSTREAMS_DISAGREE = -32054  # rpcgate's own code: a quorum call whose upstreams disagree
TOO_FEW_ANSWERS = -32055  # fewer upstreams answered than the quorum needs

# Verdicts about the call itself: what every honest node would answer too.
VERDICTS = frozenset(c for c in ErrorClass if c not in RETRY_ELSEWHERE)


@dataclass(frozen=True, slots=True)
class Said:
    """What one upstream said: a result, or a verdict about the call (`error`, verbatim)."""

    upstream: str
    result: Any = None
    error: dict[str, Any] | None = None
    error_class: ErrorClass | None = None  # the verdict's class; None for a result

    def key(self) -> bytes:
        """What two answers must share to agree."""
        if self.error is None:
            return b"r" + orjson.dumps(self.result, option=orjson.OPT_SORT_KEYS)
        data = orjson.dumps(self.error.get("data"), option=orjson.OPT_SORT_KEYS)
        return b"e" + str(self.error_class).encode() + b" " + data

    def shown(self) -> dict[str, Any]:
        if self.error is None:
            return {"upstream": self.upstream, "result": self.result}
        return {"upstream": self.upstream, "error": self.error}


def hear(
    attempts: Iterable[tuple[str, Any, ErrorClass | None, dict[str, Any] | None]],
) -> tuple[list[Said], list[tuple[str, ErrorClass]]]:
    """What the attempts (upstream, result, error class or None, error object) said as the
    quorum counts it, results and verdicts; and those that failed, with how."""
    said: list[Said] = []
    failed: list[tuple[str, ErrorClass]] = []
    for upstream, result, error_class, error in attempts:
        if error_class is None:
            said.append(Said(upstream, result))
        elif error_class in VERDICTS and error is not None:
            said.append(Said(upstream, error=error, error_class=error_class))
        else:
            failed.append((upstream, error_class))
    return said, failed


def decide_max(said: Sequence[Said]) -> tuple[Any, dict[str, Any] | None]:
    """(the highest quantity among the results, None); non-quantities are ignored, and
    with results but no quantity the result is None. With no result at all, (None, the
    first verdict)."""
    results = [s.result for s in said if s.error is None]
    if not results:
        verdict = next((s.error for s in said if s.error is not None), None)
        return None, verdict
    numbers = [(quantity(result), result) for result in results]
    valid = [(n, r) for n, r in numbers if n is not None]
    return (max(valid, key=lambda pair: pair[0])[1] if valid else None), None


def decide_agree(
    said: Sequence[Said],
    needed: int,
    on_dispute: str,
    failed: Sequence[tuple[str, ErrorClass]] = (),
) -> tuple[Any, dict[str, Any] | None]:
    """(result, None) when `needed` upstreams said the same result (or a strict majority
    did and `on_dispute` is "majority"); (None, the verdict) when they gave the same
    verdict; (None, rpcgate's error) otherwise. `failed`: the upstreams whose attempt did
    not answer, and how it failed (shown with too few answers)."""
    if len(said) < needed:
        return None, rpc_error(
            TOO_FEW_ANSWERS,
            f"quorum: {len(said)} of the {needed} upstreams needed answered",
            {
                "answers": [s.shown() for s in said],
                "failed": [{"upstream": name, "class": str(c)} for name, c in failed],
            },
        )
    tally = Counter(s.key() for s in said)
    key, count = tally.most_common(1)[0]
    if count == len(said) or (on_dispute == "majority" and count * 2 > len(said)):
        first = next(s for s in said if s.key() == key)
        return (first.result, None) if first.error is None else (None, first.error)
    return None, rpc_error(
        UPSTREAMS_DISAGREE,
        f"quorum: the upstreams disagree ({len(tally)} different answers from {len(said)})",
        {"answers": [s.shown() for s in said]},
    )
