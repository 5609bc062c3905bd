"""Reminders end to end (rung L1, every engine real): task events published through a daprd to
Kafka (SASL_SSL + SCRAM), consumed by `todo-notifier` processes through their own daprd,
jobs kept and fired by the Dapr scheduler, notifications in PostgreSQL, `reminder.due`
published back to Kafka by the notifier's outbox relay. One test drives the real api.

Reminder times are a few seconds ahead (due = now + 1 min + a few s, remind 1 min before)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from notifier_testlib import (
    JWT_KEY,
    NotifierProcess,
    Task,
    metric,
    new_user,
    query,
    read_topic,
    reminder_task,
    wait_until,
)
from todo_notifier.app import create_notifier_app
from todo_notifier.reminders import job_name, notification_id
from todo_shared.dapr import CLOUDEVENTS_JSON, DaprClient
from todo_shared.testing import ServerThread

from testkit.procs import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class Publisher:
    """Publishes task events the way the api's outbox relay does: through its daprd (app id
    ``api``), as CloudEvents keyed by user."""

    def __init__(self, dapr_slice) -> None:
        self.slice = dapr_slice
        self.sidecar = dapr_slice.sidecar(free_port(), app_id="api")
        self.client = DaprClient(self.sidecar.http_port, api_token=dapr_slice.api_token)

    async def publish(self, event: dict) -> None:
        await self.client.publish(
            "pubsub",
            self.slice.topic,
            event,
            partition_key=event["data"]["user_id"],
            content_type=CLOUDEVENTS_JSON,
        )

    async def aclose(self) -> None:
        await self.client.aclose()


@pytest.fixture
async def publisher(dapr_slice):
    publisher = Publisher(dapr_slice)
    yield publisher
    await publisher.aclose()


def metrics_of(replica) -> str:
    """A replica's /metrics: a NotifierProcess or an in-process ServerThread."""
    if isinstance(replica, NotifierProcess):
        return replica.metrics()
    return httpx.get(f"{replica.url}/metrics", timeout=5).text


def consumed(replicas, **labels) -> float:
    return sum(metric(metrics_of(r), "notifier_task_events_total", **labels) for r in replicas)


def start_again(dapr_slice, settings, port: int) -> ServerThread:
    """A new notifier app on the port its daprd expects (a restarted replica)."""
    server = ServerThread(create_notifier_app(settings), port=port).start()
    dapr_slice.servers.append(server)
    return server


async def warm_up(publisher, replicas) -> None:
    """Until the replicas' consumer group is assigned and delivering: probe events (tasks
    without reminders) for a few users, so likely on every partition."""
    probes = [Task(uuid.uuid4(), title="probe") for _ in range(3)]
    for probe in probes:
        await publisher.publish(probe.event("task.created"))

    def done() -> bool:
        return consumed(replicas, type="task.created", outcome="applied") >= len(probes)

    await wait_until(done, timeout=45, interval=0.2, what="the notifier consumes task events")


async def notifications(dapr_slice, task) -> list:
    return await query(dapr_slice.dsn, "SELECT * FROM notifications WHERE task_id = :t", t=task.id)


async def reminders_published(dapr_slice, *, count: int, timeout: float, linger: float) -> list[dict]:
    return await asyncio.to_thread(
        read_topic, dapr_slice.dapr.kafka, dapr_slice.reminders, count=count, timeout=timeout, linger=linger
    )


