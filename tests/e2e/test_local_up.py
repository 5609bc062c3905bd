"""`make up` end to end (rung L3): site.yml on the local inventory starts the real single-node
Kubernetes (roles/cluster, provider local), writes its kubeconfig, and brings the whole app up,
reachable from this machine at the URL it prints (building and importing the images a
line per image); a task created through that URL travels
api -> outbox -> daprd -> Kafka -> daprd -> gateway and reaches a browser's event stream; a
second run changes nothing; the admission policy refuses a pod without limits; `make down`'s
playbook in check mode removes nothing (the real one is the suite's last test,
test_teardown.py)."""

from __future__ import annotations

import json

import httpx
import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from testkit.node import NODE_NAME, app_image_names, status

from .e2elib import EventStream, signed_in

# The first test of the suite also waits for `make up` (the package fixture), up to ~5 min.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def test_l3_make_up_starts_the_cluster_and_writes_its_kubeconfig(local_app):
    assert status()["running"]
    config = yaml.safe_load(local_app.kubeconfig.read_text())
    assert config["current-context"] == "todo-local"
    assert oct(local_app.kubeconfig.stat().st_mode & 0o777) == "0o600"
    assert client.CoreV1Api(local_app.client()).read_node(NODE_NAME).metadata.name == NODE_NAME
    assert local_app.first.stats()["changed"] >= 2


def test_l3_make_up_shows_its_progress_an_image_at_a_time(local_app):
    [step] = local_app.first.results("Build each image and import it into the node")
    items = [result["item"] for result in step["results"]]
    assert items == app_image_names()  # the four services, then the platform's
    assert all(result["rc"] == 0 for result in step["results"])


def test_l3_make_up_serves_the_app_at_the_url_it_prints(local_app):
    assert local_app.url.startswith("http://10.96.")  # the edge Service's cluster IP
    page = httpx.get(f"{local_app.url}/signin", timeout=30)  # web
    assert page.status_code == 200 and "<form" in page.text
    assert httpx.get(f"{local_app.url}/api/v1/auth/me", timeout=30).status_code == 401  # api
    assert httpx.get(f"{local_app.url}/api/v1/notifications", timeout=30).status_code == 401  # notifier
    assert httpx.get(f"{local_app.url}/api/v1/events", timeout=30).status_code == 401  # gateway


def test_l3_a_task_created_through_the_edge_reaches_the_event_stream(local_app):
    headers = signed_in(local_app.url)
    stream = EventStream(local_app.url, headers)
    try:
        created = httpx.post(
            f"{local_app.url}/api/v1/tasks", json={"title": "through Kafka"}, headers=headers, timeout=30
        )
        assert created.status_code == 201, created.text
        # The outbox relay, daprd, Kafka (SASL_SSL) and the gateway's subscription, all in pods.
        event = stream.next(timeout=60)
        assert event["event"] == "task.created", event
        assert json.loads(event["data"])["task_id"] == created.json()["id"]
        assert event["id"]
    finally:
        stream.close()


def test_l3_a_second_make_up_changes_nothing(local_app):
    again = local_app.up()
    assert again.rc == 0, again.output
    assert again.stats()["changed"] == 0, again.output
    print(f"\nsecond make up: {again.seconds:.0f}s")


def test_l3_the_admission_policy_refuses_a_pod_without_limits(local_app):
    core = client.CoreV1Api(local_app.client())
    pod = {
        "metadata": {"name": "no-limits"},
        "spec": {"containers": [{"name": "c", "image": "localhost/todo-api:local", "command": ["true"]}]},
    }
    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod("todo-local", pod)
    assert refused.value.status in (403, 422), refused.value.body
    assert "limits" in refused.value.body, refused.value.body


def test_l3_make_down_in_check_mode_removes_nothing(local_app):
    check = local_app.playbook(
        "playbooks/teardown.yml", "--check", "-e", "cluster_teardown_confirm=todo-local"
    )
    assert check.rc == 0, check.output
    assert status()["running"], "check mode removes nothing"
