"""Alembic migrations, run programmatically (``todo-notifier migrate``, or at start-up with
``TODO_MIGRATE_ON_START=true``). No alembic.ini: the script folder is ``todo_notifier/migrations``
and the database URL travels in ``Config.attributes`` (never written to a file or a log).

Concurrent runs (several replicas starting at once) serialize on a PostgreSQL advisory lock.
These functions are synchronous (alembic runs its own event loop); from async code call
them with ``asyncio.to_thread``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("")).get_current_head()


def current_revision(sync_connection) -> str | None:
    return MigrationContext.configure(sync_connection).get_current_revision()
