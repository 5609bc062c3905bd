"""Events as the gateway holds them, and how a Dapr delivery becomes one.

Public API:

- ``Event``: ``id``, ``type``, ``user_id`` (UUID), ``time`` (epoch seconds: when it happened,
  for the delivery-lag metric), ``wire`` (the SSE frame, encoded once and written to every
  stream of the owner), ``seq`` (set by the replay buffer).
- ``from_delivery(body, kind) -> Event``: parse what the sidecar POSTs to a subscription
  route (a CloudEvent, ``application/cloudevents+json``). Raises ``MalformedEvent`` (the
  subscriber answers DROP, so the sidecar moves it to the dead-letter topic).
- ``sse_frame(id=None, event=None, data=None, retry=None, comment=None) -> bytes``: one SSE
  frame (sse-starlette's ``ServerSentEvent`` encoding).
- ``TASK_EVENT_TYPES``, ``REMINDER_EVENT_TYPES``, ``RESYNC_EVENT``.

The SSE frame of an event: ``id: <event id>``, ``event: <type>``, ``data: <the CloudEvent's
data as compact JSON>``. For task events ``data`` is the api's outbox payload
(``{event_id, type, user_id, task_id, occurred_at, task}``); for ``reminder.due`` the notifier's
(``{event_id, type, user_id, task_id, notification: {message, ...}, ...}``). The event id is
``data.event_id`` (else the CloudEvent ``id``); the type ``data.type`` (else the CloudEvent
``type``); the owner ``data.user_id``; the time the CloudEvent ``time`` (else
``data.occurred_at``, else the moment it arrived).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import datetime
from typing import Any, Literal

from sse_starlette.event import ServerSentEvent

TASK_EVENT_TYPES = frozenset({"task.created", "task.updated", "task.completed", "task.deleted"})
REMINDER_EVENT_TYPES = frozenset({"reminder.due"})
RESYNC_EVENT = "resync"
Kind = Literal["tasks", "reminders"]
TYPES_BY_KIND: dict[str, frozenset[str]] = {"tasks": TASK_EVENT_TYPES, "reminders": REMINDER_EVENT_TYPES}

_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SEP = "\n"


class MalformedEvent(ValueError):
    """The delivery is not an event the gateway can forward; the message says why."""


class Event:
    __slots__ = ("id", "seq", "time", "type", "user_id", "wire")

    def __init__(self, id: str, type: str, user_id: uuid.UUID, time: float, wire: bytes) -> None:
        self.id = id
        self.type = type
        self.user_id = user_id
        self.time = time
        self.wire = wire
        self.seq = 0

    def __repr__(self) -> str:
        return f"Event({self.type} {self.id} user={self.user_id})"

    @classmethod
    def make(cls, id: str, type: str, user_id: uuid.UUID, data: Any, at: float | None = None) -> Event:
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        wire = sse_frame(id=id, event=type, data=payload)
        return cls(id, type, user_id, time.time() if at is None else at, wire)


def sse_frame(
    *,
    id: str | None = None,
    event: str | None = None,
    data: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    return ServerSentEvent(data, id=id, event=event, retry=retry, comment=comment, sep=SEP).encode()


def _timestamp(value: Any) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def from_delivery(body: bytes, kind: str) -> Event:
    """The Event in a Dapr delivery on the ``kind`` route (``tasks`` or ``reminders``)."""
    try:
        envelope = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"body is not JSON ({type(exc).__name__})") from None
    if not isinstance(envelope, dict):
        raise MalformedEvent("body is not a JSON object")
    data = envelope.get("data")
    if isinstance(data, str):  # a publisher that sent JSON as a string
        try:
            data = json.loads(data)
        except ValueError:
            raise MalformedEvent("data is a string that is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedEvent("data is not a JSON object")

    event_id = data.get("event_id", envelope.get("id"))
    if not isinstance(event_id, str) or not _VALID_ID.match(event_id):
        raise MalformedEvent("no usable event id (data.event_id or id)")
    event_type = data.get("type", envelope.get("type"))
    allowed = TYPES_BY_KIND[kind]
    if event_type not in allowed:
        raise MalformedEvent(f"type {str(event_type)[:64]!r} is not one of {sorted(allowed)}")
    try:
        user_id = uuid.UUID(str(data.get("user_id")))
    except ValueError:
        raise MalformedEvent("data.user_id is not a UUID") from None
    if kind == "tasks" and not isinstance(data.get("task"), dict):
        raise MalformedEvent("a task event needs data.task")

    at = _timestamp(envelope.get("time")) or _timestamp(data.get("occurred_at"))
    return Event.make(event_id, event_type, user_id, data, at)
