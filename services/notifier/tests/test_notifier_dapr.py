"""The notifier on a REAL daprd with the Dapr scheduler and the PostgreSQL state store (rung L1):
task events handed to the subscription route exactly as daprd hands them over (same route,
CloudEvent body, app token), so each case controls order and repetition precisely; the
reminder records live in the real state store and the jobs in the real scheduler, which
calls the app back when they fire. The Kafka path end to end is in test_notifier_kafka.py."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from notifier_testlib import (
    Task,
    deliver_as_dapr,
    metric,
    new_user,
    query,
    read_topic,
    reminder_task,
    wait_until,
)
from todo_notifier.reminders import JobData, TaskRecord, job_name, notification_id, parse_time

pytestmark = pytest.mark.integration


async def job_of(api, task: Task) -> dict | None:
    return await api.get_job(job_name(task.id))


def job_time(job: dict) -> datetime:
    return parse_time(job["dueTime"])


def job_data(job: dict) -> dict:
    return job["data"]["value"]


async def record_of(api, task: Task) -> TaskRecord | None:
    item = await api.get(f"task-{task.id}")
    return TaskRecord.from_json(item.value) if item else None


@pytest.fixture
async def notifier(dapr_slice):
    """One notifier (in-process, real uvicorn) with its daprd; an HTTP client posting as daprd."""
    server, sidecar = dapr_slice.in_process()
    api = dapr_slice.api(sidecar)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client, api
    await api.aclose()


async def post(dapr_slice, client, event) -> str:
    return await deliver_as_dapr(client, event, dapr_slice.app_token)


async def test_a_task_with_a_reminder_gets_one_job_and_the_same_event_twice_has_one_effect(
    dapr_slice, notifier
):
    client, api = notifier
    user = new_user()
    task = dapr_slice.track(
        Task(user.id, due_at=datetime.now(UTC) + timedelta(days=2), remind_before_minutes=30)
    )
    created = task.event("task.created")
    assert await post(dapr_slice, client, created) == "SUCCESS"
    job = await job_of(api, task)
    assert job is not None
    assert job_time(job) == task.due_at - timedelta(minutes=30)
    assert JobData.from_json(job_data(job)) == JobData(
        task.id, user.id, task.due_at.astimezone(UTC), task.due_at - timedelta(minutes=30)
    )
    assert job["failurePolicy"] == {"constant": {"interval": "0.500s", "maxRetries": 720}}
    first = await api.get(f"task-{task.id}")
    assert TaskRecord.from_json(first.value).event_id == uuid.UUID(created["id"])

    assert await post(dapr_slice, client, created) == "SUCCESS"  # redelivered
    second = await api.get(f"task-{task.id}")
    assert second.etag == first.etag, "the record was not written again"
    assert job_time(await job_of(api, task)) == job_time(job)
    metrics = (await client.get("/metrics")).text
    assert metric(metrics, "notifier_task_events_total", type="task.created", outcome="applied") == 1
    assert metric(metrics, "notifier_task_events_total", type="task.created", outcome="duplicate") == 1


async def test_moving_the_due_date_moves_the_job_completing_and_deleting_cancel_it(dapr_slice, notifier):
    client, api = notifier
    user = new_user()
    task = dapr_slice.track(
        Task(user.id, due_at=datetime.now(UTC) + timedelta(days=2), remind_before_minutes=60)
    )
    assert await post(dapr_slice, client, task.event("task.created")) == "SUCCESS"
    moved_to = datetime.now(UTC) + timedelta(days=3)
    assert await post(dapr_slice, client, task.change(due_at=moved_to).event("task.updated")) == "SUCCESS"
    assert job_time(await job_of(api, task)) == moved_to - timedelta(hours=1)

    assert await post(dapr_slice, client, task.change(title="Renamed").event("task.updated")) == "SUCCESS"
    assert job_time(await job_of(api, task)) == moved_to - timedelta(hours=1)

    assert await post(dapr_slice, client, task.change(completed=True).event("task.completed")) == "SUCCESS"
    assert await job_of(api, task) is None
    assert await post(dapr_slice, client, task.change(completed=False).event("task.updated")) == "SUCCESS"
    assert await job_of(api, task) is not None, "reopening brings the reminder back"
    assert (
        await post(dapr_slice, client, task.change(remind_before_minutes=None).event("task.updated"))
        == "SUCCESS"
    )
    assert await job_of(api, task) is None, "removing the reminder cancels it"
    assert (
        await post(dapr_slice, client, task.change(remind_before_minutes=5).event("task.updated"))
        == "SUCCESS"
    )
    assert job_time(await job_of(api, task)) == moved_to - timedelta(minutes=5)
    assert await post(dapr_slice, client, task.event("task.deleted")) == "SUCCESS"
    assert await job_of(api, task) is None
    metrics = (await client.get("/metrics")).text
    assert metric(metrics, "notifier_reminders_cancelled_total") == 3


async def test_an_older_event_redelivered_after_a_newer_one_changes_nothing(dapr_slice, notifier):
    client, api = notifier
    user = new_user()
    task = dapr_slice.track(
        Task(user.id, due_at=datetime.now(UTC) + timedelta(days=2), remind_before_minutes=10)
    )
    created = task.event("task.created")
    first_move = task.change(due_at=datetime.now(UTC) + timedelta(days=4)).event("task.updated")
    second_move = task.change(due_at=datetime.now(UTC) + timedelta(days=5)).event("task.updated")
    for event in (created, first_move, second_move):
        assert await post(dapr_slice, client, event) == "SUCCESS"
    final = job_time(await job_of(api, task))
    assert final == task.due_at - timedelta(minutes=10)

    # Redelivery of older events (a consumer restart re-reads from the last commit)
    mismatched = {**first_move, "id": str(uuid.uuid4())}
    assert await post(dapr_slice, client, mismatched) == "DROP", "the CloudEvent id must be data.event_id"
    old = dict(first_move)
    old["data"] = {**first_move["data"], "event_id": str(uuid.uuid4())}
    old["id"] = old["data"]["event_id"]  # the same change under another event id: still older
    assert await post(dapr_slice, client, old) == "SUCCESS"
    assert await post(dapr_slice, client, created) == "SUCCESS"
    assert job_time(await job_of(api, task)) == final
    assert (await record_of(api, task)).event_id == uuid.UUID(second_move["id"])

    completed = task.change(completed=True).event("task.completed")
    assert await post(dapr_slice, client, completed) == "SUCCESS"
    assert await post(dapr_slice, client, second_move) == "SUCCESS"  # redelivered, older
    assert await job_of(api, task) is None, "an older event must not resurrect a cancelled reminder"
    deleted = task.event("task.deleted")
    assert await post(dapr_slice, client, deleted) == "SUCCESS"
    reopened = task.change(completed=False).event("task.updated")  # cannot follow a deletion
    assert await post(dapr_slice, client, reopened) == "SUCCESS"
    assert await job_of(api, task) is None
    assert (await record_of(api, task)).deleted
    metrics = (await client.get("/metrics")).text
    assert metric(metrics, "notifier_task_events_total", type="task.updated", outcome="stale") == 2
    assert metric(metrics, "notifier_task_events_total", type="task.updated", outcome="duplicate") == 1
    assert metric(metrics, "notifier_task_events_total", type="task.created", outcome="duplicate") == 1


async def test_a_reminder_fires_once_stores_the_notification_and_publishes_reminder_due(
    dapr_slice, notifier, kafka
):
    client, api = notifier
    user = new_user()
    task = dapr_slice.track(reminder_task(user.id, seconds=2, title="Call the bank"))
    assert await post(dapr_slice, client, task.event("task.created")) == "SUCCESS"
    rows = await wait_until(
        lambda: query(dapr_slice.dsn, "SELECT * FROM notifications"), timeout=20, what="the notification"
    )
    [row] = rows
    nid = notification_id(task.id, task.due_at)
    assert (row.id, row.user_id, row.task_id) == (nid, user.id, task.id)
    assert row.message == "Reminder: “Call the bank” is due in 1 minute."
    assert row.created_at >= task.due_at - timedelta(minutes=1), "not before the reminder time"

    [message] = await asyncio.to_thread(
        read_topic, dapr_slice.dapr.kafka, dapr_slice.reminders, count=1, timeout=20
    )
    assert message["key"] == str(user.id), "partition key = user id"
    envelope = message["value"]
    assert envelope["id"] == str(nid)
    assert envelope["type"] == "reminder.due"
    assert envelope["source"] == "todo-notifier"
    assert envelope["data"]["task"]["title"] == "Call the bank"
    assert envelope["data"]["notification"]["message"] == row.message
    assert await job_of(api, task) is None, "a one-shot job is gone once it succeeded"
    listed = (await client.get("/api/v1/notifications", headers=user.headers)).json()
    assert listed["unread_count"] == 1
    assert listed["items"][0]["id"] == str(nid)
    metrics = (await client.get("/metrics")).text
    assert metric(metrics, "notifier_reminders_fired_total", outcome="delivered") == 1


async def test_a_job_that_fires_for_a_completed_or_moved_task_delivers_nothing(dapr_slice, notifier):
    """The scheduler's call for a job made before the task changed (the change raced the
    firing): the record says otherwise, so nothing is stored."""
    client, api = notifier
    user = new_user()
    task = dapr_slice.track(
        Task(user.id, due_at=datetime.now(UTC) + timedelta(days=1), remind_before_minutes=5)
    )
    assert await post(dapr_slice, client, task.event("task.created")) == "SUCCESS"
    old_job = job_data(await job_of(api, task))
    headers = {"dapr-api-token": dapr_slice.app_token, "content-type": "application/json"}
    name = job_name(task.id)

    into_the_past = task.change(due_at=task.due_at - timedelta(hours=30)).event("task.updated")
    assert await post(dapr_slice, client, into_the_past) == "SUCCESS"
    assert await job_of(api, task) is None, "a reminder moved into the past is not scheduled"
    fired = await client.post(f"/job/{name}", content=json.dumps(old_job), headers=headers)
    assert fired.status_code == 200
    assert await post(dapr_slice, client, task.change(completed=True).event("task.completed")) == "SUCCESS"
    fired = await client.post(f"/job/{name}", content=json.dumps(old_job), headers=headers)
    assert fired.status_code == 200
    assert await query(dapr_slice.dsn, "SELECT 1 FROM notifications") == []
    metrics = (await client.get("/metrics")).text
    assert metric(metrics, "notifier_reminders_fired_total", outcome="stale") == 2

    assert (await client.post(f"/job/{name}", content=b"{}", headers=headers)).status_code == 404
    assert (await client.post("/job/other", content=json.dumps(old_job), headers=headers)).status_code == 404
    assert (await client.post(f"/job/{name}", content=json.dumps(old_job))).status_code == 401


async def test_per_user_isolation_an_event_for_another_users_task_is_dropped(dapr_slice, notifier):
    client, api = notifier
    alice, bob = new_user(), new_user()
    task = dapr_slice.track(
        Task(alice.id, due_at=datetime.now(UTC) + timedelta(days=1), remind_before_minutes=5)
    )
    assert await post(dapr_slice, client, task.event("task.created")) == "SUCCESS"
    hijack = Task(bob.id, id=task.id, due_at=datetime.now(UTC) + timedelta(days=9), remind_before_minutes=5)
    hijack.updated_at = datetime.now(UTC) + timedelta(hours=1)
    assert await post(dapr_slice, client, hijack.event("task.updated")) == "DROP"
    assert job_time(await job_of(api, task)) == task.due_at - timedelta(minutes=5)
    assert (await record_of(api, task)).user_id == alice.id


async def test_malformed_events_are_dropped_and_dapr_routes_need_the_app_token(dapr_slice, notifier):
    client, _ = notifier
    token = {"dapr-api-token": dapr_slice.app_token}
    for body in (
        b"garbage",
        b"{}",
        json.dumps({"id": "1", "type": "task.created", "data": {"x": 1}}).encode(),
    ):
        response = await client.post("/dapr/events/task-events", content=body, headers=token)
        assert response.json() == {"status": "DROP"}
    assert (await client.post("/dapr/events/task-events", content=b"{}")).status_code == 401
    wrong = {"dapr-api-token": "wrong"}
    assert (await client.get("/dapr/subscribe", headers=wrong)).status_code == 401
    subscriptions = (await client.get("/dapr/subscribe", headers=token)).json()
    assert subscriptions == [
        {
            "pubsubname": "pubsub",
            "topic": dapr_slice.topic,
            "route": "/dapr/events/task-events",
            "deadLetterTopic": dapr_slice.dead_letter,
        }
    ]
    metrics = (await client.get("/metrics")).text
    assert metric(metrics, "notifier_task_events_total", type="other", outcome="dropped") == 2
    assert metric(metrics, "notifier_task_events_total", type="task.created", outcome="dropped") == 1


async def test_transient_failures_answer_retry_and_the_retry_succeeds(dapr_slice, postgres):
    """The state store's database refuses connections: RETRY (Dapr redelivers). The
    notifier's database refuses them when a job fires: 503 (the scheduler calls again)."""
    server, sidecar = dapr_slice.in_process(task_event_retry_seconds=0)
    api = dapr_slice.api(sidecar)
    client = httpx.AsyncClient(base_url=server.url, timeout=30)
    user = new_user()
    task = dapr_slice.track(
        Task(user.id, due_at=datetime.now(UTC) + timedelta(days=1), remind_before_minutes=5)
    )
    event = task.event("task.created")
    try:
        with refused(postgres, "dapr_state"):
            assert await post(dapr_slice, client, event) == "RETRY"
        # Dapr redelivers (its resiliency policy); the state store's pool reconnects meanwhile.
        await wait_until(
            lambda: _succeeds(dapr_slice, client, event), timeout=20, what="a redelivery succeeds"
        )
        assert await job_of(api, task) is not None

        job = json.dumps(job_data(await job_of(api, task)))
        headers = {"dapr-api-token": dapr_slice.app_token}
        with refused(postgres, dapr_slice.dsn.rsplit("/", 1)[1]):
            fired = await client.post(f"/job/{job_name(task.id)}", content=job, headers=headers)
            assert fired.status_code == 503
        fired = await client.post(f"/job/{job_name(task.id)}", content=job, headers=headers)
        assert fired.status_code == 200
        assert len(await query(dapr_slice.dsn, "SELECT 1 FROM notifications")) == 1
        metrics = (await client.get("/metrics")).text
        assert metric(metrics, "notifier_task_events_total", type="task.created", outcome="retried") >= 1
        assert metric(metrics, "notifier_reminders_fired_total", outcome="retried") == 1
    finally:
        await client.aclose()
        await api.aclose()


