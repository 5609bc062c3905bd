"""The notifier app factory: ``create_notifier_app(settings=None)`` (settings from the environment
by default)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from todo_shared.app import add_readiness_check, create_app
from todo_shared.dapr import DaprClient
from todo_shared.outbox import OutboxMetrics, OutboxRelay, RelayConfig
from todo_shared.problems import problem_response
from todo_shared.settings import load_settings

from todo_notifier.consumer import Reminders
from todo_notifier.db import create_engine, database_check, is_unavailable
from todo_notifier.metrics import NotifierMetrics
from todo_notifier.routes import dapr_router, router
from todo_notifier.settings import NotifierSettings
from todo_notifier.sidecar import SidecarApi
from todo_notifier.store import OUTBOX_TABLE, Store

log = logging.getLogger("todo.notifier")


async def _database_error(request: Request, exc: Exception) -> object:
    if not is_unavailable(exc):
        log.error("database error", exc_info=exc)
        return problem_response(
            500, "An unexpected error occurred; it has been logged.", instance=request.url.path
        )
    log.error("database unavailable", extra={"error": type(exc).__name__})
    return problem_response(
        503,
        "The database is unavailable; try again shortly.",
        type_="urn:todo:problem:unavailable",
        instance=request.url.path,
        headers={"Retry-After": "2"},
    )


def relay_config(settings: NotifierSettings) -> RelayConfig:
    return RelayConfig.from_settings(settings, table=OUTBOX_TABLE, topic=settings.reminders_topic)


def create_notifier_app(settings: NotifierSettings | None = None) -> FastAPI:
    settings = settings or load_settings(NotifierSettings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            from todo_notifier import migrate  # alembic: only imported when used

            log.info("migrating the database (TODO_MIGRATE_ON_START)")
            await asyncio.to_thread(migrate.upgrade, settings.database_url.get_secret_value())
        engine = create_engine(settings)
        store = Store(engine)
        app.state.engine = engine
        app.state.store = store
        add_readiness_check(app, "database", database_check(engine))
        dapr = DaprClient.from_settings(settings, timeout=settings.dapr_timeout_seconds)
        sidecar = relay = reminders = None
        if dapr is not None:
            add_readiness_check(app, "dapr", dapr.readiness_check)
            sidecar = SidecarApi(
                settings.dapr_http_port,  # type: ignore[arg-type]  # set when dapr is
                store=settings.state_store_name,
                host=settings.dapr_host,
                api_token=settings.dapr_api_token,
                timeout=settings.dapr_timeout_seconds,
            )
            if settings.outbox_relay_enabled:
                relay = OutboxRelay(engine, dapr, relay_config(settings), app.state.outbox_metrics)
                relay.start()
            reminders = Reminders(
                sidecar,
                store,
                settings,
                app.state.notifier_metrics,
                wake_relay=relay.notify if relay is not None else (lambda: None),
            )
        else:
            log.warning("DAPR_HTTP_PORT is not set: no task events, reminders or reminder.due events")
        app.state.relay = relay
        app.state.reminders = reminders
        try:
            yield
        finally:
            if reminders is not None:
                await reminders.aclose()
            if relay is not None:
                await relay.stop()
            if sidecar is not None:
                await sidecar.aclose()
            if dapr is not None:
                await dapr.aclose()
            await engine.dispose()

    app = create_app(
        settings,
        title="Todo notifier",
        description="Reminders and notifications of the Todo app. Errors are application/problem+json.",
        lifespan=lifespan,
        routers=[router, dapr_router],
    )
    app.state.outbox_metrics = OutboxMetrics(app.state.registry)
    app.state.notifier_metrics = NotifierMetrics(app.state.registry)
    app.state.relay = None
    app.state.reminders = None
    for exc_type in (DBAPIError, PoolTimeoutError, ConnectionError):
        app.add_exception_handler(exc_type, _database_error)
    return app
