"""What a call came to: the positional shortcut builds what the keywords say; a batch's
prepared plan is found only for its own call in its own view."""

from __future__ import annotations

import pytest

from rpcgate.chain.outcome import Outcome, answered_once
from rpcgate.chain.runtime import _found
from rpcgate.rpc.jsonrpc import Call
from rpcgate.upstream.attempt import Attempt

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("block", [None, 7])
def test_an_answer_at_the_first_attempt_is_the_outcome_the_keywords_make(
    block: int | None,
) -> None:
    attempt = Attempt("node0", None, 0.01)
    assert answered_once({"a": 1}, "node0", attempt, block) == Outcome(
        result={"a": 1}, upstream="node0", attempts=1, attempt_log=(attempt,), block=block
    )


def test_a_batch_call_prepared_in_another_consensus_view_is_prepared_again() -> None:
    """`_found`: a plan kept for a call of a client batch serves only that very call, in
    the consensus view it was made in (after an await the head may have moved)."""
    call = Call("eth_getBalance", ["0x1", "latest"], 1, False)
    twin = Call("eth_getBalance", ["0x1", "latest"], 1, False)
    view, newer = object(), object()
    pinned, plan = object(), object()
    prepared = {id(call): (call, view, pinned, plan)}
    assert _found(prepared, call, view) == (pinned, plan)  # type: ignore[arg-type]
    assert _found(prepared, call, newer) is None  # type: ignore[arg-type]
    assert _found(prepared, twin, view) is None  # type: ignore[arg-type]
