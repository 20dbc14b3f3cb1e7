"""The secret grep: whatever fails, no upstream key reaches anyone.

One gateway process serves upstreams addressed the ways providers take keys (in the path,
in the query, as basic-auth userinfo, in an Authorization header), real anvil nodes behind
fault proxies, plus three that never answer (a refused port, a name that does not resolve,
a TLS handshake with a plain-HTTP node). Every fault mode is applied in turn, with calls
that fail in every way a caller can make them fail, a drill through the admin endpoint, a
config reload with new keys (and two refused ones), and the CLI run on those configs. Then
every answer, every header, every log line, status.json, the status page as a browser
renders it, the metrics and the CLI outputs are searched for every key, as written and
percent-decoded or encoded: not one hit.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, unquote_plus

import aiohttp
import yaml

from rpcgate.rpc.masking import MASK
from tests.conftest import ProxiedClusterFactory
from tests.harness.anvil import DEV_ADDRESSES
from tests.harness.browser import Browser
from tests.harness.faultproxy import Fault, FaultProxy
from tests.harness.loop import BackgroundLoop
from tests.harness.tools import free_port, rpcgate_command, wait_for_http

CHAIN_ID = 31337
REVERTING_INIT_CODE = "0x60006000fd"  # PUSH1 0 PUSH1 0 REVERT: eth_call without `to` reverts
TRACE = {"X-Rpcgate-Trace": "1", "Cache-Control": "no-cache"}
# This many hex digits of a key in a row are a leak, even without the rest: a quoted snippet
# (a YAML error shows about 35 characters either side of the problem) may cut a key.
KEY_PART_CHARS = 16
HEX_RUN = re.compile(rf"[0-9a-fA-F]{{{KEY_PART_CHARS},}}")
# How each fault mode shows in a traced answer's failed attempts.
FAULT_SHOWS_AS = {
    Fault.REFUSE: "transient",
    Fault.HANG: "transient",
    Fault.HTTP_5XX: "transient",
    Fault.HTTP_429: "rate_limited",
    Fault.RPC_ERROR: "transient",
    Fault.GARBAGE: "transient",
}
UPSTREAMS_SHOWN = """document.querySelectorAll('[data-chain="devnet"] tr[data-upstream]').length"""


def _key(prefix: str = "") -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class Keys:
    """Every secret of this run, fresh each time, as the config writes them."""

    path: str = field(default_factory=_key)  # Infura: /v3/<key>
    apikey: str = field(default_factory=_key)  # ?apikey=<key>
    # dRPC's dkey, percent-encoded in the URL: servers and yarl show it decoded ("/").
    dkey: str = field(default_factory=lambda: f"{_key()}%2F{secrets.token_hex(8)}")
    user: str = field(default_factory=lambda: "rpcgate-" + secrets.token_hex(4))
    # Basic-auth password, percent-encoded in the URL: it goes out decoded ("!").
    password: str = field(default_factory=lambda: f"{_key()}%21{secrets.token_hex(8)}")
    bearer: str = field(default_factory=_key)  # Authorization: Bearer <key>
    refused: str = field(default_factory=_key)
    unresolved: str = field(default_factory=_key)
    tls: str = field(default_factory=_key)
    admin: str = field(default_factory=_key)
    reloaded_path: str = field(default_factory=_key)
    reloaded_bearer: str = field(default_factory=_key)
    broken_yaml: str = field(default_factory=_key)
    refused_config: str = field(default_factory=_key)

    def forms(self) -> dict[str, str]:
        """Every string whose presence anywhere is a leak, named by what it is."""
        found: dict[str, str] = {}
        for name, written in vars(self).items():
            if name == "user":
                continue  # a user name is not a secret; its pair with the password is
            decoded = unquote(written)
            for form_name, form in (
                ("", written),
                (" decoded", decoded),
                (" encoded", quote(decoded, safe="")),
                (" form-decoded", unquote_plus(written)),
            ):
                found.setdefault(form, name + form_name)
        credentials = f"{self.user}:{unquote(self.password)}".encode()
        found[base64.b64encode(credentials).decode()] = "basic-auth header"
        return found


@dataclass
class Exchange:
    what: str
    status: int
    headers: dict[str, str]
    body: str

    def text(self) -> str:
        headers = "\n".join(f"{name}: {value}" for name, value in self.headers.items())
        return f"{self.what} -> {self.status}\n{headers}\n\n{self.body}"


@dataclass
class Evidence:
    """Everything the outside world got to see, to grep."""

    exchanges: list[Exchange] = field(default_factory=list)
    texts: list[tuple[str, str]] = field(default_factory=list)  # (where, text)

    def everything(self) -> Iterator[tuple[str, str]]:
        for exchange in self.exchanges:
            yield exchange.what, exchange.text()
        yield from self.texts


def upstream_configs(proxies: list[FaultProxy], keys: Keys, dead: dict[str, str]) -> list[Any]:
    return [
        {"name": "infura", "url": f"{proxies[0].url}/v3/{keys.path}", "domain": "infura"},
        {
            "name": "drpc",
            "url": f"{proxies[1].url}/ogrpc?network=devnet&apikey={keys.apikey}&dkey={keys.dkey}",
            "domain": "drpc",
        },
        {
            "name": "basic",
            "url": proxies[2].url.replace("://", f"://{keys.user}:{keys.password}@") + "/",
            "domain": "own",
        },
        {
            "name": "bearer",
            "url": f"{proxies[3].url}/rpc",
            "headers": {"Authorization": f"Bearer {keys.bearer}"},
            "domain": "bearer",
        },
        {"name": "refused", "url": f"{dead['refused']}/v3/{keys.refused}"},
        {"name": "unresolved", "url": f"{dead['unresolved']}/v3/{keys.unresolved}"},
        {"name": "tls", "url": f"{dead['tls']}/v2/{keys.tls}?apikey={keys.tls}"},
    ]


def gateway_file(port: int, upstreams: list[Any], admin_token: str) -> str:
    return yaml.safe_dump(
        {
            "listen": f"127.0.0.1:{port}",
            "log_level": "debug",
            "failover": {
                "attempt_timeout_s": 0.5,
                "deadline_s": 2.0,
                "max_attempts": 8,
                "hedge_delay_max_s": 0.2,
            },
            "shutdown": {"grace_s": 0, "timeout_s": 2},
            "admin": {"token": admin_token},
            "chains": [
                {
                    "name": "devnet",
                    "chain_id": CHAIN_ID,
                    "head_poll_interval": 0.2,
                    "upstreams": upstreams,
                }
            ],
        }
    )


def echoing_keys(proxy_keys: list[str]) -> str:
    """A provider error that quotes the key it was sent, as written and as it decoded it."""
    shown = " ".join(f"{k} {unquote(k)}" for k in proxy_keys)
    return f"internal error: backend refused credentials {shown}"


def calls() -> list[tuple[str, Any, dict[str, str]]]:
    """Calls that fail in every way a caller can make them fail, plain and traced."""

    def call(method: str, params: list[Any], id_: int = 1) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": id_, "method": method, "params": params}

    singles = [
        call("eth_blockNumber", []),
        call("eth_getBalance", [DEV_ADDRESSES[0], "latest"]),
        call("eth_call", [{"data": REVERTING_INIT_CODE}, "latest"]),
        call("eth_sendRawTransaction", ["0xdeadbeef"]),
        call("eth_noSuchMethodAnywhere", []),
        call("eth_getLogs", [{"fromBlock": "0x1", "toBlock": "0x6"}]),
    ]
    batch = [
        call("eth_chainId", [], 1),
        call("eth_getBalance", [DEV_ADDRESSES[1], "0x2"], 2),
        call("eth_noSuchMethodAnywhere", [], 3),
        call("eth_getBlockByNumber", ["0x3", False], 4),
    ]
    plain: list[tuple[str, Any, dict[str, str]]] = [
        (f"POST / {body['method']}", body, {}) for body in singles
    ]
    traced = [(f"POST / {body['method']} traced", body, TRACE) for body in singles]
    return [
        *plain,
        *traced,
        ("POST / batch", batch, {}),
        ("POST / batch traced", batch, TRACE),
    ]


class Client:
    """The gateway's callers: every exchange is kept, whole, as evidence."""

    def __init__(self, loop: BackgroundLoop, url: str, evidence: Evidence) -> None:
        self.loop = loop
        self.url = url
        self.evidence = evidence

    async def _one(
        self, session: aiohttp.ClientSession, what: str, method: str, path: str, **kwargs: Any
    ) -> Exchange:
        async with session.request(method, self.url + path, **kwargs) as resp:
            body = (await resp.read()).decode("utf-8", "replace")
            return Exchange(what, resp.status, dict(resp.headers), body)

    def run(self, requests: list[tuple[str, str, str, dict[str, Any]]]) -> list[Exchange]:
        """(what, method, path, aiohttp kwargs) sent at once; the exchanges, in order."""

        async def send_all() -> list[Exchange]:
            timeout = aiohttp.ClientTimeout(total=15)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                return list(
                    await asyncio.gather(
                        *(self._one(session, *request[:3], **request[3]) for request in requests)
                    )
                )

        exchanges = self.loop.run(send_all(), timeout=30)
        self.evidence.exchanges.extend(exchanges)
        return exchanges

    def calls(self, label: str) -> list[Exchange]:
        return self.run(
            [
                (f"{label}: {what}", "POST", "/", {"json": body, "headers": headers})
                for what, body, headers in calls()
            ]
        )

    def pages(self, label: str) -> list[Exchange]:
        paths = ("/status.json", "/status", "/metrics", "/readyz", "/healthz", "/")
        return self.run([(f"{label}: GET {path}", "GET", path, {}) for path in paths])