async def test_a_reminder_fires_exactly_once_with_two_replicas_and_a_restart_before_due(dapr_slice, postgres):
    """The real api creates the task; two notifier replicas (two processes, two daprd, one app
    id) share the consumer group; replica A restarts between scheduling and the reminder time.
    One notification, one reminder.due; a duplicate trigger on either replica changes nothing."""
    from todo_api import migrate as api_migrate
    from todo_api.app import create_api_app
    from todo_api.settings import ApiSettings

    (a, a_sidecar), (b, _) = dapr_slice.replicas("a", "b")

    api_port = free_port()
    api_sidecar = dapr_slice.sidecar(api_port, app_id="api")
    api_db = postgres.create_database(f"api_{uuid.uuid4().hex[:8]}")
    await asyncio.to_thread(api_migrate.upgrade, api_db)
    api_settings = ApiSettings(
        environment="test",
        database_url=api_db,
        jwt_signing_key=JWT_KEY,
        dapr_http_port=api_sidecar.http_port,
        dapr_api_token=dapr_slice.api_token,
        app_api_token=dapr_slice.app_token,
        task_events_topic=dapr_slice.topic,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        outbox_poll_interval_seconds=0.05,
    )
    api = ServerThread(create_api_app(api_settings), port=api_port).start()
    dapr_slice.servers.append(api)
    async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        password = uuid.uuid4().hex
        created = await client.post("/api/v1/auth/register", json={"email": email, "password": password})
        assert created.status_code == 201, created.text
        token = (await client.post("/api/v1/auth/login", json={"email": email, "password": password})).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        client.cookies.clear()
        # warm-up through the api: a task without a reminder reaches a replica
        await client.post("/api/v1/tasks", json={"title": "probe"}, headers=headers)
        await wait_until(lambda: consumed([a, b], type="task.created", outcome="applied") >= 1, timeout=45)

        due = datetime.now(UTC) + timedelta(minutes=1, seconds=10)
        response = await client.post(
            "/api/v1/tasks",
            json={"title": "Water the plants", "due_at": due.isoformat(), "remind_before_minutes": 1},
            headers=headers,
        )
        assert response.status_code == 201, response.text
    task = response.json()
    task_id = uuid.UUID(task["id"])
    dapr_slice.tasks.append(task_id)
    jobs = dapr_slice.api(a_sidecar)
    try:
        await wait_until(lambda: jobs.get_job(job_name(task_id)), timeout=15, what="the job is scheduled")
        assert datetime.now(UTC) < due - timedelta(minutes=1), "the restart begins before the reminder time"
        assert a.stop() in (0, -15, 143), a.log_tail()  # SIGTERM: drained, relay stopped
        a.start()

        rows = await wait_until(
            lambda: query(dapr_slice.dsn, "SELECT * FROM notifications"), timeout=25, what="the notification"
        )
        [row] = rows
        nid = notification_id(task_id, datetime.fromisoformat(task["due_at"]))
        assert row.id == nid
        assert row.created_at >= due - timedelta(minutes=1)
        assert row.message == "Reminder: “Water the plants” is due in 1 minute."

        # A duplicate trigger reaching either replica (the job's data as the scheduler sends it).
        job_body = {
            "task_id": str(task_id),
            "user_id": created.json()["id"],
            "due_at": task["due_at"],
            "remind_at": (datetime.fromisoformat(task["due_at"]) - timedelta(minutes=1)).isoformat(),
        }
        for replica in (a, b):
            again = httpx.post(
                f"{replica.url}/job/{job_name(task_id)}",
                content=json.dumps(job_body),
                headers={"dapr-api-token": dapr_slice.app_token},
            )
            assert again.status_code == 200

        published = await reminders_published(dapr_slice, count=1, timeout=20, linger=3)
        assert [m["value"]["id"] for m in published] == [str(nid)], "exactly one reminder.due"
        assert published[0]["key"] == created.json()["id"]
        assert published[0]["value"]["data"]["task"]["title"] == "Water the plants"
        assert len(await query(dapr_slice.dsn, "SELECT 1 FROM notifications")) == 1
        # The relay deletes an event once Dapr has accepted it (todo_shared.outbox).
        await wait_until(
            lambda: _outbox_empty(dapr_slice.dsn), timeout=10, what="the published event deleted"
        )
        assert await jobs.get_job(job_name(task_id)) is None
        fired = sum(
            metric(r.metrics(), "notifier_reminders_fired_total", outcome="delivered") for r in (a, b)
        )
        duplicates = sum(
            metric(r.metrics(), "notifier_reminders_fired_total", outcome="duplicate") for r in (a, b)
        )
        assert (fired, duplicates) == (1, 2)
    finally:
        await jobs.aclose()


