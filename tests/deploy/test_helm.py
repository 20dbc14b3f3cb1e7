"""The Helm chart (helm/rpcgate/) as helm renders it: linted, rendered with the default values
and with every option on (ci/all-on-values.yaml), every manifest validated against the
Kubernetes 1.30 schemas in strict mode, and the config it mounts loaded by rpcgate itself."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from rpcgate.config.settings import OpsConfig, load_config, parse_config
from rpcgate.edge.admission import Admission
from rpcgate.edge.clients import Caller
from tests.harness.helm import (
    ALL_ON_VALUES,
    CHART_DIR,
    KUBE_VERSION,
    find,
    helm_binary,
    render,
    run_helm,
    template,
    value_args,
)

Manifests = list[dict[str, Any]]
VALUES = {"default": (), "all-on": (ALL_ON_VALUES,)}


@pytest.fixture(scope="module", autouse=True)
def helm() -> str:
    try:
        return helm_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def default() -> Manifests:
    return render()


@pytest.fixture(scope="module")
def all_on() -> Manifests:
    return render([ALL_ON_VALUES])


@pytest.fixture(scope="module", params=list(VALUES))
def manifests(request: pytest.FixtureRequest, default: Manifests, all_on: Manifests) -> Manifests:
    return default if request.param == "default" else all_on


def _config_text(manifests: Manifests) -> str:
    text: str = find(manifests, "ConfigMap")["data"]["config.yaml"]
    return text


def _pod_env(manifests: Manifests) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = find(manifests, "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    return env


def _secret_env(manifests: Manifests) -> dict[str, str]:
    return {e["name"]: "k3y" for e in _pod_env(manifests) if "valueFrom" in e}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


# --- helm lint and the Kubernetes schemas ---------------------------------------------------


@pytest.mark.parametrize("values", list(VALUES))
def test_helm_lint_passes_strict(values: str) -> None:
    args = value_args(VALUES[values])
    result = run_helm("lint", "--strict", "--kube-version", KUBE_VERSION, str(CHART_DIR), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_default_renders_the_gateway_only(default: Manifests) -> None:
    assert sorted((m["kind"], m["metadata"]["name"]) for m in default) == [
        ("ConfigMap", "rel-rpcgate"),
        ("Deployment", "rel-rpcgate"),
        ("Service", "rel-rpcgate"),
        ("Service", "rel-rpcgate-ops"),  # metrics, status and admin: not the clients' Service
    ]


def test_all_on_renders_every_option(all_on: Manifests) -> None:
    assert sorted((m["kind"], m["metadata"]["name"]) for m in all_on) == [
        ("ConfigMap", "rel-rpcgate"),
        ("ConfigMap", "rel-rpcgate-dashboard"),
        ("Deployment", "rel-rpcgate"),
        ("Deployment", "rel-rpcgate-redis"),
        ("HorizontalPodAutoscaler", "rel-rpcgate"),
        ("PodDisruptionBudget", "rel-rpcgate"),
        ("Service", "rel-rpcgate"),
        ("Service", "rel-rpcgate-ops"),
        ("Service", "rel-rpcgate-redis"),
        ("ServiceMonitor", "rel-rpcgate"),
    ]


def test_every_manifest_validates_strictly_against_kubernetes_1_30(manifests: Manifests) -> None:
    for manifest in manifests:
        if manifest["kind"] == "ServiceMonitor":
            continue  # a CRD: not in Kubernetes' schemas, checked structurally below
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        try:
            version = kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is not valid Kubernetes {KUBE_VERSION}: {exc.message}")
        assert version == "1.30", f"{name} was validated against {version}, not 1.30"


def test_service_monitor_scrapes_metrics_on_the_operations_port_only(all_on: Manifests) -> None:
    # monitoring.coreos.com/v1 is the Prometheus Operator's CRD, whose schema is not among
    # Kubernetes' own: the fields that matter are checked by hand against the Services.
    monitor = find(all_on, "ServiceMonitor")
    clients = find(all_on, "Service")
    ops = find(all_on, "Service", "-ops")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert _selects(selector, ops["metadata"]["labels"])
    assert not _selects(selector, clients["metadata"]["labels"])  # metrics are not there
    redis_service = find(all_on, "Service", "-redis")
    assert not _selects(selector, redis_service["metadata"]["labels"])
    assert [(e["port"], e["path"]) for e in monitor["spec"]["endpoints"]] == [("ops", "/metrics")]
    assert [p["name"] for p in ops["spec"]["ports"]] == ["ops"]
    assert set(monitor["spec"]) == {"selector", "endpoints"}
    assert set(monitor["spec"]["endpoints"][0]) == {"port", "path", "interval", "scrapeTimeout"}


def test_the_clients_service_exposes_the_rpc_port_only(manifests: Manifests) -> None:
    config = parse_config(_config_text(manifests), env=_secret_env(manifests), source="chart")
    assert config.ops.listen == "0.0.0.0:9545"
    clients = find(manifests, "Service")
    assert [(p["name"], p["targetPort"]) for p in clients["spec"]["ports"]] == [("http", "http")]
    ops = find(manifests, "Service", "-ops")
    assert ops["spec"]["type"] == "ClusterIP"
    container = find(manifests, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8545, "ops": 9545}


def test_without_an_operations_port_metrics_are_scraped_on_http() -> None:
    manifests = render(set_values=["config.ops.listen=null", "serviceMonitor.enabled=true"])
    assert parse_config(_config_text(manifests), env={}).ops.listen is None
    monitor = find(manifests, "ServiceMonitor")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
    assert _selects(
        monitor["spec"]["selector"]["matchLabels"], find(manifests, "Service")["metadata"]["labels"]
    )
    assert [m for m in manifests if m["metadata"]["name"].endswith("-ops")] == []


def test_the_chart_limits_every_client_even_from_a_private_address(manifests: Manifests) -> None:
    """A public client can reach a pod with a node's private address (a LoadBalancer
    Service's SNAT, no X-Forwarded-For): in the chart no address is spared."""
    config = parse_config(_config_text(manifests), env=_secret_env(manifests), source="chart")
    admission = Admission(config)

    def limited(peer: str, forwarded: str | None = None) -> bool:
        headers = {} if forwarded is None else {"X-Forwarded-For": forwarded}
        caller = admission.caller(
            path_key=None, headers=headers, query={}, peer=peer, chain_name="ethereum", chain_id=1
        )
        assert isinstance(caller, Caller)
        return caller.limited

    assert limited("10.1.2.3")  # a node's address after SNAT
    assert limited("10.1.2.3", "198.51.100.4")  # an ingress passing the client's address
    assert limited("127.0.0.1")


