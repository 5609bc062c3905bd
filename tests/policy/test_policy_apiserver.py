"""The resource admission policy (SC-009, FR-009) on the control-plane fixture's real API server
(rung L1): roles/policy, run with ansible-playbook, applies its ValidatingAdmissionPolicy and
binding; the API server itself then judges every pod created in a labelled namespace.

Proves: a bare pod is rejected with a message naming the container and what it lacks; requests
without limits are rejected; init containers are judged and only the containers at fault are
named; every pod the app chart renders (each environment's values) is admitted; a namespace
without the label is not affected; LimitRange defaults (the app role's guard rails) are in
place before the policy judges; debug (ephemeral) containers can still be added.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from testkit.ansible import run_playbook
from tests.chart.chartlib import ENVIRONMENTS, of_kind, render_in

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "collections" / "ansible_collections" / "todo" / "cloud" / "roles" / "policy"
DEFAULTS = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
NAME = DEFAULTS["policy_name"]
LABEL = DEFAULTS["policy_namespace_label"]
FULL = {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "50m", "memory": "32Mi"}}


def bare_pod(name: str = "bare", **spec) -> dict:
    return {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}], **spec},
    }


def rejection(core, namespace: str, pod: dict, dry_run: str | None = "All") -> str | None:
    """The API server's refusal message, or None when the pod is admitted."""
    try:
        core.create_namespaced_pod(namespace, pod, dry_run=dry_run)
    except client.ApiException as exc:
        if exc.status != 403:
            raise
        return yaml.safe_load(exc.body)["message"]
    return None


@pytest.fixture(scope="module")
def policy(controlplane, k8s, tmp_path_factory):
    """roles/policy applied to the fixture; removed afterwards (it is cluster-wide)."""
    run = run_playbook(
        tmp_path_factory.mktemp("policy"),
        [
            {
                "name": "Resource admission policy",
                "ansible.builtin.include_role": {"name": "todo.cloud.policy"},
                "vars": {
                    "policy_kubeconfig": str(controlplane.kubeconfig_path),
                    "policy_kube_context": controlplane.context,
                },
            }
        ],
    )
    assert run.rc == 0, run.output[-3000:]
    admission = client.AdmissionregistrationV1Api(k8s.api_client)
    yield admission
    admission.delete_validating_admission_policy_binding(NAME)
    admission.delete_validating_admission_policy(NAME)


@pytest.fixture
def labelled(k8s, policy):
    """A fresh namespace carrying the policy's label, once the API server enforces the policy there."""
    name = f"pol-{uuid.uuid4().hex[:8]}"
    k8s.core.create_namespace({"metadata": {"name": name, "labels": LABEL}})
    deadline = time.monotonic() + 30  # the API server loads new policies asynchronously
    while rejection(k8s.core, name, bare_pod()) is None:
        assert time.monotonic() < deadline, "the policy is not enforced after 30 s"
        time.sleep(0.2)
    yield name
    k8s.core.delete_namespace(name)


def test_a_bare_pod_is_rejected_with_a_clear_message(k8s, labelled):
    message = rejection(k8s.core, labelled, bare_pod())
    assert f"ValidatingAdmissionPolicy '{NAME}'" in message
    assert message.endswith(
        "every container needs cpu and memory requests and limits (SC-009): "
        "container app lacks requests.cpu, requests.memory, limits.cpu, limits.memory"
    ), message


def test_requests_without_limits_are_rejected(k8s, labelled):
    pod = bare_pod()
    pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "10m", "memory": "16Mi"}}
    message = rejection(k8s.core, labelled, pod)
    assert message.endswith("container app lacks limits.cpu, limits.memory"), message


