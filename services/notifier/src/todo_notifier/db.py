"""The database engine (SQLAlchemy 2 async on asyncpg), its readiness check, and
``is_unavailable(exc)``: whether an error means the database is unreachable (try again later)
rather than a bug."""

from __future__ import annotations

import asyncpg.exceptions as pg
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from todo_notifier.settings import NotifierSettings


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


def create_engine(settings: NotifierSettings) -> AsyncEngine:
    server_settings = {"application_name": f"todo-{settings.service_name}"}
    if settings.db_statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
    return create_async_engine(
        async_url(settings.database_url.get_secret_value()),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_recycle=1800,
        pool_pre_ping=True,
        connect_args={"server_settings": server_settings},
    )


def database_check(engine: AsyncEngine):
    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


# The server refuses connections or goes away: starting up, shutting down, not accepting
# connections to this database, out of connection slots.
_UNAVAILABLE_CAUSES = (
    pg.PostgresConnectionError,
    pg.CannotConnectNowError,
    pg.ObjectNotInPrerequisiteStateError,
    pg.TooManyConnectionsError,
    pg.AdminShutdownError,
    pg.CrashShutdownError,
    pg.InterfaceError,
    ConnectionError,
    OSError,
    TimeoutError,
)


def is_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        cause = exc.orig.__cause__ if exc.orig is not None else None
        return isinstance(exc.orig, _UNAVAILABLE_CAUSES) or isinstance(cause, _UNAVAILABLE_CAUSES)
    return isinstance(exc, OSError)