async def test_a_short_state_store_outage_is_ridden_out_without_retry(dapr_slice, notifier, postgres):
    """Within task_event_retry_seconds the notifier tries again itself: the answer is SUCCESS."""
    client, api = notifier
    user = new_user()
    task = dapr_slice.track(
        Task(user.id, due_at=datetime.now(UTC) + timedelta(days=1), remind_before_minutes=5)
    )

    def outage() -> None:
        with refused(postgres, "dapr_state"):
            time.sleep(1.5)

    blip = asyncio.create_task(asyncio.to_thread(outage))
    await asyncio.sleep(0.3)
    assert await post(dapr_slice, client, task.event("task.created")) == "SUCCESS"
    await blip
    assert await job_of(api, task) is not None
    metrics = (await client.get("/metrics")).text
    assert metric(metrics, "notifier_task_events_total", type="task.created", outcome="retried") == 0
    assert metric(metrics, "notifier_task_events_total", type="task.created", outcome="applied") == 1


async def _succeeds(dapr_slice, client, event) -> bool:
    return await post(dapr_slice, client, event) == "SUCCESS"


class refused:
    """A database refuses new connections and loses its open ones, until the block ends."""

    def __init__(self, postgres, name: str) -> None:
        self.postgres, self.name = postgres, name

    def __enter__(self) -> None:
        self.postgres.psql(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS false')
        self.postgres.psql(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{self.name}'"  # noqa: S608
        )

    def __exit__(self, *exc: object) -> None:
        self.postgres.psql(f'ALTER DATABASE "{self.name}" WITH ALLOW_CONNECTIONS true')
