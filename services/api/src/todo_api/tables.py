"""The database schema (SQLAlchemy Core tables). Migrations in ``todo_api/migrations`` create it.

- ``users``: emails unique case-insensitively (unique index on ``lower(email)``).
- ``tasks``: the task fields; ``series_id`` groups the occurrences of a recurring task and
  ``next_task_id`` (unique) records the occurrence created when this one was completed, so
  completing it again (retry, race, reopen + complete) never creates a second one.
- ``outbox_events``: the transactional outbox. ``seq`` orders events; pending rows have
  ``published_at IS NULL``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

PRIORITIES = ("low", "medium", "high")
RECURRENCES = ("none", "daily", "weekly", "monthly")

users = Table(
    "users",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("email", String(254), nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("uq_users_email_lower", func.lower(text("email")), unique=True),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("user_id", Uuid, ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    Column("title", String(255), nullable=False),
    Column("description", String(2000)),
    Column("priority", String(6), nullable=False, server_default="medium"),
    Column("tags", ARRAY(String(32)), nullable=False, server_default="{}"),
    Column("due_at", DateTime(timezone=True)),
    Column("remind_before_minutes", Integer),
    Column("recurrence", String(7), nullable=False, server_default="none"),
    Column("completed", Boolean, nullable=False, server_default="false"),
    Column("completed_at", DateTime(timezone=True)),
    Column("series_id", Uuid, nullable=False),
    Column("next_task_id", Uuid, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("priority IN ('low', 'medium', 'high')", name="priority"),
    CheckConstraint("recurrence IN ('none', 'daily', 'weekly', 'monthly')", name="recurrence"),
    CheckConstraint("recurrence = 'none' OR due_at IS NOT NULL", name="recurrence_needs_due"),
    CheckConstraint(
        "remind_before_minutes IS NULL OR (due_at IS NOT NULL AND remind_before_minutes BETWEEN 1 AND 10080)",
        name="reminder",
    ),
    CheckConstraint("cardinality(tags) <= 10", name="tags"),
    CheckConstraint("char_length(title) BETWEEN 1 AND 255", name="title"),
    Index("ix_tasks_user_id_created_at", "user_id", "created_at"),
    Index("ix_tasks_user_id_due_at", "user_id", "due_at"),
    Index("ix_tasks_tags", "tags", postgresql_using="gin"),
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
