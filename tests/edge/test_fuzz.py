"""Thousands of generated request bodies against one gateway over one real anvil node.

Valid calls with every kind of id, broken request objects, batches (empty, mixed, too
long), raw bytes, invalid UTF-8, numbers beyond 64 bits and beyond a double, and nesting
down to 100,000 levels. Whatever arrives, the gateway answers with JSON-RPC: never a 5xx,
every answer well formed, ids back exactly as sent, the error code the specification names
for what was wrong; and afterwards it still serves.

The expected answer of each request is worked out here from the specification, not from
rpcgate's own parser (`expected_answer`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpcgate.edge.fast_http import rpc_runner
from rpcgate.edge.http_server import build_app
from tests.conftest import gateway_config
from tests.harness.anvil import DEFAULT_CHAIN_ID as CHAIN_ID
from tests.harness.anvil import DEV_ADDRESSES, AnvilCluster
from tests.harness.loop import BackgroundLoop

PARSE_ERROR, INVALID_REQUEST = -32700, -32600
MAX_BATCH_ITEMS = 100  # limits.max_batch_items, default
MAX_JSON_DEPTH = 64  # limits.max_json_depth, default
PARSER_MAX_DEPTH = 1024  # orjson's own limit: deeper bodies are refused whole
# Client limits are another test's concern (and would answer 429 to this flood).
NO_CLIENT_LIMITS = {"rate_per_s": 0, "max_concurrent_per_client": 0}


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,  # one example is an HTTP exchange, sometimes with anvil behind it
        database=None,  # nothing written into the repository; a failure prints its example
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


# -- one gateway for the whole module --


@dataclass
class Reply:
    status: int
    body: bytes


class Client:
    """One keep-alive session to the gateway, driven from the test thread."""

    def __init__(self, loop: BackgroundLoop, url: str) -> None:
        self.loop, self.url = loop, url
        self.session = loop.run(self._open())

    @staticmethod
    async def _open() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))

    async def _post(self, body: bytes) -> Reply:
        headers = {"Content-Type": "application/json"}
        async with self.session.post(self.url, data=body, headers=headers) as resp:
            return Reply(resp.status, await resp.read())

    def post(self, body: bytes) -> Reply:
        return self.loop.run(self._post(body))

    def close(self) -> None:
        self.loop.run(self.session.close())


@pytest.fixture(scope="module")
def gateway(background_loop: BackgroundLoop) -> Iterator[Client]:
    """One gateway over one anvil node for the whole module: every example of every
    property reaches the same running process."""
    cluster = AnvilCluster(1).start()
    config = gateway_config(cluster.urls, limits=NO_CLIENT_LIMITS)

    async def serve() -> tuple[web.AppRunner, str]:
        runner = rpc_runner(build_app(config), config, access_log=None)  # the fast path
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        return runner, f"http://{host}:{port}"

    runner, url = background_loop.run(serve())
    client = Client(background_loop, url)
    try:
        yield client
    finally:
        client.close()
        background_loop.run(runner.cleanup())
        cluster.stop()


@pytest.fixture(autouse=True)
def still_serves_afterwards(gateway: Client) -> Iterator[None]:
    """After each property, however it went, the same gateway still answers a plain call."""
    yield
    reply = gateway.post(b'{"jsonrpc":"2.0","id":"after","method":"eth_chainId","params":[]}')
    assert reply.status == 200
    assert json.loads(reply.body) == {"jsonrpc": "2.0", "id": "after", "result": hex(CHAIN_ID)}


# -- what the specification says the answer is --


def depth(value: Any) -> int:
    """Levels of arrays and objects in `value` (a scalar is 0, [] is 1)."""
    if type(value) is list:
        return 1 + max((depth(v) for v in value), default=0)
    if type(value) is dict:
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@dataclass(frozen=True)
class Expected:
    answered: bool  # a notification gets no answer
    id: Any = None
    code: int | None = None  # the error code; None: any answer (a result, or any error)


def expected_answer(item: Any) -> Expected:
    """The answer to one request object, by the JSON-RPC 2.0 specification plus the depth
    limit (on params, the only part sent on)."""
    if type(item) is not dict:
        return Expected(True, None, INVALID_REQUEST)
    request_id = item.get("id")
    if "id" in item and not (request_id is None or type(request_id) in (str, int, float)):
        return Expected(True, None, INVALID_REQUEST)
    method, params = item.get("method"), item.get("params")
    if (
        item.get("jsonrpc") != "2.0"
        or type(method) is not str
        or not method
        or (params is not None and type(params) not in (list, dict))
        or (params is not None and 1 + depth(params) > MAX_JSON_DEPTH)
    ):
        return Expected(True, request_id, INVALID_REQUEST)
    if "id" not in item:
        return Expected(False)
    return Expected(True, request_id)


def check_response(answer: Any) -> None:
    """A well-formed JSON-RPC 2.0 response object."""
    assert type(answer) is dict, answer
    assert answer.get("jsonrpc") == "2.0", answer
    assert "id" in answer, answer
    assert answer["id"] is None or type(answer["id"]) in (str, int, float), answer
    assert ("result" in answer) != ("error" in answer), answer
    if "error" in answer:
        error = answer["error"]
        assert type(error) is dict, answer
        assert type(error.get("code")) is int, answer
        assert type(error.get("message")) is str, answer


def fits_a_double(number: float) -> bool:
    """Whether orjson reads this JSON number (it reads every number as a double, or as a
    64-bit integer)."""
    try:
        return math.isfinite(float(number))
    except OverflowError:
        return False


def check_item_answer(answer: Any, expected: Expected) -> None:
    check_response(answer)
    got = answer["id"]
    assert type(got) is type(expected.id) and got == expected.id, (answer, expected)
    if expected.code is not None:
        assert "error" in answer and answer["error"]["code"] == expected.code, (answer, expected)


def check_answers(reply: Reply, sent: Any) -> None:
    """`sent` (a request object, a batch, or anything) is answered as the specification
    says, with no 5xx."""
    assert reply.status < 500, reply
    if type(sent) is list and not sent:
        check_item_answer(json.loads(reply.body), Expected(True, None, INVALID_REQUEST))
        return
    if type(sent) is list and len(sent) > MAX_BATCH_ITEMS:
        answer = json.loads(reply.body)
        check_item_answer(answer, Expected(True, None, INVALID_REQUEST))
        assert "limits.max_batch_items" in answer["error"]["message"]
        return
    items = sent if type(sent) is list else [sent]
    expected = [e for e in map(expected_answer, items) if e.answered]
    if not expected:
        assert reply.status == 204 and reply.body == b"", reply
        return
    assert reply.status == 200, reply
    answers = json.loads(reply.body)
    if type(sent) is not list:
        answers = [answers]
    assert type(answers) is list and len(answers) == len(expected), (answers, expected)
    for answer, expectation in zip(answers, expected, strict=True):
        check_item_answer(answer, expectation)


def check_parse_error(reply: Reply) -> None:
    assert reply.status == 200, reply
    answer = json.loads(reply.body)
    check_item_answer(answer, Expected(True, None, PARSE_ERROR))


def check_depth_error(answer: Any, request_id: Any) -> None:
    check_item_answer(answer, Expected(True, request_id, INVALID_REQUEST))
    assert "limits.max_json_depth" in answer["error"]["message"], answer


def encode(value: Any, ascii_only: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only).encode()


# -- strategies --

REAL_METHODS = [
    "eth_blockNumber",
    "eth_chainId",
    "net_version",
    "web3_clientVersion",
    "eth_gasPrice",
    "eth_getBalance",
    "eth_getTransactionCount",
    "eth_getCode",
    "eth_getStorageAt",
    "eth_call",
    "eth_estimateGas",
    "eth_getBlockByNumber",
    "eth_getBlockByHash",
    "eth_getTransactionByHash",
    "eth_getTransactionReceipt",
    "eth_getLogs",
    "eth_feeHistory",
    "eth_sendRawTransaction",
    "eth_newFilter",
    "eth_newBlockFilter",
    "eth_getFilterChanges",
    "eth_getFilterLogs",
    "eth_uninstallFilter",
    "eth_subscribe",
    "eth_syncing",
]
DENIED_METHODS = ["admin_peers", "personal_unlockAccount", "debug_traceCall", "eth_sign"]
ATOMS = [
    "latest",
    "pending",
    "earliest",
    "safe",
    "finalized",
    "0x",
    "0x0",
    "0x1",
    "0x10",
    "0xffffffffffffffff",
    "0x" + "ab" * 32,
    "0x" + "00" * 32,
    DEV_ADDRESSES[0],
    DEV_ADDRESSES[1].lower(),
    "0xzz",
]
KEYS = ["to", "from", "data", "input", "value", "gas", "fromBlock", "toBlock", "address"]
KEYS += ["topics", "blockHash", "blockNumber", "requireCanonical"]

valid_ids = st.one_of(
    st.integers(-(2**63), 2**64),
    st.integers(-(2**200), 2**200),  # past 64 bits: read exactly, written back exactly
    st.sampled_from([2**64 - 1, 2**64, -(2**63) - 1, 10**30, 0, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=24),
    st.none(),
)
invalid_ids = st.one_of(
    st.booleans(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(), st.none())
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(ATOMS),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)
methods = st.one_of(
    st.sampled_from(REAL_METHODS), st.sampled_from(DENIED_METHODS), st.text(max_size=20)
)
params = st.one_of(
    st.lists(json_values, max_size=4), st.dictionaries(st.sampled_from(KEYS), json_values)
)


@st.composite
def calls(draw: st.DrawFn, notification: bool | None = None) -> dict[str, Any]:
    """A valid request object (a notification when it has no id)."""
    call: dict[str, Any] = {"jsonrpc": "2.0", "method": draw(methods.filter(bool))}
    if draw(st.booleans()):
        call["params"] = draw(params)
    if notification is False or (notification is None and draw(st.integers(0, 9)) > 0):
        call["id"] = draw(valid_ids)
    return call


@st.composite
def broken_items(draw: st.DrawFn) -> Any:
    """A request object with one thing wrong (or no object at all)."""
    item = draw(calls(notification=False))
    match draw(st.integers(0, 7)):
        case 0:
            item["id"] = draw(invalid_ids)
        case 1:
            item["jsonrpc"] = draw(st.one_of(st.just("1.0"), st.just(2.0), st.none(), st.text()))
        case 2:
            del item["jsonrpc"]
        case 3:
            item["method"] = draw(st.one_of(st.just(""), st.integers(), st.none(), params))
        case 4:
            del item["method"]
        case 5:
            item["params"] = draw(st.one_of(st.text(), st.integers(), st.booleans()))
        case 6:
            return draw(scalars)
        case _:
            return draw(st.lists(scalars, max_size=3))
    return item


batch_items = st.one_of(calls(), calls(), broken_items())


# -- the properties --


@fuzz_settings(examples=700)
@given(call=calls())
def test_valid_calls_are_answered_with_their_own_id(gateway: Client, call: dict[str, Any]) -> None:
    check_answers(gateway.post(encode(call)), call)


@fuzz_settings(examples=500)
@given(item=broken_items(), ascii_only=st.booleans())
def test_invalid_request_objects_get_invalid_request(
    gateway: Client, item: Any, ascii_only: bool
) -> None:
    check_answers(gateway.post(encode(item, ascii_only)), item)


@fuzz_settings(examples=250)
@given(
    batch=st.one_of(
        st.lists(batch_items, max_size=12),
        st.lists(calls(notification=True), min_size=1, max_size=3),  # only notifications
        st.lists(
            st.just({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}),
            min_size=101,
            max_size=150,
        ),
    )
)
def test_batches_are_answered_item_by_item_in_order(gateway: Client, batch: list[Any]) -> None:
    check_answers(gateway.post(encode(batch)), batch)


@fuzz_settings(examples=300)
@given(
    request_id=st.one_of(
        st.integers(-(2**100), 2**100),
        st.integers(-(10**400), 10**400),
        st.sampled_from([10**308, 2 * 10**308, -(10**309)]),
    ),
    number=st.one_of(
        st.integers(-(2**100), 2**100),
        st.integers(-(10**400), 10**400),
        st.floats(allow_nan=False),
    ),
)
def test_huge_numbers_are_read_exactly_or_refused_as_a_parse_error(
    gateway: Client, request_id: int, number: float
) -> None:
    call = {"jsonrpc": "2.0", "id": request_id, "method": "eth_getBalance", "params": [number]}
    body = encode(call).replace(b"Infinity", b"1e999")  # JSON has no Infinity, only numbers
    reply = gateway.post(body)
    if fits_a_double(request_id) and fits_a_double(number):
        check_answers(reply, call)
    else:
        # Beyond a double's range orjson refuses the number: the documented limit, answered
        # as a parse error rather than with a wrong number.
        check_parse_error(reply)


def gateway_reads_as_json(raw: bytes) -> Any:
    """`raw` as JSON, as far as the gateway's parser takes it; raises ValueError when it
    does not. Python's json is more lenient than orjson in a few ways, undone here."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    value = json.loads(raw.decode("utf-8"), parse_constant=no_constants)  # no BOM either

    def check(v: Any) -> None:
        if type(v) is str and any(0xD800 <= ord(c) <= 0xDFFF for c in v):
            raise ValueError("a lone surrogate")
        if type(v) in (int, float) and not fits_a_double(v):
            raise ValueError("beyond a double")
        for child in v.values() if type(v) is dict else v if type(v) is list else ():
            check(child)
        if type(v) is dict:
            for key in v:
                check(key)

    check(value)
    return value


