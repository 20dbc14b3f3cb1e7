"""The HTTP surface: chain paths, limits, diagnostics headers, CORS; against real anvil."""

from __future__ import annotations

import json

import pytest

from rpcgate.edge.answers import Answer, diagnostics
from tests.conftest import GatewayFactory, RunningGateway
from tests.harness.fixtures import AnvilClusterFactory

CHAIN_ID = 31337
ADDRESSES = [f"0x{i:040x}" for i in (0xA1, 0xA2, 0xA3)]


@pytest.fixture
def gateway(anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory) -> RunningGateway:
    cluster = anvil_cluster(2, chain_id=CHAIN_ID, automine=True)
    return start_gateway(cluster.urls, limits={"max_body_bytes": 2048, "max_batch_items": 5})


@pytest.mark.parametrize("path", ["/", "/devnet", f"/{CHAIN_ID}"])
def test_chain_is_served_at_root_name_and_chain_id(gateway: RunningGateway, path: str) -> None:
    reply = gateway.rpc("eth_chainId", path=path)
    assert reply.status == 200
    assert reply.json()["result"] == hex(CHAIN_ID)
    assert reply.headers["X-Rpcgate-Upstream"] in ("node0", "node1")
    assert reply.headers["X-Rpcgate-Attempts"] == "1"


def test_unknown_chain_is_a_clear_json_error(gateway: RunningGateway) -> None:
    reply = gateway.rpc("eth_chainId", path="/polygon")
    assert reply.status == 404
    body = reply.json()
    assert body["error"]["code"] == -32053
    assert "'polygon'" in body["error"]["message"]
    assert "/devnet" in body["error"]["message"]
    assert body["id"] is None