def test_every_container_at_fault_is_named_init_containers_included(k8s, labelled):
    pod = bare_pod(
        initContainers=[
            {"name": "migrate", "image": "registry.example/app:1"},
            {"name": "setup", "image": "registry.example/app:1", "resources": FULL},
        ]
    )
    pod["spec"]["containers"] = [
        {"name": "app", "image": "registry.example/app:1", "resources": FULL},
        {
            "name": "proxy",
            "image": "registry.example/proxy:1",
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "50m"}},
        },
    ]
    message = rejection(k8s.core, labelled, pod)
    assert message.endswith(
        "container proxy lacks limits.memory; "
        "initContainer migrate lacks requests.cpu, requests.memory, limits.cpu, limits.memory"
    ), message
    assert "container app" not in message and "setup" not in message


def test_a_complete_pod_is_admitted(k8s, labelled):
    pod = bare_pod()
    pod["spec"]["containers"][0]["resources"] = FULL
    assert rejection(k8s.core, labelled, pod, dry_run=None) is None


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_apps_pods_are_admitted(k8s, labelled, env):
    """Every pod template the chart renders for the environment, created as a Pod (local's
    carry daprd as a native sidecar, an init container; the others get it from the injector,
    sized by the dapr.io/sidecar-* annotations checked in tests/chart)."""
    rendered = render_in(env, labelled)
    for account in of_kind(rendered, "ServiceAccount"):
        k8s.core.create_namespaced_service_account(labelled, account)
    deployments = of_kind(rendered, "Deployment")
    assert len(deployments) == 4
    for deployment in deployments:
        template = deployment["spec"]["template"]
        pod = {
            "metadata": {**template["metadata"], "name": deployment["metadata"]["name"]},
            "spec": template["spec"],
        }
        assert rejection(k8s.core, labelled, pod, dry_run=None) is None, deployment["metadata"]["name"]
    names = {p.metadata.name for p in k8s.core.list_namespaced_pod(labelled).items}
    assert names == {d["metadata"]["name"] for d in deployments}


def test_a_namespace_without_the_label_is_not_affected(k8s, policy, namespace):
    assert rejection(k8s.core, namespace, bare_pod(), dry_run=None) is None


def test_limit_range_defaults_apply_before_the_policy_judges(k8s, labelled):
    """The app namespace's LimitRange (roles/app guard rails) gives a bare pod its defaults
    first (mutating admission), so such a pod is admitted with constraints: in the app
    namespace no pod runs without them either way."""
    k8s.core.create_namespaced_limit_range(
        labelled,
        {
            "metadata": {"name": "todo-limits"},
            "spec": {
                "limits": [
                    {
                        "type": "Container",
                        "default": {"cpu": "500m", "memory": "512Mi"},
                        "defaultRequest": {"cpu": "100m", "memory": "128Mi"},
                    }
                ]
            },
        },
    )
    deadline = time.monotonic() + 10  # the LimitRanger reads LimitRanges from an informer
    while (message := rejection(k8s.core, labelled, bare_pod(), dry_run=None)) is not None:
        assert time.monotonic() < deadline, message
        time.sleep(0.2)
    resources = k8s.core.read_namespaced_pod("bare", labelled).spec.containers[0].resources
    assert resources.requests == {"cpu": "100m", "memory": "128Mi"}
    assert resources.limits == {"cpu": "500m", "memory": "512Mi"}


def test_a_debug_container_can_still_be_added(k8s, labelled):
    """Ephemeral containers may not carry resources (the API server forbids them), so the
    policy leaves them out; whether someone may add one is RBAC's business."""
    pod = bare_pod()
    pod["spec"]["containers"][0]["resources"] = FULL
    k8s.core.create_namespaced_pod(labelled, pod)
    debug = {"name": "debug", "image": "registry.example/busybox:1", "targetContainerName": "app"}
    k8s.core.patch_namespaced_pod_ephemeralcontainers(
        "bare", labelled, {"spec": {"ephemeralContainers": [debug]}}
    )
    ephemeral = k8s.core.read_namespaced_pod("bare", labelled).spec.ephemeral_containers
    assert [c.name for c in ephemeral] == ["debug"]