async def _outbox_empty(dsn: str) -> bool:
    return await query(dsn, "SELECT 1 FROM outbox_events") == []


async def test_completing_the_task_before_its_reminder_cancels_it(dapr_slice, publisher):
    replica, sidecar = dapr_slice.in_process()
    await warm_up(publisher, [replica])
    user = new_user()
    task = dapr_slice.track(reminder_task(user.id, seconds=5))
    jobs = dapr_slice.api(sidecar)
    try:
        await publisher.publish(task.event("task.created"))
        await wait_until(lambda: jobs.get_job(job_name(task.id)), timeout=10, what="the job is scheduled")
        await publisher.publish(task.change(completed=True).event("task.completed"))
        await wait_until(lambda: _gone(jobs, task), timeout=10, what="the job is deleted")
        remind_at = task.due_at - timedelta(minutes=1)
        await asyncio.sleep(max(0.0, (remind_at - datetime.now(UTC)).total_seconds()) + 2)
        assert await notifications(dapr_slice, task) == []
        assert await reminders_published(dapr_slice, count=1, timeout=1, linger=0) == []
        assert metric(metrics_of(replica), "notifier_reminders_cancelled_total") == 1
    finally:
        await jobs.aclose()


async def test_a_reminder_due_while_the_notifier_is_down_is_delivered_when_it_is_back(dapr_slice, publisher):
    """The only replica stops before the reminder time (its daprd stays): the scheduler keeps
    the job and, per its failure policy, calls again until the app answers."""
    replica, sidecar = dapr_slice.in_process()
    await warm_up(publisher, [replica])
    user = new_user()
    task = dapr_slice.track(reminder_task(user.id, seconds=3))
    jobs = dapr_slice.api(sidecar)
    try:
        await publisher.publish(task.event("task.created"))
        await wait_until(lambda: jobs.get_job(job_name(task.id)), timeout=10, what="the job is scheduled")
        settings = replica.app.state.settings
        await asyncio.to_thread(replica.stop)
        remind_at = task.due_at - timedelta(minutes=1)
        await asyncio.sleep(max(0.0, (remind_at - datetime.now(UTC)).total_seconds()) + 1.5)
        assert await notifications(dapr_slice, task) == []
        start_again(dapr_slice, settings, replica.port)
        [row] = await wait_until(lambda: notifications(dapr_slice, task), timeout=20, what="the notification")
        assert row.created_at > remind_at + timedelta(seconds=1)
        published = await reminders_published(dapr_slice, count=1, timeout=10, linger=2)
        assert [m["value"]["id"] for m in published] == [str(row.id)]
    finally:
        await jobs.aclose()


async def _gone(jobs, task) -> bool:
    return await jobs.get_job(job_name(task.id)) is None


async def test_moving_the_due_date_moves_the_reminder(dapr_slice, publisher):
    replica, sidecar = dapr_slice.in_process()
    await warm_up(publisher, [replica])
    user = new_user()
    task = dapr_slice.track(reminder_task(user.id, seconds=4))
    first_remind = task.due_at - timedelta(minutes=1)
    await publisher.publish(task.event("task.created"))
    new_due = datetime.now(UTC) + timedelta(minutes=1, seconds=9)
    jobs = dapr_slice.api(sidecar)
    try:
        await wait_until(lambda: jobs.get_job(job_name(task.id)), timeout=10, what="the job is scheduled")
        await publisher.publish(task.change(due_at=new_due).event("task.updated"))
        await asyncio.sleep(max(0.0, (first_remind - datetime.now(UTC)).total_seconds()) + 1.5)
        assert await notifications(dapr_slice, task) == [], "nothing at the old reminder time"
        [row] = await wait_until(
            lambda: notifications(dapr_slice, task), timeout=15, what="the moved reminder"
        )
        assert row.due_at == new_due
        assert row.created_at >= new_due - timedelta(minutes=1)
        [message] = await reminders_published(dapr_slice, count=1, timeout=10, linger=2)
        assert message["value"]["id"] == str(notification_id(task.id, new_due))
    finally:
        await jobs.aclose()


