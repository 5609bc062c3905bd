"""The store's fast paths: task JSON written without a model round trip must be byte for byte
what pydantic writes (rung L0), and single statements run on the pooled asyncpg connection
must treat a lost connection like SQLAlchemy does: a 503 problem, and the pool heals (rung L1,
real PostgreSQL)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import asyncpg.pgproto.pgproto
import pytest
from api_testlib import assert_problem
from todo_api.schemas import TASK_FIELDS, TaskOut, dumps, jsonable
from todo_api.store import task_dict

TASKS = "/api/v1/tasks"


def _task(**overrides) -> dict:
    task_id = uuid.uuid4()
    now = datetime(2031, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    task = {
        "id": task_id,
        "title": 'Réunion — 会議 \u2028 "quoted" \\ back',
        "description": None,
        "priority": "high",
        "tags": ["home", "a-b"],
        "due_at": None,
        "remind_before_minutes": None,
        "recurrence": "none",
        "completed": False,
        "completed_at": None,
        "created_at": now,
        "updated_at": now,
        "series_id": task_id,
        "next_task_id": None,
    }
    task.update(overrides)
    return task


CASES = {
    "defaults": _task(),
    "every field": _task(
        description="x" * 2000,
        due_at=datetime(2031, 5, 6, 5, 8, 9, tzinfo=UTC),  # no microseconds
        remind_before_minutes=10080,
        recurrence="monthly",
        completed=True,
        completed_at=datetime(1900, 1, 1, tzinfo=UTC),
        next_task_id=uuid.uuid4(),
        tags=[],
    ),
    "asyncpg uuids": _task(
        id=asyncpg.pgproto.pgproto.UUID(str(uuid.uuid4())),
        series_id=asyncpg.pgproto.pgproto.UUID(str(uuid.uuid4())),
    ),
}


@pytest.mark.unit
@pytest.mark.parametrize("task", CASES.values(), ids=CASES.keys())
def test_task_json_is_what_pydantic_writes(task):
    model = TaskOut.model_validate(task)
    assert dumps(task_dict(task)) == model.model_dump_json().encode()
    assert jsonable(task) == model.model_dump(mode="json")
    assert list(jsonable(task)) == list(TASK_FIELDS) == list(TaskOut.model_fields)
    page = {"items": [task_dict(task)], "total": 1, "limit": 20, "offset": 0}
    assert dumps(page) == f'{{"items":[{model.model_dump_json()}],"total":1,"limit":20,"offset":0}}'.encode()


@pytest.mark.unit
def test_dumps_refuses_what_pydantic_would_not_write():
    with pytest.raises(TypeError):
        dumps({"when": timedelta(seconds=1)})


@pytest.mark.integration
async def test_the_create_answer_is_the_stored_task(client, alice):
    created = await client.post(
        TASKS,
        json={
            "title": "t",
            "tags": ["x"],
            "due_at": "2031-01-02T03:04:05.5+01:00",
            "remind_before_minutes": 5,
        },
        headers=alice.headers,
    )
    assert created.status_code == 201
    stored = await client.get(f"{TASKS}/{created.json()['id']}", headers=alice.headers)
    assert created.content == stored.content
    listed = await client.get(TASKS, headers=alice.headers)
    assert listed.json()["items"] == [created.json()]


@pytest.mark.integration
async def test_a_lost_database_connection_is_a_503_and_the_pool_heals(postgres, api_db, client, alice):
    """Every pooled connection dies under the app (a failover, a restart): requests that meet a
    dead connection answer the 503 problem, the dead connection is dropped, and the next
    requests work on fresh ones. Reads and the one-statement create, which run on the
    asyncpg connection directly, as much as SQLAlchemy transactions."""
    tasks = [
        (await client.post(TASKS, json={"title": f"t{i}"}, headers=alice.headers)).json() for i in range(3)
    ]
    database = api_db.rsplit("/", 1)[1]
    admin = await asyncpg.connect(postgres.dsn("postgres"))
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await admin.close()
    assert int(killed) >= 1
    pool_size = 5  # api_testlib.make_settings
    outcomes = []
    for attempt in range(pool_size + 2):
        request = [
            lambda: client.get(f"{TASKS}/{tasks[0]['id']}", headers=alice.headers),
            lambda: client.get(TASKS, headers=alice.headers),
            lambda: client.post(TASKS, json={"title": "after"}, headers=alice.headers),
            lambda: client.get("/api/v1/auth/me", headers=alice.headers),
        ][attempt % 4]
        response = await request()
        if response.status_code >= 500:
            problem = assert_problem(response, 503)
            assert problem["type"] == "urn:todo:problem:unavailable"
            assert response.headers["retry-after"] == "2"
        outcomes.append(response.status_code)
    assert 503 in outcomes, "a request met a dead connection"
    assert outcomes[-1] < 500, outcomes
    for _ in range(3):
        assert (await client.get(TASKS, headers=alice.headers)).status_code == 200
        created = await client.post(TASKS, json={"title": "healed"}, headers=alice.headers)
        assert created.status_code == 201
