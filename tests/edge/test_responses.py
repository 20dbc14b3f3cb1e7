"""Answers written in one piece (rpcgate/edge/responses.py): what the head says for each HTTP
version and keep-alive choice, and, over real sockets against a gateway over a real anvil
node, that clients of either version, keeping the connection or not, pipelining or not,
read every answer whole and see the connection kept or closed as they asked."""

from __future__ import annotations

import asyncio
import email.utils
import json

import aiohttp
import pytest
from aiohttp import HttpVersion, HttpVersion10, HttpVersion11

from rpcgate.config.settings import ConfigError, parse_config
from rpcgate.edge.responses import answer_head
from tests.conftest import GatewayFactory, RunningGateway
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.tools import host_port

BLOCK_NUMBER = {"jsonrpc": "2.0", "id": 7, "method": "eth_blockNumber", "params": []}
CHAIN_ID = {"jsonrpc": "2.0", "id": 8, "method": "eth_chainId", "params": []}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("version", "keep_alive", "status_line", "connection"),
    [
        (HttpVersion11, True, "HTTP/1.1 200 OK", None),
        (HttpVersion11, False, "HTTP/1.1 200 OK", "close"),
        (HttpVersion10, True, "HTTP/1.0 200 OK", "keep-alive"),
        (HttpVersion10, False, "HTTP/1.0 200 OK", None),
    ],
)
def test_answer_head_says_what_the_version_and_keep_alive_call_for(
    version: HttpVersion, keep_alive: bool, status_line: str, connection: str | None
) -> None:
    head = answer_head({"X-Rpcgate-Cache": "hit"}, 42, version, keep_alive).decode()
    assert head.endswith("\r\n\r\n") and head.count("\r\n\r\n") == 1
    first, *lines = head[: -len("\r\n\r\n")].split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines)
    assert first == status_line
    assert fields.get("Connection") == connection
    assert fields["Content-Length"] == "42"
    assert fields["Content-Type"] == "application/json"
    assert fields["X-Rpcgate-Cache"] == "hit"
    assert email.utils.parsedate_to_datetime(fields["Date"]).tzname() == "UTC"
    assert len(lines) == len(fields)  # no field twice


@pytest.fixture
def gateway(anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory) -> RunningGateway:
    return start_gateway(anvil_cluster(1).urls)


def _request(body: dict[str, object], version: str = "1.1", *extra: str) -> bytes:
    data = json.dumps(body).encode()
    head = [f"POST / HTTP/{version}", "Host: gateway", "Content-Type: application/json"]
    head += [f"Content-Length: {len(data)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + data


async def _answer(reader: asyncio.StreamReader) -> tuple[str, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head.decode().rstrip("\r\n").split("\r\n")
    fields = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
    body = await asyncio.wait_for(reader.readexactly(int(fields["content-length"])), 10)
    return status_line, fields, body


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the gateway closes the connection within a second (nothing more is sent)."""
    try:
        return await asyncio.wait_for(reader.read(1), 1.0) == b""
    except TimeoutError:
        return False


def _connect(gateway: RunningGateway) -> tuple[str, int]:
    return host_port(gateway.url)


@pytest.mark.parametrize(
    ("version", "extra", "kept"),
    [
        ("1.1", (), True),
        ("1.1", ("Connection: close",), False),
        ("1.0", (), False),
        ("1.0", ("Connection: keep-alive",), True),
    ],
)
def test_each_http_version_gets_its_answer_and_the_connection_it_asked_for(
    gateway: RunningGateway, version: str, extra: tuple[str, ...], kept: bool
) -> None:
    async def scenario() -> None:
        reader, writer = await asyncio.open_connection(*_connect(gateway))
        try:
            for body in (BLOCK_NUMBER, CHAIN_ID):  # the second: the full path, not the hot one
                writer.write(_request(body, version, *extra))
                status_line, fields, answer = await _answer(reader)
                assert status_line == f"HTTP/{version} 200 OK"
                assert json.loads(answer)["id"] == body["id"]
                assert fields["content-type"] == "application/json"
                assert "x-rpcgate-upstream" in fields and "date" in fields
                if not kept:
                    assert await _closed(reader)
                    return
                assert not await _closed(reader)
        finally:
            writer.close()

    asyncio.run(scenario())


def test_pipelined_requests_are_answered_whole_and_in_order(gateway: RunningGateway) -> None:
    calls = [{**(BLOCK_NUMBER if i % 2 else CHAIN_ID), "id": i} for i in range(20)]

    async def scenario() -> list[int]:
        reader, writer = await asyncio.open_connection(*_connect(gateway))
        try:
            writer.write(b"".join(_request(call) for call in calls))  # one write: pipelined
            ids = []
            for _ in calls:
                status_line, _, answer = await _answer(reader)
                assert status_line == "HTTP/1.1 200 OK"
                ids.append(json.loads(answer)["id"])
            assert not await _closed(reader)
            return ids
        finally:
            writer.close()

    assert asyncio.run(scenario()) == list(range(20))


def test_the_hot_path_and_the_full_path_send_the_same_fields(gateway: RunningGateway) -> None:
    balance = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "eth_getBalance",
        "params": ["0x" + "11" * 20, "latest"],
    }

    async def scenario() -> list[dict[str, str]]:
        async with aiohttp.ClientSession() as session:
            heads = []
            for _ in range(2):  # a miss (the full path), then a hit (the hot path)
                async with session.post(
                    gateway.url, json=balance, headers={"Origin": "https://dapp.example"}
                ) as resp:
                    assert resp.status == 200
                    assert (await resp.json())["id"] == 9
                    heads.append(dict(resp.headers))
        return heads

    full, hot = asyncio.run(scenario())
    assert (full["X-Rpcgate-Cache"], hot["X-Rpcgate-Cache"]) == ("miss", "hit")
    assert set(hot) == set(full)
    assert hot["X-Rpcgate-Block"] == full["X-Rpcgate-Block"]
    assert hot["Access-Control-Allow-Origin"] == "*"  # the default allows any origin


@pytest.mark.unit
@pytest.mark.parametrize("name", ["node\r\nX-Injected: 1", "node,1", "tab\there"])
def test_upstream_names_that_cannot_be_a_header_value_are_refused(name: str) -> None:
    text = json.dumps(
        {
            "chains": [
                {"name": "dev", "chain_id": 1, "upstreams": [{"name": name, "url": "http://a"}]}
            ]
        }
    )
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    assert any("upstreams[0].name" in problem for problem in refused.value.problems)
