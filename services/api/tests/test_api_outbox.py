"""The transactional outbox and its relay on a real PostgreSQL, publishing through a
stand-in for the Dapr sidecar (a real HTTP server on loopback speaking Dapr's publish and
bulk publish API; test_api_outbox_dapr.py runs the relay against the real daprd and Kafka)
— rung L1. Atomicity, nothing lost while the sidecar fails (wholly or for some entries of a
bulk call), per-user order, exactly one publication per event with two replicas, published
events deleted."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from api_testlib import assert_problem, keep_outbox_history, outbox_history, register, running
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
        await keep_outbox_history(app.state.engine)
        alice = await register(client, "alice@example.com")
        task = (await client.post(TASKS, json={"title": "hello"}, headers=alice.headers)).json()
        [message] = await sidecar.wait_for_async(1)
        await wait_until(lambda: _drained(app))
        events = await outbox_history(app.state.engine)
        assert (await client.get("/readyz")).json()["checks"] == {"database": "ok", "dapr": "ok"}
        await app.state.relay.refresh_metrics()
        metrics = (await client.get("/metrics")).text
    assert sidecar.bulk_sizes == [1], "published with Dapr's bulk publish API"
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


async def _drained(app) -> bool:
    """Every event published: the relay deletes each one once Dapr has accepted it."""
    return await count(app, "outbox_events") == 0


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
        await wait_until(lambda: _drained(app))
        await app.state.relay.refresh_metrics()
        metrics = (await client.get("/metrics")).text
    assert_each_published_once_in_user_order(published, events)
    assert "outbox_backlog_events 0.0" in metrics
    assert "outbox_oldest_pending_age_seconds 0.0" in metrics
    assert max(sidecar.bulk_sizes) > 1, "several users' events in one bulk call"


async def test_a_partial_bulk_failure_holds_back_only_that_users_later_events(api_db, settings_for, sidecar):
    """Dapr answers a bulk call listing some entries as failed: those events stay pending
    and are retried with backoff, the other entries count as published, and none of the
    failing user's later events goes out before its failed one (nothing overtakes it)."""
    writer = create_api_app(settings_for(api_db, outbox_relay_enabled=False))
    async with running(writer) as client:
        users = [await register(client, f"u{i}@example.com") for i in range(3)]
        await make_events(client, users, per_user=4)  # a backlog: several events per user
        events = await outbox(writer)
    failing = users[0].id
    stuck = [e for e in events if str(e.user_id) == failing]
    others = [e for e in events if str(e.user_id) != failing]
    sidecar.fail_partition_keys(failing)
    app = create_api_app(settings_for(api_db, dapr_http_port=sidecar.port))
    async with running(app) as client:
        await sidecar.wait_for_async(len(others), timeout=20)
        pending = await wait_until(lambda: _head_retried(app, times=2))
        assert {m.partition_key for m in sidecar.published} == {users[1].id, users[2].id}
        assert [e.id for e in pending] == [e.id for e in stuck], "only the failing user's events wait"
        assert "stand-in told to fail" in pending[0].last_error
        assert all(e.attempts == 0 for e in pending[1:]), "its later events were never sent"
        assert app.state.relay.consecutive_failures > 0, "the relay backs off"

        sidecar.recover()
        published = await sidecar.wait_for_async(len(events), timeout=20)
        await wait_until(lambda: _drained(app))
    assert_each_published_once_in_user_order(published, events)


async def _head_retried(app, times: int) -> list | None:
    pending = await outbox(app)
    return pending if pending and pending[0].attempts >= times else None


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
        await keep_outbox_history(first.state.engine)
        users = [await register(one, f"u{i}@example.com") for i in range(6)]
        await asyncio.gather(make_events(one, users[:3], per_user=8), make_events(two, users[3:], per_user=8))
        await wait_until(lambda: _attempted(sidecar, 4))
        sidecar.recover()
        # keep writing while both relays drain the backlog
        await asyncio.gather(make_events(one, users[3:], per_user=2), make_events(two, users[:3], per_user=2))
        events = await outbox_history(first.state.engine)
        published = await sidecar.wait_for_async(len(events), timeout=30)
        await wait_until(lambda: _drained(first))
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
    """The claim statement locks each user's OLDEST pending event (and that user's next ones);
    another replica skips that user entirely (it cannot take the user's later events either)."""
    for user in (alice, bob):
        for i in range(3):
            await client.post(TASKS, json={"title": f"t{i}"}, headers=user.headers)
    from todo_api.outbox import OUTBOX_TABLE
    from todo_shared.outbox import OutboxStatements

    claim = OutboxStatements(OUTBOX_TABLE).claim
    engine = app.state.engine
    async with engine.connect() as replica_a, engine.connect() as replica_b:
        await replica_a.begin()
        claimed_a = (await replica_a.execute(claim, {"users": 1, "per_user": 10})).all()
        await replica_b.begin()
        claimed_b = (await replica_b.execute(claim, {"users": 10, "per_user": 10})).all()
        await replica_a.rollback()
        await replica_b.rollback()
    assert [str(r.user_id) for r in claimed_a] == [alice.id] * 3
    assert [str(r.user_id) for r in claimed_b] == [bob.id] * 3
    assert [r.seq for r in claimed_a] == sorted(r.seq for r in claimed_a)


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


async def test_published_events_are_deleted_and_rows_an_older_relay_marked_are_left_alone(
    app, client, alice, settings_for, api_db, sidecar
):
    """A published event is deleted at once (no update, no later clean-up). A row that a relay
    of the previous release marked published (``published_at`` set) during a rolling upgrade
    is not pending: never published again, not in the backlog gauge."""
    await client.post(TASKS, json={"title": "old"}, headers=alice.headers)
    async with app.state.engine.begin() as conn:
        await conn.execute(text("UPDATE outbox_events SET published_at = now()"))
    relaying = create_api_app(settings_for(api_db, dapr_http_port=sidecar.port))
    async with running(relaying) as other:
        await other.post(TASKS, json={"title": "new"}, headers=alice.headers)
        [message] = await sidecar.wait_for_async(1)
        await wait_until(lambda: _only_the_marked_row_left(relaying))
        assert await relaying.state.relay.refresh_metrics() == (0, 0.0)
    assert message.data["data"]["task"]["title"] == "new"


async def _only_the_marked_row_left(app) -> bool:
    rows = await outbox(app)
    return len(rows) == 1 and rows[0].published_at is not None
