"""The HTTP surface: chain paths, limits, diagnostics headers, CORS; against real anvil."""

from __future__ import annotations

import json

import pytest

from tests.conftest import GatewayFactory, RunningGateway
from tests.harness.fixtures import AnvilClusterFactory

CHAIN_ID = 31337


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
    assert int(reply.headers["X-Rpcgate-Attempts"]) == 5


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
