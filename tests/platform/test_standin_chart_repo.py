"""The TEST DOUBLE of the Helm chart repositories (testkit/chart_repo.py) behaves like one, as
the real Helm client sees it (rung L0: helm against a local HTTP server; no chart repository is
reachable here, the online tier installs from the real ones): every chart pinned in
versions.env is served at exactly its pinned version, and the one stand-in chart renders
nothing but a ConfigMap holding the values it was given."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from testkit.chart_repo import HELM, ChartRepo, pinned_charts
from testkit.controlplane import toolchain

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def helm_template(repo_url: str, chart: str, version: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(HELM), "template", "rel", chart, "--repo", repo_url, "--version", version, "-n", "ns", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_l0_every_chart_pin_of_versions_env_is_served(chart_repo):
    pins = toolchain.read_versions()
    charts = pinned_charts()
    chart_keys = [key for key in pins if key.endswith("_CHART_VERSION")]
    assert chart_keys, "versions.env pins no chart"
    for key in chart_keys:
        assert charts[key.removesuffix("_CHART_VERSION").lower().replace("_", "-")] == pins[key]
    # The two charts versioned like their releases share the release's pin.
    assert charts["cert-manager"] == pins["CERT_MANAGER_VERSION"]
    assert charts["dapr"] == pins["DAPR_VERSION"].removeprefix("v")
    index = yaml.safe_load(httpx.get(chart_repo.url + "index.yaml", timeout=10).raise_for_status().text)
    served = {name: [entry["version"] for entry in entries] for name, entries in index["entries"].items()}
    assert served == {name: [version] for name, version in charts.items()}


def test_l0_the_standin_renders_exactly_the_values_it_was_given(chart_repo, tmp_path):
    """What a role passes (here the production values of roles/dapr, plus a --set) comes back,
    type for type, in `<release>-standin-values`; nothing else is rendered."""
    values_file = ROOT / "inventories" / "production" / "values" / "dapr.yaml"
    version = pinned_charts()["dapr"]
    proc = helm_template(chart_repo.url, "dapr", version, "-f", str(values_file), "--set-string", "x.y=301")
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [("ConfigMap", "rel-standin-values")]
    expected = {**yaml.safe_load(values_file.read_text()), "x": {"y": "301"}}
    assert json.loads(docs[0]["data"]["values.json"]) == expected
    assert docs[0]["metadata"]["labels"]["todo.test/standin-chart"] == "dapr"


def test_l0_a_version_other_than_the_pin_is_not_served(chart_repo):
    proc = helm_template(chart_repo.url, "ingress-nginx", "0.0.1")
    assert proc.returncode != 0
    assert "0.0.1" in proc.stderr


def test_l0_stopped_repository_refuses_connections(tmp_path):
    with ChartRepo.serve({"example": "1.2.3"}, tmp_path) as repo:
        index = yaml.safe_load(httpx.get(repo.url + "index.yaml", timeout=10).raise_for_status().text)
        assert index["entries"]["example"][0]["version"] == "1.2.3"
    with pytest.raises(httpx.ConnectError):
        httpx.get(repo.url + "index.yaml", timeout=5)