@st.composite
def mangled_bodies(draw: st.DrawFn) -> bytes:
    """A valid body with bytes cut, flipped or inserted (often still JSON, often not)."""
    body = bytearray(encode(draw(st.one_of(calls(), st.lists(batch_items, max_size=3)))))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(body)))
        match draw(st.integers(0, 2)):
            case 0:
                del body[at : at + draw(st.integers(1, 4))]
            case 1:
                body[at:at] = draw(st.binary(min_size=1, max_size=3))
            case _:
                body[at:at] = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\\u"]))
    return bytes(body)


raw_bodies = st.one_of(
    st.binary(max_size=200),
    mangled_bodies(),
    st.text(max_size=60).map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.sampled_from(
        [
            b"",
            b" ",
            b"null",
            b"[",
            b"\xef\xbb\xbf{}",
            b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId\xff"}',
            b'{"jsonrpc":"2.0","id":"\\ud800","method":"eth_chainId"}',
            b'{"jsonrpc":"2.0","id":NaN,"method":"eth_chainId"}',
            b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"eth_chainId"}',
            b'{"jsonrpc":"2.0","id":1,"method":"eth_chainId"}' * 2,
        ]
    ),
)


@fuzz_settings(examples=1000)
@given(raw=raw_bodies)
def test_any_bytes_get_json_rpc(gateway: Client, raw: bytes) -> None:
    reply = gateway.post(raw)
    try:
        sent = gateway_reads_as_json(raw)
    except (ValueError, RecursionError):
        check_parse_error(reply)
    else:
        check_answers(reply, sent)


