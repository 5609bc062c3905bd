"""The api app factory: ``create_api_app(settings=None)`` (settings from the environment by default)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, Request
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from todo_shared.app import add_readiness_check, create_app
from todo_shared.dapr import DaprClient
from todo_shared.problems import problem_response
from todo_shared.settings import load_settings

from todo_api import migrate
from todo_api.db import create_engine, database_check
from todo_api.outbox import OutboxMetrics, OutboxRelay
from todo_api.passwords import Passwords
from todo_api.routes import auth, tags, tasks
from todo_api.settings import ApiSettings
from todo_api.store import DatabaseUnavailableError, Store

log = logging.getLogger("todo.api")

# The database is unreachable, gone or refusing connections: 503 + Retry-After. SQLAlchemy's
# errors (transactions), and the store's for single statements run on asyncpg directly.
DATABASE_UNAVAILABLE = (
    OperationalError,
    InterfaceError,
    PoolTimeoutError,
    ConnectionError,
    DatabaseUnavailableError,
)


async def _database_unavailable(request: Request, exc: Exception) -> object:
    cause = exc.__cause__ if isinstance(exc, DatabaseUnavailableError) else exc
    log.error("database unavailable", extra={"error": type(cause or exc).__name__})
    return problem_response(
        503,
        "The database is unavailable; try again shortly.",
        type_="urn:todo:problem:unavailable",
        instance=request.url.path,
        headers={"Retry-After": "2"},
    )


def create_api_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or load_settings(ApiSettings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            log.info("migrating the database (TODO_MIGRATE_ON_START)")
            await asyncio.to_thread(migrate.upgrade, settings.database_url.get_secret_value())
        engine = create_engine(settings)
        app.state.engine = engine
        app.state.store = Store(engine)
        app.state.passwords = await anyio.to_thread.run_sync(Passwords, settings)
        add_readiness_check(app, "database", database_check(engine))
        dapr = DaprClient.from_settings(settings)
        relay = None
        if dapr is not None:
            add_readiness_check(app, "dapr", dapr.readiness_check)
            if settings.outbox_relay_enabled:
                relay = OutboxRelay(engine, dapr, settings, app.state.outbox_metrics)
                app.state.store.on_change = relay.notify
                relay.start()
        else:
            log.warning(
                "DAPR_HTTP_PORT is not set: task events stay in the outbox until a sidecar is present"
            )
        app.state.relay = relay
        try:
            yield
        finally:
            if relay is not None:
                await relay.stop()
            if dapr is not None:
                await dapr.aclose()
            await engine.dispose()

    app = create_app(
        settings,
        title="Todo API",
        description="Accounts, tasks and tags of the Todo app. Errors are application/problem+json.",
        lifespan=lifespan,
        # Tasks first: FastAPI tries routes in order, and task requests are most of the traffic.
        routers=[tasks.router, auth.router, tags.router],
    )
    app.state.outbox_metrics = OutboxMetrics(app.state.registry)
    app.state.relay = None
    for exc_type in DATABASE_UNAVAILABLE:
        app.add_exception_handler(exc_type, _database_unavailable)
    return app