def test_body_over_the_limit_is_refused_with_a_json_rpc_error(gateway: RunningGateway) -> None:
    padding = "0" * 4096
    reply = gateway.post({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": [padding]})
    assert reply.status == 413
    error = reply.json()["error"]
    assert error["code"] == -32600
    assert "limits.max_body_bytes" in error["message"]
    assert error["data"] == {"limit": 2048}


def test_batch_over_the_limit_is_one_error(gateway: RunningGateway) -> None:
    batch = [{"jsonrpc": "2.0", "id": i, "method": "eth_chainId"} for i in range(6)]
    reply = gateway.post(batch)
    body = reply.json()
    assert isinstance(body, dict)
    assert body["error"]["code"] == -32600
    assert "limits.max_batch_items" in body["error"]["message"]


def test_batch_at_the_limit_is_answered_item_by_item(gateway: RunningGateway) -> None:
    batch = [{"jsonrpc": "2.0", "id": f"q{i}", "method": "eth_chainId"} for i in range(5)]
    reply = gateway.post(batch)
    assert [item["id"] for item in reply.json()] == [f"q{i}" for i in range(5)]
    assert all(item["result"] == hex(CHAIN_ID) for item in reply.json())
    assert reply.headers["X-Rpcgate-Attempts"].split(",") == ["1"] * 5


def test_every_diagnostics_header_of_a_batch_has_one_value_per_answer_in_order(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    cluster = anvil_cluster(2, chain_id=CHAIN_ID)
    cluster.mine_all(2)
    gateway = start_gateway(cluster.urls)
    gateway.sync()
    cached = gateway.rpc("eth_getBalance", [ADDRESSES[0], "0x1"])
    assert cached.headers["X-Rpcgate-Cache"] == "miss"
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [ADDRESSES[0], "0x1"]},
        {"jsonrpc": "2.0", "method": "eth_chainId", "params": []},  # a notification: no answer
        {"jsonrpc": "2.0", "id": 2, "method": "eth_getBalance", "params": [ADDRESSES[1], "0x2"]},
        {"jsonrpc": "2.0", "id": 3},  # not a call: the gateway answers it
        {"jsonrpc": "2.0", "id": 4, "method": "eth_getBalance", "params": [ADDRESSES[2], "0x1"]},
    ]

    reply = gateway.post(batch, headers={"X-Rpcgate-Trace": "1"})

    answers = reply.json()
    assert [a["id"] for a in answers] == [1, 2, 3, 4]
    values = {
        name: reply.headers[f"X-Rpcgate-{name}"].split(",")
        for name in ("Upstream", "Attempts", "Cache", "Block", "Verified")
    }
    assert all(len(v) == len(answers) for v in values.values()), values
    answered_by = [a["trace"]["answered_by"] if "trace" in a else "gateway" for a in answers]
    assert values["Upstream"] == answered_by
    assert values["Upstream"][0] == "cache" and values["Upstream"][2] == "gateway"
    assert {values["Upstream"][1], values["Upstream"][3]} <= {"node0", "node1"}
    assert values["Cache"] == ["hit", "miss", "bypass", "miss"]
    assert values["Block"] == ["1", "2", "-", "1"]
    assert values["Attempts"][0] == values["Attempts"][2] == "0"
    assert int(values["Attempts"][1]) >= 1 and int(values["Attempts"][3]) >= 1
    assert values["Verified"][2] == "none"


def test_a_batch_answers_what_it_holds_at_once_and_the_rest_in_order(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    """Cache hits and the head are answered where they are held, without the full path;
    the other items take it; each answer keeps its place, its id and its header values."""
    cluster = anvil_cluster(2, chain_id=CHAIN_ID)
    cluster.mine_all(2)
    gateway = start_gateway(cluster.urls)
    gateway.sync()
    for address in ADDRESSES[:2]:
        gateway.rpc("eth_getBalance", [address, "0x1"])  # stored
    batch = [
        {"jsonrpc": "2.0", "id": "a", "method": "eth_getBalance", "params": [ADDRESSES[2], "0x1"]},
        {"jsonrpc": "2.0", "id": "b", "method": "eth_getBalance", "params": [ADDRESSES[0], "0x1"]},
        {"jsonrpc": "2.0", "id": "c", "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": "d", "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": "e", "method": "eth_getBalance", "params": [ADDRESSES[1], "0x1"]},
    ]
    reply = gateway.post(batch)
    answers = reply.json()
    assert [a["id"] for a in answers] == ["a", "b", "c", "d", "e"]
    assert answers[2]["result"] == hex(2)
    assert answers[3]["result"] == hex(CHAIN_ID)
    values = {
        name: reply.headers[f"X-Rpcgate-{name}"].split(",")
        for name in ("Upstream", "Attempts", "Cache", "Block")
    }
    assert values["Cache"][0] == "miss" and values["Cache"][1] == values["Cache"][4] == "hit"
    assert [values["Upstream"][i] for i in (1, 2, 4)] == ["cache", "gateway", "cache"]
    assert [values["Attempts"][i] for i in (1, 2, 4)] == ["0", "0", "0"]
    assert values["Block"][:3] == ["1", "1", "2"]


def test_the_same_calls_again_are_answered_as_held_until_the_head_moves(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    """A batch answered wholly from what the gateway holds is answered again, with the next
    request's ids, from what was answered, while the consensus is the same; once the head
    moves, never: the head and every answer about it are asked anew."""
    cluster = anvil_cluster(2, chain_id=CHAIN_ID)
    cluster.mine_all(2)
    gateway = start_gateway(cluster.urls)
    gateway.sync()

    def batch(first_id: int) -> list[dict[str, object]]:
        calls = [
            ("eth_getBalance", [ADDRESSES[0], "0x1"]),
            ("eth_blockNumber", []),
            ("eth_getBalance", [ADDRESSES[1], "0x1"]),
        ]
        return [
            {"jsonrpc": "2.0", "id": first_id + i, "method": m, "params": p}
            for i, (m, p) in enumerate(calls)
        ]

    gateway.post(batch(0))  # the balances stored
    held = gateway.post(batch(10))  # every item held: remembered as a batch
    assert held.headers["X-Rpcgate-Cache"].split(",") == ["hit", "bypass", "hit"]
    counters = gateway.gateway.chains[0].cache_counters
    hits_before = counters.hits
    again = gateway.post(batch(20))
    assert [a["id"] for a in again.json()] == [20, 21, 22]
    assert [a["result"] for a in again.json()] == [a["result"] for a in held.json()]
    assert again.headers["X-Rpcgate-Cache"] == held.headers["X-Rpcgate-Cache"]
    assert counters.hits == hits_before + 2

    cluster.mine_all(1)
    gateway.sync()
    moved = gateway.post(batch(30)).json()
    assert moved[1]["result"] == hex(3), moved  # the new head, not the one held
    fresh = gateway.post(batch(40), headers={"Cache-Control": "no-cache"})
    assert fresh.headers["X-Rpcgate-Cache"].split(",")[0] == "miss"
    with_notification = [*batch(50), {"jsonrpc": "2.0", "method": "eth_chainId"}]
    assert len(gateway.post(with_notification).json()) == 3
    # Params deeper than a key can be made of (batches are remembered now): the full path
    # refuses the item, naming the limit; never a server error.
    deep: list[object] = []
    for _ in range(1019):  # within what the JSON parser reads (1,024 with the batch)
        deep = [deep]
    refused = gateway.post(
        [*batch(60), {"jsonrpc": "2.0", "id": 99, "method": "x", "params": deep}]
    )
    assert refused.status < 500
    assert "max_json_depth" in json.dumps(refused.json())


def test_a_batch_of_notifications_alone_has_no_diagnostics_values(gateway: RunningGateway) -> None:
    reply = gateway.post([{"jsonrpc": "2.0", "method": "eth_chainId"}] * 2)
    assert reply.status == 204
    assert not [name for name in reply.headers if name.startswith("X-Rpcgate-")]


@pytest.mark.unit
def test_a_quorum_answer_is_one_value_of_a_batch_header() -> None:
    quorum = Answer({"jsonrpc": "2.0", "id": 1, "result": "0x1"}, "node0,node1", 2, "miss")
    alone = Answer({"jsonrpc": "2.0", "id": 2, "result": "0x1"}, "node2", 1, "miss", 7)
    notification = Answer(None, "node0", 1, "bypass")
    headers = diagnostics([quorum, notification, alone], is_batch=True)
    assert headers["X-Rpcgate-Upstream"] == "node0+node1,node2"
    assert headers["X-Rpcgate-Attempts"] == "2,1"
    assert headers["X-Rpcgate-Block"] == "-,7"
    assert diagnostics([quorum], is_batch=False)["X-Rpcgate-Upstream"] == "node0+node1"


def test_get_on_a_json_rpc_path_says_to_post(gateway: RunningGateway) -> None:
    reply = gateway.loop.run(_get(gateway.url + "/devnet"))
    assert reply[0] == 405
    assert json.loads(reply[1])["error"]["code"] == -32600


def test_browsers_get_cors_preflight_and_headers(gateway: RunningGateway) -> None:
    status, headers = gateway.loop.run(_options(gateway.url + "/"))
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in headers["Access-Control-Allow-Methods"]
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}
    reply = gateway.post(body, headers={"Origin": "https://app.example"})
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Rpcgate-Upstream" in reply.headers["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in gateway.post(body).headers  # not a browser


def test_healthz_answers(gateway: RunningGateway) -> None:
    status, body = gateway.loop.run(_get(gateway.url + "/healthz"))
    assert status == 200
    assert json.loads(body) == {"status": "ok"}


async def _get(url: str) -> tuple[int, bytes]:
    import aiohttp

    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.read()


async def _options(url: str) -> tuple[int, dict[str, str]]:
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.options(
            url, headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        ) as resp,
    ):
        return resp.status, dict(resp.headers)


def test_readiness_says_which_chain_cannot_serve(
    anvil_cluster: AnvilClusterFactory,
    fault_proxy,
    start_gateway: GatewayFactory,  # type: ignore[no-untyped-def]
) -> None:
    from tests.harness.faultproxy import Fault

    cluster = anvil_cluster(1, chain_id=CHAIN_ID)
    proxy = fault_proxy(cluster.urls[0])
    gateway = start_gateway([proxy.url], head_poll_interval=60)
    status, body = gateway.loop.run(_get(gateway.url + "/readyz"))
    assert (status, json.loads(body)) == (200, {"status": "ready"})
    proxy.set_fault(Fault.REFUSE)
    gateway.sync()
    gateway.sync()  # two failed polls: down
    status, body = gateway.loop.run(_get(gateway.url + "/readyz"))
    assert status == 503
    assert "node0: down" in json.loads(body)["chains"]["devnet"]
