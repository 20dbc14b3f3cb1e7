"""An eth_getLogs range the upstreams refuse as too large is fetched in parts: the plan
(pure, tables), then real anvil nodes behind proxies that cap eth_getLogs at 8 blocks."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import pytest

from rpcgate.chain.getlogs import (
    BlockRange,
    log_range,
    plan_parts,
    refused_as_too_large,
    suggested_range,
)
from rpcgate.chain.outcome import Outcome
from rpcgate.rpc.errors import ErrorClass
from rpcgate.upstream.attempt import Attempt
from tests.conftest import GatewayFactory, ProxiedClusterFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES, DEV_KEYS, AnvilCluster, sign_transaction
from tests.harness.contract import INIT_CODE, create_address
from tests.harness.faultproxy import Fault, FaultProxy

CHAIN_ID = 31337
HEAD = 33  # block 1 deploys the log contract; blocks 2.. hold two logs each
FIRST = HEAD - 29  # eth_getLogs from here to `latest`: 30 blocks
MAX_BLOCKS = 8  # what the proxies let through
# Infura's -32005 as live replies give it, naming the range that would work.
INFURA_TOO_MANY = "query returned more than 10000 results"
INFURA_SUGGESTS = INFURA_TOO_MANY + ". Try with this block range [{from_block}, {to_block}]."
# dRPC's free tier (code 35): a range cap without a suggestion, so the gateway halves.
DRPC_RANGE_CODE = 35
DRPC_RANGES_OVER = "ranges over 8 blocks are not supported on freetier"

R = BlockRange


# --- the plan --------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(
    ("whole", "suggested", "parts"),
    [
        pytest.param(
            R(4, 33), (4, 11), [R(4, 11), R(12, 19), R(20, 27), R(28, 33)], id="suggested-size"
        ),
        pytest.param(
            R(4, 33), (100, 109), [R(4, 13), R(14, 23), R(24, 33)], id="suggestion-elsewhere-size"
        ),
        pytest.param(R(4, 33), None, [R(4, 18), R(19, 33)], id="halves"),
        pytest.param(R(4, 18), None, [R(4, 11), R(12, 18)], id="odd-halves-first-larger"),
        pytest.param(R(4, 33), (4, 33), [R(4, 18), R(19, 33)], id="suggestion-as-large-halves"),
        pytest.param(R(4, 33), (0, 999), [R(4, 18), R(19, 33)], id="suggestion-larger-halves"),
        pytest.param(R(4, 6), (4, 4), [R(4, 4), R(5, 5), R(6, 6)], id="single-block-parts"),
        pytest.param(R(7, 8), None, [R(7, 7), R(8, 8)], id="two-blocks"),
        pytest.param(R(7, 7), None, None, id="single-block-is-final"),
        pytest.param(R(7, 7), (7, 7), None, id="single-block-is-final-with-suggestion"),
    ],
)
def test_plan_parts(
    whole: BlockRange, suggested: tuple[int, int] | None, parts: list[BlockRange] | None
) -> None:
    assert plan_parts(whole, suggested) == parts
    if parts is not None:  # contiguous, in order, covering exactly the range
        assert parts[0].first == whole.first and parts[-1].last == whole.last
        assert all(a.last + 1 == b.first for a, b in pairwise(parts))


@pytest.mark.unit
@pytest.mark.parametrize(
    ("log_filter", "expected"),
    [
        ({"fromBlock": "0x4", "toBlock": "0x21", "address": "0xab"}, R(4, 33)),
        ({"fromBlock": "earliest", "toBlock": "0x21"}, R(0, 33)),
        ({"fromBlock": "0x5", "toBlock": "0x5"}, R(5, 5)),
        ({"blockHash": "0xab"}, None),
        ({"fromBlock": "0x4", "toBlock": "pending"}, None),
        ({"toBlock": "0x21"}, None),  # `latest` the consensus could not pin
        ({"fromBlock": "0x21", "toBlock": "0x4"}, None),
        ({"fromBlock": "0xzz", "toBlock": "0x4"}, None),
        ("not a filter", None),
    ],
)
def test_log_range(log_filter: Any, expected: BlockRange | None) -> None:
    assert log_range(log_filter) == expected


def _outcome(*classes: ErrorClass | None, code: int = -32005) -> Outcome:
    attempts = tuple(Attempt(f"node{i}", c, 0.01) for i, c in enumerate(classes))
    return Outcome(error={"code": code, "message": "m"}, attempt_log=attempts)


C = ErrorClass


@pytest.mark.unit
@pytest.mark.parametrize(
    ("outcome", "refused"),
    [
        pytest.param(_outcome(C.TOO_LARGE, C.TOO_LARGE, C.TOO_LARGE), True, id="all-too-large"),
        pytest.param(_outcome(C.TOO_LARGE, C.TRANSIENT, C.TOO_LARGE), True, id="one-down"),
        pytest.param(_outcome(C.TRANSIENT, C.TRANSIENT), False, id="no-too-large"),
        pytest.param(_outcome(C.TOO_LARGE, C.CLIENT, code=-32602), False, id="callers-problem"),
        pytest.param(_outcome(C.TOO_LARGE, code=-32051), False, id="deadline-spent"),
        pytest.param(_outcome(), False, id="no-attempt"),
        pytest.param(Outcome(result=[], attempt_log=(Attempt("n", None, 0.01),)), False, id="ok"),
    ],
)
def test_refused_as_too_large(outcome: Outcome, refused: bool) -> None:
    assert refused_as_too_large(outcome) is refused


@pytest.mark.unit
def test_suggested_range_is_read_from_the_error_or_the_attempts_it_lists() -> None:
    infura = "query returned more than 10000 results. Try with this block range [0x4, 0xb]."
    assert suggested_range({"code": -32005, "message": infura}) == (4, 11)
    listed = {"attempts": [{"detail": "upstream unavailable"}, {"detail": infura}]}
    assert suggested_range({"code": -32050, "message": "no upstream", "data": listed}) == (4, 11)
    assert suggested_range({"code": 35, "message": DRPC_RANGES_OVER}) is None


# --- real nodes --------------------------------------------------------------------------


@pytest.fixture
def logging_chain(
    proxied_cluster: ProxiedClusterFactory,
) -> tuple[AnvilCluster, list[FaultProxy], str]:
    """Three nodes, HEAD blocks high: the log contract at block 1, then two logging calls
    (one sender, consecutive nonces: the same order on every node) in every block."""
    cluster, proxies = proxied_cluster(3, chain_id=CHAIN_ID)
    deployer, caller = DEV_KEYS[0], DEV_KEYS[1]
    contract = create_address(DEV_ADDRESSES[0], 0)
    _mine_with(
        cluster, [sign_transaction(chain_id=CHAIN_ID, nonce=0, data=INIT_CODE, key=deployer)]
    )
    for height in range(2, HEAD + 1):
        calls = [
            sign_transaction(
                chain_id=CHAIN_ID,
                nonce=2 * (height - 2) + i,
                to=contract,
                data=height.to_bytes(4, "big") + bytes([i]),
                key=caller,
            )
            for i in range(2)
        ]
        _mine_with(cluster, calls)
    assert cluster.heights() == [HEAD] * 3
    return cluster, proxies, contract


def _mine_with(cluster: AnvilCluster, raw_transactions: list[str]) -> None:
    for raw in raw_transactions:
        cluster.broadcast_raw_transaction(raw)
    cluster.mine_all()


def _cap_logs(proxies: list[FaultProxy], **settings: Any) -> None:
    for proxy in proxies:
        proxy.set_fault(Fault.LOGS_RANGE_LIMIT, **settings)
        proxy.reset_counts()


def _get_logs_calls(proxies: list[FaultProxy]) -> int:
    return sum(proxy.methods.count("eth_getLogs") for proxy in proxies)


def _direct_logs(cluster: AnvilCluster, contract: str) -> list[dict[str, Any]]:
    criteria = {"fromBlock": hex(FIRST), "toBlock": hex(HEAD), "address": contract}
    logs: list[dict[str, Any]] = cluster[0].rpc("eth_getLogs", [criteria])
    assert len(logs) == 2 * (HEAD - FIRST + 1)
    return logs


def _assert_in_order(logs: list[dict[str, Any]]) -> None:
    keys = [(int(log["blockNumber"], 16), int(log["logIndex"], 16)) for log in logs]
    assert keys == sorted(set(keys))


def _get_logs(gateway: RunningGateway, contract: str) -> Any:
    criteria = {"fromBlock": hex(FIRST), "toBlock": "latest", "address": contract}
    return gateway.rpc("eth_getLogs", [criteria])


def test_a_range_refused_as_too_large_comes_whole_in_the_parts_the_refusal_suggests(
    logging_chain: tuple[AnvilCluster, list[FaultProxy], str], start_gateway: GatewayFactory
) -> None:
    cluster, proxies, contract = logging_chain
    gateway = start_gateway([p.url for p in proxies])
    _cap_logs(proxies, max_blocks=MAX_BLOCKS, error_code=-32005, error_message=INFURA_SUGGESTS)
    reply = _get_logs(gateway, contract)
    logs = reply.json()["result"]
    assert logs == _direct_logs(cluster, contract)
    _assert_in_order(logs)
    # The whole range on each upstream, then one call per part: 4-11, 12-19, 20-27, 28-33.
    calls = _get_logs_calls(proxies)
    assert calls <= 3 + 4
    assert reply.headers["X-Rpcgate-Attempts"] == str(calls)
    assert reply.headers["X-Rpcgate-Block"] == str(HEAD)
    assert set(reply.headers["X-Rpcgate-Upstream"].split("+")) <= {"node0", "node1", "node2"}

    # The merged answer of a pinned range is cached like any eth_getLogs answer.
    again = _get_logs(gateway, contract)
    assert again.headers["X-Rpcgate-Cache"] == "hit"
    assert again.json()["result"] == logs
    assert _get_logs_calls(proxies) == calls


def test_without_a_suggestion_the_range_is_halved_until_the_parts_are_served(
    logging_chain: tuple[AnvilCluster, list[FaultProxy], str], start_gateway: GatewayFactory
) -> None:
    cluster, proxies, contract = logging_chain
    gateway = start_gateway([p.url for p in proxies])
    _cap_logs(
        proxies, max_blocks=MAX_BLOCKS, error_code=DRPC_RANGE_CODE, error_message=DRPC_RANGES_OVER
    )
    logs = _get_logs(gateway, contract).json()["result"]
    assert logs == _direct_logs(cluster, contract)
    _assert_in_order(logs)
    # 30 blocks refused everywhere, its halves of 15 refused everywhere, then 8, 7, 8, 7.
    assert _get_logs_calls(proxies) <= 3 + 2 * 3 + 4


def test_a_part_that_fails_otherwise_fails_the_whole_call_never_a_partial_list(
    logging_chain: tuple[AnvilCluster, list[FaultProxy], str], start_gateway: GatewayFactory
) -> None:
    _, proxies, contract = logging_chain
    gateway = start_gateway([p.url for p in proxies])
    _cap_logs(
        proxies,
        max_blocks=MAX_BLOCKS,
        error_code=-32005,
        error_message=INFURA_SUGGESTS,
        failing_block=22,  # in the third part: every upstream answers it 503
    )
    reply = _get_logs(gateway, contract).json()
    assert "result" not in reply
    assert reply["error"]["code"] == -32050
    assert {a["class"] for a in reply["error"]["data"]["attempts"]} == {"transient"}
    # The failing part takes up to failover.max_attempts (5) calls, the others one each.
    assert _get_logs_calls(proxies) <= 3 + 3 + 5


def test_a_single_block_refused_as_too_large_is_the_upstreams_final_word(
    logging_chain: tuple[AnvilCluster, list[FaultProxy], str], start_gateway: GatewayFactory
) -> None:
    _, proxies, contract = logging_chain
    gateway = start_gateway([p.url for p in proxies])
    _cap_logs(proxies, max_blocks=0, error_code=-32005, error_message=INFURA_TOO_MANY)
    criteria = {"fromBlock": hex(10), "toBlock": hex(11), "address": contract}
    error = gateway.rpc("eth_getLogs", [criteria]).json()["error"]
    assert error == {"code": -32005, "message": INFURA_TOO_MANY}
    # The two blocks on every upstream, then each block alone on every upstream.
    assert _get_logs_calls(proxies) <= 3 + 2 * 3


def test_a_block_hash_filter_refused_as_too_large_comes_back_as_the_error(
    logging_chain: tuple[AnvilCluster, list[FaultProxy], str], start_gateway: GatewayFactory
) -> None:
    cluster, proxies, contract = logging_chain
    gateway = start_gateway([p.url for p in proxies])
    _cap_logs(proxies, max_blocks=0, error_code=-32005, error_message=INFURA_TOO_MANY)
    criteria = {"blockHash": cluster[0].block_hash(10), "address": contract}
    error = gateway.rpc("eth_getLogs", [criteria]).json()["error"]
    assert error == {"code": -32005, "message": INFURA_TOO_MANY}
    assert _get_logs_calls(proxies) == 3  # each upstream once, nothing to split
