"""The transactional outbox and its relay on a real PostgreSQL, publishing through a
stand-in for the Dapr sidecar (a real HTTP server on loopback; daprd is not on this machine
yet) — rung L1. Atomicity, nothing lost while the sidecar fails, per-user order, exactly one
publication per event with two replicas."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from api_testlib import assert_problem, register, running
from sqlalchemy import func, select, text
from sqlalchemy import table as sql_table
from todo_api import store as store_module
from todo_api.app import create_api_app
from todo_api.outbox import record_event, user_lock_key
from todo_shared.dapr import CLOUDEVENTS_JSON

pytestmark = pytest.mark.integration

TASKS = "/api/v1/tasks"


async def outbox(app) -> list:
    async with app.state.engine.connect() as conn:
        rows = await conn.execute(text("SELECT * FROM outbox_events ORDER BY seq"))
        return rows.all()


async def count(app, table: str) -> int:
    async with app.state.engine.connect() as conn:
        return (await conn.execute(select(func.count()).select_from(sql_table(table)))).scalar_one()


async def wait_until(predicate, timeout: float = 15.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


# -- writing --------------------------------------------------------------------------------------


async def test_every_change_writes_its_event_with_the_task_snapshot(app, client, alice):
    task = (
        await client.post(
            TASKS,
            json={"title": "t", "due_at": "2030-01-01T00:00:00Z", "recurrence": "daily"},
            headers=alice.headers,
        )
    ).json()
    updated = (
        await client.patch(f"{TASKS}/{task['id']}", json={"priority": "high"}, headers=alice.headers)
    ).json()
    completed = (await client.post(f"{TASKS}/{task['id']}/complete", headers=alice.headers)).json()
    reopened = (await client.post(f"{TASKS}/{task['id']}/reopen", headers=alice.headers)).json()
    await client.delete(f"{TASKS}/{task['id']}", headers=alice.headers)

    events = await outbox(app)
    assert [e.type for e in events] == [
        "task.created",
        "task.updated",
        "task.completed",
        "task.created",  # the next occurrence
        "task.updated",  # reopen
        "task.deleted",
    ]
    assert {str(e.user_id) for e in events} == {alice.id}
    assert len({e.id for e in events}) == 6
    assert all(e.published_at is None for e in events)  # no sidecar in this app: they wait
    snapshots = [e.payload["task"] for e in events]
    assert snapshots[0] == task
    assert snapshots[1] == updated
    assert snapshots[2] == completed
    assert snapshots[3]["id"] == completed["next_task_id"]
    assert snapshots[4] == reopened
    assert snapshots[5] == reopened
    first = events[0].payload
    assert first["event_id"] == str(events[0].id)
    assert first["type"] == "task.created"
    assert first["user_id"] == alice.id
    assert first["task_id"] == task["id"]


async def test_changes_that_change_nothing_write_no_event(app, client, alice):
    task = (await client.post(TASKS, json={"title": "t"}, headers=alice.headers)).json()
    await client.patch(f"{TASKS}/{task['id']}", json={}, headers=alice.headers)
    await client.patch(f"{TASKS}/{task['id']}", json={"title": "t"}, headers=alice.headers)
    await client.post(f"{TASKS}/{task['id']}/reopen", headers=alice.headers)
    await client.post(f"{TASKS}/{task['id']}/complete", headers=alice.headers)
    await client.post(f"{TASKS}/{task['id']}/complete", headers=alice.headers)
    assert [e.type for e in await outbox(app)] == ["task.created", "task.completed"]


async def test_failed_requests_write_no_event(app, client, alice, bob):
    task = (await client.post(TASKS, json={"title": "t"}, headers=alice.headers)).json()
    await client.patch(
        f"{TASKS}/{task['id']}", json={"remind_before_minutes": 5}, headers=alice.headers
    )  # 422
    await client.patch(f"{TASKS}/{task['id']}", json={"title": "x"}, headers=bob.headers)  # 404
    await client.delete(f"{TASKS}/{task['id']}", headers=bob.headers)  # 404
    assert [e.type for e in await outbox(app)] == ["task.created"]


REFUSE_DOOMED_EVENTS = [
    """
    CREATE FUNCTION refuse_doomed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.payload -> 'task' ->> 'title' = 'doomed' THEN
            RAISE EXCEPTION 'event refused by the test';
        END IF;
        RETURN NEW;
    END $$
    """,
    "CREATE TRIGGER refuse_doomed BEFORE INSERT ON outbox_events"
    " FOR EACH ROW EXECUTE FUNCTION refuse_doomed()",
]


async def test_a_change_whose_event_fails_is_rolled_back_entirely(app, client, alice):
    """The database refuses the event row (a trigger): the task change goes too, on every path."""
    async with app.state.engine.begin() as conn:
        for statement in REFUSE_DOOMED_EVENTS:
            await conn.execute(text(statement))
    assert_problem(await client.post(TASKS, json={"title": "doomed"}, headers=alice.headers), 500)
    assert await count(app, "tasks") == 0
    assert await count(app, "outbox_events") == 0

    task = (await client.post(TASKS, json={"title": "fine"}, headers=alice.headers)).json()
    assert_problem(
        await client.patch(f"{TASKS}/{task['id']}", json={"title": "doomed"}, headers=alice.headers), 500
    )
    assert (await client.get(f"{TASKS}/{task['id']}", headers=alice.headers)).json() == task
    assert [e.type for e in await outbox(app)] == ["task.created"]


async def test_a_failed_event_write_rolls_the_change_back(app, client, alice, monkeypatch):
    task = (await client.post(TASKS, json={"title": "before"}, headers=alice.headers)).json()

    async def fail(*args, **kwargs):
        raise RuntimeError("outbox unavailable")

    monkeypatch.setattr(store_module, "record_event", fail)
    assert_problem(
        await client.patch(f"{TASKS}/{task['id']}", json={"title": "after"}, headers=alice.headers), 500
    )
    assert_problem(await client.post(f"{TASKS}/{task['id']}/complete", headers=alice.headers), 500)
    monkeypatch.undo()
    unchanged = (await client.get(f"{TASKS}/{task['id']}", headers=alice.headers)).json()
    assert unchanged == task
    assert len(await outbox(app)) == 1


async def test_one_users_event_writes_are_serialized_until_commit(app, alice):
    """The per-user advisory lock: a second writer waits, so seq order is commit order."""
    engine = app.state.engine
    user = uuid.UUID(alice.id)
    snapshot = {"id": str(uuid.uuid4())}
    now = datetime.now(UTC)
    async with engine.connect() as first, engine.connect() as second:
        await first.begin()
        await record_event(first, "task.updated", user, snapshot, now)

        await second.begin()
        writer = asyncio.create_task(record_event(second, "task.updated", user, snapshot, now))
        await asyncio.sleep(0.3)
        assert not writer.done(), "the second writer must wait for the first to commit"
        await first.commit()
        await asyncio.wait_for(writer, 5)
        await second.commit()
    other_user = uuid.uuid4()
    assert user_lock_key(user) != user_lock_key(other_user)


# -- relaying -------------------------------------------------------------------------------------


async def test_events_are_published_as_cloud_events_keyed_by_user(api_db, settings_for, sidecar):
    app = create_api_app(settings_for(api_db, dapr_http_port=sidecar.port))
    async with running(app) as client:
        alice = await register(client, "alice@example.com")
        task = (await client.post(TASKS, json={"title": "hello"}, headers=alice.headers)).json()
        [message] = await sidecar.wait_for_async(1)
        events = await wait_until(lambda: _all_published(app))
        assert (await client.get("/readyz")).json()["checks"] == {"database": "ok", "dapr": "ok"}
        metrics = (await client.get("/metrics")).text
    assert (message.pubsub, message.topic) == ("pubsub", "task-events")
    assert message.partition_key == alice.id
    assert message.content_type == CLOUDEVENTS_JSON
    envelope = message.data
    assert envelope["specversion"] == "1.0"
    assert envelope["id"] == str(events[0].id)
    assert envelope["type"] == "task.created"
    assert envelope["source"] == "todo-api"
    assert envelope["subject"] == task["id"]
    assert envelope["data"]["task"] == task
    assert envelope["data"]["event_id"] == envelope["id"]
    assert 'outbox_published_total{type="task.created"} 1.0' in metrics
    assert "outbox_backlog_events 0.0" in metrics


async def _all_published(app):
    events = await outbox(app)
    return events if events and all(e.published_at is not None for e in events) else None


async def make_events(client, users, per_user: int) -> None:
    """Interleaved changes of several users, a mix of event types."""
    for i in range(per_user):
        for user in users:
            task = (
                await client.post(TASKS, json={"title": f"{user.email} {i}"}, headers=user.headers)
            ).json()
            if i % 3 == 1:
                await client.patch(f"{TASKS}/{task['id']}", json={"priority": "high"}, headers=user.headers)
            if i % 3 == 2:
                await client.post(f"{TASKS}/{task['id']}/complete", headers=user.headers)


def assert_each_published_once_in_user_order(published, events) -> None:
    ids = [m.data["id"] for m in published]
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert set(ids) == {str(e.id) for e in events}, "an event was lost"
    expected: dict[str, list[str]] = defaultdict(list)
    for event in events:  # seq order
        expected[str(event.user_id)].append(str(event.id))
    actual: dict[str, list[str]] = defaultdict(list)
    for message in published:
        actual[message.partition_key].append(message.data["id"])
    assert actual == expected, "a user's events were published out of order"


async def test_nothing_is_lost_while_the_sidecar_fails_and_order_holds_after_recovery(
    api_db, settings_for, sidecar
):
    sidecar.fail_publishes(500)
    app = create_api_app(settings_for(api_db, dapr_http_port=sidecar.port))
    async with running(app) as client:
        users = [await register(client, f"u{i}@example.com") for i in range(3)]
        await make_events(client, users, per_user=6)
        await wait_until(lambda: _attempted(sidecar, 5))
        events = await outbox(app)
        assert all(e.published_at is None for e in events)
        assert sidecar.published == []
        failed = [e for e in events if e.attempts]
        assert failed
        assert all("500" in e.last_error for e in failed)
        # only each user's oldest event is ever attempted: nothing overtakes it
        oldest = {}
        for e in events:
            oldest.setdefault(e.user_id, e.seq)
        assert {e.seq for e in failed} <= set(oldest.values())
        await app.state.relay.refresh_metrics()
        metrics = (await client.get("/metrics")).text
        assert f"outbox_backlog_events {float(len(events))}" in metrics
        assert "outbox_oldest_pending_age_seconds 0.0" not in metrics
        assert app.state.relay.consecutive_failures > 0

        sidecar.recover()
        published = await sidecar.wait_for_async(len(events), timeout=20)
        await wait_until(lambda: _all_published(app))
    assert_each_published_once_in_user_order(published, events)


async def _attempted(sidecar, n: int) -> bool:
    return sidecar.publish_attempts >= n


async def test_two_replicas_publish_each_event_exactly_once_in_user_order(api_db, settings_for, sidecar):
    """Two app instances (two relays) on one database drain a backlog together."""
    sidecar.fail_publishes(503)
    sidecar.publish_delay = 0.002  # widen the window in which the relays compete
    settings = settings_for(
        api_db, dapr_http_port=sidecar.port, outbox_users_per_round=2, outbox_events_per_user=3
    )
    first, second = create_api_app(settings), create_api_app(settings)
    async with running(first) as one, running(second) as two:
        users = [await register(one, f"u{i}@example.com") for i in range(6)]
        await asyncio.gather(make_events(one, users[:3], per_user=8), make_events(two, users[3:], per_user=8))
        await wait_until(lambda: _attempted(sidecar, 4))
        events = await outbox(first)
        sidecar.recover()
        # keep writing while both relays drain the backlog
        await asyncio.gather(make_events(one, users[3:], per_user=2), make_events(two, users[:3], per_user=2))
        events = await outbox(first)
        published = await sidecar.wait_for_async(len(events), timeout=30)
        await wait_until(lambda: _all_published(first))
        await asyncio.sleep(0.3)  # any duplicate would arrive now
        published = sidecar.published
        first_count = first.state.outbox_metrics.published
        second_count = second.state.outbox_metrics.published
        by_first = sum(s.value for m in first_count.collect() for s in m.samples if s.name.endswith("_total"))
        by_second = sum(
            s.value for m in second_count.collect() for s in m.samples if s.name.endswith("_total")
        )
    assert_each_published_once_in_user_order(published, events)
    assert by_first + by_second == len(events)
    assert by_first > 0
    assert by_second > 0, "both replicas took part"


async def test_a_user_claimed_by_one_relay_is_skipped_by_another(app, client, alice, bob):
    """The claim query locks each user's OLDEST pending event; another replica skips that user
    entirely (it cannot take the user's later events either)."""
    for user in (alice, bob):
        for i in range(3):
            await client.post(TASKS, json={"title": f"t{i}"}, headers=user.headers)
    from todo_api.outbox import OUTBOX_TABLE
    from todo_shared.outbox import OutboxStatements

    claim_users = OutboxStatements(OUTBOX_TABLE).claim_users
    engine = app.state.engine
    async with engine.connect() as replica_a, engine.connect() as replica_b:
        await replica_a.begin()
        claimed_a = (await replica_a.execute(claim_users, {"users": 1})).all()
        await replica_b.begin()
        claimed_b = (await replica_b.execute(claim_users, {"users": 10})).all()
        await replica_a.rollback()
        await replica_b.rollback()
    assert [str(r.user_id) for r in claimed_a] == [alice.id]
    assert [str(r.user_id) for r in claimed_b] == [bob.id]


async def test_the_relay_stops_promptly_even_while_backing_off(api_db, settings_for, sidecar):
    sidecar.fail_publishes(500)
    app = create_api_app(
        settings_for(
            api_db, dapr_http_port=sidecar.port, outbox_backoff_base_seconds=30, outbox_backoff_max_seconds=60
        )
    )
    async with running(app) as client:
        alice = await register(client, "alice@example.com")
        await client.post(TASKS, json={"title": "t"}, headers=alice.headers)
        await wait_until(lambda: _attempted(sidecar, 1))
        relay = app.state.relay
        task = relay._task
        started = time.monotonic()
    assert time.monotonic() - started < 3
    assert task.done()
    assert not task.cancelled()
    assert (await outbox_rows_after_stop(api_db))[0] is None


async def outbox_rows_after_stop(dsn: str) -> list:
    from sqlalchemy.ext.asyncio import create_async_engine
    from todo_api.db import async_url

    engine = create_async_engine(async_url(dsn))
    try:
        async with engine.connect() as conn:
            return [
                r.published_at for r in (await conn.execute(text("SELECT published_at FROM outbox_events")))
            ]
    finally:
        await engine.dispose()


async def test_published_events_are_deleted_after_the_retention(api_db, settings_for, sidecar):
    app = create_api_app(settings_for(api_db, dapr_http_port=sidecar.port, outbox_retention_hours=0.0001))
    async with running(app) as client:
        alice = await register(client, "alice@example.com")
        await client.post(TASKS, json={"title": "t"}, headers=alice.headers)
        await sidecar.wait_for_async(1)
        await asyncio.sleep(0.5)  # older than the retention (0.36 s)
        app.state.relay._last_cleanup = 0  # due now
        app.state.relay.notify()
        await wait_until(lambda: _empty(app))


async def _empty(app) -> bool:
    return await count(app, "outbox_events") == 0
