"""The control-plane fixture itself: real controllers drive real objects (rungs L1 and L2)."""

from __future__ import annotations

import pytest
from kubernetes.client.exceptions import ApiException

from testkit.workloads import deployment, set_behaviour, wait_for

pytestmark = pytest.mark.integration


def test_server_version_is_the_pinned_kubernetes(controlplane, k8s):
    from kubernetes import client

    from testkit.controlplane import toolchain

    version = client.VersionApi(k8s.api_client).get_code()
    assert version.git_version == toolchain.read_versions()["KUBERNETES_VERSION"]


def test_nodes_have_realistic_allocatable(k8s):
    nodes = k8s.core.list_node().items
    assert nodes
    for node in nodes:
        assert node.status.allocatable["cpu"] == "4"
        assert node.status.allocatable["memory"] == "8Gi"
        assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def ready_replicas(k8s, namespace, name):
    return k8s.apps.read_namespaced_deployment(name, namespace).status.ready_replicas or 0


def test_deployment_rolls_out_through_the_real_controllers(k8s, namespace):
    k8s.apps.create_namespaced_deployment(namespace, deployment("api", replicas=3))
    wait_for(lambda: ready_replicas(k8s, namespace, "api") == 3, what="3 ready replicas")
    pods = k8s.core.list_namespaced_pod(namespace).items
    assert len(pods) == 3
    assert all(p.spec.node_name and p.status.pod_ip for p in pods)  # scheduled, then "run" by kwok


def test_second_revision_rolls_with_max_unavailable_zero(k8s, namespace):
    k8s.apps.create_namespaced_deployment(namespace, deployment("api", replicas=3))
    wait_for(lambda: ready_replicas(k8s, namespace, "api") == 3, what="first revision")
    set_behaviour(k8s, namespace, "api", None)
    lowest_available = 3

    def done():
        nonlocal lowest_available
        dep = k8s.apps.read_namespaced_deployment("api", namespace)
        status = dep.status
        lowest_available = min(lowest_available, status.available_replicas or 0)
        return (
            status.observed_generation == dep.metadata.generation
            and status.updated_replicas == 3
            and status.replicas == 3
            and status.available_replicas == 3
        )

    wait_for(done, interval=0.1, what="second revision")
    assert lowest_available == 3  # never fewer available pods than desired
    rss = k8s.apps.list_namespaced_replica_set(namespace).items
    assert sorted(rs.status.replicas for rs in rss) == [0, 3]


def test_hpa_is_accepted(k8s, namespace):
    k8s.apps.create_namespaced_deployment(namespace, deployment("api"))
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "api"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
            "minReplicas": 2,
            "maxReplicas": 5,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                }
            ],
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }
    k8s.autoscaling.create_namespaced_horizontal_pod_autoscaler(namespace, hpa)

    # the real HPA controller picks it up (no metrics API here, so it reports why it cannot scale)
    def conditions():
        got = k8s.autoscaling.read_namespaced_horizontal_pod_autoscaler("api", namespace)
        return {c.type: c.status for c in (got.status.conditions or [])}

    assert wait_for(lambda: conditions().get("AbleToScale"), what="HPA controller status") == "True"


def component(spec: dict) -> dict:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": "pubsub"},
        "spec": spec,
    }


def test_dapr_component_schema_is_enforced_by_the_server(k8s, namespace):
    good = component(
        {"type": "pubsub.kafka", "version": "v1", "metadata": [{"name": "brokers", "value": "kafka:9092"}]}
    )
    k8s.custom.create_namespaced_custom_object("dapr.io", "v1alpha1", namespace, "components", good)
    bad = component({"type": "pubsub.kafka", "version": "v1", "metadata": "brokers=kafka:9092"})
    bad["metadata"]["name"] = "broken"
    with pytest.raises(ApiException) as err:
        k8s.custom.create_namespaced_custom_object("dapr.io", "v1alpha1", namespace, "components", bad)
    assert err.value.status == 422
    assert "spec.metadata" in err.value.body


def test_unknown_fields_are_rejected_with_strict_validation(k8s, namespace):
    bad = component({"type": "state.postgresql", "version": "v2", "metadta": []})
    with pytest.raises(ApiException) as err:
        k8s.custom.create_namespaced_custom_object(
            "dapr.io", "v1alpha1", namespace, "components", bad, field_validation="Strict"
        )
    assert err.value.status == 400 and "metadta" in err.value.body


@pytest.mark.parametrize(
    ("name", "kind", "scope", "storage"),
    [
        ("components.dapr.io", "Component", "Namespaced", "v1alpha1"),
        ("configurations.dapr.io", "Configuration", "Namespaced", "v1alpha1"),
        ("subscriptions.dapr.io", "Subscription", "Namespaced", "v2alpha1"),
        ("resiliencies.dapr.io", "Resiliency", "Namespaced", "v1alpha1"),
        ("certificates.cert-manager.io", "Certificate", "Namespaced", "v1"),
        ("issuers.cert-manager.io", "Issuer", "Namespaced", "v1"),
        ("clusterissuers.cert-manager.io", "ClusterIssuer", "Cluster", "v1"),
        ("servicemonitors.monitoring.coreos.com", "ServiceMonitor", "Namespaced", "v1"),
        ("podmonitors.monitoring.coreos.com", "PodMonitor", "Namespaced", "v1"),
        ("prometheusrules.monitoring.coreos.com", "PrometheusRule", "Namespaced", "v1"),
    ],
)
def test_platform_crds_are_established(k8s, name, kind, scope, storage):
    """Generated from the projects' Go types, with the group, scope and storage version they ship."""
    from kubernetes import client

    crd = client.ApiextensionsV1Api(k8s.api_client).read_custom_resource_definition(name)
    assert {c.type: c.status for c in crd.status.conditions}["Established"] == "True"
    assert (crd.spec.names.kind, crd.spec.scope) == (kind, scope)
    assert [v.name for v in crd.spec.versions if v.storage] == [storage]
