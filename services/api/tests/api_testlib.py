"""Helpers shared by the api tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from fastapi import FastAPI
from todo_api.settings import ApiSettings
from todo_shared.problems import PROBLEM_JSON

PASSWORD = secrets.token_urlsafe(16)


def make_settings(dsn: str, **overrides) -> ApiSettings:
    values = {
        "environment": "test",
        "database_url": dsn,
        # Cheap hashes keep the suite fast; production uses argon2-cffi's RFC 9106 profile.
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
        "outbox_poll_interval_seconds": 0.05,
        "outbox_backoff_base_seconds": 0.05,
        "outbox_backoff_max_seconds": 0.2,
        "outbox_metrics_interval_seconds": 0.05,
        "db_pool_size": 5,
        **overrides,
    }
    return ApiSettings(**values)


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and give an in-process HTTP client for it."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield client


@dataclass
class User:
    id: str
    email: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def register(client: httpx.AsyncClient, email: str | None = None) -> User:
    email = email or f"user-{uuid.uuid4().hex[:8]}@example.com"
    created = await client.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert created.status_code == 201, created.text
    login = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    client.cookies.clear()
    return User(id=created.json()["id"], email=email, token=login.json()["access_token"])


def assert_problem(response: httpx.Response, status: int) -> dict:
    """The response is a problem+json with this status; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON, response.headers
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    return body


# The relay deletes events once published: tests that check every event went out keep a copy
# of each outbox row as it is written (a trigger on the real table) to compare against.
OUTBOX_HISTORY = [
    "CREATE TABLE outbox_history (seq bigint PRIMARY KEY, id uuid NOT NULL, type text NOT NULL,"
    " user_id uuid NOT NULL)",
    """
    CREATE FUNCTION keep_outbox_history() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO outbox_history VALUES (NEW.seq, NEW.id, NEW.type, NEW.user_id);
        RETURN NEW;
    END $$
    """,
    "CREATE TRIGGER keep_outbox_history AFTER INSERT ON outbox_events"
    " FOR EACH ROW EXECUTE FUNCTION keep_outbox_history()",
]


async def keep_outbox_history(engine) -> None:
    """From now on, every event written to the outbox is also kept in ``outbox_history``."""
    from sqlalchemy import text

    async with engine.begin() as conn:
        for statement in OUTBOX_HISTORY:
            await conn.execute(text(statement))


async def outbox_history(engine) -> list:
    """Every event written since ``keep_outbox_history``, in ``seq`` order (published or not)."""
    from sqlalchemy import text

    async with engine.connect() as conn:
        return (await conn.execute(text("SELECT * FROM outbox_history ORDER BY seq"))).all()
