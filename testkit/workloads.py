"""Workload manifests for the integration tests; behaviour is chosen per pod (testkit/kwok-stages.yaml)."""

from __future__ import annotations

import time


def pod_template(app: str, behaviour: str | None = None, cpu: str = "50m", image: str = "todo/app:1") -> dict:
    annotations = {"todo.test/behaviour": behaviour} if behaviour else {}
    return {
        "metadata": {"labels": {"app": app}, "annotations": annotations},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": image,
                    "resources": {
                        "requests": {"cpu": cpu, "memory": "32Mi"},
                        "limits": {"cpu": cpu, "memory": "64Mi"},
                    },
                }
            ]
        },
    }


def deployment(
    name: str,
    replicas: int = 2,
    behaviour: str | None = None,
    cpu: str = "50m",
    labels: dict | None = None,
    annotations: dict | None = None,
    progress_deadline: int | None = None,
) -> dict:
    spec = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
        "template": pod_template(name, behaviour, cpu),
    }
    if progress_deadline:
        spec["progressDeadlineSeconds"] = progress_deadline
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels or {"app": name}, "annotations": annotations or {}},
        "spec": spec,
    }


def statefulset(name: str, replicas: int = 2, behaviour: str | None = None) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": pod_template(name, behaviour),
        },
    }


def daemonset(name: str, behaviour: str | None = None) -> dict:
    template = pod_template(name, behaviour)
    template["spec"]["tolerations"] = [{"operator": "Exists"}]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": template},
    }


def set_behaviour(k8s, namespace: str, name: str, behaviour: str | None) -> None:
    """Roll out a new revision of a Deployment whose pods behave as asked."""
    annotations = {"todo.test/behaviour": behaviour} if behaviour else {"todo.test/behaviour": None}
    k8s.apps.patch_namespaced_deployment(
        name,
        namespace,
        {
            "spec": {
                "template": {"metadata": {"annotations": {**annotations, "todo.test/rev": str(time.time())}}}
            }
        },
    )


def wait_for(predicate, timeout: float = 60, interval: float = 0.3, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out waiting for {what}")
