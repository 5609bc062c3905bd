"""The api's side of the transactional outbox: task events written with the change.

Writing (``record_event``): in the same transaction as the task change, insert the event
row (uuid id, type, user, task, payload = the task snapshot); a create does both inserts in
one statement (``todo_api.store``). Before taking its ``seq`` the insert takes a per-user
transaction-scoped advisory lock (``user_lock_key``), held until commit; so a user's events
become visible in ``seq`` order (no later event commits while an earlier one is still in
flight), and the relay never has to guess about gaps.

Relaying: the shared relay (``todo_shared.outbox``, whose docstring describes claiming by
user with ``SKIP LOCKED``, bulk publishing in per-user order, deleting published events,
backoff and metrics). ``OutboxRelay``
here binds it to the api's table (``outbox_events``), ``pubsub_name``/``task_events_topic``
and the ``outbox_*`` settings. Events go out as CloudEvents whose id is the event id,
partition key = user id.

Metrics: ``outbox_backlog_events``, ``outbox_oldest_pending_age_seconds``,
``outbox_published_total``, ``outbox_publish_failures_total``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from todo_shared import outbox as shared
from todo_shared.dapr import DaprClient
from todo_shared.outbox import OutboxMetrics, RelayConfig, RoundResult, user_lock_key

from todo_api.settings import ApiSettings

EVENT_TYPES = ("task.created", "task.updated", "task.completed", "task.deleted")
OUTBOX_TABLE = "outbox_events"

__all__ = [
    "EVENT_TYPES",
    "OUTBOX_TABLE",
    "OutboxMetrics",
    "OutboxRelay",
    "RoundResult",
    "event_payload",
    "record_event",
    "relay_config",
    "user_lock_key",
]

_INSERT_EVENT = shared.insert_event_statement(OUTBOX_TABLE, "task_id")


def event_payload(
    event_id: uuid.UUID, event_type: str, user_id: uuid.UUID, task: dict[str, Any], occurred_at: datetime
) -> dict[str, Any]:
    """The event body consumers receive (CloudEvent ``data``): ids, type, time, the task snapshot.

    ``task`` is JSON-ready (``schemas.jsonable``), or the task's Python values when the body is
    written with ``schemas.dumps`` (the create does that: the same JSON)."""
    assert event_type in EVENT_TYPES, event_type
    return {
        "event_id": str(event_id),
        "type": event_type,
        "user_id": str(user_id),
        "task_id": task["id"],
        "occurred_at": occurred_at.isoformat(),
        "task": task,
    }


async def record_event(
    conn: AsyncConnection, event_type: str, user_id: uuid.UUID, task: dict[str, Any], occurred_at: datetime
) -> uuid.UUID:
    """Insert the event for ``task`` (a JSON-ready snapshot) in the caller's transaction."""
    event_id = uuid.uuid4()
    payload = event_payload(event_id, event_type, user_id, task, occurred_at)
    await conn.execute(
        _INSERT_EVENT,
        {
            "lock_key": user_lock_key(user_id),
            "id": event_id,
            "type": event_type,
            "user_id": user_id,
            "subject": uuid.UUID(task["id"]),
            "payload": payload,
        },
    )
    return event_id


def relay_config(settings: ApiSettings) -> RelayConfig:
    return RelayConfig.from_settings(settings, table=OUTBOX_TABLE, topic=settings.task_events_topic)


class OutboxRelay(shared.OutboxRelay):
    """The shared relay on the api's outbox table, publishing task events."""

    def __init__(
        self, engine: AsyncEngine, dapr: DaprClient, settings: ApiSettings, metrics: OutboxMetrics
    ) -> None:
        super().__init__(engine, dapr, relay_config(settings), metrics)
        self.settings = settings
