"""users, tasks and the transactional outbox

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
    )
    op.create_index("uq_users_email_lower", "users", [sa.text("lower(email)")], unique=True)

    op.create_table(
        "tasks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=True),
        sa.Column("priority", sa.String(length=6), server_default="medium", nullable=False),
        sa.Column("tags", postgresql.ARRAY(sa.String(length=32)), server_default="{}", nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("remind_before_minutes", sa.Integer(), nullable=True),
        sa.Column("recurrence", sa.String(length=7), server_default="none", nullable=False),
        sa.Column("completed", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("series_id", sa.Uuid(), nullable=False),
        sa.Column("next_task_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.CheckConstraint("priority IN ('low', 'medium', 'high')", name="ck_tasks_priority"),
        sa.CheckConstraint(
            "recurrence IN ('none', 'daily', 'weekly', 'monthly')", name="ck_tasks_recurrence"
        ),
        sa.CheckConstraint("recurrence = 'none' OR due_at IS NOT NULL", name="ck_tasks_recurrence_needs_due"),
        sa.CheckConstraint(
            "remind_before_minutes IS NULL"
            " OR (due_at IS NOT NULL AND remind_before_minutes BETWEEN 1 AND 10080)",
            name="ck_tasks_reminder",
        ),
        sa.CheckConstraint("cardinality(tags) <= 10", name="ck_tasks_tags"),
        sa.CheckConstraint("char_length(title) BETWEEN 1 AND 255", name="ck_tasks_title"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_tasks_user_id_users", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.UniqueConstraint("next_task_id", name="uq_tasks_next_task_id"),
    )
    op.create_index("ix_tasks_user_id_created_at", "tasks", ["user_id", "created_at"])
    op.create_index("ix_tasks_user_id_due_at", "tasks", ["user_id", "due_at"])
    op.create_index("ix_tasks_tags", "tasks", ["tags"], postgresql_using="gin")

    op.create_table(
        "outbox_events",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_outbox_events"),
        sa.UniqueConstraint("id", name="uq_outbox_events_id"),
    )
    op.create_index(
        "ix_outbox_pending_user",
        "outbox_events",
        ["user_id", "seq"],
        postgresql_where=sa.text("published_at IS NULL"),
    )
    op.create_index(
        "ix_outbox_pending", "outbox_events", ["seq"], postgresql_where=sa.text("published_at IS NULL")
    )
    op.create_index(
        "ix_outbox_published_at",
        "outbox_events",
        ["published_at"],
        postgresql_where=sa.text("published_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_table("outbox_events")
    op.drop_table("tasks")
    op.drop_index("uq_users_email_lower", table_name="users")
    op.drop_table("users")
