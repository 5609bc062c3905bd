"""The notifier's database schema (SQLAlchemy Core). Migrations in ``todo_notifier/migrations``.

- ``notifications``: one row per reminder occurrence. ``id`` is
  ``reminders.notification_id(task_id, due_at)`` and ``(task_id, due_at)`` is unique, so a
  reminder job firing twice (two replicas, a retry after a crash, a restart) inserts once.
  ``read_at`` is NULL while unread.
- ``outbox_events``: the transactional outbox of ``reminder.due`` events (the layout
  ``todo_shared.outbox`` relays); written in the same transaction as the notification.

Processed task events and the per-task reminder records are not here: they live in the Dapr
state store (see ``todo_notifier.consumer``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, nullable=False),
    Column("task_id", Uuid, nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("remind_at", DateTime(timezone=True), nullable=False),
    Column("title", String(1000), nullable=False),
    Column("message", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("read_at", DateTime(timezone=True)),
    UniqueConstraint("task_id", "due_at"),
    Index("ix_notifications_user_id_created_at", "user_id", text("created_at DESC"), text("id DESC")),
    Index("ix_notifications_unread", "user_id", postgresql_where=text("read_at IS NULL")),
)

outbox_events = Table(
    "outbox_events",
    metadata,
    Column("seq", BigInteger, Identity(always=True), primary_key=True),
    Column("id", Uuid, nullable=False, unique=True),
    Column("type", String(32), nullable=False),
    Column("user_id", Uuid, nullable=False),
    Column("task_id", Uuid, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("published_at", DateTime(timezone=True)),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("last_error", Text),
    Index("ix_outbox_pending_user", "user_id", "seq", postgresql_where=text("published_at IS NULL")),
    Index("ix_outbox_pending", "seq", postgresql_where=text("published_at IS NULL")),
    Index("ix_outbox_published_at", "published_at", postgresql_where=text("published_at IS NOT NULL")),
)