# --- values.schema.json --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ('replicaCount: "two"\nresources: 5\n', ["replicaCount", "resources"]),
        ("config:\n  listen: 127.0.0.1:8545\n", ["config.listen"]),  # probes could not reach it
        ("existingSecretKeys: [infura-key]\n", ["existingSecretKeys"]),  # not a ${NAME}
        ("replicaCounts: 3\n", ["replicaCounts"]),  # a typo is not silently ignored
        ("existingSecretKeys: [INFURA_KEY]\n", ["existingSecret"]),  # keys of which Secret?
    ],
)
def test_wrong_values_are_refused_naming_the_field(
    values: str, named: list[str], tmp_path: Path
) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(values)
    result = template([path])
    assert result.returncode != 0
    for field in named:
        assert field in result.stderr, result.stderr


# --- the config rpcgate loads -------------------------------------------------------------


def test_default_config_is_rpcgates_own_default_listening_on_all_interfaces(
    default: Manifests,
) -> None:
    config = parse_config(_config_text(default), env={}, source="chart")
    own = load_config(None, env={})
    # In a cluster the ingress passes the client's address: the private ranges are believed,
    # and no address is spared the limits (see the test below).
    behind_ingress = dataclasses.replace(
        own.limits,
        trusted_proxies=("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"),
        unlimited_networks=(),
    )
    assert config == dataclasses.replace(
        own,
        listen="0.0.0.0:8545",
        limits=behind_ingress,
        ops=OpsConfig(listen="0.0.0.0:9545"),
        chains=config.chains,
    )
    # Ethereum over the public endpoints the zero-config default gives it, polled from the
    # start (readiness means it is served), not every chain of the table on demand.
    (chain,) = config.chains
    ethereum = own.chains[0]
    assert (chain.name, chain.chain_id, chain.on_demand) == ("ethereum", 1, False)
    assert [u.url for u in chain.upstreams] == [u.url for u in ethereum.upstreams]
    assert dataclasses.replace(chain, upstreams=(), on_demand=True) == dataclasses.replace(
        ethereum, upstreams=()
    )


def test_all_on_config_loads_with_the_secrets_env_and_uses_the_in_chart_redis(
    all_on: Manifests,
) -> None:
    # Every ${VAR} the config needs is an env var of the pod: with those alone it loads.
    env = {e["name"]: "k3y" for e in _pod_env(all_on) if "valueFrom" in e}
    config = parse_config(_config_text(all_on), env=env, source="chart")
    assert config.chains[0].upstreams[0].url == "https://mainnet.infura.io/v3/k3y"
    assert config.chains[1].chain_id == 11155111
    assert config.log_level == "debug"
    redis = find(all_on, "Service", "-redis")
    (port,) = redis["spec"]["ports"]
    assert config.cache.redis_url == f"redis://{redis['metadata']['name']}:{port['port']}/0"


