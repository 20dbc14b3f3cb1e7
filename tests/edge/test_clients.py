"""Client keys and client addresses: who is calling, from plain request data and over HTTP."""

from __future__ import annotations

import io
import json
import secrets
from collections.abc import Iterator

import pytest

from rpcgate.config.settings import (
    AuthConfig,
    ClientKey,
    ConfigError,
    LimitsConfig,
    config_from_data,
    parse_config,
)
from rpcgate.edge import admission as admission_module
from rpcgate.edge.clients import (
    Caller,
    Refusal,
    authenticate,
    client_address,
    find_key,
    is_limited,
    presented_key,
    trusted_networks,
)
from rpcgate.rpc.logs import configure_logging
from tests.conftest import GatewayFactory
from tests.harness.fixtures import AnvilClusterFactory

ALICE = ClientKey(name="alice", key="a" * 8 + secrets.token_hex(12))
BOB = ClientKey(name="bob", key="b" * 8 + secrets.token_hex(12), chains=("other",))


@pytest.mark.unit
@pytest.mark.parametrize(
    ("path_key", "headers", "query", "expected"),
    [
        ("K1", {"X-Api-Key": "K2"}, {"key": "K3"}, "K1"),
        (None, {"X-Api-Key": " K2 "}, {"key": "K3"}, "K2"),
        (None, {"Authorization": "Bearer K4"}, {"key": "K3"}, "K4"),
        (None, {"Authorization": "bearer   K4 "}, {}, "K4"),
        (None, {"Authorization": "Basic dXNlcjpwYXNz"}, {"key": "K3"}, "K3"),
        (None, {}, {"key": "K3"}, "K3"),
        (None, {}, {"key": ""}, None),
        (None, {}, {}, None),
    ],
)
def test_a_key_is_taken_from_path_header_bearer_or_query(
    path_key: str | None, headers: dict[str, str], query: dict[str, str], expected: str | None
) -> None:
    assert presented_key(path_key, headers, query) == expected


@pytest.mark.unit
def test_find_key_compares_every_key() -> None:
    assert find_key([ALICE, BOB], ALICE.key) is ALICE
    assert find_key([ALICE, BOB], BOB.key) is BOB
    assert find_key([ALICE, BOB], ALICE.key[:-1]) is None
    assert find_key([ALICE, BOB], ALICE.key + "x") is None
    assert find_key([ALICE, BOB], "\udcff" + ALICE.key) is None  # undecodable bytes: no crash


@pytest.mark.unit
def test_authenticate_names_the_client_never_the_key() -> None:
    auth = AuthConfig(keys=(ALICE, BOB))
    assert authenticate(AuthConfig(), None, "devnet", 1) is None  # no keys: open
    assert authenticate(auth, ALICE.key, "devnet", 1) == Caller("key:alice", ALICE)
    missing = authenticate(auth, None, "devnet", 1)
    assert isinstance(missing, Refusal) and missing.status == 401
    assert "X-Api-Key" in missing.message
    unknown = authenticate(auth, "nope" * 5, "devnet", 1)
    assert isinstance(unknown, Refusal) and unknown.status == 401
    wrong_chain = authenticate(auth, BOB.key, "devnet", 1)
    assert isinstance(wrong_chain, Refusal) and wrong_chain.status == 403
    assert BOB.key not in wrong_chain.message and "'bob'" in wrong_chain.message
    assert authenticate(auth, BOB.key, "other", 5) == Caller("key:bob", BOB)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("10.0.0.5", ["1.2.3.4"], (), "10.0.0.5"),  # no trusted proxies: the header is ignored
        ("10.0.0.5", ["1.2.3.4"], ("10.0.0.0/8",), "1.2.3.4"),
        ("192.0.2.9", ["1.2.3.4"], ("10.0.0.0/8",), "192.0.2.9"),  # not from a trusted proxy
        # a client forging the header: the trusted proxy appended the real address last
        ("10.0.0.5", ["6.6.6.6, 1.2.3.4"], ("10.0.0.0/8",), "1.2.3.4"),
        # ... or added a line of its own (HAProxy's option forwardfor): the last line counts
        ("10.0.0.5", ["6.6.6.6", "1.2.3.4"], ("10.0.0.0/8",), "1.2.3.4"),
        ("10.0.0.5", ["6.6.6.6, 7.7.7.7", "1.2.3.4, 10.0.0.7"], ("10.0.0.0/8",), "1.2.3.4"),
        # two trusted hops (a CDN, then an ingress)
        ("10.0.0.5", ["6.6.6.6, 1.2.3.4, 10.0.0.7"], ("10.0.0.0/8",), "1.2.3.4"),
        ("10.0.0.5", ["10.0.0.8, 10.0.0.7"], ("10.0.0.0/8",), "10.0.0.8"),
        ("10.0.0.5", [""], ("10.0.0.0/8",), "10.0.0.5"),
        ("10.0.0.5", [], ("10.0.0.0/8",), "10.0.0.5"),
        ("::1", ["2001:db8::1"], ("::1",), "2001:db8::1"),
        (None, [], (), "unknown"),
    ],
)
def test_client_address_believes_forwarded_for_only_from_trusted_proxies(
    peer: str | None, forwarded: list[str], trusted: tuple[str, ...], expected: str
) -> None:
    assert client_address(peer, forwarded, trusted_networks(trusted)) == expected


