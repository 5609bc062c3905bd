"""Alembic migrations on a real PostgreSQL 15 (rung L1): from empty to head, down to base and
up again, the schema matching the tables the code uses, and the ``todo-api migrate`` command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine
from todo_api import migrate
from todo_api.db import async_url
from todo_api.tables import metadata

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
    assert tables(postgres, database) == {"alembic_version", "users", "tasks", "outbox_events"}
    assert schema_diff(database) == []
    name = database.rsplit("/", 1)[1]
    assert postgres.psql("SELECT version_num FROM alembic_version", name).strip() == migrate.head_revision()

    migrate.downgrade(database, "base")
    assert tables(postgres, database) == {"alembic_version"}

    migrate.upgrade(database)
    assert schema_diff(database) == []
    migrate.upgrade(database)  # already at head: nothing to do


COMMAND = [sys.executable, "-c", "from todo_api.main import run; run()"]


def command_env(database: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TODO_")}
    env.update({"TODO_DATABASE_URL": database, "TODO_ENVIRONMENT": "test"})
    return env


def test_the_migrate_command_run_by_replicas_at_once(postgres, database):
    """Three `todo-api migrate` processes at once (replicas starting together) all succeed:
    they serialize on an advisory lock. Then `todo-api downgrade --revision base`."""
    env = command_env(database)
    procs = [
        subprocess.Popen(
            [*COMMAND, "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=90)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    assert all("database at revision head" in out for out in outputs)
    assert all(database not in out for out in outputs), "the DSN is never logged"
    assert schema_diff(database) == []

    down = subprocess.run(
        [*COMMAND, "downgrade", "--revision", "base"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert down.returncode == 0, down.stdout + down.stderr
    assert tables(postgres, database) == {"alembic_version"}