class GatewayProcess:
    """`rpcgate serve` with every byte of its stdout and stderr kept in files."""

    def __init__(self, config: Path, port: int, folder: Path) -> None:
        self.config = config
        self.url = f"http://127.0.0.1:{port}"
        self.stdout = folder / "gateway.stdout"
        self.stderr = folder / "gateway.stderr"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen(
                [*rpcgate_command(), "serve", "--config", str(config)], stdout=out, stderr=err
            )
        wait_for_http(self.url + "/healthz")

    def stdout_text(self) -> str:
        return self.stdout.read_text(errors="replace")

    def stderr_text(self) -> str:
        return self.stderr.read_text(errors="replace")

    def log(self) -> str:
        return self.stdout_text() + self.stderr_text()

    def reload(self, text: str, expect: str) -> None:
        """Writes the config file, sends SIGHUP, and waits for one more `expect` log line."""
        seen = self.log().count(expect)
        self.config.write_text(text)
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while self.log().count(expect) <= seen:
            assert time.monotonic() < deadline, f"no {expect} after SIGHUP:\n{self.log()[-3000:]}"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def run_cli(evidence: Evidence, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*rpcgate_command(), *args], capture_output=True, text=True, timeout=30, check=False
    )
    evidence.texts.append((f"rpcgate {' '.join(args)}", done.stdout + done.stderr))
    return done


