"""The notification API and the delivery transaction on a real PostgreSQL (rung L1): listing,
reading, per-user isolation, validation and auth errors as problem+json, and one
notification + one reminder.due outbox row per occurrence however often it is delivered."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from notifier_testlib import Task, assert_problem, make_settings, new_user
from sqlalchemy import text
from todo_notifier.events import parse_task_event
from todo_notifier.reminders import TaskRecord, notification_id
from todo_notifier.store import REMINDER_DUE

pytestmark = pytest.mark.integration

URL = "/api/v1/notifications"


def record(user, title: str = "Pay rent", minutes: int = 15, due: datetime | None = None) -> TaskRecord:
    due = due or datetime.now(UTC) + timedelta(minutes=minutes)
    task = Task(user_id=user.id, title=title, due_at=due, remind_before_minutes=minutes)
    return TaskRecord.from_event(parse_task_event(task.event("task.created")))


async def deliver(app, rec: TaskRecord, at: datetime | None = None) -> bool:
    return await app.state.store.deliver(rec, at or datetime.now(UTC))


async def rows(app, sql: str) -> list:
    async with app.state.engine.connect() as conn:
        return (await conn.execute(text(sql))).all()


async def test_a_delivered_reminder_is_listed_with_its_message(app, client, alice):
    rec = record(alice, "Pay rent", minutes=90)
    assert await deliver(app, rec)
    body = (await client.get(URL, headers=alice.headers)).json()
    assert body["unread_count"] == 1
    [item] = body["items"]
    assert item["id"] == str(notification_id(rec.task_id, rec.due_at))
    assert item["task_id"] == str(rec.task_id)
    assert item["message"] == "Reminder: “Pay rent” is due in 1 hour 30 minutes."
    assert item["title"] == "Pay rent"
    assert datetime.fromisoformat(item["due_at"]) == rec.due_at
    assert datetime.fromisoformat(item["remind_at"]) == rec.remind_at
    assert item["read"] is False
    assert item["read_at"] is None
    assert datetime.fromisoformat(item["created_at"]) <= datetime.now(UTC)


async def test_the_same_occurrence_delivered_again_has_one_effect(app, client, alice):
    """Two replicas, a retried job, a restart: one notification and one reminder.due event."""
    rec = record(alice)
    assert await deliver(app, rec) is True
    assert await deliver(app, rec) is False
    results = await asyncio.gather(*(deliver(app, record_again(rec)) for _ in range(8)))
    assert results == [False] * 8
    assert len((await client.get(URL, headers=alice.headers)).json()["items"]) == 1
    events = await rows(app, "SELECT id, type, user_id, task_id, payload FROM outbox_events")
    assert len(events) == 1
    [event] = events
    nid = notification_id(rec.task_id, rec.due_at)
    assert (event.id, event.type, event.user_id, event.task_id) == (nid, REMINDER_DUE, alice.id, rec.task_id)
    payload = event.payload
    assert payload["event_id"] == str(nid)
    assert payload["type"] == "reminder.due"
    assert payload["user_id"] == str(alice.id)
    assert payload["task"] == {
        "id": str(rec.task_id),
        "title": "Pay rent",
        "due_at": payload["notification"]["due_at"],
        "remind_before_minutes": 15,
    }
    listed = (await client.get(URL, headers=alice.headers)).json()["items"][0]
    assert payload["notification"] == listed


def record_again(rec: TaskRecord) -> TaskRecord:
    """The same occurrence as another replica would see it (a new event, a new title)."""
    return TaskRecord(**{**rec.__dict__, "event_id": uuid.uuid4(), "title": "renamed"})


async def test_concurrent_deliveries_of_one_occurrence_insert_once(app, client, alice):
    # Many rounds: a duplicate may collide on the primary key or on (task_id, due_at) first,
    # depending on timing, and either collision must be a quiet no-op.
    for _ in range(30):
        results = await asyncio.gather(*(deliver(app, rec) for rec in [record(alice)] * 10))
        assert results.count(True) == 1
    assert len(await rows(app, "SELECT 1 FROM notifications")) == 30
    assert len(await rows(app, "SELECT 1 FROM outbox_events")) == 30


async def test_a_moved_due_date_is_a_new_occurrence(app, client, alice):
    rec = record(alice, due=datetime(2031, 1, 1, 9, tzinfo=UTC))
    moved = TaskRecord(**{**rec.__dict__, "due_at": datetime(2031, 1, 2, 9, tzinfo=UTC)})
    assert await deliver(app, rec)
    assert await deliver(app, moved)
    assert (await client.get(URL, headers=alice.headers)).json()["unread_count"] == 2


async def test_newest_first_limit_and_unread_filter(app, client, alice):
    start = datetime.now(UTC)
    recs = [record(alice, f"task {i}") for i in range(5)]
    for i, rec in enumerate(recs):
        await deliver(app, rec, start + timedelta(seconds=i))
    body = (await client.get(URL, headers=alice.headers)).json()
    assert [n["title"] for n in body["items"]] == [f"task {i}" for i in (4, 3, 2, 1, 0)]
    page = (await client.get(URL, params={"limit": 2}, headers=alice.headers)).json()
    assert [n["title"] for n in page["items"]] == ["task 4", "task 3"]
    assert page["unread_count"] == 5

    first = body["items"][0]["id"]
    read = await client.post(f"{URL}/{first}/read", headers=alice.headers)
    assert read.status_code == 200, read.text
    assert read.json()["read"] is True
    unread = (await client.get(URL, params={"unread": "true"}, headers=alice.headers)).json()
    assert [n["title"] for n in unread["items"]] == ["task 3", "task 2", "task 1", "task 0"]
    assert unread["unread_count"] == 4
    everything = (await client.get(URL, params={"unread": "false"}, headers=alice.headers)).json()
    assert len(everything["items"]) == 5


async def test_reading_one_is_idempotent_and_keeps_the_first_read_time(app, client, alice):
    rec = record(alice)
    await deliver(app, rec)
    nid = notification_id(rec.task_id, rec.due_at)
    first = (await client.post(f"{URL}/{nid}/read", headers=alice.headers)).json()
    assert first["read"] is True
    assert first["read_at"] is not None
    again = (await client.post(f"{URL}/{nid}/read", headers=alice.headers)).json()
    assert again["read_at"] == first["read_at"]
    assert (await client.get(URL, headers=alice.headers)).json()["unread_count"] == 0


async def test_read_all_marks_only_the_users_unread(app, client, alice, bob):
    for i in range(3):
        await deliver(app, record(alice, f"a{i}"))
    await deliver(app, record(bob, "b"))
    first = (await client.get(URL, headers=alice.headers)).json()["items"][0]["id"]
    await client.post(f"{URL}/{first}/read", headers=alice.headers)
    response = await client.post(f"{URL}/read-all", headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"updated": 2}
    assert (await client.post(f"{URL}/read-all", headers=alice.headers)).json() == {"updated": 0}
    assert (await client.get(URL, headers=alice.headers)).json()["unread_count"] == 0
    assert (await client.get(URL, headers=bob.headers)).json()["unread_count"] == 1


async def test_a_user_never_sees_or_touches_another_users_notifications(app, client, alice, bob):
    rec = record(alice)
    await deliver(app, rec)
    nid = notification_id(rec.task_id, rec.due_at)
    assert (await client.get(URL, headers=bob.headers)).json() == {"items": [], "unread_count": 0}
    body = assert_problem(await client.post(f"{URL}/{nid}/read", headers=bob.headers), 404)
    assert body["detail"] == "No such notification."
    assert_problem(await client.post(f"{URL}/{uuid.uuid4()}/read", headers=alice.headers), 404)
    assert (await client.get(URL, headers=alice.headers)).json()["items"][0]["read"] is False


async def test_the_session_cookie_authenticates_too(app, client, alice):
    await deliver(app, record(alice))
    client.cookies.set("todo_session", alice.token)
    body = (await client.get(URL)).json()
    client.cookies.clear()
    assert body["unread_count"] == 1


UNKNOWN_ID = "3f1c1f0e-6f5e-4b43-9d0a-7f2b9c1d2e3f"  # fixed: test ids must be the same on every worker


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", URL), ("POST", f"{URL}/read-all"), ("POST", f"{URL}/{UNKNOWN_ID}/read")],
)
async def test_without_a_valid_session_the_answer_is_401(client, method, path):
    assert_problem(await client.request(method, path), 401)
    stranger = new_user(make_settings("postgresql://unused/db", jwt_signing_key="x" * 40))
    assert_problem(await client.request(method, path, headers=stranger.headers), 401)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"unread": "perhaps"}, "unread"),
    ],
)
async def test_bad_query_parameters_answer_422_naming_them(client, alice, params, field):
    body = assert_problem(await client.get(URL, params=params, headers=alice.headers), 422)
    assert [e["field"] for e in body["errors"]] == [field]


async def test_a_malformed_id_answers_422_and_unknown_routes_404(client, alice):
    assert_problem(await client.post(f"{URL}/not-a-uuid/read", headers=alice.headers), 422)
    assert_problem(await client.get(f"{URL}/{uuid.uuid4()}/read", headers=alice.headers), 405)
    assert_problem(await client.get("/api/v1/nothing-here", headers=alice.headers), 404)
    assert_problem(await client.delete(URL, headers=alice.headers), 405)


async def test_health_readiness_metrics_and_openapi(client):
    assert (await client.get("/healthz")).json() == {"status": "ok", "service": "notifier"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok"}  # no sidecar configured in this app
    metrics = (await client.get("/metrics")).text
    for name in ("notifier_task_events_total", "notifier_reminders_fired_total", "outbox_backlog_events"):
        assert f"# TYPE {name.removesuffix('_total')}" in metrics
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths) == {URL, f"{URL}/read-all", f"{URL}/{{notification_id}}/read"}


async def test_the_database_going_away_answers_503_and_readiness_fails(
    app, client, alice, postgres, notifier_db
):
    name = notifier_db.rsplit("/", 1)[1]
    postgres.psql(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
    postgres.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")  # noqa: S608
    try:
        body = assert_problem(await client.get(URL, headers=alice.headers), 503)
        assert "database" in body["detail"]
        assert (await client.get("/readyz")).status_code == 503
    finally:
        postgres.psql(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
    assert (await client.get(URL, headers=alice.headers)).status_code == 200
