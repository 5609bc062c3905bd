"""Tasks: create, list (search, filters, sort, pagination), get, patch, delete, complete, reopen."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Request, Response, status
from pydantic import AfterValidator, BeforeValidator, StringConstraints
from todo_shared.auth import UserId
from todo_shared.problems import validation_problem

from todo_api.routes.deps import json_response, store_of
from todo_api.schemas import Priority, TaskCreate, TaskOut, TaskPage, TaskUpdate, storable
from todo_api.store import ListQuery

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])


def _lower(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


SearchText = Annotated[str, StringConstraints(max_length=200), AfterValidator(storable)]
TagFilter = Annotated[str, BeforeValidator(_lower), StringConstraints(pattern=r"^[a-z0-9-]{1,32}$")]
ZoneName = Annotated[str, StringConstraints(max_length=64), AfterValidator(storable)]


def _zone(name: str | None) -> ZoneInfo:
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise validation_problem(
            {"tz": "Unknown time zone; use an IANA name such as Europe/Paris."}, location="query"
        ) from None


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TaskOut)
async def create_task(body: TaskCreate, user_id: UserId, request: Request) -> Response:
    task = await store_of(request).create_task(user_id, body)
    return json_response(task, status.HTTP_201_CREATED, {"Location": f"/api/v1/tasks/{task['id']}"})


@router.get("", response_model=TaskPage)
async def list_tasks(
    user_id: UserId,
    request: Request,
    q: Annotated[
        SearchText | None, Query(description="Case-insensitive text in title or description.")
    ] = None,
    status_: Annotated[Literal["open", "done", "all"], Query(alias="status")] = "all",
    priority: Priority | None = None,
    tag: Annotated[TagFilter | None, Query(description="Only tasks with this tag.")] = None,
    due: Annotated[
        Literal["overdue", "today", "week"] | None,
        Query(description="overdue: past due and open; today / week: due from 00:00 today for 1 / 7 days."),
    ] = None,
    tz: Annotated[ZoneName | None, Query(description="IANA zone for today/week (default UTC).")] = None,
    sort: Literal["created", "due", "priority", "title"] = "created",
    order: Annotated[
        Literal["asc", "desc"] | None, Query(description="Default: desc for created, asc otherwise.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    query = ListQuery(
        status=status_,
        priority=priority,
        tag=tag,
        q=q or None,
        due=due,
        tz=_zone(tz),
        sort=sort,
        order=order,
        limit=limit,
        offset=offset,
    )
    items, total = await store_of(request).list_tasks(user_id, query)
    return json_response({"items": items, "total": total, "limit": limit, "offset": offset})


@router.get("/{task_id}", response_model=TaskOut)
async def get_task(task_id: uuid.UUID, user_id: UserId, request: Request) -> Response:
    return json_response(await store_of(request).get_task(user_id, task_id))


@router.patch("/{task_id}", response_model=TaskOut)
async def update_task(task_id: uuid.UUID, body: TaskUpdate, user_id: UserId, request: Request) -> Response:
    return json_response(await store_of(request).update_task(user_id, task_id, body))


@router.delete("/{task_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_task(task_id: uuid.UUID, user_id: UserId, request: Request) -> Response:
    await store_of(request).delete_task(user_id, task_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{task_id}/complete", response_model=TaskOut)
async def complete_task(task_id: uuid.UUID, user_id: UserId, request: Request) -> Response:
    """Complete the task. A recurring task's next occurrence is created exactly once
    (its id is in ``next_task_id``); completing a completed task changes nothing."""
    return json_response(await store_of(request).complete_task(user_id, task_id))


@router.post("/{task_id}/reopen", response_model=TaskOut)
async def reopen_task(task_id: uuid.UUID, user_id: UserId, request: Request) -> Response:
    return json_response(await store_of(request).reopen_task(user_id, task_id))
