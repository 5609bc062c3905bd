"""The database engine (SQLAlchemy 2 async on asyncpg) and its readiness check."""

from __future__ import annotations

import time

import orjson
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from todo_api.settings import ApiSettings


def async_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` DSNs with the asyncpg driver; ``sslmode`` becomes ``ssl``."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    query = dict(parsed.query)
    if "sslmode" in query:
        query["ssl"] = query.pop("sslmode")
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=False)


def _json_serializer(value: object) -> str:
    return orjson.dumps(value).decode()


def create_engine(settings: ApiSettings) -> AsyncEngine:
    """The engine; JSON(B) values are written and read with orjson (the outbox payloads)."""
    server_settings = {"application_name": f"todo-{settings.service_name}"}
    if settings.db_statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
    return create_async_engine(
        async_url(settings.database_url.get_secret_value()),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_recycle=1800,
        connect_args={"server_settings": server_settings},
        json_serializer=_json_serializer,
        json_deserializer=orjson.loads,
    )


# Seconds a statement the database answered counts as proof that it is reachable.
ANSWERED_WINDOW = 5.0


def database_check(engine: AsyncEngine, answered_window: float = ANSWERED_WINDOW):
    """Passes when any statement of this engine succeeded in the last `answered_window`
    seconds, or when `SELECT 1` does now.

    Real statements count: under load the probe's own `SELECT 1` waits for a pooled connection
    behind the requests' queries, can outlast the readiness timeout while pages are served, and
    would take every api pod out of the Service at once (they share the database): the edge
    would answer 503 for a database that works. A database that stops answering still fails
    the check once the window has passed."""
    answered_at = float("-inf")

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def answered(*_args) -> None:
        nonlocal answered_at
        answered_at = time.monotonic()

    async def check() -> None:
        if time.monotonic() - answered_at < answered_window:
            return
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check
