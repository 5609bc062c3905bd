"""outbox: published events are deleted, no longer kept

From this revision on the outbox relay (todo_shared.outbox) deletes an event as soon as Dapr
has accepted it, instead of setting ``published_at`` and deleting the row a day later: one
dead tuple per event for autovacuum instead of two plus their index entries. This revision
removes the rows earlier relays marked as published; the table keeps its shape, so relays of
the previous release (which still mark and clean up by ``published_at``) work unchanged while
a rolling upgrade replaces them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DELETE FROM outbox_events WHERE published_at IS NOT NULL")


def downgrade() -> None:
    """Nothing to restore: the deleted rows were events already published."""
