"""Fixtures for the notifier tests: a migrated template database cloned per test (real
PostgreSQL 15 from testkit), the app with its lifespan running and an HTTP client, users.
The event tests use the session's real Dapr (``dapr`` in the root conftest: daprd, the
scheduler, Kafka, the PostgreSQL state store)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from notifier_testlib import DaprSlice, User, make_settings, new_user, running
from todo_notifier import migrate
from todo_notifier.app import create_notifier_app


@pytest.fixture(scope="session")
def notifier_template(postgres) -> str:
    """A database at the newest migration, used as the template of each test's database."""
    name = f"ntmpl_{uuid.uuid4().hex[:8]}"
    migrate.upgrade(postgres.create_database(name))
    return name


@pytest.fixture
def notifier_db(postgres, notifier_template) -> str:
    """A fresh, migrated database for one test (a copy of the template): its DSN."""
    name = f"n_{uuid.uuid4().hex[:10]}"
    postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE "{notifier_template}"')
    yield postgres.dsn(name)
    postgres.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def app(notifier_db) -> FastAPI:
    return create_notifier_app(make_settings(notifier_db))


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as c:
        yield c


@pytest.fixture
def alice() -> User:
    return new_user()


@pytest.fixture
def bob() -> User:
    return new_user()


@pytest.fixture
async def dapr_slice(dapr, notifier_db, request) -> AsyncIterator[DaprSlice]:
    """This test's topics and notifier database on the session's real Dapr (see DaprSlice)."""
    piece = DaprSlice(dapr, notifier_db, name=request.node.name[:60])
    try:
        yield piece
    finally:
        await piece.close()
