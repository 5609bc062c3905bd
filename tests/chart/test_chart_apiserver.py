"""charts/todo against a real API server (rung L1) and real controllers (rung L2), on the
control-plane fixture: the pinned kube-apiserver with the Dapr, cert-manager and
prometheus-operator CRDs, kube-controller-manager, kube-scheduler and kwok nodes.

- kubeconform -strict on every environment's render, with JSON schemas generated from this
  API server's own OpenAPI (tests/chart/kubeschemas.py), CRDs included: no download.
- A server-side dry-run apply of every object of every environment (strict field validation).
- Helm itself installs, upgrades and uninstalls the staging release.
- The production and local renders applied for real: the Deployments roll out through the
  real controllers (kwok plays the kubelet; no Dapr injector here, so pods run without the
  injected sidecar), Services find their pods, the HPA controller takes the HPAs, the PDBs
  allow one disruption, and a new image tag rolls out without ever dropping an available pod.
"""

from __future__ import annotations

import base64
import secrets
import subprocess
import time

import pytest
import yaml
from chartlib import (
    BIN,
    CHART,
    ENVIRONMENTS,
    KUBE_VERSION,
    RELEASE,
    Applier,
    documents,
    helm,
    of_kind,
    render,
    render_in,
    secret_refs,
    values_file,
)
from kubeschemas import LOCATION, fetch_openapi, write_schemas

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kube_schemas(k8s, tmp_path_factory):
    folder = tmp_path_factory.mktemp("kube-schemas")
    written = write_schemas(fetch_openapi(k8s.api_client), folder)
    assert "apps/deployment_v1.json" in written
    assert "dapr.io/component_v1alpha1.json" in written
    assert "monitoring.coreos.com/prometheusrule_v1.json" in written
    return folder


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_kubeconform_strict_against_the_servers_own_schemas(env, kube_schemas, tmp_path):
    manifest = tmp_path / f"{env}.yaml"
    manifest.write_text(render(env))
    result = subprocess.run(
        [
            str(BIN / "kubeconform"),
            "-strict",
            "-summary",
            "-output",
            "text",
            "-kubernetes-version",
            KUBE_VERSION.removeprefix("v"),
            "-schema-location",
            f"{kube_schemas}/{LOCATION}",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    count = len(documents(render(env)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in result.stdout, result.stdout


def test_kubeconform_with_these_schemas_rejects_what_the_server_would(kube_schemas, tmp_path):
    """The generated schemas are strict: an unknown field and a wrong type are errors."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
        "spec:\n  replicas: two\n  selector: {matchLabels: {a: b}}\n"
        "  template:\n    metadata: {labels: {a: b}}\n"
        "    spec: {containers: [{name: c, image: i, imagePullPolice: Always}]}\n"
        "---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: y}\n"
        "spec: {type: pubsub.kafka, version: v1, metadata: 'brokers=k:9092'}\n"
    )
    result = subprocess.run(
        [
            str(BIN / "kubeconform"),
            "-strict",
            "-summary",
            "-schema-location",
            f"{kube_schemas}/{LOCATION}",
            str(bad),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "Invalid: 2" in result.stdout
    assert "imagePullPolice" in result.stdout and "replicas" in result.stdout


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_server_side_dry_run_of_every_object(env, k8s, namespace):
    applier = Applier(k8s.api_client, namespace)
    items = render_in(env, namespace)
    kinds = set()
    for doc in items:
        applied = applier.apply(doc, dry_run=True)
        assert applied["metadata"]["name"] == doc["metadata"]["name"]
        kinds.add(doc["kind"])
    assert {"Deployment", "NetworkPolicy", "Ingress", "ServiceMonitor", "PrometheusRule"} <= kinds
    # dry run: nothing was created
    assert k8s.apps.list_namespaced_deployment(namespace).items == []


def stand_in_secrets(k8s, namespace: str, items: list[dict]) -> None:
    """Random values under every Secret name and key the release refers to (never real ones)."""
    wanted: dict[str, set[str]] = {}
    for name, key in secret_refs(items):
        if key:
            wanted.setdefault(name, set()).add(key)
    for name, keys in wanted.items():
        data = {key: base64.b64encode(secrets.token_hex(24).encode()).decode() for key in keys}
        k8s.core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "data": data})


def wait(predicate, what: str, timeout: float = 120, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"no {what} after {timeout:.0f}s")


def deployments_available(k8s, namespace: str, names: list[str]) -> bool:
    for name in names:
        dep = k8s.apps.read_namespaced_deployment(name, namespace)
        st = dep.status
        if not (
            st.observed_generation == dep.metadata.generation
            and (st.available_replicas or 0) >= 1
            and st.updated_replicas == st.replicas == st.available_replicas
        ):
            return False
    return True


@pytest.mark.parametrize("env", ["production", "local"])
def test_release_rolls_out_on_real_controllers_without_losing_a_pod(env, k8s, namespace):
    from kubernetes import client

    applier = Applier(k8s.api_client, namespace)
    items = render_in(env, namespace)
    stand_in_secrets(k8s, namespace, items)
    for doc in items:
        applier.apply(doc)
    names = [d["metadata"]["name"] for d in of_kind(items, "Deployment")]
    # No HPA has acted yet (no metrics API here): the API server defaults replicas to 1;
    # with the HPA owning the count, start each Deployment at its HPA minimum, as the HPA would.
    minimum = {
        h["spec"]["scaleTargetRef"]["name"]: h["spec"]["minReplicas"]
        for h in of_kind(items, "HorizontalPodAutoscaler")
    }
    for name in names:
        k8s.apps.patch_namespaced_deployment_scale(name, namespace, {"spec": {"replicas": minimum[name]}})
    wait(lambda: deployments_available(k8s, namespace, names), "available Deployments")

    # Services select their pods: the EndpointSlice controller lists them ready.
    discovery = client.DiscoveryV1Api(k8s.api_client)
    for name in names:

        def ready_endpoints(name=name):
            slices = discovery.list_namespaced_endpoint_slice(
                namespace, label_selector=f"kubernetes.io/service-name={name}"
            ).items
            return sum(1 for s in slices for e in (s.endpoints or []) if e.conditions.ready)

        wait(lambda name=name: ready_endpoints(name) == minimum[name], f"{name} endpoints")

    # The HPA controller took every HPA; every PDB allows exactly what it should.
    for name in names:

        def able(name=name):
            hpa = k8s.autoscaling.read_namespaced_horizontal_pod_autoscaler(name, namespace)
            return {c.type: c.status for c in (hpa.status.conditions or [])}.get("AbleToScale") == "True"

        wait(able, f"{name} HPA status")
    policy = client.PolicyV1Api(k8s.api_client)
    for name in names:

        def allowed(name=name):
            pdb = policy.read_namespaced_pod_disruption_budget(name, namespace)
            return pdb.status.observed_generation and pdb.status.current_healthy == minimum[name] and pdb

        pdb = wait(allowed, f"{name} PDB status")
        assert pdb.status.disruptions_allowed == 1

    # Pods carry what the chart gave them (native daprd sidecar in local: explicit mode).
    pods = k8s.core.list_namespaced_pod(namespace).items
    assert len(pods) == sum(minimum.values())
    for pod in pods:
        assert pod.spec.automount_service_account_token is False
        assert pod.spec.security_context.run_as_non_root is True
        sidecars = [c.name for c in (pod.spec.init_containers or []) if c.restart_policy == "Always"]
        assert sidecars == (["daprd"] if env == "local" else [])

    # A new version: every Deployment rolls with maxUnavailable 0 (never below its replicas).
    lowest = {name: minimum[name] for name in names}
    for doc in of_kind(render_in(env, namespace, sets=["image.tag=next-version"]), "Deployment"):
        applier.apply(doc)

    def rolled():
        done = True
        for name in names:
            dep = k8s.apps.read_namespaced_deployment(name, namespace)
            st = dep.status
            lowest[name] = min(lowest[name], st.available_replicas or 0)
            image = dep.spec.template.spec.containers[0].image
            done = (
                done and image.endswith(":next-version") and st.observed_generation == dep.metadata.generation
            )
            done = done and st.updated_replicas == st.replicas == st.available_replicas == minimum[name]
        return done

    wait(rolled, "the new version rolled out", interval=0.1)
    assert lowest == minimum


def test_helm_installs_upgrades_and_uninstalls_the_release(controlplane, k8s, namespace):
    """Helm itself against the real API server, as the app role drives it: the chart's
    kubeVersion and every API it uses (Dapr, cert-manager, prometheus-operator) are served."""
    kube = ["--kubeconfig", str(controlplane.kubeconfig_path), "--kube-context", controlplane.context]
    common = [*kube, "--namespace", namespace, "--values", str(values_file("staging"))]
    first = helm(
        "upgrade", "--install", RELEASE, str(CHART), *common, "--set", "image.tag=abc1234", check=False
    )
    assert first.returncode == 0, first.stderr
    assert "STATUS: deployed" in first.stdout
    assert f"https://{yaml.safe_load(values_file('staging').read_text())['ingress']['host']}/" in first.stdout
    second = helm("upgrade", RELEASE, str(CHART), *common, "--set", "image.tag=def5678", check=False)
    assert second.returncode == 0, second.stderr
    assert "REVISION: 2" in second.stdout
    images = {
        c.image
        for d in k8s.apps.list_namespaced_deployment(namespace).items
        for c in d.spec.template.spec.containers
    }
    assert images == {f"ghcr.io/todo-cloud/todo-{s}:def5678" for s in ("api", "gateway", "notifier", "web")}
    components = k8s.custom.list_namespaced_custom_object("dapr.io", "v1alpha1", namespace, "components")
    assert {c["metadata"]["name"] for c in components["items"]} == {
        "pubsub",
        "pubsub-fanout",
        "statestore",
        "secretstore",
    }
    gone = helm("uninstall", RELEASE, *kube, "--namespace", namespace, "--wait", check=False)
    assert gone.returncode == 0, gone.stderr
    assert k8s.apps.list_namespaced_deployment(namespace).items == []
