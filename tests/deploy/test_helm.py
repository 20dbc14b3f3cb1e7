"""The Helm chart (helm/rpcgate/) as helm renders it: linted, rendered with the default values
and with each of ci/*-values.yaml (every option on; Redis with Sentinel; one gateway without
Redis), every manifest validated against the Kubernetes 1.30 schemas in strict mode, the
config it mounts loaded by rpcgate itself, and the commands its pods run (the init
container's config check, `helm test`'s calls) run here on what it renders."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rpcgate.config.settings import LimitsConfig, OpsConfig, load_config, parse_config
from rpcgate.edge.admission import Admission
from rpcgate.edge.clients import Caller
from tests.conftest import ServeProcess
from tests.harness.fixtures import AnvilClusterFactory
from tests.harness.helm import (
    ALL_ON_VALUES,
    CHART_DIR,
    KUBE_VERSION,
    SENTINEL_VALUES,
    SINGLE_VALUES,
    find,
    helm_binary,
    pod_spec,
    render,
    run_helm,
    template,
    value_args,
)
from tests.harness.tools import free_port

Manifests = list[dict[str, Any]]
VALUES = {
    "default": (),
    "all-on": (ALL_ON_VALUES,),
    "sentinel": (SENTINEL_VALUES,),
    "single": (SINGLE_VALUES,),
}


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


@pytest.fixture(scope="module")
def sentinel() -> Manifests:
    return render([SENTINEL_VALUES])


@pytest.fixture(scope="module", params=list(VALUES))
def manifests(request: pytest.FixtureRequest) -> Manifests:
    return render(VALUES[request.param])


def _workloads(manifests: Manifests) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet", "Pod")]


def _config_text(manifests: Manifests) -> str:
    text: str = find(manifests, "ConfigMap")["data"]["config.yaml"]
    return text


def _pod_env(manifests: Manifests) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = pod_spec(find(manifests, "Deployment"))["containers"][0]["env"]
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


def test_default_renders_two_gateways_and_the_redis_they_share(default: Manifests) -> None:
    assert sorted((m["kind"], m["metadata"]["name"]) for m in default) == [
        ("ConfigMap", "rel-rpcgate"),
        ("Deployment", "rel-rpcgate"),
        ("Pod", "rel-rpcgate-test"),  # helm test's
        ("Service", "rel-rpcgate"),
        ("Service", "rel-rpcgate-ops"),  # metrics, status and admin: not the clients' Service
        ("Service", "rel-rpcgate-redis"),
        ("Service", "rel-rpcgate-redis-headless"),
        ("StatefulSet", "rel-rpcgate-redis"),
    ]
    assert find(default, "Deployment")["spec"]["replicas"] == 2
    assert find(default, "StatefulSet", "-redis")["spec"]["replicas"] == 1
    config = parse_config(_config_text(default), env={})
    assert config.cache.redis_url == "redis://rel-rpcgate-redis:6379/0"


def test_one_gateway_without_redis_renders_no_redis() -> None:
    single = render([SINGLE_VALUES])
    assert find(single, "Deployment")["spec"]["replicas"] == 1
    assert [m for m in single if "redis" in m["metadata"]["name"]] == []
    assert parse_config(_config_text(single), env={}).cache.redis_url is None


def test_all_on_renders_every_option(all_on: Manifests) -> None:
    assert sorted((m["kind"], m["metadata"]["name"]) for m in all_on) == [
        ("ConfigMap", "rel-rpcgate"),
        ("ConfigMap", "rel-rpcgate-dashboard"),
        ("Deployment", "rel-rpcgate"),
        ("HorizontalPodAutoscaler", "rel-rpcgate"),
        ("Ingress", "rel-rpcgate"),
        ("Pod", "rel-rpcgate-test"),
        ("PodDisruptionBudget", "rel-rpcgate"),
        ("Service", "rel-rpcgate"),
        ("Service", "rel-rpcgate-ops"),
        ("Service", "rel-rpcgate-redis"),
        ("Service", "rel-rpcgate-redis-headless"),
        ("ServiceMonitor", "rel-rpcgate"),
        ("StatefulSet", "rel-rpcgate-redis"),
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
    in_chart_redis = dataclasses.replace(own.cache, redis_url="redis://rel-rpcgate-redis:6379/0")
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
        cache=in_chart_redis,
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


@pytest.mark.parametrize(
    "url",
    [
        "redis://cache.infra:6379/2",
        "redis+sentinel://sentinel-0.infra:26379,sentinel-1.infra:26379/cache/1",
        "redis+cluster://redis-0.infra:6379,redis-1.infra:6379",
    ],
)
def test_external_redis_url_is_used_and_no_redis_is_deployed(url: str) -> None:
    escaped = url.replace(",", "\\,")  # --set reads a comma as the next assignment
    manifests = render(set_values=[f"redis.url={escaped}", "redis.enabled=true"])
    config = parse_config(_config_text(manifests), env={})
    assert config.cache.redis_url == url
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
    assert checksum(render(set_values=["redis.url=redis://mine:6379/0"])) != checksum(default)
    assert re.fullmatch("[0-9a-f]{64}", checksum(default))


# --- the pods ------------------------------------------------------------------------------


def test_every_pod_is_hardened(manifests: Manifests) -> None:
    for workload in _workloads(manifests):
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"] + pod.get("initContainers", []):
            security = container["securityContext"]
            assert security["runAsNonRoot"] is True
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
            assert "memory" in container["resources"]["limits"]
    gateway = pod_spec(find(manifests, "Deployment"))
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
    gateway, redis = find(all_on, "Deployment"), find(all_on, "StatefulSet", "-redis")
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
    for redis_service in (
        find(all_on, "Service", "-redis"),
        find(all_on, "Service", "-redis-headless"),
    ):
        assert _selects(redis_service["spec"]["selector"], redis_pods)
        assert not _selects(redis_service["spec"]["selector"], gateway_pods)
    assert redis["spec"]["serviceName"] == "rel-rpcgate-redis-headless"


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
        assert labels["helm.sh/chart"] == "rpcgate-0.2.0"
        assert "app.kubernetes.io/version" in labels


def test_dashboard_configmap_carries_the_dashboard_for_grafanas_sidecar(
    all_on: Manifests,
) -> None:
    dashboard = find(all_on, "ConfigMap", "-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART_DIR / "dashboards" / "rpcgate.json").read_text())
    assert json.loads(dashboard["data"]["rpcgate.json"]) == shipped
    assert shipped["title"] and isinstance(shipped["panels"], list)


# --- many replicas share one Redis ---------------------------------------------------------

NO_SHARED_STATE = (
    "more than one replica (replicaCount > 1 or autoscaling.enabled) needs a shared Redis"
)


@pytest.mark.parametrize(
    "set_values",
    [
        ["redis.enabled=false"],  # the old default: 2 replicas, no Redis
        ["redis.enabled=false", "replicaCount=1", "autoscaling.enabled=true"],
    ],
)
def test_many_gateways_without_a_shared_redis_are_refused(set_values: list[str]) -> None:
    result = template(set_values=set_values)
    assert result.returncode != 0
    assert NO_SHARED_STATE in result.stderr, result.stderr
    assert "redis.allowNoSharedState=true" in result.stderr  # the way out is named


@pytest.mark.parametrize(
    "set_values",
    [
        ["redis.enabled=false", "replicaCount=1"],
        ["redis.enabled=false", "redis.url=redis://cache.infra:6379/0"],
        ["redis.enabled=false", "config.cache.redis_url=redis://cache.infra:6379/0"],
        ["redis.enabled=false", "redis.allowNoSharedState=true"],
    ],
)
def test_many_gateways_render_with_a_redis_one_gateway_or_when_asked(
    set_values: list[str],
) -> None:
    assert find(render(set_values=set_values), "Deployment")


def test_sentinel_runs_a_primary_replicas_and_a_sentinel_beside_each(
    sentinel: Manifests,
) -> None:
    for manifest in sentinel:  # the same Kubernetes 1.30 schemas as every other rendering
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)
    redis = find(sentinel, "StatefulSet", "-redis")
    assert redis["spec"]["replicas"] == 3
    pod = pod_spec(redis)
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"redis", "sentinel"}
    assert containers["sentinel"]["ports"] == [
        {"name": "sentinel", "containerPort": 26379, "protocol": "TCP"}
    ]
    # The gateway asks the sentinels, through their Service, for the primary named rpcgate.
    service = find(sentinel, "Service", "-redis-sentinel")
    assert _selects(service["spec"]["selector"], redis["spec"]["template"]["metadata"]["labels"])
    assert [p["port"] for p in service["spec"]["ports"]] == [26379]
    config = parse_config(_config_text(sentinel), env={})
    assert config.cache.redis_url == "redis+sentinel://rel-rpcgate-redis-sentinel:26379/rpcgate/0"
    # Pod 0 is the first primary, named as the headless Service makes it resolvable.
    env = {e["name"]: e.get("value") for e in containers["redis"]["env"]}
    headless = find(sentinel, "Service", "-redis-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert env["FIRST_PRIMARY"] == "rel-rpcgate-redis-0.rel-rpcgate-redis-headless.rpc.svc"
    assert env["MY_HOST"] == "$(POD_NAME).rel-rpcgate-redis-headless.rpc.svc"
    scripts = find(sentinel, "ConfigMap", "-redis-scripts")["data"]
    assert "sentinel monitor $MASTER_NAME $primary $REDIS_PORT $QUORUM" in scripts["sentinel.sh"]
    assert '--replicaof "$primary"' in scripts["redis.sh"]
    # No plain Redis Service: a client of it could land on a read-only replica.
    assert [m for m in sentinel if m["metadata"]["name"] == "rel-rpcgate-redis"] == [redis]


def test_a_quorum_the_sentinels_cannot_reach_is_refused() -> None:
    result = template(set_values=["redis.sentinel.enabled=true", "redis.sentinel.quorum=4"])
    assert result.returncode != 0
    assert "redis.sentinel.quorum is more than redis.sentinel.replicas" in result.stderr


# --- the Ingress ---------------------------------------------------------------------------


def _ingress(set_values: list[str]) -> dict[str, Any]:
    return find(render(set_values=["ingress.enabled=true", *set_values]), "Ingress")


def test_no_ingress_by_default(default: Manifests) -> None:
    assert [m for m in default if m["kind"] == "Ingress"] == []


def test_ingress_routes_every_host_to_the_clients_service(all_on: Manifests) -> None:
    ingress = find(all_on, "Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "rpc.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    assert path["backend"]["service"] == {"name": "rel-rpcgate", "port": {"name": "http"}}
    assert [p["name"] for p in find(all_on, "Service")["spec"]["ports"]] == ["http"]
    assert ingress["spec"]["tls"] == [
        {"secretName": "rpc-example-com-tls", "hosts": ["rpc.example.com"]}
    ]


def test_ingress_nginx_keeps_websockets_open_and_bodies_at_rpcgates_limit(
    all_on: Manifests,
) -> None:
    nginx = "nginx.ingress.kubernetes.io/"
    defaults = _ingress([])["metadata"]["annotations"]
    assert defaults == {
        nginx + "proxy-read-timeout": "3600",
        nginx + "proxy-send-timeout": "3600",
        nginx + "proxy-body-size": str(LimitsConfig().max_body_bytes),  # rpcgate's default
    }
    # With config.limits.max_body_bytes set, the ingress lets exactly that much through;
    # an annotation given in the values wins over the chart's.
    annotations = find(all_on, "Ingress")["metadata"]["annotations"]
    config = parse_config(_config_text(all_on), env=_secret_env(all_on))
    assert annotations[nginx + "proxy-body-size"] == str(config.limits.max_body_bytes)
    assert config.limits.max_body_bytes != LimitsConfig().max_body_bytes
    assert annotations[nginx + "proxy-read-timeout"] == "7200"
    assert annotations[nginx + "proxy-send-timeout"] == "3600"
    assert annotations["cert-manager.io/cluster-issuer"] == "letsencrypt"
    # Another controller: none of ingress-nginx's annotations.
    assert (
        "annotations"
        not in _ingress(["ingress.nginx=false", "ingress.className=traefik"])["metadata"]
    )


# --- spread across zones --------------------------------------------------------------------


def test_pods_spread_across_zones_then_nodes_without_ever_staying_pending(
    default: Manifests,
) -> None:
    gateway, redis = find(default, "Deployment"), find(default, "StatefulSet", "-redis")
    for workload, other in ((gateway, redis), (redis, gateway)):
        pods = workload["spec"]["template"]["metadata"]["labels"]
        others = other["spec"]["template"]["metadata"]["labels"]
        constraints = pod_spec(workload)["topologySpreadConstraints"]
        assert [(c["topologyKey"], c["whenUnsatisfiable"], c["maxSkew"]) for c in constraints] == [
            ("topology.kubernetes.io/zone", "ScheduleAnyway", 1),
            ("kubernetes.io/hostname", "ScheduleAnyway", 1),
        ]
        for constraint in constraints:  # each counts its own pods only
            assert _selects(constraint["labelSelector"]["matchLabels"], pods)
            assert not _selects(constraint["labelSelector"]["matchLabels"], others)


def test_spreading_is_overridable(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("topologySpreadConstraints: []\n")
    assert "topologySpreadConstraints" not in pod_spec(find(render([values]), "Deployment"))
    selector = {"matchLabels": {"team": "rpc"}}
    values.write_text(
        yaml.safe_dump(
            {
                "topologySpreadConstraints": [
                    {
                        "maxSkew": 2,
                        "topologyKey": "topology.kubernetes.io/region",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": selector,
                    }
                ]
            }
        )
    )
    (constraint,) = pod_spec(find(render([values]), "Deployment"))["topologySpreadConstraints"]
    assert (constraint["maxSkew"], constraint["labelSelector"]) == (2, selector)


# --- the init container checks the config ----------------------------------------------------

RPCGATE = Path(sys.executable).parent / "rpcgate"  # the console script `pip install .` made


def _run_config_validate(
    manifests: Manifests, tmp_path: Path, secrets: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The init container's command, as rendered, on the rendered ConfigMap's config.yaml
    (mounted where the pod mounts it: the path is mapped into tmp_path), with the init
    container's environment (each Secret key given `secrets`' value)."""
    pod = pod_spec(find(manifests, "Deployment"))
    (init,) = pod["initContainers"]
    (mount,) = [m for m in init["volumeMounts"] if m["name"] == "config"]
    config_dir = tmp_path / mount["mountPath"].lstrip("/")
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.yaml").write_text(_config_text(manifests))
    command = [
        arg.replace(mount["mountPath"], str(config_dir))
        for arg in init["command"] + init.get("args", [])
    ]
    assert command[0] == "rpcgate"
    command[0] = str(RPCGATE)
    env = {"PATH": os.environ["PATH"]}
    for variable in init["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"].replace(mount["mountPath"], str(config_dir))
        elif secrets is not None:
            env[variable["name"]] = secrets[variable["valueFrom"]["secretKeyRef"]["key"]]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)


