"""Fixtures for the api tests: a migrated template database cloned per test (real
PostgreSQL 15 from testkit), the app with its lifespan running, an HTTP client, users, and a
stand-in for the Dapr sidecar (a real HTTP server; daprd itself is not on this machine yet)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from api_testlib import User, make_settings, register, running
from fastapi import FastAPI
from todo_api import migrate
from todo_api.app import create_api_app
from todo_api.settings import ApiSettings
from todo_shared.testing import DaprSidecarStandIn


@pytest.fixture(scope="session")
def api_template(postgres) -> str:
    """A database at the newest migration, used as the template of each test's database."""
    name = f"tmpl_{uuid.uuid4().hex[:8]}"
    migrate.upgrade(postgres.create_database(name))
    return name


@pytest.fixture
def api_db(postgres, api_template) -> str:
    """A fresh, migrated database for one test (a copy of the template): its DSN."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    postgres.psql(f'CREATE DATABASE "{name}" TEMPLATE "{api_template}"')
    yield postgres.dsn(name)
    postgres.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings_for() -> Callable[..., ApiSettings]:
    return make_settings


@pytest.fixture
def run_app():
    return running


@pytest.fixture
def sidecar():
    with DaprSidecarStandIn() as standin:
        yield standin


@pytest.fixture
async def app(api_db) -> FastAPI:
    return create_api_app(make_settings(api_db))


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    async with running(app) as c:
        yield c


@pytest.fixture
def new_user():
    return register


@pytest.fixture
async def alice(client) -> User:
    return await register(client, "alice@example.com")


@pytest.fixture
async def bob(client) -> User:
    return await register(client, "bob@example.com")