def set_faults(
    proxies: list[FaultProxy], fault: Fault, keys: list[list[str]], spare: int | None
) -> None:
    """`fault` on every proxy but `spare` (left healthy); a provider's errors quote its keys."""
    for i, proxy in enumerate(proxies):
        if i == spare:
            proxy.heal()
        elif fault is Fault.RPC_ERROR:
            proxy.set_fault(fault, error_code=-32603, error_message=echoing_keys(keys[i]))
        elif fault is Fault.LOGS_RANGE_LIMIT:
            message = (
                "query returned more than 10000 results. Try with this block range "
                f"[{{from_block}}, {{to_block}}]. ({echoing_keys(keys[i])})"
            )
            proxy.set_fault(fault, error_code=-32005, error_message=message, max_blocks=2)
        elif fault is Fault.LATENCY:
            proxy.set_fault(fault, delay=0.3)
        else:
            proxy.set_fault(fault)


def leaks(evidence: Evidence, forms: dict[str, str]) -> list[str]:
    """One line per secret and place it was found (an example with its context). A key is
    found whole, or as KEY_PART_CHARS of its hex digits in a row (a snippet may cut it)."""
    whole = re.compile("|".join(map(re.escape, sorted(forms, key=len, reverse=True))))
    parts = {
        run[i : i + KEY_PART_CHARS]: f"{name} (part)"
        for form, name in forms.items()
        for run in HEX_RUN.findall(form)
        for i in range(len(run) - KEY_PART_CHARS + 1)
    }
    found: dict[tuple[str, str], list[str]] = {}
    for where, text in evidence.everything():
        place = where.split(": ", 1)[-1]  # the request or output, without the phase
        hits = [(hit.span(), forms[hit.group()]) for hit in whole.finditer(text)]
        for run in HEX_RUN.finditer(text):
            windows = range(run.start(), run.end() - KEY_PART_CHARS + 1)
            part = next(
                (
                    text[i : i + KEY_PART_CHARS]
                    for i in windows
                    if text[i : i + KEY_PART_CHARS] in parts
                ),
                None,
            )
            if part is not None and not any(a <= run.start() < b for (a, b), _ in hits):
                hits.append((run.span(), parts[part]))
        for (start, end), secret in hits:
            context = text[max(0, start - 100) : end + 20].replace("\n", "\\n")
            found.setdefault((secret, place), []).append(f"{where}: ...{context}")
    return [
        f"{secret} in {place} ({len(hits)}x), e.g. {hits[0]}"
        for (secret, place), hits in sorted(found.items())
    ]


