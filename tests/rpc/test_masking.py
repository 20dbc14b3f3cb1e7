"""An upstream's secret never appears in a log line, an error, or any output."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import yaml

from rpcgate.rpc.logs import configure_logging
from rpcgate.rpc.masking import MASK, SecretMasker, mask_url, url_secrets
from tests.conftest import GatewayFactory
from tests.harness.anvil import DEV_ADDRESSES
from tests.harness.faultproxy import Fault
from tests.harness.fixtures import AnvilClusterFactory, FaultProxyFactory

INFURA_KEY = "84842078b09946638c03157f83405213"
ALCHEMY_KEY = "Xy7kd9Ql2mZ3pQ8rT5vW1nB6cJ4hF0aS"
AMB_TOKEN = "eyJhbGciOiJIUzI1NiJ9.accessortoken"
ENCODED_KEY = "Xy7kd9Ql2mZ3%2FpQ8rT5vW1nB6c%21J4hF0aS"  # "/" and "!" percent-encoded

URL_CASES = [
    pytest.param(
        f"https://mainnet.infura.io/v3/{INFURA_KEY}",
        "https://mainnet.infura.io/v3/***",
        [INFURA_KEY],
        id="infura-key-in-path",
    ),
    pytest.param(
        f"https://eth-mainnet.g.alchemy.com/v2/{ALCHEMY_KEY}",
        "https://eth-mainnet.g.alchemy.com/v2/***",
        [ALCHEMY_KEY],
        id="alchemy",
    ),
    pytest.param(
        f"https://my-node.quiknode.pro/{INFURA_KEY}/",
        "https://my-node.quiknode.pro/***/",
        [INFURA_KEY],
        id="quicknode-token",
    ),
    pytest.param(
        "https://nd-123.t.ethereum.managedblockchain.us-east-1.amazonaws.com/"
        f"?billingtoken={AMB_TOKEN}",
        "https://nd-123.t.ethereum.managedblockchain.us-east-1.amazonaws.com/?billingtoken=***",
        [AMB_TOKEN],
        id="amb-token-in-query",
    ),
    pytest.param(
        f"https://lb.drpc.org/ogrpc?network=ethereum&dkey={ALCHEMY_KEY}",
        "https://lb.drpc.org/ogrpc?network=ethereum&dkey=***",
        [ALCHEMY_KEY],
        id="drpc-dkey-in-query",
    ),
    pytest.param(
        "https://user:hunter2-password@node.example:8545/",
        "https://***@node.example:8545/",
        ["hunter2-password"],
        id="basic-auth",
    ),
    pytest.param(
        f"https://lb.drpc.org/ogrpc?network=ethereum&dkey={ENCODED_KEY}",
        "https://lb.drpc.org/ogrpc?network=ethereum&dkey=***",
        [ENCODED_KEY],
        id="percent-encoded-query-key-as-written",
    ),
    pytest.param("https://eth.drpc.org", "https://eth.drpc.org", [], id="keyless"),
    pytest.param(
        "https://ethereum-rpc.publicnode.com",
        "https://ethereum-rpc.publicnode.com",
        [],
        id="keyless-long-hostname",
    ),
]


@pytest.mark.unit
@pytest.mark.parametrize(("url", "shown", "secrets"), URL_CASES)
def test_mask_url_hides_credentials_and_keeps_the_rest(
    url: str, shown: str, secrets: list[str]
) -> None:
    assert mask_url(url) == shown
    assert set(url_secrets(url)) >= set(secrets)
    for secret in secrets:
        assert secret not in mask_url(url)


@pytest.mark.unit
def test_masker_scrubs_secrets_from_nested_values_and_exceptions() -> None:
    masker = SecretMasker()
    masker.add_url(f"https://mainnet.infura.io/v3/{INFURA_KEY}")
    event = {
        "msg": f"failed {INFURA_KEY}",
        "nested": [{"url": f"/v3/{INFURA_KEY}"}],
        "exc": ConnectionError(f"cannot reach /v3/{INFURA_KEY}"),
    }
    masked = masker.mask_any(event)
    assert INFURA_KEY not in repr(masked)
    assert masked["msg"] == f"failed {MASK}"


# (how the secret is configured, how it shows up in some text): the masker must catch it.
SECRET_SIGHTINGS = [
    pytest.param(
        ("url", f"https://lb.drpc.org/ogrpc?dkey={ENCODED_KEY}"),
        "invalid dkey Xy7kd9Ql2mZ3/pQ8rT5vW1nB6c!J4hF0aS",
        id="query-key-decoded-by-the-provider",
    ),
    pytest.param(
        ("url", f"https://lb.drpc.org/ogrpc?dkey={ENCODED_KEY}"),
        "GET /ogrpc?dkey=Xy7kd9Ql2mZ3%2fpQ8rT5vW1nB6c%21J4hF0aS",
        id="query-key-encoded-anew-lower-case",
    ),
    pytest.param(
        ("url", f"https://user:{ENCODED_KEY}@node.example/"),
        "Cannot connect to http://user:Xy7kd9Ql2mZ3/pQ8rT5vW1nB6c!J4hF0aS@node.example/",
        id="password-as-yarl-shows-it",
    ),
    pytest.param(
        ("url", f"https://user:{ENCODED_KEY}@node.example/"),
        "Authorization: Basic dXNlcjpYeTdrZDlRbDJtWjMvcFE4clQ1dlcxbkI2YyFKNGhGMGFT",
        id="password-as-the-basic-auth-header-carries-it",
    ),
    pytest.param(
        ("header", f"Bearer {ALCHEMY_KEY}"),
        f"invalid token {ALCHEMY_KEY}",
        id="bearer-token-quoted-alone",
    ),
    pytest.param(
        ("header", "Basic dXNlcjpYeTdrZDlRbDJtWjMvcFE4clQ1dlcxbkI2YyFKNGhGMGFT"),
        "password Xy7kd9Ql2mZ3/pQ8rT5vW1nB6c!J4hF0aS rejected",
        id="password-inside-a-basic-auth-header",
    ),
    pytest.param(
        ("header", "token with spaces and more"),
        "header was token+with+spaces+and+more",
        id="form-encoded-spaces",
    ),
]


@pytest.mark.unit
@pytest.mark.parametrize(("configured", "text"), SECRET_SIGHTINGS)
def test_masker_catches_a_secret_in_every_form_it_travels_in(
    configured: tuple[str, str], text: str
) -> None:
    masker = SecretMasker()
    kind, value = configured
    if kind == "url":
        masker.add_url(value)
    else:
        masker.add(value)
    masked = masker.mask(text)
    assert MASK in masked
    for part in ("Xy7kd9Ql2mZ3", ALCHEMY_KEY, "dXNlcj", "with+spaces"):
        assert part not in masked


@pytest.mark.unit
def test_masking_an_auth_header_leaves_its_scheme_readable() -> None:
    masker = SecretMasker()
    masker.add(f"Bearer {ALCHEMY_KEY}")
    hint = "the admin endpoint needs `Authorization: Bearer <admin.token>`"
    assert masker.mask(hint) == hint
    assert masker.mask(f"Authorization: Bearer {ALCHEMY_KEY}") == f"Authorization: {MASK}"


def test_secret_in_path_never_reaches_logs_or_client_errors(
    anvil_cluster: AnvilClusterFactory,
    fault_proxy: FaultProxyFactory,
    start_gateway: GatewayFactory,
) -> None:
    cluster = anvil_cluster(1)
    proxy = fault_proxy(cluster.urls[0])
    captured = io.StringIO()
    configure_logging("debug", stream=captured, cache=False)
    try:
        gateway = start_gateway(
            [], upstreams=[{"name": "infura", "url": f"{proxy.url}/v3/{INFURA_KEY}"}]
        )
        # A provider that echoes the key back in its error text, as some do.
        proxy.set_fault(
            Fault.RPC_ERROR,
            error_code=-32000,
            error_message=f"invalid project id {INFURA_KEY} (unauthorized)",
        )
        call = ("eth_getBalance", [DEV_ADDRESSES[0], "0x0"])
        replies = [gateway.rpc(*call).body.decode() for _ in range(4)]
        gateway.sync()
        replies += [gateway.rpc(*call).body.decode() for _ in range(2)]
        proxy.set_fault(Fault.HTTP_5XX)
        replies += [gateway.rpc(*call).body.decode() for _ in range(2)]
    finally:
        configure_logging("info", cache=False)
    log_text = captured.getvalue()
    assert "upstream_cooldown" in log_text  # the failures were logged...
    for text in [*replies, log_text]:
        assert INFURA_KEY not in text  # ...without the key
    assert any(MASK in r for r in replies)


def test_check_prints_masked_urls(
    anvil_cluster: AnvilClusterFactory, fault_proxy: FaultProxyFactory, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    cluster = anvil_cluster(1)
    proxy = fault_proxy(cluster.urls[0])
    config = {
        "chains": [
            {
                "name": "devnet",
                "chain_id": cluster.chain_id,
                "upstreams": [{"name": "keyed", "url": f"{proxy.url}/v3/{INFURA_KEY}"}],
            }
        ]
    }
    path = tmp_path / "rpcgate.yaml"
    path.write_text(yaml.safe_dump(config))
    done = subprocess.run(
        [sys.executable, "-m", "rpcgate.cli", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert INFURA_KEY not in done.stdout + done.stderr
    assert "keyed" in done.stdout
    json.dumps(done.stdout)  # printable
