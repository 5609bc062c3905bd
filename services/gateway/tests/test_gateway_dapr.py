"""Integration tests (rung L2-: real engines, no cluster) of the gateway's event path: the real
api (on a real PostgreSQL) commits a task change and its outbox relay publishes it through a
real daprd (component `pubsub`) to a real Kafka broker (KRaft, SASL_SSL + SCRAM-SHA-256); each
gateway replica is a real `todo-gateway` process whose own real daprd (app id `gateway`,
component `pubsub-fanout`: a consumer group per replica) delivers it; real SSE clients read the
streams. The components are the chart's own files (testkit/dapr.py). Nothing is mocked.

A `pubsub-fanout` consumer group starts at the newest offset, so every test first sends probe
events until each replica's stream shows one (its sidecar has joined and owns the partitions).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from gateway_testlib import APP_TOKEN, JWT_KEY, ServiceProcess, SseStream, sse, task_event, token_for
from todo_shared.dapr import CLOUDEVENTS_JSON, DaprClient, cloud_event

from testkit.procs import free_port

pytestmark = pytest.mark.integration

EVENTS = "/api/v1/events"
API_SIDECAR_TOKEN = secrets.token_hex(16)  # DAPR_API_TOKEN of the api's sidecar
GATEWAY_SIDECAR_TOKEN = secrets.token_hex(16)
PASSWORD = secrets.token_urlsafe(16)  # the test accounts' password


@dataclass
class Topics:
    tasks: str
    reminders: str
    tasks_dead_letter: str
    reminders_dead_letter: str

    def gateway_env(self) -> dict[str, str]:
        return {
            "TODO_TASK_EVENTS_TOPIC": self.tasks,
            "TODO_REMINDERS_TOPIC": self.reminders,
            "TODO_TASK_EVENTS_DEAD_LETTER_TOPIC": self.tasks_dead_letter,
            "TODO_REMINDERS_DEAD_LETTER_TOPIC": self.reminders_dead_letter,
        }


@dataclass
class Stack:
    """The topics and the api's daprd (app id `api`, component `pubsub`): the api process runs
    behind it for the tests that need it (``api`` fixture); the tests publish through it too,
    exactly as the api's relay does (and as the notifier publishes reminders)."""

    topics: Topics
    sidecar_port: int
    api_port: int
    publisher: DaprClient | None = None  # per test: its connections belong to the test's event loop

    async def publish(self, data: dict, topic: str | None = None) -> None:
        """Publish exactly as the api's relay does: a CloudEvent, partition key = the user id."""
        assert self.publisher is not None, "use the `client` fixture"
        await self.publisher.publish(
            "pubsub",
            topic or self.topics.tasks,
            cloud_event(data["event_id"], data["type"], "todo-tests", data),
            partition_key=data["user_id"],
            content_type=CLOUDEVENTS_JSON,
        )


@pytest.fixture(scope="module")
def stack(dapr) -> Iterator[Stack]:
    suffix = uuid.uuid4().hex[:8]
    topics = Topics(
        f"task-events-{suffix}", f"reminders-{suffix}", f"task-events-dl-{suffix}", f"reminders-dl-{suffix}"
    )
    dapr.topics(topics.tasks, topics.reminders, topics.tasks_dead_letter, topics.reminders_dead_letter)
    api_port = free_port()  # daprd waits for the app there; the `api` fixture starts it
    sidecar = dapr.sidecar("api", api_port, api_token=API_SIDECAR_TOKEN)
    try:
        yield Stack(topics, sidecar.http_port, api_port)
    finally:
        sidecar.stop()


@pytest.fixture(scope="module")
def api(stack, postgres) -> Iterator[ServiceProcess]:
    """The real api process behind the stack's sidecar: its outbox relay publishes task events."""
    suffix = stack.topics.tasks.rsplit("-", 1)[1]
    service = ServiceProcess.start(
        f"api-{suffix}",
        {
            "DAPR_HTTP_PORT": str(stack.sidecar_port),
            "DAPR_API_TOKEN": API_SIDECAR_TOKEN,
            "TODO_JWT_SIGNING_KEY": JWT_KEY,
            "TODO_DATABASE_URL": postgres.create_database(f"gw_api_{suffix}"),
            "TODO_MIGRATE_ON_START": "true",
            "TODO_PUBSUB_NAME": "pubsub",
            "TODO_TASK_EVENTS_TOPIC": stack.topics.tasks,
            "TODO_ARGON2_TIME_COST": "1",
            "TODO_ARGON2_MEMORY_KIB": "8192",
            "TODO_ARGON2_PARALLELISM": "1",
        },
        module="todo_api.main",
        port=stack.api_port,
    )
    yield service
    service.stop()


