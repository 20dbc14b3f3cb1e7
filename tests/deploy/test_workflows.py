"""The GitHub Actions workflows (.github/workflows/): CI runs the README's test command, and a
tag builds and pushes the image the Helm chart defaults to, for amd64 and arm64, tagged as
the chart's appVersion. Read as YAML (no runner here); the release's version check is run."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness.helm import CHART_DIR

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = REPO / ".github" / "workflows"
OWNER = "rpcgate"  # the GitHub owner the chart's default image is published under


def _workflow(name: str) -> dict[str, Any]:
    raw: dict[Any, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    raw["on"] = raw.pop(True, raw.get("on"))
    return raw


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    (job,) = workflow["jobs"].values()
    steps: list[dict[str, Any]] = job["steps"]
    return steps


def _uses(steps: list[dict[str, Any]], action: str) -> dict[str, Any]:
    (step,) = [s for s in steps if s.get("uses", "").split("@")[0] == action]
    return step


@pytest.mark.unit
def test_ci_runs_the_test_command_on_every_push_and_pull_request() -> None:
    ci = _workflow("ci.yml")
    assert set(ci["on"]) == {"push", "pull_request"}
    steps = _steps(ci)
    assert _uses(steps, "actions/setup-python")["with"]["python-version"] == "3.12"
    assert _uses(steps, "actions/setup-node")["with"]["node-version"] == "20"
    runs = [s["run"] for s in steps if "run" in s]
    assert any("apt-get install" in r and "redis-server" in r and "prometheus" in r for r in runs)
    assert any("chromium" in r and "CHROMIUM_BIN" in r for r in runs)
    assert runs[-1].strip() == "./.ci/run"
    assert "./scripts/test" in (REPO / ".ci" / "run").read_text()


@pytest.mark.unit
def test_a_tag_builds_both_platforms_and_pushes_the_charts_default_image() -> None:
    release = _workflow("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["permissions"]["packages"] == "write"
    steps = _steps(release)
    for action in ("docker/setup-qemu-action", "docker/setup-buildx-action"):
        _uses(steps, action)
    login = _uses(steps, "docker/login-action")["with"]
    assert (login["registry"], login["password"]) == ("ghcr.io", "${{ secrets.GITHUB_TOKEN }}")
    image = release["env"]["IMAGE"].replace("${{ github.repository_owner }}", OWNER)
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert image == values["image"]["repository"] == f"ghcr.io/{OWNER}/rpcgate"
    meta = _uses(steps, "docker/metadata-action")
    assert meta["with"]["images"] == "${{ env.IMAGE }}"
    tags = meta["with"]["tags"].split()
    assert "type=semver,pattern={{version}}" in tags  # v0.1.0 -> 0.1.0, the appVersion form
    assert any(t.startswith("type=raw,value=latest") for t in tags)
    build = _uses(steps, "docker/build-push-action")["with"]
    assert (build["context"], build["file"]) == (".", "Dockerfile")
    assert (REPO / build["file"]).is_file()
    assert build["platforms"].split(",") == ["linux/amd64", "linux/arm64"]
    assert build["push"] is True
    assert build["tags"] == f"${{{{ steps.{meta['id']}.outputs.tags }}}}"


def _version_check(tag: str) -> subprocess.CompletedProcess[str]:
    (step,) = [s for s in _steps(_workflow("release.yml")) if "appVersion" in s.get("name", "")]
    return subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        cwd=REPO,
        env={"GITHUB_REF_NAME": tag, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_the_image_tag_is_the_charts_app_version() -> None:
    """The chart's image.tag defaults to its appVersion; the release publishes the tag vX.Y.Z
    as X.Y.Z and refuses a tag that is not the appVersion (and the package's version)."""
    chart = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    assert values["image"]["tag"] == ""  # the appVersion
    deployment = (CHART_DIR / "templates" / "deployment.yaml").read_text()
    assert ".Values.image.tag | default .Chart.AppVersion" in deployment
    checked = _version_check(f"v{chart['appVersion']}")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert _version_check("v99.0.0").returncode != 0