async def test_the_same_event_delivered_twice_has_one_effect(dapr_slice, publisher):
    """The same CloudEvent twice on the topic (a redelivery, or the api's relay publishing again
    after a crash), with two replicas (in-process, each with its daprd): one record write, one
    job, one notification."""
    replicas = [dapr_slice.in_process()[0] for _ in range(2)]
    await warm_up(publisher, replicas)
    user = new_user()
    task = dapr_slice.track(reminder_task(user.id, seconds=6))
    event = task.event("task.created")
    await publisher.publish(event)
    await publisher.publish(event)
    await wait_until(
        lambda: consumed(replicas, type="task.created", outcome="duplicate") >= 1,
        timeout=15,
        what="both consumed",
    )
    assert consumed(replicas, type="task.created", outcome="applied") == 3 + 1  # the probes and the event
    [row] = await wait_until(lambda: notifications(dapr_slice, task), timeout=20, what="the notification")
    assert row.id == notification_id(task.id, task.due_at)
    published = await reminders_published(dapr_slice, count=1, timeout=10, linger=3)
    assert [m["value"]["id"] for m in published] == [str(row.id)]
    assert len(await notifications(dapr_slice, task)) == 1


async def test_a_malformed_event_goes_to_the_dead_letter_topic(dapr_slice, publisher):
    replica, _ = dapr_slice.in_process()
    await warm_up(publisher, [replica])
    poison = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "test",
        "type": "task.created",
        "datacontenttype": "application/json",
        "data": {"event_id": "not-a-uuid"},
    }
    await publisher.client.publish(
        "pubsub", dapr_slice.topic, poison, partition_key="x", content_type=CLOUDEVENTS_JSON
    )
    [dead] = await asyncio.to_thread(
        read_topic, dapr_slice.dapr.kafka, dapr_slice.dead_letter, count=1, timeout=20, linger=1
    )
    assert dead["value"]["id"] == poison["id"]
    dropped = metric(
        metrics_of(replica), "notifier_task_events_total", type="task.created", outcome="dropped"
    )
    assert dropped == 1


# charts/todo/dapr/resiliency.yaml: without it daprd sends an event the notifier answers
# RETRY for straight to the dead-letter topic (Dapr 1.16.5's pkg/runtime/subscription: no
# inbound retry policy -> one delivery, then the dead letter).
async def test_with_the_resiliency_policy_a_retry_is_redelivered_not_dead_lettered(
    dapr_slice, publisher, postgres
):
    from notifier_testlib import make_settings
    from test_notifier_dapr import refused

    port = free_port()
    sidecar = dapr_slice.sidecar(port)
    settings = make_settings(dapr_slice.dsn, **dapr_slice.overrides(sidecar), task_event_retry_seconds=0)
    replica = start_again(dapr_slice, settings, port)
    sidecar.wait_ready()
    await warm_up(publisher, [replica])
    user = new_user()
    task = dapr_slice.track(
        Task(user.id, due_at=datetime.now(UTC) + timedelta(days=1), remind_before_minutes=5)
    )
    jobs = dapr_slice.api(sidecar)
    try:
        with refused(postgres, "dapr_state"):
            await publisher.publish(task.event("task.created"))
            await wait_until(
                lambda: consumed([replica], type="task.created", outcome="retried") >= 2,
                timeout=15,
                what="RETRY answered and the event delivered again",
            )
        await wait_until(lambda: jobs.get_job(job_name(task.id)), timeout=20, what="applied after the outage")
        assert consumed([replica], type="task.created", outcome="applied") == 3 + 1
        dead = await asyncio.to_thread(
            read_topic, dapr_slice.dapr.kafka, dapr_slice.dead_letter, count=1, timeout=3
        )
        assert dead == []
    finally:
        await jobs.aclose()