def test_the_init_container_validates_the_config_with_the_gateways_env(
    manifests: Manifests, tmp_path: Path
) -> None:
    pod = pod_spec(find(manifests, "Deployment"))
    (init,) = pod["initContainers"]
    (gateway,) = pod["containers"]
    assert init["image"] == gateway["image"]
    assert init["command"] == ["rpcgate", "config", "validate", "/etc/rpcgate/config.yaml"]
    assert init["env"] == gateway["env"]  # every ${VAR} the gateway can read, it can
    assert init["volumeMounts"] == gateway["volumeMounts"]
    secrets = {
        e["valueFrom"]["secretKeyRef"]["key"]: "k3y" for e in init["env"] if "valueFrom" in e
    }
    validated = _run_config_validate(manifests, tmp_path, secrets)
    assert validated.returncode == 0, validated.stdout + validated.stderr


@pytest.mark.parametrize(
    ("typo", "named"),
    [
        (
            {
                "chains": [
                    {
                        "name": "ethereum",
                        "chain_id": 1,
                        "head_pol_interval": 2,
                        "upstreams": [{"preset": "drpc"}],
                    }
                ]
            },
            "chains[0].head_pol_interval",
        ),
        ({"cache": {"ttl_heda_s": 5}}, "cache.ttl_heda_s"),
        (
            {"chains": [{"name": "ethereum", "chain_id": 1, "upstreams": [{"preset": "drcp"}]}]},
            "chains[0].upstreams[0]",
        ),
    ],
)
def test_a_typo_inside_config_stops_the_pod_in_the_init_container(
    typo: dict[str, Any], named: str, tmp_path: Path
) -> None:
    """helm lint and the values schema take these (config is rpcgate's to check), so it is
    the init container that stops: exit 1, the key named in its log."""
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"config": typo}))
    assert run_helm("lint", "--strict", str(CHART_DIR), "--values", str(values)).returncode == 0
    validated = _run_config_validate(render([values]), tmp_path)
    assert validated.returncode == 1
    assert named in validated.stdout + validated.stderr