def every_fault_mode(
    proxies: list[FaultProxy], client: Client, proxy_keys: list[list[str]]
) -> dict[Fault, int]:
    """Each fault mode in turn, first with one upstream left to fail over to, then on all
    four; the requests the proxies got in each mode."""
    seen_by_proxies: dict[Fault, int] = {}
    for turn, fault in enumerate(Fault):
        for proxy in proxies:
            proxy.reset_counts()
        for spare in (turn % len(proxies), None):
            set_faults(proxies, fault, proxy_keys, spare)
            time.sleep(0.3)  # a head poll or two meets the fault
            client.calls(f"{fault.name} spare={spare}")
        client.pages(f"{fault.name} everywhere")
        seen_by_proxies[fault] = sum(proxy.request_count for proxy in proxies)
    for proxy in proxies:
        proxy.heal()
    return seen_by_proxies


def drill_through_the_admin_endpoint(client: Client, token: str) -> None:
    admin = {"Authorization": f"Bearer {token}"}
    drill = {"upstream": "infura", "seconds": 1, "by": "secret grep", "reason": "rehearsal"}
    wrong = {"Authorization": "Bearer not-the-token"}
    client.run(
        [
            ("admin: no token", "GET", "/admin/drills", {}),
            ("admin: wrong token", "GET", "/admin/drills", {"headers": wrong}),
            ("admin: start a drill", "POST", "/admin/drills", {"json": drill, "headers": admin}),
        ]
    )
    client.run([("admin: drills", "GET", "/admin/drills", {"headers": admin})])
    client.pages("during a drill")


def show_status_page(loop: BackgroundLoop, url: str, evidence: Evidence) -> None:
    """/status as a browser renders it: its text and its HTML after the script ran."""
    with Browser(loop) as browser:
        browser.navigate(url + "/status")
        browser.wait_until(
            lambda: (
                browser.evaluate(UPSTREAMS_SHOWN) == 7
                and browser.evaluate("window.rpcgateStatusPage.refreshes") >= 2
            ),
            what="the status page showing all seven upstreams",
        )
        evidence.texts += [
            ("/status page text", browser.evaluate("document.body.innerText")),
            ("/status page html", browser.evaluate("document.documentElement.outerHTML")),
            ("/status page requests", "\n".join(browser.requests)),
            ("/status page errors", "\n".join(browser.errors)),
        ]


def failed_attempts(evidence: Evidence, label: str) -> set[str]:
    """The error classes of the failed attempts traced in the answers of one phase."""
    classes = set()
    for exchange in evidence.exchanges:
        if exchange.what.startswith(label) and exchange.what.endswith("traced"):
            answer = json.loads(exchange.body)
            for item in answer if isinstance(answer, list) else [answer]:
                attempts = item.get("trace", {}).get("attempts", [])
                classes |= {a["result"] for a in attempts if a["result"] != "ok"}
    return classes


