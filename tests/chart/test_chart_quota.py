"""Each inventory's namespace quota (roles/app's ResourceQuota) admits the release at its
largest: every service at its HPA maximum plus one surge pod of a rolling update, daprd
included (the injector's resource annotations, or the explicit sidecar). Rung L0."""

from __future__ import annotations

import pytest
import yaml
from chartlib import ENVIRONMENTS, ROOT, docs, of_kind
from kubernetes.utils import parse_quantity

pytestmark = pytest.mark.unit

ROLE_DEFAULTS = ROOT / "collections/ansible_collections/todo/cloud/roles/app/defaults/main.yml"
SIDECAR = {
    "requests.cpu": "dapr.io/sidecar-cpu-request",
    "requests.memory": "dapr.io/sidecar-memory-request",
    "limits.cpu": "dapr.io/sidecar-cpu-limit",
    "limits.memory": "dapr.io/sidecar-memory-limit",
}


def quota(env: str) -> dict:
    merged = dict(yaml.safe_load(ROLE_DEFAULTS.read_text())["app_quota"])
    inventory = yaml.safe_load((ROOT / "inventories" / env / "group_vars/all/app.yml").read_text())
    merged.update(inventory.get("app_quota", {}))
    return merged


def pod_cost(deployment: dict) -> dict:
    template = deployment["spec"]["template"]
    spec, annotations = template["spec"], template["metadata"].get("annotations", {})
    cost = dict.fromkeys(SIDECAR, 0)
    for container in spec["containers"] + spec.get("initContainers", []):
        resources = container.get("resources", {})
        for key in cost:
            kind, resource = key.split(".")
            cost[key] += parse_quantity(resources.get(kind, {}).get(resource, 0))
    if annotations.get("dapr.io/enabled") == "true":
        for key, annotation in SIDECAR.items():
            cost[key] += parse_quantity(annotations.get(annotation, 0))
    return cost


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_quota_admits_every_service_at_its_maximum_during_a_rollout(env):
    items = docs(env)
    maximum = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["maxReplicas"]
        for h in of_kind(items, "HorizontalPodAutoscaler")
    }
    needed = dict.fromkeys(SIDECAR, 0)
    pods = 0
    for deployment in of_kind(items, "Deployment"):
        replicas = (
            maximum[deployment["metadata"]["name"]]
            + deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        )
        pods += replicas
        for key, value in pod_cost(deployment).items():
            needed[key] += value * replicas
    hard = quota(env)
    short = {
        k: f"needs {float(v):g}, quota {hard[k]}" for k, v in needed.items() if v > parse_quantity(hard[k])
    }
    assert not short, f"{env}: {short}"
    assert pods <= int(hard["pods"])