DEFAULT_UNLIMITED = trusted_networks(LimitsConfig().unlimited_networks)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("address", "limited"),
    [
        ("127.0.0.1", False),  # the operator's own host
        ("127.0.0.2", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4 mapped into IPv6 is itself
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("172.31.255.255", False),
        ("192.168.1.10", False),
        ("100.64.0.1", False),  # carrier-grade NAT / some clusters' pod range
        ("fd12:3456::1", False),
        ("fe80::1", False),
        ("172.32.0.1", True),  # just past 172.16.0.0/12
        ("8.8.8.8", True),
        ("198.51.100.1", True),
        ("2001:db8::1", True),
        ("::ffff:8.8.8.8", True),
        ("unknown", True),  # an address that cannot be read is limited
    ],
)
def test_only_public_clients_are_limited_by_default(address: str, limited: bool) -> None:
    assert is_limited(Caller("ip:" + address), address, DEFAULT_UNLIMITED) is limited


@pytest.mark.unit
def test_a_key_with_a_rate_of_its_own_is_limited_from_anywhere() -> None:
    own_rate = ClientKey("slow", "s" * 24, rate_per_s=1.0)
    default_rate = ClientKey("fast", "f" * 24)
    assert is_limited(Caller("key:slow", own_rate), "127.0.0.1", DEFAULT_UNLIMITED)
    assert not is_limited(Caller("key:fast", default_rate), "127.0.0.1", DEFAULT_UNLIMITED)
    assert is_limited(Caller("key:fast", default_rate), "8.8.8.8", DEFAULT_UNLIMITED)
    assert is_limited(Caller("ip:127.0.0.1"), "127.0.0.1", ())  # [] limits everyone


def _config_text(keys: str) -> str:
    return (
        "chains: [{name: devnet, chain_id: 31337, upstreams: [{url: 'http://127.0.0.1:1'}]}]\n"
        + keys
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ("auth: {keys: [{name: a, key: short}]}", "auth.keys[0].key: must be 16 characters"),
        (
            "auth: {keys: [{name: a, key: '${K}'}, {name: a, key: '${K2}'}]}",
            "auth.keys[1].name: 'a' is used by another key",
        ),
        (
            "auth: {keys: [{name: a, key: '${K}'}, {name: b, key: '${K}'}]}",
            "auth.keys[1].key: the same key is given twice",
        ),
        ("auth: {keys: [{name: a, key: '${K}', chains: [polygon]}]}", "auth.keys[0].chains[0]"),
        ("limits: {trusted_proxies: [not-an-ip]}", "limits.trusted_proxies[0]"),
        ("cors: {allowed_origins: [example.com]}", "cors.allowed_origins"),
    ],
)
def test_bad_auth_settings_are_refused_without_echoing_keys(keys: str, problem: str) -> None:
    env = {"K": "k" * 20 + "-secret-one", "K2": "k" * 20 + "-secret-two"}
    with pytest.raises(ConfigError) as raised:
        parse_config(_config_text(keys), env)
    text = str(raised.value)
    assert problem in text
    assert "secret" not in text and "short" not in text


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    captured = io.StringIO()
    configure_logging("debug", stream=captured, cache=False)
    try:
        yield captured
    finally:
        configure_logging("info", cache=False)


