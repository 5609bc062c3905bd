"""Tasks through the HTTP API on a real PostgreSQL (rung L1): every field rule, per-user
isolation on every endpoint, CRUD, complete/reopen, list filters, sorting, pagination, tags."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from api_testlib import assert_problem

pytestmark = pytest.mark.integration

TASKS = "/api/v1/tasks"


async def create(client, user, **fields) -> dict:
    response = await client.post(TASKS, json={"title": "a task", **fields}, headers=user.headers)
    assert response.status_code == 201, response.text
    return response.json()


# -- create and field rules -----------------------------------------------------------------


async def test_create_applies_defaults_and_normalizes(client, alice):
    response = await client.post(
        TASKS,
        json={"title": "  Buy milk  ", "tags": ["Home", "home", " errands ", "HOME"]},
        headers=alice.headers,
    )
    assert response.status_code == 201
    task = response.json()
    assert response.headers["location"] == f"{TASKS}/{task['id']}"
    assert task["title"] == "Buy milk"
    assert task["tags"] == ["home", "errands"]
    assert task["priority"] == "medium"
    assert task["recurrence"] == "none"
    assert task["completed"] is False
    assert task["completed_at"] is None
    assert task["description"] is None
    assert task["series_id"] == task["id"]
    assert task["next_task_id"] is None


async def test_create_with_every_field(client, alice):
    due = "2031-05-06T07:08:09+02:00"
    task = await create(
        client,
        alice,
        title="Report",
        description="Quarterly " * 100,
        priority="high",
        tags=[f"t{i}" for i in range(10)],
        due_at=due,
        remind_before_minutes=10080,
        recurrence="weekly",
    )
    assert datetime.fromisoformat(task["due_at"]) == datetime.fromisoformat(due)
    assert task["due_at"] == "2031-05-06T05:08:09Z"
    assert (await client.get(f"{TASKS}/{task['id']}", headers=alice.headers)).json() == task
    assert task["remind_before_minutes"] == 10080
    assert len(task["tags"]) == 10
    assert task["recurrence"] == "weekly"


INVALID_BODIES = [
    ({}, "title"),
    ({"title": ""}, "title"),
    ({"title": "   "}, "title"),
    ({"title": "x" * 256}, "title"),
    ({"title": None}, "title"),
    ({"title": 42}, "title"),
    ({"title": "nul\x00byte"}, "title"),
    ({"title": "lone \ud800 surrogate"}, "title"),
    ({"title": "t", "description": "d" * 2001}, "description"),
    ({"title": "t", "priority": "urgent"}, "priority"),
    ({"title": "t", "priority": "HIGH"}, "priority"),
    ({"title": "t", "tags": [f"t{i}" for i in range(11)]}, "tags"),
    ({"title": "t", "tags": ["has space"]}, "tags.0"),
    ({"title": "t", "tags": ["under_score"]}, "tags.0"),
    ({"title": "t", "tags": ["x" * 33]}, "tags.0"),
    ({"title": "t", "tags": [""]}, "tags.0"),
    ({"title": "t", "tags": "home"}, "tags"),
    ({"title": "t", "tags": [1]}, "tags.0"),
    ({"title": "t", "due_at": "2030-01-01T10:00:00"}, "due_at"),  # no time zone
    ({"title": "t", "due_at": "tomorrow"}, "due_at"),
    ({"title": "t", "due_at": "1850-01-01T00:00:00Z"}, "due_at"),
    ({"title": "t", "due_at": "9999-12-31T23:00:00Z"}, "due_at"),
    ({"title": "t", "remind_before_minutes": 10}, "remind_before_minutes"),  # needs due_at
    ({"title": "t", "due_at": "2030-01-01T10:00:00Z", "remind_before_minutes": 0}, "remind_before_minutes"),
    (
        {"title": "t", "due_at": "2030-01-01T10:00:00Z", "remind_before_minutes": 10081},
        "remind_before_minutes",
    ),
    (
        {"title": "t", "due_at": "2030-01-01T10:00:00Z", "remind_before_minutes": 1e30},
        "remind_before_minutes",
    ),
    ({"title": "t", "recurrence": "daily"}, "recurrence"),  # needs due_at
    ({"title": "t", "due_at": "2030-01-01T10:00:00Z", "recurrence": "yearly"}, "recurrence"),
    ({"title": "t", "completed": True}, "completed"),  # unknown / read-only field
    ({"title": "t", "id": str(uuid.uuid4())}, "id"),
    ({"title": "t", "user_id": str(uuid.uuid4())}, "user_id"),
]


@pytest.mark.parametrize(("body", "field"), INVALID_BODIES)
async def test_create_rejects_each_rule_violation_with_a_422_problem(client, alice, body, field):
    import json

    content = json.dumps(body)  # keeps lone surrogates as \ud800 escapes
    response = await client.post(
        TASKS, content=content, headers={**alice.headers, "content-type": "application/json"}
    )
    problem = assert_problem(response, 422)
    fields = {e["field"] for e in problem["errors"]}
    assert field in fields, problem
    assert all({"loc", "field", "message", "type"} <= e.keys() for e in problem["errors"])


@pytest.mark.parametrize(
    "content",
    [b"{", b"[]", b"null", b'"title"', b"\xff", b'{"title": "a",}', b"{" * 10_000],
    ids=["truncated", "array", "null", "string", "binary", "trailing-comma", "deep"],
)
async def test_malformed_json_is_4xx_never_5xx(client, alice, content):
    response = await client.post(
        TASKS, content=content, headers={**alice.headers, "content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500
    assert response.headers["content-type"] == "application/problem+json"


async def test_oversized_body_is_413(client, alice):
    response = await client.post(
        TASKS, json={"title": "t", "description": "d" * 100_000}, headers=alice.headers
    )
    assert_problem(response, 413)


# -- read, update, delete -----------------------------------------------------------------------


async def test_get_patch_delete(client, alice):
    task = await create(client, alice, title="first", tags=["a"])
    got = await client.get(f"{TASKS}/{task['id']}", headers=alice.headers)
    assert got.json() == task

    patched = await client.patch(
        f"{TASKS}/{task['id']}",
        json={"title": " second ", "priority": "low", "tags": ["B", "c"], "due_at": "2030-01-01T00:00:00Z"},
        headers=alice.headers,
    )
    assert patched.status_code == 200
    body = patched.json()
    assert (body["title"], body["priority"], body["tags"]) == ("second", "low", ["b", "c"])
    assert body["updated_at"] > task["updated_at"]
    assert body["created_at"] == task["created_at"]

    cleared = await client.patch(
        f"{TASKS}/{task['id']}", json={"description": None, "due_at": None, "tags": []}, headers=alice.headers
    )
    assert cleared.json()["due_at"] is None
    assert cleared.json()["tags"] == []

    deleted = await client.delete(f"{TASKS}/{task['id']}", headers=alice.headers)
    assert deleted.status_code == 204
    assert_problem(await client.get(f"{TASKS}/{task['id']}", headers=alice.headers), 404)
    assert_problem(await client.delete(f"{TASKS}/{task['id']}", headers=alice.headers), 404)


async def test_an_empty_patch_changes_nothing(client, alice):
    task = await create(client, alice)
    response = await client.patch(f"{TASKS}/{task['id']}", json={}, headers=alice.headers)
    assert response.json() == task
    same = await client.patch(f"{TASKS}/{task['id']}", json={"title": "a task"}, headers=alice.headers)
    assert same.json()["updated_at"] == task["updated_at"]


@pytest.mark.parametrize(
    ("existing", "patch", "field"),
    [
        ({}, {"title": None}, "title"),
        ({}, {"priority": None}, "priority"),
        ({}, {"tags": None}, "tags"),
        ({}, {"recurrence": None}, "recurrence"),
        ({}, {"title": ""}, "title"),
        ({}, {"remind_before_minutes": 5}, "remind_before_minutes"),
        ({}, {"recurrence": "daily"}, "recurrence"),
        (
            {"due_at": "2030-01-01T00:00:00Z", "remind_before_minutes": 5},
            {"due_at": None},
            "remind_before_minutes",
        ),
        ({"due_at": "2030-01-01T00:00:00Z", "recurrence": "monthly"}, {"due_at": None}, "recurrence"),
        ({}, {"completed": True}, "completed"),
        ({}, {"due_at": "2030-01-01 10:00"}, "due_at"),
    ],
)
async def test_patch_rules(client, alice, existing, patch, field):
    task = await create(client, alice, **existing)
    problem = assert_problem(
        await client.patch(f"{TASKS}/{task['id']}", json=patch, headers=alice.headers), 422
    )
    assert field in {e["field"] for e in problem["errors"]}
    unchanged = await client.get(f"{TASKS}/{task['id']}", headers=alice.headers)
    assert unchanged.json() == task


async def test_complete_and_reopen(client, alice):
    task = await create(client, alice)
    done = (await client.post(f"{TASKS}/{task['id']}/complete", headers=alice.headers)).json()
    assert done["completed"] is True
    assert done["completed_at"] is not None
    again = (await client.post(f"{TASKS}/{task['id']}/complete", headers=alice.headers)).json()
    assert again == done  # idempotent
    reopened = (await client.post(f"{TASKS}/{task['id']}/reopen", headers=alice.headers)).json()
    assert reopened["completed"] is False
    assert reopened["completed_at"] is None
    assert (await client.post(f"{TASKS}/{task['id']}/reopen", headers=alice.headers)).json() == reopened


async def test_non_uuid_and_unknown_ids_are_4xx(client, alice):
    assert_problem(await client.get(f"{TASKS}/not-a-uuid", headers=alice.headers), 422)
    assert_problem(await client.get(f"{TASKS}/{uuid.uuid4()}", headers=alice.headers), 404)


# -- isolation ------------------------------------------------------------------------------------


async def test_another_users_task_is_404_on_every_endpoint(client, alice, bob):
    task = await create(client, alice, title="alice's", tags=["private"])
    url = f"{TASKS}/{task['id']}"
    attempts = [
        ("GET", url, None),
        ("PATCH", url, {"title": "hijacked"}),
        ("DELETE", url, None),
        ("POST", f"{url}/complete", None),
        ("POST", f"{url}/reopen", None),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=bob.headers)
        problem = assert_problem(response, 404)
        assert problem["detail"] == "No such task."
    # bob's list, search and tags show nothing of alice's
    listing = (await client.get(TASKS, params={"q": "alice", "status": "all"}, headers=bob.headers)).json()
    assert listing == {"items": [], "total": 0, "limit": 20, "offset": 0}
    assert (await client.get("/api/v1/tags", headers=bob.headers)).json() == {"items": []}
    # and alice's task is untouched
    assert (await client.get(url, headers=alice.headers)).json() == task


async def test_every_task_endpoint_needs_a_session(client, alice):
    task = await create(client, alice)
    url = f"{TASKS}/{task['id']}"
    for method, path in [
        ("GET", TASKS),
        ("POST", TASKS),
        ("GET", url),
        ("PATCH", url),
        ("DELETE", url),
        ("POST", f"{url}/complete"),
        ("POST", f"{url}/reopen"),
        ("GET", "/api/v1/tags"),
    ]:
        response = await client.request(
            method, path, json={"title": "x"} if method in ("POST", "PATCH") else None
        )
        assert_problem(response, 401)


# -- listing ---------------------------------------------------------------------------------------


async def titles(client, user, **params) -> list[str]:
    response = await client.get(TASKS, params=params, headers=user.headers)
    assert response.status_code == 200, response.text
    return [t["title"] for t in response.json()["items"]]


@pytest.fixture
async def board(client, alice):
    """A set of tasks covering the filters; due dates relative to now (UTC)."""
    now = datetime.now(UTC)
    specs = [
        {"title": "Alpha report", "priority": "high", "tags": ["work"], "due_at": now - timedelta(days=2)},
        {
            "title": "beta groceries",
            "priority": "low",
            "tags": ["home"],
            "description": "Milk and 100% juice",
        },
        {
            "title": "Gamma call",
            "priority": "medium",
            "tags": ["work", "phone"],
            "due_at": now + timedelta(hours=1),
        },
        {"title": "delta plan", "priority": "high", "due_at": now + timedelta(days=3)},
        {"title": "Epsilon later", "priority": "low", "due_at": now + timedelta(days=30)},
        {"title": "zeta done", "priority": "medium", "tags": ["home"], "due_at": now - timedelta(days=1)},
    ]
    created = {}
    for spec in specs:
        if "due_at" in spec:
            spec["due_at"] = spec["due_at"].isoformat()
        created[spec["title"]] = await create(client, alice, **spec)
    await client.post(f"{TASKS}/{created['zeta done']['id']}/complete", headers=alice.headers)
    return created


async def test_default_listing_is_newest_first_with_total(client, alice, board):
    response = (await client.get(TASKS, headers=alice.headers)).json()
    assert response["total"] == 6
    assert [t["title"] for t in response["items"]] == list(reversed(list(board)))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "open"}, {"Alpha report", "beta groceries", "Gamma call", "delta plan", "Epsilon later"}),
        ({"status": "done"}, {"zeta done"}),
        ({"priority": "high"}, {"Alpha report", "delta plan"}),
        ({"tag": "work"}, {"Alpha report", "Gamma call"}),
        ({"tag": "WORK"}, {"Alpha report", "Gamma call"}),
        ({"tag": "home", "status": "open"}, {"beta groceries"}),
        ({"q": "REPORT"}, {"Alpha report"}),
        ({"q": "milk"}, {"beta groceries"}),  # description
        ({"q": "100%"}, {"beta groceries"}),  # % is literal
        ({"q": "_"}, set()),  # _ is literal
        ({"due": "overdue"}, {"Alpha report"}),  # zeta is overdue but done
        ({"due": "week"}, {"delta plan", "Gamma call"}),
        ({"due": "week", "priority": "high"}, {"delta plan"}),
        ({"q": "a", "priority": "low", "status": "open"}, {"beta groceries", "Epsilon later"}),
    ],
)
async def test_filters_combine_with_and(client, alice, board, params, expected):
    assert set(await titles(client, alice, **params, limit=100)) == expected


async def test_due_today_follows_the_time_zone(client, alice):
    """01:00 today on Kiritimati (UTC+14) is "today" there; in UTC it is today or yesterday."""
    zone = ZoneInfo("Pacific/Kiritimati")
    local_today = datetime.now(zone).date()
    one_am_there = datetime.combine(local_today, time(1), tzinfo=zone)
    await create(client, alice, title="kiritimati", due_at=one_am_there.isoformat())
    assert await titles(client, alice, due="today", tz="Pacific/Kiritimati") == ["kiritimati"]
    in_utc_today = one_am_there.astimezone(UTC).date() == datetime.now(UTC).date()
    assert (await titles(client, alice, due="today")) == (["kiritimati"] if in_utc_today else [])
    assert await titles(client, alice, due="week", tz="Pacific/Kiritimati") == ["kiritimati"]


@pytest.mark.parametrize(
    ("sort", "order", "expected"),
    [
        (
            "title",
            "asc",
            ["Alpha report", "beta groceries", "delta plan", "Epsilon later", "Gamma call", "zeta done"],
        ),
        (
            "title",
            "desc",
            ["zeta done", "Gamma call", "Epsilon later", "delta plan", "beta groceries", "Alpha report"],
        ),
        (
            "due",
            "asc",
            ["Alpha report", "zeta done", "Gamma call", "delta plan", "Epsilon later", "beta groceries"],
        ),
        (
            "due",
            "desc",
            ["Epsilon later", "delta plan", "Gamma call", "zeta done", "Alpha report", "beta groceries"],
        ),
        (
            "created",
            "asc",
            ["Alpha report", "beta groceries", "Gamma call", "delta plan", "Epsilon later", "zeta done"],
        ),
    ],
)
async def test_sorting(client, alice, board, sort, order, expected):
    assert await titles(client, alice, sort=sort, order=order) == expected


async def test_sort_by_priority(client, alice, board):
    ranked = await titles(client, alice, sort="priority", order="desc")
    priorities = [board[t]["priority"] for t in ranked]
    assert priorities == ["high", "high", "medium", "medium", "low", "low"]
    assert (await titles(client, alice, sort="priority"))[0] in ("beta groceries", "Epsilon later")


async def test_pagination(client, alice):
    for i in range(25):
        await create(client, alice, title=f"task {i:02d}")
    pages = []
    for offset in (0, 10, 20):
        page = (
            await client.get(
                TASKS, params={"sort": "title", "limit": 10, "offset": offset}, headers=alice.headers
            )
        ).json()
        assert page["total"] == 25
        assert (page["limit"], page["offset"]) == (10, offset)
        pages.extend(t["title"] for t in page["items"])
    assert pages == [f"task {i:02d}" for i in range(25)]
    beyond = (await client.get(TASKS, params={"offset": 50}, headers=alice.headers)).json()
    assert beyond["items"] == []
    assert beyond["total"] == 25


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 101}, "limit"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"offset": 10**20}, "offset"),
        ({"status": "closed"}, "status"),
        ({"priority": "urgent"}, "priority"),
        ({"due": "yesterday"}, "due"),
        ({"sort": "random"}, "sort"),
        ({"order": "up"}, "order"),
        ({"tag": "bad tag"}, "tag"),
        ({"q": "x" * 201}, "q"),
        ({"q": "nul\x00"}, "q"),
        ({"tz": "Mars/Olympus"}, "tz"),
        ({"tz": "../../etc/passwd"}, "tz"),
    ],
)
async def test_list_parameter_rules(client, alice, params, field):
    problem = assert_problem(await client.get(TASKS, params=params, headers=alice.headers), 422)
    assert field in {e["field"] for e in problem["errors"]}


async def test_tags_with_counts(client, alice, bob):
    await create(client, alice, tags=["work", "urgent"])
    await create(client, alice, tags=["work"])
    await create(client, alice, tags=["home", "work"])
    await create(client, bob, tags=["bobs"])
    tags = (await client.get("/api/v1/tags", headers=alice.headers)).json()
    assert tags == {
        "items": [{"name": "work", "count": 3}, {"name": "home", "count": 1}, {"name": "urgent", "count": 1}]
    }
