"""`make up` end to end (rung L3): site.yml on the local inventory brings the whole app up on
the real single-node Kubernetes, reachable from this machine at the URL it prints; a task
created through that URL travels api -> outbox -> daprd -> Kafka -> daprd -> gateway and
reaches a browser's event stream; a second run changes nothing; the admission policy refuses
a pod without limits."""

from __future__ import annotations

import json
import queue
import secrets
import threading
import uuid

import httpx
import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.e2e


def signed_in(url: str) -> dict[str, str]:
    """A new user's bearer header, through the edge."""
    account = {"email": f"e2e-{uuid.uuid4().hex[:8]}@example.com", "password": secrets.token_urlsafe(16)}
    registered = httpx.post(f"{url}/api/v1/auth/register", json=account, timeout=30)
    assert registered.status_code == 201, registered.text
    login = httpx.post(f"{url}/api/v1/auth/login", json=account, timeout=30)
    assert login.status_code == 200, login.text
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


class EventStream:
    """GET /api/v1/events in a thread; each event (id, type, data) lands in a queue."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue = queue.Queue()
        self.opened = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, headers), daemon=True)
        self._thread.start()
        assert self.opened.wait(30), "the event stream did not open"

    def _read(self, url: str, headers: dict[str, str]) -> None:
        timeout = httpx.Timeout(10, read=None)
        with httpx.stream("GET", f"{url}/api/v1/events", headers=headers, timeout=timeout) as response:
            assert response.status_code == 200, response.read()
            self.opened.set()
            frame: dict[str, str] = {}
            for line in response.iter_lines():
                if self._stop.is_set():
                    return
                if line == "":
                    if "event" in frame:
                        self.events.put(frame)
                    frame = {}
                elif ":" in line and not line.startswith(":"):
                    key, value = line.split(":", 1)
                    frame[key] = value.removeprefix(" ")

    def next(self, timeout: float) -> dict[str, str]:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        self._stop.set()


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