@dataclass
class Replica:
    gateway: ServiceProcess
    sidecar: object  # testkit.dapr.Sidecar

    def stop(self) -> None:
        self.gateway.stop()
        self.sidecar.stop()


@pytest.fixture
def start_replica(dapr, stack, request) -> Iterator:
    """``start_replica()``: a gateway process and its own daprd (app id `gateway`)."""
    replicas: list[Replica] = []

    def start() -> Replica:
        port = free_port()
        sidecar = dapr.sidecar("gateway", port, api_token=GATEWAY_SIDECAR_TOKEN, app_token=APP_TOKEN)
        try:
            name = f"{request.node.name[:40]}-{len(replicas)}"
            gateway = ServiceProcess.start(name, {**sidecar.env(), **stack.topics.gateway_env()}, port=port)
            sidecar.wait_ready()
        except BaseException:
            sidecar.stop()
            raise
        replica = Replica(gateway, sidecar)
        replicas.append(replica)
        return replica

    yield start
    for replica in replicas:
        replica.stop()


@pytest.fixture
async def client(stack) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client, and the stack's publisher, on this test's event loop."""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(15.0, read=60.0)) as http,
        DaprClient(stack.sidecar_port, api_token=API_SIDECAR_TOKEN) as publisher,
    ):
        stack.publisher = publisher
        yield http
        stack.publisher = None


async def wait_subscribed(
    stack: Stack, client: httpx.AsyncClient, *replicas: Replica, timeout: float = 60
) -> None:
    """Send probe events until a stream on each replica has received one."""
    probe_user = uuid.uuid4()
    async with contextlib.AsyncExitStack() as stacked:
        streams = [
            await stacked.enter_async_context(
                sse(client, r.gateway.url + EVENTS, token=token_for(probe_user))
            )
            for r in replicas
        ]
        waiting = set(range(len(streams)))
        deadline = time.monotonic() + timeout
        while waiting:
            assert time.monotonic() < deadline, "the gateway sidecars never delivered a probe"
            await stack.publish(task_event(probe_user, title="probe"))
            for index in list(waiting):
                with contextlib.suppress(TimeoutError):
                    await streams[index].next_event(0.3)
                    waiting.discard(index)


async def next_event_of(stream: SseStream, event_id: str, timeout: float = 10) -> dict:
    frame = await stream.next_event(timeout)
    assert frame.id == event_id, f"expected {event_id}, got {frame.event} {frame.id}"
    return frame.json()


async def sign_up(client: httpx.AsyncClient, api: ServiceProcess) -> tuple[str, httpx.AsyncClient]:
    email = f"gw-{uuid.uuid4().hex[:8]}@example.com"
    credentials = {"email": email, "password": PASSWORD}
    assert (await client.post(f"{api.url}/api/v1/auth/register", json=credentials)).status_code == 201
    token = (await client.post(f"{api.url}/api/v1/auth/login", json=credentials)).json()["access_token"]
    return token, httpx.AsyncClient(
        base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=15
    )


async def test_a_task_change_reaches_its_owners_stream_and_nobody_elses(stack, api, start_replica, client):
    replica = start_replica()
    await wait_subscribed(stack, client, replica)
    alice_token, alice_api = await sign_up(client, api)
    bob_token, bob_api = await sign_up(client, api)
    url = replica.gateway.url + EVENTS
    async with (
        alice_api,
        bob_api,
        sse(client, url, token=alice_token) as alice,
        sse(client, url, cookie=bob_token) as bob,
    ):
        started = time.monotonic()
        created = await alice_api.post("/api/v1/tasks", json={"title": "Water the plants"})
        assert created.status_code == 201, created.text
        task = created.json()
        frame = await alice.next_event(10)
        elapsed = time.monotonic() - started
        assert frame.event == "task.created"
        payload = frame.json()
        assert payload["task"] == task
        assert payload["user_id"] == (await alice_api.get("/api/v1/auth/me")).json()["id"]
        assert frame.id == payload["event_id"]
        assert elapsed < 2.0, f"the change took {elapsed:.2f}s to reach the stream (spec: within 2 s)"

        completed = await alice_api.post(f"/api/v1/tasks/{task['id']}/complete")
        assert completed.status_code == 200, completed.text
        frame = await alice.next_event(10)
        assert frame.event == "task.completed" and frame.json()["task"]["completed"] is True

        # Bob's first event is his own: none of Alice's reached him.
        bobs = await bob_api.post("/api/v1/tasks", json={"title": "Bob's"})
        frame = await bob.next_event(10)
        assert frame.event == "task.created" and frame.json()["task"]["id"] == bobs.json()["id"]
        await alice.expect_no_event(0.5)

        # Reminders from the notifier's topic reach Alice; the same event published twice, once
        # (one partition per user: the duplicate comes before the second reminder).
        reminders = [
            {
                "event_id": str(uuid.uuid4()),
                "type": "reminder.due",
                "user_id": payload["user_id"],
                "task_id": task["id"],
                "notification": {"message": f"“Water the plants” is due ({n})"},
            }
            for n in range(2)
        ]
        for reminder in (reminders[0], reminders[0], reminders[1]):
            await stack.publish(reminder, stack.topics.reminders)
        for reminder in reminders:
            frame = await alice.next_event(10)
            assert (frame.event, frame.id) == ("reminder.due", reminder["event_id"])
            assert frame.json()["notification"] == reminder["notification"]
        await alice.expect_no_event(0.5)


async def test_two_replicas_both_forward_to_the_owners_streams(stack, start_replica, client):
    first, second = start_replica(), start_replica()
    await wait_subscribed(stack, client, first, second)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    sent = [
        task_event(alice, kind, title=f"t{n}") for n, kind in enumerate(["task.created", "task.updated"] * 3)
    ]
    async with (
        sse(client, first.gateway.url + EVENTS, token=token_for(alice)) as on_first,
        sse(client, second.gateway.url + EVENTS, token=token_for(alice)) as on_second,
        sse(client, second.gateway.url + EVENTS, token=token_for(bob)) as bob_stream,
    ):
        for data in sent:
            await stack.publish(data)
        for stream in (on_first, on_second):
            frames = await stream.events(len(sent), timeout=15)
            assert [f.id for f in frames] == [d["event_id"] for d in sent]  # all of them, in order
        await bob_stream.expect_no_event(0.5)
        last_seen = sent[1]["event_id"]

    # Alice's tab on the first replica went away after sent[1]; it comes back on the second one,
    # which received the same events through its own consumer group: it replays the rest.
    async with sse(
        client, second.gateway.url + EVENTS, token=token_for(alice), last_event_id=last_seen
    ) as back:
        frames = await back.events(len(sent) - 2, timeout=10)
        assert [f.id for f in frames] == [d["event_id"] for d in sent[2:]]


async def test_a_malformed_event_goes_to_the_dead_letter_topic(stack, start_replica, client, dapr):
    replica = start_replica()
    await wait_subscribed(stack, client, replica)
    bad = task_event(uuid.uuid4())
    bad["user_id"] = "not-a-user"  # still keyed, still a CloudEvent: the gateway must DROP it
    await stack.publish(bad)
    good = task_event(uuid.uuid4())
    async with sse(client, replica.gateway.url + EVENTS, token=token_for(uuid.UUID(good["user_id"]))) as s:
        await stack.publish(good)
        await next_event_of(s, good["event_id"])  # the partition did not stall on the bad one

    found = await asyncio.to_thread(
        _find_in_topic, dapr.kafka, stack.topics.tasks_dead_letter, bad["event_id"]
    )
    assert found["data"]["user_id"] == "not-a-user"
    metrics = httpx.get(replica.gateway.url + "/metrics").text
    assert 'gateway_events_dropped_total{reason="malformed"} 1.0' in metrics


def _find_in_topic(kafka, topic: str, event_id: str, timeout: float = 30) -> dict:
    from confluent_kafka import Consumer

    consumer = Consumer(
        kafka.client_config(
            **{"group.id": f"gw-tests-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
        )
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None or message.error():
                continue
            envelope = json.loads(message.value())
            if envelope.get("id") == event_id:
                return envelope
        raise AssertionError(f"{event_id} not in {topic} within {timeout}s")
    finally:
        consumer.close()