def test_a_missing_secret_key_stops_the_pod_in_the_init_container(
    all_on: Manifests, tmp_path: Path
) -> None:
    validated = _run_config_validate(all_on, tmp_path, secrets=None)  # no Secret: no ${VAR}
    assert validated.returncode == 1
    assert "environment variable INFURA_KEY is not set" in validated.stdout + validated.stderr


# --- helm test ------------------------------------------------------------------------------


def test_helm_test_pod_is_a_test_hook_that_cleans_up_after_itself(default: Manifests) -> None:
    pod = find(default, "Pod", "-test")
    annotations = pod["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "test"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert pod["spec"]["restartPolicy"] == "Never"
    (container,) = pod["spec"]["containers"]
    gateway = pod_spec(find(default, "Deployment"))["containers"][0]
    assert container["image"] == gateway["image"]  # python is in rpcgate's image
    env = {e["name"]: e["value"] for e in container["env"]}
    service = find(default, "Service")
    assert (
        env["RPCGATE_URL"]
        == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    )
    # Not a gateway pod: the clients' Service never sends it calls.
    assert not _selects(service["spec"]["selector"], pod["metadata"]["labels"])


def test_helm_test_asks_readyz_and_eth_chain_id_of_a_running_gateway(
    anvil_cluster: AnvilClusterFactory, serve_process: ServeProcess, tmp_path: Path
) -> None:
    """The test pod's command, run here against `rpcgate serve` over an anvil node: it
    passes on the chain the chart serves, and fails on another chain or a gateway not there."""
    node = anvil_cluster(1)[0]
    url, _process = serve_process(node.url)
    deadline = time.monotonic() + 20
    while _status(url + "/readyz") != 200:
        assert time.monotonic() < deadline, "the gateway never became ready"
        time.sleep(0.2)

    def helm_test(chain_id: int, gateway_url: str) -> subprocess.CompletedProcess[str]:
        values = tmp_path / "values.yaml"
        chain = {"name": "devnet", "chain_id": chain_id, "upstreams": [{"url": node.url}]}
        values.write_text(yaml.safe_dump({"config": {"chains": [chain]}}))
        (container,) = find(render([values]), "Pod", "-test")["spec"]["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        env["RPCGATE_URL"] = gateway_url  # the Service, here
        command = container["command"]
        assert command[0] == "python"
        return subprocess.run(
            [sys.executable, *command[1:]], capture_output=True, text=True, env=env, timeout=60
        )

    passed = helm_test(31337, url)  # serve_process serves devnet, 31337
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "GET /readyz: 200" in passed.stdout
    assert helm_test(1, url).returncode == 1  # the gateway serves another chain
    assert helm_test(31337, f"http://127.0.0.1:{free_port()}").returncode != 0  # no gateway


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
