"""SC-005 on the local cluster (rung L3): CPU load on the api makes its HorizontalPodAutoscaler
(metrics from metrics-server, scaled by kube-controller-manager) add replicas within two
minutes; when the load drops to a trickle, it removes them again after the stabilization
window (30 s in the local values), and no request fails on the way out or in."""

from __future__ import annotations

import time

import pytest
from kubernetes import client

from .e2elib import NAMESPACE, Load, record, signed_in

# The first test of the suite also waits for `make up` (the package fixture), up to ~5 min.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def ready_replicas(apps: client.AppsV1Api) -> int:
    return apps.read_namespaced_deployment("todo-api", NAMESPACE).status.ready_replicas or 0


def wait_for(what: str, probe, timeout: float) -> float:
    """Seconds until `probe()` holds; fails after `timeout`."""
    started = time.monotonic()
    while not probe():
        assert time.monotonic() - started < timeout, f"{what}: not within {timeout:.0f}s"
        time.sleep(2)
    return time.monotonic() - started


def test_l3_sc005_cpu_load_scales_the_api_out_within_two_minutes_and_back_in(local_app):
    apps = client.AppsV1Api(local_app.client())
    hpa = client.AutoscalingV2Api(local_app.client()).read_namespaced_horizontal_pod_autoscaler(
        "todo-api", NAMESPACE
    )
    low, high = hpa.spec.min_replicas, hpa.spec.max_replicas
    wait_for("the api at its minimum before the load", lambda: ready_replicas(apps) == low, timeout=240)
    headers = signed_in(local_app.url)
    with Load(local_app.url, headers, {"/api/v1/tasks": 200}, workers=4) as heavy:
        out = wait_for("the api scaled out", lambda: ready_replicas(apps) > low, timeout=120)
    record("HPA: load start to a second ready api replica", out)
    print(f"\nheavy load: {heavy.rate:.0f} requests/s; replicas {low} -> {ready_replicas(apps)} (max {high})")
    with Load(
        local_app.url, headers, {"/api/v1/tasks": 200}, workers=1, target_rate=2, alone=False
    ) as trickle:
        back = wait_for("the api scaled back in", lambda: ready_replicas(apps) == low, timeout=240)
    record("HPA: load drop to back at minReplicas", back)
    assert heavy.failures == [], heavy.failures[:20]
    assert trickle.failures == [], trickle.failures[:20]
