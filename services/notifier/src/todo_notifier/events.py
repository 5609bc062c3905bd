"""Task events as the notifier reads them (pure: no I/O).

Dapr delivers each event as a CloudEvent (``application/cloudevents+json``) whose ``id`` is
the event id and whose ``data`` is the api's outbox payload (``todo_api.outbox.event_payload``)::

    {"event_id": "<uuid>", "type": "task.created|task.updated|task.completed|task.deleted",
     "user_id": "<uuid>", "task_id": "<uuid>", "occurred_at": "<ISO 8601 with zone>",
     "task": {"id": "<uuid>", "title": "...", "due_at": "<ISO 8601>|null",
              "remind_before_minutes": 1-10080|null, "completed": bool,
              "updated_at": "<ISO 8601>", ...the rest of the task as the api shows it}}

``parse_task_event(body)`` returns a ``TaskEvent``, ``None`` for an event type the notifier
does not handle (a newer producer; answered SUCCESS and counted as ignored), or raises
``PoisonEvent`` (answered DROP: Dapr moves it to the dead-letter topic) when the body is not
such an event: not JSON, a field missing or of the wrong type, ids that disagree (CloudEvent
``id`` vs ``data.event_id``, ``data.task_id`` vs ``data.task.id``), times without a zone, or a
reminder without a due date.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

TASK_EVENT_TYPES = ("task.created", "task.updated", "task.completed", "task.deleted")
EventType = Literal["task.created", "task.updated", "task.completed", "task.deleted"]


class PoisonEvent(ValueError):
    """The message can never be processed: drop it (to the dead-letter topic)."""


class TaskSnapshot(BaseModel):
    """The fields of the task the notifier uses; the api sends more (ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: uuid.UUID
    title: str = Field(min_length=1, max_length=1000)
    due_at: AwareDatetime | None = None
    remind_before_minutes: int | None = Field(default=None, ge=1, le=10080)
    completed: bool
    updated_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _reminder_needs_due(self) -> TaskSnapshot:
        if self.remind_before_minutes is not None and self.due_at is None:
            raise ValueError("remind_before_minutes without due_at")
        return self


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    event_id: uuid.UUID
    type: str = Field(min_length=1, max_length=100)
    user_id: uuid.UUID
    task_id: uuid.UUID
    occurred_at: AwareDatetime
    task: dict[str, Any]


@dataclass(frozen=True)
class TaskEvent:
    event_id: uuid.UUID
    type: EventType
    user_id: uuid.UUID
    task_id: uuid.UUID
    occurred_at: datetime
    task: TaskSnapshot

    @property
    def version(self) -> datetime:
        """Orders the states of one task: the task's ``updated_at`` (set by every change), or
        the event time when the snapshot lacks it. A deletion is ordered by ``is_deletion``."""
        return self.task.updated_at or self.occurred_at

    @property
    def is_deletion(self) -> bool:
        return self.type == "task.deleted"


def _problem(error: ValidationError) -> str:
    first = error.errors(include_input=False, include_url=False)[0]
    where = ".".join(str(part) for part in first.get("loc", ())) or "event"
    return f"{where}: {first.get('msg', 'invalid')}"


def parse_task_event(body: bytes | str | dict[str, Any]) -> TaskEvent | None:
    """The task event in a CloudEvent body (see the module docstring)."""
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise PoisonEvent("the body is not JSON") from None
    if not isinstance(body, dict):
        raise PoisonEvent("the body is not a JSON object")
    data = body.get("data", body if "event_id" in body else None)
    if isinstance(data, str):  # data sent as a JSON string
        try:
            data = json.loads(data)
        except ValueError:
            raise PoisonEvent("data is not JSON") from None
    if not isinstance(data, dict):
        raise PoisonEvent("the CloudEvent has no data object")
    try:
        payload = _Payload.model_validate(data)
    except ValidationError as exc:
        raise PoisonEvent(_problem(exc)) from None
    envelope_id = body.get("id")
    if "data" in body and envelope_id is not None and str(envelope_id) != str(payload.event_id):
        raise PoisonEvent("the CloudEvent id is not data.event_id")
    envelope_type = body.get("type")
    if "data" in body and envelope_type is not None and envelope_type != payload.type:
        raise PoisonEvent("the CloudEvent type is not data.type")
    if payload.type not in TASK_EVENT_TYPES:
        return None
    try:
        task = TaskSnapshot.model_validate(payload.task)
    except ValidationError as exc:
        raise PoisonEvent("task." + _problem(exc)) from None
    if task.id != payload.task_id:
        raise PoisonEvent("data.task_id is not data.task.id")
    return TaskEvent(
        event_id=payload.event_id,
        type=payload.type,  # type: ignore[arg-type]  # checked above
        user_id=payload.user_id,
        task_id=payload.task_id,
        occurred_at=payload.occurred_at,
        task=task,
    )
