"""What a replica's served head does around a Redis outage (`shared_head.stance`): hold
where the replicas last agreed, then go on alone; once Redis is back, wait for the other
replicas to find it too, unless one of them has already offered a head."""

from __future__ import annotations

import pytest

from rpcgate.storage.redis_client import RESUBSCRIBE_S, RETRY_S
from rpcgate.storage.shared_head import SETTLE_S, stance

pytestmark = pytest.mark.unit


def test_redis_up_and_no_outage_yet_is_shared() -> None:
    assert stance(None, None, 5.0, heard_higher=False) == "shared"


def test_an_outage_holds_for_the_hold_then_goes_alone() -> None:
    assert stance(0.0, None, 5.0, heard_higher=False) == "hold"
    assert stance(4.99, None, 5.0, heard_higher=False) == "hold"
    assert stance(5.0, None, 5.0, heard_higher=False) == "alone"
    assert stance(30.0, 2.0, 5.0, heard_higher=False) == "alone"


def test_no_hold_configured_means_alone_at_once_and_no_settling() -> None:
    assert stance(0.0, None, 0.0, heard_higher=False) == "alone"
    assert stance(None, 0.1, 0.0, heard_higher=False) == "shared"


def test_back_from_an_outage_it_settles_until_the_others_can_have_found_redis() -> None:
    # Each replica tries Redis again RETRY_S after its last failure, and subscribes again
    # within RESUBSCRIBE_S: the wait covers both.
    assert SETTLE_S > RETRY_S + RESUBSCRIBE_S
    assert stance(None, 0.0, 5.0, heard_higher=False) == "settle"
    assert stance(None, SETTLE_S - 0.01, 5.0, heard_higher=False) == "settle"
    assert stance(None, SETTLE_S, 5.0, heard_higher=False) == "shared"


def test_the_settling_is_never_longer_than_the_hold() -> None:
    assert stance(None, 1.0, 1.5, heard_higher=False) == "settle"
    assert stance(None, 1.5, 1.5, heard_higher=False) == "shared"


def test_a_head_another_replica_offered_ends_the_settling() -> None:
    assert stance(None, 0.5, 5.0, heard_higher=True) == "shared"
