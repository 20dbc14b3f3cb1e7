"""Params reach the upstream exactly as the client wrote them: integers of any size with all
their digits, and numbers with a fraction or an exponent as spelled. orjson reads an
integer beyond 64 bits as a float, so 123456789012345678901234567890 went upstream as
1.2345678901234568e+29: another number than the client's."""

from __future__ import annotations

import json
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web

from rpcgate.rpc.jsonrpc import Call, dumps, parse_request, parse_single
from tests.conftest import GatewayFactory, RunningGateway
from tests.harness.anvil import DEV_ADDRESSES
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.loop import BackgroundLoop
from tests.harness.tools import serve_posts

# Numbers as a client writes them, each of which orjson alone would not send on as written.
NUMBERS = [
    "123456789012345678901234567890",
    "-123456789012345678901234567890",
    "18446744073709551616",  # 2**64: one past orjson's integers
    "-9223372036854775809",  # -(2**63) - 1
    "1.5",
    "2.50",
    "1e2",
    "1E-7",
    "0.1000000000000000055511151231257827",
]
NO_CACHE = {"Cache-Control": "no-cache"}


class CapturingUpstream:
    """Forwards to a node and keeps the bytes of every request it got, as they came."""

    def __init__(self, node_url: str) -> None:
        self.node_url = node_url
        self.bodies: list[bytes] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        async with self._session.post(self.node_url, data=body, headers=headers) as answer:
            return web.Response(body=await answer.read(), content_type="application/json")

    def received(self, method: str) -> bytes:
        """Every body that carried a call of `method`, joined."""
        return b"\n".join(b for b in self.bodies if f'"{method}"'.encode() in b)

    async def start(self) -> CapturingUpstream:
        self._session = aiohttp.ClientSession()
        self._runner, self.url = await serve_posts(self._handle)
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


@pytest.fixture
def capturing(
    anvil_cluster: AnvilClusterFactory, background_loop: BackgroundLoop
) -> Iterator[CapturingUpstream]:
    node = anvil_cluster(1)[0]
    upstream = background_loop.run(CapturingUpstream(node.url).start())
    yield upstream
    background_loop.run(upstream.stop())


def _call_text(request_id: str, method: str, numbers: list[str]) -> str:
    """A call written by hand, the numbers spelled as given: in the call object and in a
    third param (where eth_call takes state overrides)."""
    fields = "".join(f', "n{i}": {n}' for i, n in enumerate(numbers))
    call_object = f'{{"to": "{DEV_ADDRESSES[1]}"{fields}}}'
    extra = f'{{"numbers": [{", ".join(numbers)}]}}'
    return (
        f'{{"jsonrpc": "2.0", "id": {request_id}, "method": "{method}", '
        f'"params": [{call_object}, "latest", {extra}]}}'
    )


def _numbers_received(upstream: CapturingUpstream, method: str) -> list[list[str]]:
    """For each call of `method` the upstream got, the numbers in its params, each as the
    text that reached the upstream."""
    found = []
    for body in upstream.bodies:
        payload = json.loads(body, parse_float=str, parse_int=str)
        for item in payload if isinstance(payload, list) else [payload]:
            if item.get("method") == method:
                call_object, _, extra = item["params"]
                in_object = [v for k, v in call_object.items() if k.startswith("n")]
                assert in_object == extra["numbers"], item
                found.append(in_object)
    return found


@pytest.mark.parametrize("request_id", ["1", "123456789012345678901234567890", '"a"'])
def test_numbers_in_params_reach_the_upstream_as_the_client_wrote_them(
    capturing: CapturingUpstream, start_gateway: GatewayFactory, request_id: str
) -> None:
    gateway = start_gateway([capturing.url], head_poll_interval=60)

    reply = gateway.post(_call_text(request_id, "eth_call", NUMBERS).encode(), headers=NO_CACHE)

    assert reply.status == 200
    received = _numbers_received(capturing, "eth_call")
    assert received and all(numbers == NUMBERS for numbers in received), received


def test_numbers_in_a_batch_reach_the_upstream_as_the_client_wrote_them(
    capturing: CapturingUpstream, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway([capturing.url], head_poll_interval=60)
    first, second = NUMBERS[::2], NUMBERS[1::2]
    batch = [
        _call_text("1", "eth_call", first),
        '{"jsonrpc": "2.0", "id": 2, "method": "eth_chainId"}',
        _call_text("3", "eth_estimateGas", second),
        _call_text("null", "eth_call", second).replace('"id": null, ', ""),  # a notification
    ]

    reply = gateway.post(("[" + ",".join(batch) + "]").encode(), headers=NO_CACHE)

    assert [a["id"] for a in reply.json()] == [1, 2, 3]
    assert sorted(map(tuple, _numbers_received(capturing, "eth_call"))) == sorted(
        [tuple(first), tuple(second)]
    )
    assert _numbers_received(capturing, "eth_estimateGas") == [second]


def test_float_ids_come_back_as_written(start_gateway: GatewayFactory) -> None:
    """Answered by the gateway itself (a method its policy refuses): no upstream needed."""
    gateway: RunningGateway = start_gateway(["http://127.0.0.1:9"], head_poll_interval=60)
    for request_id in ("1e2", "2.50", "1E-7", "-0.0"):
        body = f'{{"jsonrpc": "2.0", "id": {request_id}, "method": "admin_peers", "params": []}}'
        single = gateway.post(body.encode()).body.decode()
        assert single.startswith(f'{{"jsonrpc":"2.0","id":{request_id},"error"'), single
        batch = gateway.post(f"[{body}]".encode()).body.decode()
        assert batch.startswith(f'[{{"jsonrpc":"2.0","id":{request_id},"error"'), batch


@pytest.mark.unit
@pytest.mark.parametrize(
    "body",
    [
        b'{"jsonrpc":"2.0","id":1,"method":"eth_getBalance","params":["0xab","latest"]}',
        b'{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[{"to":"0xab","value":"0x1"}]}',
        b'{"jsonrpc":"2.0","id":18446744073709551615,"method":"m","params":[9223372036854775807]}',
    ],
)
def test_a_call_without_floats_stays_on_the_fast_path(body: bytes) -> None:
    assert isinstance(parse_single(body), Call)


@pytest.mark.unit
@pytest.mark.parametrize("number", NUMBERS)
def test_a_call_with_a_number_orjson_would_change_is_read_exactly(number: str) -> None:
    body = f'{{"jsonrpc":"2.0","id":1,"method":"m","params":[{{"a":[{number}]}}]}}'.encode()
    assert parse_single(body) is None  # the exact reading is parse_request's
    (call,) = parse_request(body, 10).items
    assert isinstance(call, Call)
    assert dumps(call.params) == f'[{{"a":[{number}]}}]'.encode()
