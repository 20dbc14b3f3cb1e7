"""What a call came to: the positional shortcut builds what the keywords say."""

from __future__ import annotations

import pytest

from rpcgate.chain.outcome import Outcome, answered_once
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