def test_keys_in_each_position_over_http(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory, log_lines: io.StringIO
) -> None:
    devnet = anvil_cluster(1, chain_id=31337, automine=True)
    other = anvil_cluster(1, chain_id=1337, automine=True)
    gateway = start_gateway(
        devnet.urls,
        chains=[
            {"name": "devnet", "chain_id": 31337, "upstreams": [{"url": devnet.urls[0]}]},
            {"name": "other", "chain_id": 1337, "upstreams": [{"url": other.urls[0]}]},
        ],
        auth={
            "keys": [
                {"name": ALICE.name, "key": ALICE.key},
                {"name": BOB.name, "key": BOB.key, "chains": ["other"]},
            ]
        },
    )
    call = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}
    served = [
        gateway.post(call, f"/devnet/{ALICE.key}"),
        gateway.post(call, "/devnet", {"X-Api-Key": ALICE.key}),
        gateway.post(call, "/devnet", {"Authorization": f"Bearer {ALICE.key}"}),
        gateway.post(call, f"/devnet?key={ALICE.key}"),
        gateway.post(call, f"/31337/{ALICE.key}"),
        gateway.post(call, f"/other/{BOB.key}"),
    ]
    assert [r.status for r in served] == [200] * 6
    assert [r.json()["result"] for r in served] == [hex(31337)] * 5 + [hex(1337)]

    refused = {
        "none": gateway.post(call, "/devnet"),
        "wrong": gateway.post(call, "/devnet/" + "x" * 32),
        "near miss": gateway.post(
            call,
            "/devnet",
            {"X-Api-Key": ALICE.key[:-1] + ("1" if ALICE.key.endswith("0") else "0")},
        ),
        "other chain": gateway.post(call, f"/devnet/{BOB.key}"),
        "root": gateway.post(call, "/"),
    }
    statuses = {name: reply.status for name, reply in refused.items()}
    assert statuses == {
        "none": 401,
        "wrong": 401,
        "near miss": 401,
        "other chain": 403,
        "root": 401,
    }
    for reply in refused.values():
        error = reply.json()["error"]
        assert error["code"] == -32056
        assert "result" not in reply.json()
    everything = log_lines.getvalue() + "".join(
        json.dumps(r.headers) + r.body.decode() for r in [*served, *refused.values()]
    )
    assert ALICE.key not in everything and BOB.key not in everything


def test_without_keys_the_gateway_is_open(
    anvil_cluster: AnvilClusterFactory, start_gateway: GatewayFactory
) -> None:
    gateway = start_gateway(anvil_cluster(1, automine=True).urls)
    assert gateway.rpc("eth_chainId").status == 200
    reply = gateway.post({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}, "/devnet/anything")
    assert reply.status == 200


@pytest.mark.unit
def test_callers_remembered_by_address_are_the_same_callers_and_stay_bounded() -> None:
    """Admission remembers who (peer, X-Forwarded-For) was, so that a client's next call
    skips working it out: the same answer as working it out, within a bound that a client
    sending a new X-Forwarded-For each time cannot pass."""
    config = config_from_data(
        {
            "limits": {"trusted_proxies": ["10.0.0.0/8"], "rate_per_s": 5},
            "chains": [{"name": "e", "chain_id": 1, "upstreams": [{"url": "http://127.0.0.1:1"}]}],
        }
    )
    admission = admission_module.Admission(config)

    def caller(peer: str, forwarded: str | None = None) -> Caller | Refusal:
        headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
        return admission.caller(
            path_key=None, headers=headers, query={}, peer=peer, chain_name="e", chain_id=1
        )

    cases = [
        ("203.0.113.9", None, "ip:203.0.113.9", True),
        ("10.0.0.1", "198.51.100.4", "ip:198.51.100.4", True),
        ("10.0.0.1", "198.51.100.4, 10.0.0.7", "ip:198.51.100.4", True),
        ("203.0.113.9", "198.51.100.4", "ip:203.0.113.9", True),  # not a trusted proxy
        ("127.0.0.1", None, "ip:127.0.0.1", False),  # unlimited_networks
    ]
    for _ in range(2):  # worked out, then remembered
        for peer, forwarded, identity, limited in cases:
            found = caller(peer, forwarded)
            assert isinstance(found, Caller)
            assert (found.identity, found.limited) == (identity, limited), (peer, forwarded)
    for n in range(admission_module._MAX_REMEMBERED + 50):
        caller("10.0.0.1", f"198.51.{n // 256}.{n % 256}")
    assert len(admission._by_address) <= admission_module._MAX_REMEMBERED
    admission._by_address.clear()
    long_line = ", ".join(f"198.51.100.{n}" for n in range(30))
    assert isinstance(caller("10.0.0.1", long_line), Caller)
    assert admission._by_address == {}  # a long X-Forwarded-For is not a key