def test_external_redis_url_is_used_and_no_redis_is_deployed() -> None:
    manifests = render(set_values=["redis.url=redis://cache.infra:6379/2", "redis.enabled=true"])
    config = parse_config(_config_text(manifests), env={})
    assert config.cache.redis_url == "redis://cache.infra:6379/2"
    assert [m["kind"] for m in manifests if "redis" in m["metadata"]["name"]] == []


def test_a_redis_url_in_config_wins_over_the_chart() -> None:
    manifests = render(
        set_values=["redis.enabled=true", "config.cache.redis_url=redis://mine:6379/0"]
    )
    config = parse_config(_config_text(manifests), env={})
    assert config.cache.redis_url == "redis://mine:6379/0"


def test_config_change_changes_the_checksum_so_pods_roll(default: Manifests) -> None:
    def checksum(manifests: Manifests) -> str:
        annotations = find(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/config"]
        return value

    assert checksum(render(set_values=["replicaCount=3"])) == checksum(default)
    assert checksum(render(set_values=["config.log_level=debug"])) != checksum(default)
    assert checksum(render(set_values=["redis.enabled=true"])) != checksum(default)
    assert re.fullmatch("[0-9a-f]{64}", checksum(default))


# --- the pods ------------------------------------------------------------------------------


def test_every_pod_is_hardened(manifests: Manifests) -> None:
    for deployment in (m for m in manifests if m["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert "memory" in container["resources"]["limits"]
    gateway = find(manifests, "Deployment")["spec"]["template"]["spec"]
    assert gateway["securityContext"]["runAsUser"] == 10001
    mounts = {m["mountPath"]: m["name"] for m in gateway["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in gateway["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert (
        volumes[mounts["/etc/rpcgate"]]["configMap"]["name"]
        == find(manifests, "ConfigMap")["metadata"]["name"]
    )


def test_probes_ask_healthz_and_readyz_on_the_http_port(manifests: Manifests) -> None:
    pod = find(manifests, "Deployment")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"][0] == {"name": "http", "containerPort": 8545, "protocol": "TCP"}
    assert {"name": "RPCGATE_CONFIG", "value": "/etc/rpcgate/config.yaml"} in container["env"]


def test_pods_get_30_s_to_drain_by_default(default: Manifests) -> None:
    pod = find(default, "Deployment")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    assert "lifecycle" not in pod["containers"][0]  # no preStop: rpcgate drains on SIGTERM


def test_provider_keys_come_from_the_existing_secret(default: Manifests, all_on: Manifests) -> None:
    assert [e for e in _pod_env(default) if "valueFrom" in e] == []
    assert [e for e in _pod_env(all_on) if "valueFrom" in e] == [
        {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": "rpcgate-provider-keys", "key": key}},
        }
        for key in ("INFURA_KEY", "ALCHEMY_KEY")
    ]


def test_selectors_pick_their_own_pods_only(all_on: Manifests) -> None:
    gateway, redis = find(all_on, "Deployment"), find(all_on, "Deployment", "-redis")
    gateway_pods = gateway["spec"]["template"]["metadata"]["labels"]
    redis_pods = redis["spec"]["template"]["metadata"]["labels"]
    for deployment, pods in ((gateway, gateway_pods), (redis, redis_pods)):
        assert _selects(deployment["spec"]["selector"]["matchLabels"], pods)
    for selector in (
        find(all_on, "Service")["spec"]["selector"],
        find(all_on, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert _selects(selector, gateway_pods)
        assert not _selects(selector, redis_pods)
    assert _selects(find(all_on, "Service", "-redis")["spec"]["selector"], redis_pods)
    assert not _selects(find(all_on, "Service", "-redis")["spec"]["selector"], gateway_pods)


def test_replicas_are_the_autoscalers_when_it_is_on(default: Manifests, all_on: Manifests) -> None:
    assert find(default, "Deployment")["spec"]["replicas"] == 2
    assert "replicas" not in find(all_on, "Deployment")["spec"]
    target = find(all_on, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": find(all_on, "Deployment")["metadata"]["name"],
    }


def test_standard_labels_on_every_object(manifests: Manifests) -> None:
    for manifest in manifests:
        labels = manifest["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "rpcgate"
        assert labels["app.kubernetes.io/instance"] == "rel"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "rpcgate-0.1.0"
        assert "app.kubernetes.io/version" in labels


def test_dashboard_configmap_carries_the_dashboard_for_grafanas_sidecar(
    all_on: Manifests,
) -> None:
    dashboard = find(all_on, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART_DIR / "dashboards" / "rpcgate.json").read_text())
    assert json.loads(dashboard["data"]["rpcgate.json"]) == shipped
    assert shipped["title"] and isinstance(shipped["panels"], list)
