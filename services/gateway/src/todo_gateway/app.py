"""The gateway app factory: ``create_gateway_app(settings=None)`` (settings from the environment by default).

``app.state.hub`` is the process's ``Hub``. ``GET /readyz`` checks the Dapr sidecar when
``DAPR_HTTP_PORT`` is set (without a sidecar the gateway still serves streams; nothing feeds
them but direct deliveries to the subscription routes). When shutdown begins
(``todo_shared.app.mark_shutting_down``, which ``todo_shared.server.run`` calls on SIGTERM),
the hub refuses new streams and ends the open ones, so uvicorn's drain completes and the
clients reconnect to another replica with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from todo_shared.app import add_readiness_check, create_app, is_shutting_down
from todo_shared.dapr import DaprClient
from todo_shared.settings import load_settings

from todo_gateway import stream, subscriber
from todo_gateway.hub import Hub, ReplayBuffer
from todo_gateway.metrics import GatewayMetrics
from todo_gateway.settings import GatewaySettings

log = logging.getLogger("todo.gateway")

SHUTDOWN_POLL_SECONDS = 0.1


async def _end_streams_on_shutdown(app: FastAPI, hub: Hub) -> None:
    while not is_shutting_down(app):
        await asyncio.sleep(SHUTDOWN_POLL_SECONDS)
    log.info("shutting down: ending open streams", extra={"streams": hub.open_count})
    hub.shutdown()


def create_gateway_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or load_settings(GatewaySettings)
    stream.install_log_filter()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hub: Hub = app.state.hub
        dapr = DaprClient.from_settings(settings)
        if dapr is not None:
            add_readiness_check(app, "dapr", dapr.readiness_check)
        else:
            log.warning("DAPR_HTTP_PORT is not set: no sidecar delivers events to this gateway")
        watcher = asyncio.create_task(_end_streams_on_shutdown(app, hub), name="gateway-shutdown-watcher")
        log.info(
            "subscribing",
            extra={
                "subscriptions": subscriber.subscriptions(settings),
                "max_connections": hub.max_connections,
            },
        )
        try:
            yield
        finally:
            hub.shutdown()
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            if dapr is not None:
                await dapr.aclose()

    app = create_app(
        settings,
        title="Todo gateway",
        description="Live task events and reminders over Server-Sent Events. "
        "Errors are application/problem+json.",
        lifespan=lifespan,
        routers=[stream.router, subscriber.router],
    )
    metrics = GatewayMetrics(app.state.registry)
    app.state.hub = Hub(
        ReplayBuffer(settings.replay_events_per_user, settings.replay_max_users, settings.replay_max_bytes),
        metrics,
        max_connections=settings.max_connections,
        queue_events=settings.connection_queue_events,
    )
    return app
