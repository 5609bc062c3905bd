"""The cluster's settings (rung L0): one cluster for both environments, a DOKS version of the
Kubernetes minor the tests run, and argument specs that match the role's defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "collections/ansible_collections/todo/cloud/roles/cluster"


def versions() -> dict[str, str]:
    pairs = (line.partition("=") for line in (ROOT / "versions.env").read_text().splitlines())
    return {k: v.strip('"') for k, _, v in pairs if k and not k.startswith("#")}


def inventory(env: str, name: str) -> dict:
    return yaml.safe_load((ROOT / "inventories" / env / "group_vars/all" / name).read_text())


def test_L0_staging_and_production_describe_one_cluster():
    assert (
        inventory("staging", "environment.yml")["todo_kube_context"]
        == inventory("production", "environment.yml")["todo_kube_context"]
    )
    assert inventory("staging", "cluster.yml") == inventory("production", "cluster.yml")


def test_L0_the_doks_version_is_the_kubernetes_minor_the_tests_run():
    doks = versions()["DOKS_KUBERNETES_VERSION"]
    kubernetes = versions()["KUBERNETES_VERSION"].removeprefix("v")
    assert doks.split(".")[:2] == kubernetes.split(".")[:2]
    assert doks.rsplit("-do.", 1)[1].isdigit()


def test_L0_argument_specs_cover_every_default_and_the_inventory():
    specs = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    main, teardown = specs["main"]["options"], specs["teardown"]["options"]
    assert set(defaults) - {"cluster_teardown_confirm"} <= set(main)
    assert "cluster_teardown_confirm" in teardown
    assert set(inventory("production", "cluster.yml")) <= set(main)
    assert (
        inventory("production", "cluster.yml")["cluster_doks_region"]
        in main["cluster_doks_region"]["choices"]
    )
    assert main["cluster_provider"]["choices"] == teardown["cluster_provider"]["choices"]
    # every provider named has its tasks
    for provider in main["cluster_provider"]["choices"]:
        assert (ROLE / "tasks" / f"{provider}.yml").exists()
        assert (ROLE / "tasks" / f"{provider}_teardown.yml").exists()


def test_L0_the_inventory_pool_is_a_known_size_within_the_role_budget():
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    pool = inventory("production", "cluster.yml")["cluster_doks_node_pool"]
    size = defaults["cluster_doks_sizes"][pool["size"]]
    assert 1 <= pool["min_nodes"] <= pool["count"] <= pool["max_nodes"]
    assert size["usd_month"] * pool["max_nodes"] <= defaults["cluster_doks_node_budget_usd_month"]
