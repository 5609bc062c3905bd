"""HTTP routes: the notification API (browsers, behind the ingress) and the routes the Dapr
sidecar calls (subscription, event delivery, job triggers).

Notifications (cookie or bearer JWT, ``todo_shared.auth.current_user_id``):

- ``GET /api/v1/notifications?limit=1..100&unread=true|false`` ->
  ``{"items": [{id, task_id, title, message, due_at, remind_at, created_at, read, read_at}],
  "unread_count": n}``: newest first; ``unread=true`` lists only unread ones; ``unread_count``
  counts all of the user's unread notifications whatever the filter.
- ``POST /api/v1/notifications/{id}/read`` -> the notification (marking a read one again
  keeps its first ``read_at``); 404 when the user has no such notification (another
  user's included).
- ``POST /api/v1/notifications/read-all`` -> ``{"updated": n}``.

Dapr (each checks ``dapr-api-token`` against ``APP_API_TOKEN``; not in the OpenAPI document):

- ``GET /dapr/subscribe``: the programmatic subscription to the task-events topic, with a
  dead-letter topic.
- ``POST /dapr/events/task-events``: one task event -> ``{"status": "SUCCESS|RETRY|DROP"}``.
- ``POST /job/{name}``: a reminder job fired (see ``todo_notifier.consumer``).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from todo_shared.auth import UserId, require_dapr_app_token
from todo_shared.problems import Problem

from todo_notifier.consumer import Reminders
from todo_notifier.settings import NotifierSettings
from todo_notifier.store import Store

TASK_EVENTS_ROUTE = "/dapr/events/task-events"

router = APIRouter(prefix="/api/v1/notifications", tags=["notifications"])
dapr_router = APIRouter(include_in_schema=False, dependencies=[Depends(require_dapr_app_token)])


class Notification(BaseModel):
    id: uuid.UUID
    task_id: uuid.UUID
    title: str
    message: str
    due_at: str = Field(description="The task's due date (UTC, ISO 8601) for this occurrence.")
    remind_at: str = Field(description="When the reminder fired: due_at - remind_before_minutes.")
    created_at: str
    read: bool
    read_at: str | None


class NotificationPage(BaseModel):
    items: list[Notification]
    unread_count: int = Field(description="All of the user's unread notifications.")


class ReadAll(BaseModel):
    updated: int


class NotificationNotFoundError(Problem):
    def __init__(self) -> None:
        super().__init__(
            404, "No such notification.", title="Not Found", type_="urn:todo:problem:notification-not-found"
        )


async def get_store(request: Request) -> Store:
    return request.app.state.store


StoreDep = Annotated[Store, Depends(get_store)]


@router.get("", response_model=NotificationPage)
async def list_notifications(
    user_id: UserId,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    unread: Annotated[bool, Query(description="Only unread notifications.")] = False,
) -> dict[str, Any]:
    items, unread_count = await store.list_notifications(user_id, limit=limit, unread_only=unread)
    return {"items": items, "unread_count": unread_count}


@router.post("/read-all", response_model=ReadAll)
async def read_all(user_id: UserId, store: StoreDep) -> dict[str, int]:
    return {"updated": await store.mark_all_read(user_id)}


@router.post("/{notification_id}/read", response_model=Notification)
async def read_one(notification_id: uuid.UUID, user_id: UserId, store: StoreDep) -> dict[str, Any]:
    notification = await store.mark_read(user_id, notification_id)
    if notification is None:
        raise NotificationNotFoundError()
    return notification


def _reminders(request: Request) -> Reminders | None:
    return request.app.state.reminders


@dapr_router.get("/dapr/subscribe")
async def subscribe(request: Request) -> list[dict[str, Any]]:
    settings: NotifierSettings = request.app.state.settings
    return [
        {
            "pubsubname": settings.pubsub_name,
            "topic": settings.task_events_topic,
            "route": TASK_EVENTS_ROUTE,
            "deadLetterTopic": settings.task_events_dead_letter_topic,
        }
    ]


@dapr_router.post(TASK_EVENTS_ROUTE)
async def task_event(request: Request) -> dict[str, str]:
    reminders = _reminders(request)
    if reminders is None:
        return {"status": "RETRY"}
    return {"status": await reminders.handle_task_event(await request.body())}


@dapr_router.post("/job/{name}")
async def job_fired(name: str, request: Request) -> Response:
    reminders = _reminders(request)
    status = 503 if reminders is None else await reminders.handle_job(name, await request.body())
    return Response(status_code=status)
