"""`ansible-playbook site.yml -i inventories/<env> --tags app` exactly as CI and operators run it,
with the real staging and production inventories, against the control-plane fixture (rung L2:
real API server and controllers, pods simulated by kwok). Only the cluster connection, the
smoke-check mode (kwok pods cannot answer HTTP) and the timeouts are overridden.

Proves, in one staging history beside a production install: a first install that fails is
removed cleanly and the next good version installs normally; a second run changes nothing;
`--check --diff` writes nothing and shows the change object by object; staging runs (check
mode, a changed Secret, an upgrade) leave every production object untouched (FR-013, SC-008).
"""

from __future__ import annotations

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from testkit.ansible import Site, app_secret_values, app_secrets, put_app_secrets

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _snapshot(k8s, namespace: str) -> dict[str, str]:
    """kind/name -> resourceVersion of every object the app stage can touch in `namespace`."""
    found = {}
    lists = {
        "Deployment": k8s.apps.list_namespaced_deployment,
        "Service": k8s.core.list_namespaced_service,
        "ConfigMap": k8s.core.list_namespaced_config_map,
        "Secret": k8s.core.list_namespaced_secret,
        "ResourceQuota": k8s.core.list_namespaced_resource_quota,
        "LimitRange": k8s.core.list_namespaced_limit_range,
        "HPA": k8s.autoscaling.list_namespaced_horizontal_pod_autoscaler,
    }
    for kind, list_fn in lists.items():
        for item in list_fn(namespace).items:
            found[f"{kind}/{item.metadata.name}"] = item.metadata.resource_version
    ns = k8s.core.read_namespace(namespace)
    found[f"Namespace/{namespace}"] = ns.metadata.resource_version
    for group, version, plural in (
        ("dapr.io", "v1alpha1", "components"),
        ("monitoring.coreos.com", "v1", "prometheusrules"),
        ("coordination.k8s.io", "v1", "leases"),
    ):
        for item in k8s.custom.list_namespaced_custom_object(group, version, namespace, plural)["items"]:
            found[f"{plural}/{item['metadata']['name']}"] = item["metadata"]["resourceVersion"]
    return found


def _changed(output: str) -> int:
    match = re.search(r"^\S+\s*:\s*ok=\d+\s+changed=(\d+)", output, re.MULTILINE)
    assert match, f"no play recap in:\n{output[-3000:]}"
    return int(match.group(1))


@pytest.fixture
def environments(k8s):
    for env in ("staging", "production"):
        put_app_secrets(k8s.core, f"todo-{env}", env)
    yield
    for env in ("staging", "production"):
        k8s.core.delete_namespace(f"todo-{env}")


def _images(k8s, namespace: str) -> set[str]:
    return {
        c.image.rsplit(":", 1)[1]
        for d in k8s.apps.list_namespaced_deployment(namespace).items
        for c in d.spec.template.spec.containers
        if "todo-" in c.image
    }


@pytest.mark.timeout(1500)
def test_site_app_removes_failed_first_install_is_idempotent_check_writes_nothing_staging_spares_production(
    k8s, controlplane, environments, tmp_path
):
    """One staging history, production deployed beside it (rung L2):
    1. a first staging install of a version that never becomes ready fails, and is removed
       cleanly: no Helm release, Deployment or Service is left and the deploy Lease is free;
    2. the next good version installs normally, and a second run with it changes nothing;
    3. `--check --diff` shows the change object by object and writes nothing;
    4. neither `--check`, nor a changed staging Secret and a staging upgrade, changes any
       production object (FR-013, SC-008)."""
    site = Site(controlplane.kubeconfig_path, controlplane.context, tmp_path)
    never_ready = {"app_extra_values": {"podAnnotations": {"todo.test/behaviour": "never-ready"}}}
    # Each environment is deployed by its own run; both at once, as two pipelines would.
    with ThreadPoolExecutor(2) as pool:
        production_run = pool.submit(site.run, "production", "-e", "app_image_tag=1.0.0")
        failed_run = pool.submit(
            site.run, "staging", "-e", "app_image_tag=0.9.0", "-e", json.dumps(never_ready), expect_rc=2
        )
        production_run.result()
        output = failed_run.result()

    # The failed first install is removed cleanly.
    assert "removed (it was a first install)" in output, output[-4000:]
    releases = subprocess.run(
        [
            str(ROOT / ".tools" / "bin" / "helm"),
            "list",
            "--all",
            "-n",
            "todo-staging",
            "-o",
            "json",
            "--kubeconfig",
            str(controlplane.kubeconfig_path),
            "--kube-context",
            controlplane.context,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(releases.stdout) == []
    assert k8s.apps.list_namespaced_deployment("todo-staging").items == []
    assert k8s.core.list_namespaced_service("todo-staging").items == []
    leases = k8s.coordination.list_namespaced_lease("todo-staging").items
    assert [lease.spec.holder_identity for lease in leases if lease.spec.holder_identity] == []

    # The next deploy of a good version installs normally; a second run changes nothing.
    site.run("staging", "-e", "app_image_tag=1.0.0")
    assert _images(k8s, "todo-staging") == {"1.0.0"}
    assert _changed(site.run("staging", "-e", "app_image_tag=1.0.0")) == 0
    # Production's objects as its install left them (taken a run later, as its controllers
    # settle), then staging's.
    production = _snapshot(k8s, "todo-production")
    staging = _snapshot(k8s, "todo-staging")

    # --check --diff: reports the change, shows it object by object, writes nothing.
    output = site.run("staging", "--check", "--diff", "-e", "app_image_tag=1.1.0")
    assert _changed(output) > 0
    diff_images = re.findall(r"^\+\s+image: \S+todo-(\w+):1\.1\.0", output, re.MULTILINE)
    assert sorted(set(diff_images)) == ["api", "gateway", "notifier", "web"], output[-6000:]
    assert re.findall(r"^-\s+image: \S+todo-api:1\.0\.0", output, re.MULTILINE), output[-6000:]
    assert "todo-production" not in output
    assert _snapshot(k8s, "todo-staging") == staging
    assert _snapshot(k8s, "todo-production") == production
    assert _images(k8s, "todo-staging") == {"1.0.0"}

    # A changed staging Secret and a staging upgrade leave production as it was (SC-008).
    auth = next(s for s in app_secrets("staging") if s["name"].endswith("-auth"))
    k8s.core.patch_namespaced_secret(auth["name"], "todo-staging", {"stringData": app_secret_values(auth)})
    site.run("staging", "-e", "app_image_tag=1.1.0")
    assert _images(k8s, "todo-staging") == {"1.1.0"}
    assert _images(k8s, "todo-production") == {"1.0.0"}
    assert _snapshot(k8s, "todo-production") == production