def nesting(levels: int, shape: int) -> bytes:
    """`levels` containers nested: arrays (shape 0), objects (1), or the two in turn (2)."""
    objects = [shape == 1 or (shape == 2 and i % 2 == 1) for i in range(levels)]
    opens = b"".join(b'{"a":' if is_object else b"[" for is_object in objects)
    closes = b"".join(b"}" if is_object else b"]" for is_object in reversed(objects))
    return opens + (b"0" if objects[-1] else b"") + closes


depths = st.one_of(
    st.integers(1, 130),
    st.sampled_from([62, 63, 64, 65, 1022, 1023, 1024, 1025, 100_000]),
    st.integers(1, 100_000),
)


@fuzz_settings(examples=200)
@given(levels=depths, shape=st.integers(0, 2), in_batch=st.booleans())
def test_deep_nesting_is_refused_naming_the_limit(
    gateway: Client, levels: int, shape: int, in_batch: bool
) -> None:
    params = nesting(levels, shape)
    call = b'{"jsonrpc":"2.0","id":7,"method":"eth_getBalance","params":%s}' % params
    body = b'[%s,{"jsonrpc":"2.0","id":8,"method":"eth_chainId"}]' % call if in_batch else call
    request_depth = 1 + levels  # the request object, then params' levels
    reply = gateway.post(body)
    assert reply.status == 200, reply
    answers = json.loads(reply.body)
    if request_depth + in_batch > PARSER_MAX_DEPTH:
        check_depth_error(answers, None)  # the parser's own limit: the body as a whole
        return
    first = answers[0] if in_batch else answers
    if request_depth > MAX_JSON_DEPTH:
        check_depth_error(first, 7)
    else:
        check_item_answer(first, Expected(True, 7))
    if in_batch:
        assert answers[1] == {"jsonrpc": "2.0", "id": 8, "result": hex(CHAIN_ID)}
