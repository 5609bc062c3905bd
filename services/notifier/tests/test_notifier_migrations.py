"""Alembic migrations on a real PostgreSQL 15 (rung L1): from empty to head, down to base and
up again, the schema matching the tables the code uses, and the ``todo-notifier migrate``
command run by several replicas at once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from todo_notifier import migrate
from todo_notifier.db import async_url
from todo_notifier.tables import metadata

pytestmark = pytest.mark.integration


def tables(postgres, dsn: str) -> set[str]:
    name = dsn.rsplit("/", 1)[1]
    return set(postgres.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", name).split())


def schema_diff(dsn: str) -> list:
    async def diff() -> list:
        engine = create_async_engine(async_url(dsn))
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(
                    lambda sync: compare_metadata(
                        MigrationContext.configure(sync, opts={"compare_type": True}), metadata
                    )
                )
        finally:
            await engine.dispose()

    return asyncio.run(diff())


def test_upgrade_from_empty_downgrade_to_base_and_up_again(postgres, database):
    assert tables(postgres, database) == set()
    migrate.upgrade(database)
    assert tables(postgres, database) == {"alembic_version", "notifications", "outbox_events"}
    assert schema_diff(database) == []
    name = database.rsplit("/", 1)[1]
    assert postgres.psql("SELECT version_num FROM alembic_version", name).strip() == migrate.head_revision()

    migrate.downgrade(database, "base")
    assert tables(postgres, database) == {"alembic_version"}

    migrate.upgrade(database)
    assert schema_diff(database) == []
    migrate.upgrade(database)  # already at head: nothing to do


def test_the_migrate_command_run_by_replicas_at_once(postgres, database):
    """Three `todo-notifier migrate` processes at once all succeed (an advisory lock
    serializes them). Then `todo-notifier downgrade --revision base`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TODO_")}
    env.update({"TODO_DATABASE_URL": database, "TODO_ENVIRONMENT": "test"})
    command = [str(Path(sys.executable).with_name("todo-notifier"))]
    procs = [
        subprocess.Popen(
            [*command, "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=90)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert all("database at revision head" in out for out in outputs)
    assert "notifications" in tables(postgres, database)

    down = subprocess.run(
        [*command, "downgrade", "--revision", "base"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    assert tables(postgres, database) == {"alembic_version"}


def test_invalid_settings_exit_2_naming_the_variable(database):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TODO_")}
    env.update({"TODO_DATABASE_URL": database, "TODO_ENVIRONMENT": "production"})
    done = subprocess.run(
        [str(Path(sys.executable).with_name("todo-notifier")), "migrate"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "TODO_JWT_SIGNING_KEY" in done.stdout + done.stderr
