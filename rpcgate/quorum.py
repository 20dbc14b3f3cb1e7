"""Quorum, opt-in per method: ask several upstreams in different failure domains and decide
from their answers. Pure decisions; `execute` sends the calls.

- `max`: the highest answer wins (`eth_getTransactionCount` with `pending`: each node knows
  the transactions its own pool has seen, so the highest nonce is the one that is safe to
  build on).
- `agree`: the answers must be equal (`eth_call`, `eth_getBalance`, ...): one provider with a
  bug, a stale replica behind its load balancer or a tampered node cannot hand out a wrong
  answer alone. On a dispute, `on_dispute` says what the caller gets: an error naming who
  said what, or the answer a strict majority gave.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson

from rpcgate.jsonrpc import quantity, rpc_error

UPSTREAMS_DISAGREE = -32054  # rpcgate's own code: a quorum call whose upstreams disagree
TOO_FEW_ANSWERS = -32055  # fewer upstreams answered than the quorum needs


def decide_max(answers: Sequence[tuple[str, Any]]) -> Any:
    """The highest quantity among the answers (non-quantities are ignored)."""
    numbers = [(quantity(result), result) for _, result in answers]
    valid = [(n, r) for n, r in numbers if n is not None]
    return max(valid, key=lambda pair: pair[0])[1] if valid else None


def decide_agree(
    answers: Sequence[tuple[str, Any]], needed: int, on_dispute: str
) -> tuple[Any, dict[str, Any] | None]:
    """(result, None) when `needed` answers agree (or a strict majority does and
    `on_dispute` is "majority"); (None, error) otherwise."""
    if len(answers) < needed:
        return None, rpc_error(
            TOO_FEW_ANSWERS,
            f"quorum: {len(answers)} of the {needed} upstreams needed answered",
            {"answers": _shown(answers)},
        )
    tally = Counter(orjson.dumps(result, option=orjson.OPT_SORT_KEYS) for _, result in answers)
    encoded, count = tally.most_common(1)[0]
    if count == len(answers) or (on_dispute == "majority" and count * 2 > len(answers)):
        return orjson.loads(encoded), None
    return None, rpc_error(
        UPSTREAMS_DISAGREE,
        f"quorum: the upstreams disagree ({len(tally)} different answers from {len(answers)})",
        {"answers": _shown(answers)},
    )


def _shown(answers: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [{"upstream": name, "result": result} for name, result in answers]
