"""Recurring tasks: the next due date (rung L0) and the next occurrence created exactly once
when complete is retried or raced, on a real PostgreSQL (rung L1)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from api_testlib import running
from todo_api.app import create_api_app
from todo_api.recurrence import next_due

TASKS = "/api/v1/tasks"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("due", "recurrence", "expected"),
    [
        (utc(2025, 3, 30, 9), "daily", utc(2025, 3, 31, 9)),
        (utc(2025, 12, 31, 23, 30), "daily", utc(2026, 1, 1, 23, 30)),
        (utc(2025, 2, 25, 8), "weekly", utc(2025, 3, 4, 8)),
        (utc(2025, 1, 15, 8), "monthly", utc(2025, 2, 15, 8)),
        (utc(2025, 1, 31, 8), "monthly", utc(2025, 2, 28, 8)),  # clamped to month end
        (utc(2024, 1, 31, 8), "monthly", utc(2024, 2, 29, 8)),  # leap year
        (utc(2025, 3, 31, 8), "monthly", utc(2025, 4, 30, 8)),
        (utc(2025, 12, 31, 8), "monthly", utc(2026, 1, 31, 8)),  # year boundary
        (utc(2025, 2, 28, 8), "monthly", utc(2025, 3, 28, 8)),  # the clamp carries over
    ],
)
def test_next_due(due, recurrence, expected):
    assert next_due(due, recurrence) == expected


@pytest.mark.unit
def test_next_due_refuses_non_recurring():
    with pytest.raises(ValueError, match="not a recurring task"):
        next_due(utc(2025, 1, 1), "none")


async def series(client, user, series_id: str) -> list[dict]:
    items = (await client.get(TASKS, params={"limit": 100, "sort": "due"}, headers=user.headers)).json()[
        "items"
    ]
    return [t for t in items if t["series_id"] == series_id]


@pytest.mark.integration
async def test_completing_a_recurring_task_creates_the_next_occurrence(client, alice):
    created = await client.post(
        TASKS,
        json={
            "title": "Pay rent",
            "description": "to the landlord",
            "priority": "high",
            "tags": ["home", "money"],
            "due_at": "2025-01-31T09:00:00+01:00",
            "remind_before_minutes": 60,
            "recurrence": "monthly",
        },
        headers=alice.headers,
    )
    task = created.json()
    done = (await client.post(f"{TASKS}/{task['id']}/complete", headers=alice.headers)).json()
    assert done["completed"] is True
    assert done["next_task_id"] is not None
    following = (await client.get(f"{TASKS}/{done['next_task_id']}", headers=alice.headers)).json()
    for field in (
        "title",
        "description",
        "priority",
        "tags",
        "remind_before_minutes",
        "recurrence",
        "series_id",
    ):
        assert following[field] == task[field], field
    assert following["due_at"] == "2025-02-28T08:00:00Z"  # 08:00 UTC on Jan 31 -> Feb 28
    assert following["completed"] is False
    assert following["next_task_id"] is None


@pytest.mark.integration
async def test_retried_complete_creates_one_occurrence(client, alice):
    task = (
        await client.post(
            TASKS,
            json={"title": "Water plants", "due_at": "2030-06-01T07:00:00Z", "recurrence": "daily"},
            headers=alice.headers,
        )
    ).json()
    answers = [await client.post(f"{TASKS}/{task['id']}/complete", headers=alice.headers) for _ in range(4)]
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["next_task_id"] for a in answers}) == 1
    occurrences = await series(client, alice, task["series_id"])
    assert [o["due_at"] for o in occurrences] == ["2030-06-01T07:00:00Z", "2030-06-02T07:00:00Z"]


@pytest.mark.integration
async def test_reopen_and_complete_again_creates_no_second_occurrence(client, alice):
    task = (
        await client.post(
            TASKS,
            json={"title": "Standup", "due_at": "2030-06-01T07:00:00Z", "recurrence": "weekly"},
            headers=alice.headers,
        )
    ).json()
    first = (await client.post(f"{TASKS}/{task['id']}/complete", headers=alice.headers)).json()
    await client.post(f"{TASKS}/{task['id']}/reopen", headers=alice.headers)
    second = (await client.post(f"{TASKS}/{task['id']}/complete", headers=alice.headers)).json()
    assert second["next_task_id"] == first["next_task_id"]
    assert len(await series(client, alice, task["series_id"])) == 2


@pytest.mark.integration
async def test_racing_completes_across_two_replicas_create_one_occurrence(
    client, alice, api_db, settings_for
):
    """Ten concurrent completes, half through a second app instance on the same database."""
    task = (
        await client.post(
            TASKS,
            json={"title": "Backup", "due_at": "2030-06-01T07:00:00Z", "recurrence": "monthly"},
            headers=alice.headers,
        )
    ).json()
    other_app = create_api_app(settings_for(api_db))
    async with running(other_app) as other:
        answers = await asyncio.gather(
            *(
                (client if i % 2 else other).post(f"{TASKS}/{task['id']}/complete", headers=alice.headers)
                for i in range(10)
            )
        )
    assert {a.status_code for a in answers} == {200}
    assert len({a.json()["next_task_id"] for a in answers}) == 1
    occurrences = await series(client, alice, task["series_id"])
    assert [o["due_at"] for o in occurrences] == ["2030-06-01T07:00:00Z", "2030-07-01T07:00:00Z"]


@pytest.mark.integration
async def test_completing_the_next_occurrence_continues_the_series(client, alice):
    task = (
        await client.post(
            TASKS,
            json={"title": "Invoice", "due_at": "2030-01-31T12:00:00Z", "recurrence": "monthly"},
            headers=alice.headers,
        )
    ).json()
    current = task
    for _ in range(3):
        current = (await client.post(f"{TASKS}/{current['id']}/complete", headers=alice.headers)).json()
        current = (await client.get(f"{TASKS}/{current['next_task_id']}", headers=alice.headers)).json()
    dues = [o["due_at"] for o in await series(client, alice, task["series_id"])]
    assert dues == [
        "2030-01-31T12:00:00Z",
        "2030-02-28T12:00:00Z",
        "2030-03-28T12:00:00Z",
        "2030-04-28T12:00:00Z",
    ]


@pytest.mark.integration
async def test_a_non_recurring_task_has_no_next_occurrence(client, alice):
    task = (
        await client.post(
            TASKS, json={"title": "Once", "due_at": "2030-01-01T00:00:00Z"}, headers=alice.headers
        )
    ).json()
    done = (await client.post(f"{TASKS}/{task['id']}/complete", headers=alice.headers)).json()
    assert done["next_task_id"] is None
    assert (await client.get(TASKS, headers=alice.headers)).json()["total"] == 1
