"""Data access: notifications and the ``reminder.due`` outbox.

- ``deliver(record, now)``: in ONE transaction, insert the occurrence's notification (id =
  ``notification_id(task_id, due_at)``; ``ON CONFLICT DO NOTHING``) and, only if it was
  new, its ``reminder.due`` outbox row (same id, so the CloudEvent id is the notification
  id). A second call for the same occurrence (another replica, a retried job, a restart)
  changes nothing and answers ``False``.
- ``list_notifications(user, limit, unread_only)``: newest first, plus the user's unread count.
- ``mark_read(user, id)`` (``None`` when the user has no such notification: another user's
  answers 404 like a missing one), ``mark_all_read(user)`` -> how many changed.

Every query is scoped to the owner.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine
from todo_shared.outbox import insert_event_statement, user_lock_key

from todo_notifier.reminders import TaskRecord, iso, notification_id, reminder_message
from todo_notifier.tables import notifications

REMINDER_DUE = "reminder.due"
OUTBOX_TABLE = "outbox_events"

_COLUMNS = [
    notifications.c.id,
    notifications.c.task_id,
    notifications.c.title,
    notifications.c.message,
    notifications.c.due_at,
    notifications.c.remind_at,
    notifications.c.created_at,
    notifications.c.read_at,
]
_INSERT_NOTIFICATION = (
    # No conflict target: a concurrent duplicate can collide on the primary key or on
    # (task_id, due_at) first, and either must be a quiet no-op.
    pg_insert(notifications).on_conflict_do_nothing().returning(notifications.c.id)
)
_INSERT_EVENT = insert_event_statement(OUTBOX_TABLE, "task_id")
_OWNED = notifications.c.user_id == bindparam("owner_id")
_LIST = (
    select(*_COLUMNS)
    .where(_OWNED)
    .order_by(notifications.c.created_at.desc(), notifications.c.id.desc())
    .limit(bindparam("limit"))
)
_LIST_UNREAD = _LIST.where(notifications.c.read_at.is_(None))
_UNREAD_COUNT = select(func.count()).where(_OWNED, notifications.c.read_at.is_(None))
_MARK_READ = (
    update(notifications)
    .where(_OWNED, notifications.c.id == bindparam("notification_id"))
    .values(read_at=func.coalesce(notifications.c.read_at, func.now()))
    .returning(*_COLUMNS)
)
_MARK_ALL_READ = (
    update(notifications).where(_OWNED, notifications.c.read_at.is_(None)).values(read_at=func.now())
)


def notification_view(row: Any) -> dict[str, Any]:
    """A notification as the API shows it (also inside the ``reminder.due`` event)."""
    return {
        "id": str(row.id),
        "task_id": str(row.task_id),
        "title": row.title,
        "message": row.message,
        "due_at": iso(row.due_at),
        "remind_at": iso(row.remind_at),
        "created_at": iso(row.created_at),
        "read": row.read_at is not None,
        "read_at": iso(row.read_at),
    }


def reminder_payload(record: TaskRecord, notification: dict[str, Any]) -> dict[str, Any]:
    """The ``reminder.due`` event body (CloudEvent ``data``), shaped like the api's task events:
    ids, type, time, the task (what the browser's toast reads) and the notification."""
    return {
        "event_id": notification["id"],
        "type": REMINDER_DUE,
        "user_id": str(record.user_id),
        "task_id": str(record.task_id),
        "occurred_at": notification["created_at"],
        "task": {
            "id": str(record.task_id),
            "title": record.title,
            "due_at": iso(record.due_at),
            "remind_before_minutes": record.remind_before_minutes,
        },
        "notification": notification,
    }


class Store:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def deliver(self, record: TaskRecord, now: datetime) -> bool:
        """Store the occurrence's notification and its reminder.due event (once); True if new."""
        assert record.due_at is not None and record.remind_at is not None
        assert record.remind_before_minutes is not None
        nid = notification_id(record.task_id, record.due_at)
        row = {
            "id": nid,
            "user_id": record.user_id,
            "task_id": record.task_id,
            "due_at": record.due_at,
            "remind_at": record.remind_at,
            "title": record.title,
            "message": reminder_message(record.title, record.remind_before_minutes),
            "created_at": now,
            "read_at": None,
        }
        async with self.engine.begin() as conn:
            inserted = (await conn.execute(_INSERT_NOTIFICATION, row)).first()
            if inserted is None:
                return False
            payload = reminder_payload(record, notification_view(SimpleNamespace(**row)))
            await conn.execute(
                _INSERT_EVENT,
                {
                    "lock_key": user_lock_key(record.user_id),
                    "id": nid,
                    "type": REMINDER_DUE,
                    "user_id": record.user_id,
                    "subject": record.task_id,
                    "payload": payload,
                },
            )
        return True

    async def list_notifications(
        self, user_id: uuid.UUID, *, limit: int, unread_only: bool
    ) -> tuple[list[dict[str, Any]], int]:
        query = _LIST_UNREAD if unread_only else _LIST
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query, {"owner_id": user_id, "limit": limit})).all()
            unread = (await conn.execute(_UNREAD_COUNT, {"owner_id": user_id})).scalar_one()
        return [notification_view(r) for r in rows], int(unread)

    async def mark_read(self, user_id: uuid.UUID, notification: uuid.UUID) -> dict[str, Any] | None:
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(_MARK_READ, {"owner_id": user_id, "notification_id": notification})
            ).first()
        return notification_view(row) if row is not None else None

    async def mark_all_read(self, user_id: uuid.UUID) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(_MARK_ALL_READ, {"owner_id": user_id})
        return result.rowcount
