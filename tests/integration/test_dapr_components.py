"""The project's Dapr components (charts/todo/dapr/) on real daprd, scheduler, Kafka (SASL_SSL,
SCRAM-SHA-256) and PostgreSQL: what the services rely on. Rung L2-L3 for Dapr itself (real
sidecars as processes; the cluster's Kubernetes secret store is replaced by local.file)."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
import uuid

import httpx
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from todo_shared.testing import ServerThread

from testkit.dapr import COMPONENTS
from testkit.procs import free_port

pytestmark = pytest.mark.integration


class Recorder:
    """A tiny app that subscribes to topics and records what its sidecar delivers."""

    def __init__(self, subscriptions: list[dict], *, answer: str = "SUCCESS") -> None:
        self.subscriptions = subscriptions
        self.answer = answer
        self.received: list[dict] = []
        self.tokens: list[str | None] = []
        self.jobs: list[tuple[str, dict]] = []
        self.lock = threading.Lock()
        app = Starlette(
            routes=[
                Route("/dapr/subscribe", self._subscribe, methods=["GET"]),
                Route("/events", self._event, methods=["POST"]),
                Route("/job/{name}", self._job, methods=["POST"]),
            ]
        )
        self.server = ServerThread(app, port=free_port()).start()
        self.port = self.server.port

    async def _subscribe(self, request: Request) -> JSONResponse:
        return JSONResponse(self.subscriptions)

    async def _event(self, request: Request) -> JSONResponse:
        with self.lock:
            self.received.append(await request.json())
            self.tokens.append(request.headers.get("dapr-api-token"))
        return JSONResponse({"status": self.answer})

    async def _job(self, request: Request) -> JSONResponse:
        with self.lock:
            self.jobs.append((request.path_params["name"], await request.json()))
        return JSONResponse({})

    def wait(self, count: int, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"{len(self.received)} of {count} events after {timeout}s")

    def stop(self) -> None:
        self.server.stop()


def subscription(pubsub: str, topic: str, dead_letter: str | None = None) -> dict:
    entry = {"pubsubname": pubsub, "topic": topic, "route": "/events"}
    if dead_letter:
        entry["deadLetterTopic"] = dead_letter
    return entry


def publish(sidecar, pubsub: str, topic: str, data: dict, token: str, key: str | None = None):
    params = {"metadata.partitionKey": key} if key else None
    return httpx.post(
        f"{sidecar.url}/v1.0/publish/{pubsub}/{topic}",
        json=data,
        params=params,
        headers={"dapr-api-token": token},
        timeout=10,
    )


@pytest.fixture
def topic(dapr) -> str:
    name = f"events-{uuid.uuid4().hex[:8]}"
    dapr.topics(name, f"{name}-dlq")
    return name


@pytest.fixture
def apps():
    started: list[Recorder] = []

    def start(*args, **kwargs) -> Recorder:
        started.append(Recorder(*args, **kwargs))
        return started[-1]

    yield start
    for app in started:
        app.stop()


def test_components_are_written_once_and_scoped():
    documents = {path.name: yaml.safe_load(path.read_text()) for path in COMPONENTS.glob("*.yaml")}
    kinds = {name: doc["kind"] for name, doc in documents.items()}
    assert kinds == {
        "pubsub.yaml": "Component",
        "pubsub-fanout.yaml": "Component",
        "statestore.yaml": "Component",
        "resiliency.yaml": "Resiliency",
    }
    assert documents["resiliency.yaml"]["scopes"] == ["notifier"]
    documents = {name: doc for name, doc in documents.items() if doc["kind"] == "Component"}
    for name, doc in documents.items():
        assert doc["scopes"], f"{name} is not scoped"
        assert doc["auth"] == {"secretStore": "secretstore"}
        for item in doc["spec"]["metadata"]:
            lowered = item["name"].lower()
            if "password" in lowered or "connectionstring" in lowered or lowered == "brokers":
                assert "secretKeyRef" in item, f"{name}: {item['name']} must come from the secret store"
    kafka = {item["name"]: item.get("value") for item in documents["pubsub.yaml"]["spec"]["metadata"]}
    assert kafka["authType"] == "password" and kafka["saslMechanism"] == "SHA-256"
    assert "disableTls" not in kafka  # TLS stays on
    assert documents["statestore.yaml"]["spec"]["version"] == "v2"


def test_publish_reaches_subscriber_over_sasl_ssl_with_app_token(dapr, topic, apps):
    app_token, api_token = secrets.token_hex(16), secrets.token_hex(16)
    app = apps([subscription("pubsub", topic, f"{topic}-dlq")])
    with dapr.sidecar("notifier", app.port, api_token=api_token, app_token=app_token) as sidecar:
        sidecar.wait_ready()
        assert publish(sidecar, "pubsub", topic, {"n": 1}, api_token, key="user-1").status_code == 204
        assert publish(sidecar, "pubsub", topic, {"n": 2}, "wrong-token").status_code == 401
        [event] = app.wait(1)
    assert event["data"] == {"n": 1} and event["topic"] == topic
    assert app.tokens == [app_token]


def test_fanout_reaches_every_gateway_replica_while_notifiers_share(dapr, topic, apps):
    token = secrets.token_hex(16)
    gateways = [apps([subscription("pubsub-fanout", topic)]) for _ in range(2)]
    notifiers = [apps([subscription("pubsub", topic)]) for _ in range(2)]
    sidecars = [dapr.sidecar("gateway", app.port, api_token=token) for app in gateways]
    sidecars += [dapr.sidecar("notifier", app.port, api_token=token) for app in notifiers]
    try:
        for sidecar in sidecars:
            sidecar.wait_ready()
        # A fan-out group starts at the newest offset: give each replica's group time to join.
        time.sleep(3)
        publisher = sidecars[2]
        for n in range(12):
            assert publish(publisher, "pubsub", topic, {"n": n}, token, key=f"user-{n}").status_code == 204
        for gateway in gateways:
            assert sorted(e["data"]["n"] for e in gateway.wait(12)) == list(range(12))
        deadline = time.monotonic() + 30
        while sum(len(n.received) for n in notifiers) < 12 and time.monotonic() < deadline:
            time.sleep(0.05)
        shared = sorted(e["data"]["n"] for n in notifiers for e in n.received)
        assert shared == list(range(12)), "each event once across the notifier group"
    finally:
        for sidecar in sidecars:
            sidecar.stop()


def test_gateway_is_not_allowed_to_use_the_notifier_components(dapr, apps):
    token = secrets.token_hex(16)
    app = apps([])
    with dapr.sidecar("gateway", app.port, api_token=token) as sidecar:
        refused = publish(sidecar, "pubsub", "anything", {"n": 1}, token)
        state = httpx.get(f"{sidecar.url}/v1.0/state/statestore/k", headers={"dapr-api-token": token})
    assert refused.status_code == 404 and "pubsub" in refused.text
    assert state.status_code >= 400


def test_drop_sends_the_message_to_the_dead_letter_topic(dapr, topic, apps):
    token = secrets.token_hex(16)
    poisoned = apps([subscription("pubsub", topic, f"{topic}-dlq")], answer="DROP")
    dead = apps([subscription("pubsub", f"{topic}-dlq")])
    with (
        dapr.sidecar("notifier", poisoned.port, api_token=token) as first,
        dapr.sidecar("api", dead.port, api_token=token) as second,
    ):
        first.wait_ready()
        second.wait_ready()
        assert publish(first, "pubsub", topic, {"poison": True}, token).status_code == 204
        poisoned.wait(1)
        [letter] = dead.wait(1)
    assert letter["data"] == {"poison": True}


def test_state_store_on_postgresql_v2_with_etags(dapr, apps):
    token = secrets.token_hex(16)
    headers = {"dapr-api-token": token}
    app = apps([])
    key = f"reminder-{uuid.uuid4().hex[:8]}"
    with dapr.sidecar("notifier", app.port, api_token=token) as sidecar:
        base = f"{sidecar.url}/v1.0/state/statestore"
        assert httpx.post(base, json=[{"key": key, "value": {"at": 1}}], headers=headers).status_code == 204
        current = httpx.get(f"{base}/{key}", headers=headers)
        assert current.json() == {"at": 1}
        etag = current.headers["etag"]
        stale = [{"key": key, "value": {"at": 3}, "etag": "1", "options": {"concurrency": "first-write"}}]
        fresh = [{"key": key, "value": {"at": 2}, "etag": etag, "options": {"concurrency": "first-write"}}]
        assert httpx.post(base, json=fresh, headers=headers).status_code == 204
        assert httpx.post(base, json=stale, headers=headers).status_code == 409
        assert httpx.get(f"{base}/{key}", headers=headers).json() == {"at": 2}


def test_a_job_fires_once_through_the_scheduler(dapr, apps):
    token = secrets.token_hex(16)
    app = apps([])
    name = f"reminder-{uuid.uuid4().hex[:8]}"
    with dapr.sidecar("notifier", app.port, api_token=token) as sidecar:
        sidecar.wait_ready()
        created = httpx.post(
            f"{sidecar.url}/v1.0-alpha1/jobs/{name}",
            json={"dueTime": "1s", "data": {"task": "t-1"}},
            headers={"dapr-api-token": token},
        )
        assert created.status_code == 204, created.text
        deadline = time.monotonic() + 20
        while not app.jobs and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2)  # a second firing would have come by now
    assert app.jobs == [(name, {"task": "t-1"})]


def test_invocation_reaches_the_app_id_of_its_own_run_only(dapr):
    """Two runs on one machine (here the session's env and a second one), each with an "api":
    the web's sidecar reaches its own run's api every time. Under mDNS, daprd's default in
    self-hosted mode, it would also reach the other run's (charts/todo/dapr/local/config.yaml)."""
    from testkit.dapr import DaprEnv

    def whoami(name: str) -> ServerThread:
        app = Starlette(routes=[Route("/whoami", lambda request: JSONResponse(name))])
        return ServerThread(app, port=free_port()).start()

    with contextlib.ExitStack() as stack:
        other = stack.enter_context(DaprEnv.create(scheduler=False))
        for env, name in ((dapr, "this run"), (other, "the other run")):
            server = whoami(name)
            stack.callback(server.stop)
            stack.enter_context(env.sidecar("api", server.port)).wait_ready()
        web = stack.enter_context(dapr.sidecar("web", None))
        answers = [httpx.get(f"{web.url}/v1.0/invoke/api/method/whoami", timeout=10) for _ in range(20)]
        assert [(a.status_code, a.json()) for a in answers] == [(200, "this run")] * 20