def test_no_key_reaches_any_answer_log_page_metric_or_cli_output(
    proxied_cluster: ProxiedClusterFactory, background_loop: BackgroundLoop, tmp_path: Path
) -> None:
    keys = Keys()
    cluster, proxies = proxied_cluster(4, chain_id=CHAIN_ID, mined=8)
    dead = {
        "refused": f"http://127.0.0.1:{free_port()}",
        "unresolved": f"http://rpc-{secrets.token_hex(4)}.invalid",
        "tls": cluster.urls[0].replace("http://", "https://"),  # TLS to a plain-HTTP node
    }
    proxy_keys = [[keys.path], [keys.apikey, keys.dkey], [keys.password], [keys.bearer]]
    evidence = Evidence()
    port = free_port()
    config = tmp_path / "rpcgate.yaml"
    config.write_text(gateway_file(port, upstream_configs(proxies, keys, dead), keys.admin))
    gateway = GatewayProcess(config, port, tmp_path)
    client = Client(background_loop, gateway.url, evidence)
    try:
        seen_by_proxies = every_fault_mode(proxies, client, proxy_keys)
        drill_through_the_admin_endpoint(client, keys.admin)

        # A reload with new keys, then a file that is not YAML and one that is not valid,
        # each with a key the gateway has never seen.
        reloaded = upstream_configs(proxies, keys, dead)
        reloaded[0]["url"] = f"{proxies[0].url}/v3/{keys.reloaded_path}"
        reloaded[3]["headers"] = {"Authorization": f"Bearer {keys.reloaded_bearer}"}
        good = gateway_file(port, reloaded, keys.admin)
        gateway.reload(good, "config_reloaded")
        proxy_keys = [[keys.reloaded_path], proxy_keys[1], proxy_keys[2], [keys.reloaded_bearer]]
        set_faults(proxies, Fault.RPC_ERROR, proxy_keys, spare=1)
        time.sleep(0.3)
        client.calls("after the reload")
        # An operator's slip: two settings on the line with the new key.
        broken = good.replace(
            f"url: {proxies[0].url}/v3/{keys.reloaded_path}",
            f"url: {proxies[0].url}/v3/{keys.broken_yaml} weight: 2",
        )
        assert broken != good
        gateway.reload(broken, "reload_refused")
        unused = {"url": f"{proxies[0].url}/v3/{keys.refused_config}", "weight": 0}
        invalid = gateway_file(port, [*reloaded, unused], keys.admin)
        gateway.reload(invalid, "reload_refused")

        # Upstreams failing and quoting their keys while the status page is watched.
        proxies[2].set_fault(Fault.REFUSE)
        show_status_page(background_loop, gateway.url, evidence)
        client.pages("finally")

        files = {"good": good, "broken": broken, "invalid": invalid}
        for name, text in files.items():
            (tmp_path / f"{name}.yaml").write_text(text)
            run_cli(evidence, "config", "validate", str(tmp_path / f"{name}.yaml"))
        checked = run_cli(
            evidence, "check", "--config", str(tmp_path / "good.yaml"), "--timeout", "2"
        )
        refused_start = run_cli(evidence, "serve", "--config", str(tmp_path / "broken.yaml"))
    finally:
        exit_code = gateway.stop()
    log = gateway.log()
    evidence.texts += [
        ("gateway stdout", gateway.stdout_text()),
        ("gateway stderr", gateway.stderr_text()),
    ]
    (tmp_path / "evidence.txt").write_text(
        "\n\n".join(f"== {w}\n{t}" for w, t in evidence.everything())
    )

    leaked = leaks(evidence, keys.forms())
    assert not leaked, "\n".join(leaked)

    # ...and not vacuously: every fault was met, failed over, answered and logged.
    assert exit_code == 0, log[-3000:]
    assert all(seen_by_proxies[f] > 0 for f in Fault if f is not Fault.REFUSE), seen_by_proxies
    for fault, error_class in FAULT_SHOWS_AS.items():
        assert error_class in failed_attempts(evidence, fault.name), fault
    # Refused as too large everywhere, eth_getLogs was fetched in parts (its trace is short).
    (in_parts,) = [
        e for e in evidence.exchanges if e.what == "LOGS_RANGE_LIMIT spare=None: POST / eth_getLogs"
    ]
    assert "result" in json.loads(in_parts.body) and int(in_parts.headers["X-Rpcgate-Attempts"]) > 1
    answers = [json.loads(e.body) for e in evidence.exchanges if e.what.endswith("traced")]
    items = [a for answer in answers for a in (answer if isinstance(answer, list) else [answer])]
    assert any(
        "result" in item and any(a["result"] != "ok" for a in item["trace"].get("attempts", []))
        for item in items
    ), "no traced call was answered after a failed attempt"
    assert any("error" in item for item in items)
    assert any(MASK in e.body for e in evidence.exchanges), "no echoed key was ever masked"
    for line in (
        "upstream_cooldown",
        "call_failed",
        "upstream_state",
        "connection refused",
        "DNS: name not resolved",
        "TLS: handshake failed",
        "timeout",
        "bad_json",
        "HTTP 503",
        "HTTP 429",
        "config_reloaded",
        "reload_refused",
        '"level":"debug"',
    ):
        assert line in log, f"no {line!r} in the gateway's log"
    assert checked.returncode == 0 and "infura" in checked.stdout, checked.stdout + checked.stderr
    assert refused_start.returncode == 2
