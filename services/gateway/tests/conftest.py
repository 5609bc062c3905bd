"""Fixtures for the gateway's tests: the gateway app served by a real uvicorn (ServerThread)
with per-test settings, and an async HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from gateway_testlib import APP_TOKEN, JWT_KEY
from todo_gateway.app import create_gateway_app
from todo_gateway.hub import Hub
from todo_gateway.settings import GatewaySettings
from todo_shared.app import mark_shutting_down
from todo_shared.testing import ServerThread


@dataclass
class RunningGateway:
    app: FastAPI
    server: ServerThread
    settings: GatewaySettings

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def hub(self) -> Hub:
        return self.app.state.hub

    def metric(self, name: str, **labels: str) -> float:
        return self.app.state.registry.get_sample_value(name, labels) or 0.0

    def stop(self) -> None:
        # As todo_shared.server does on SIGTERM: the streams end, then uvicorn drains.
        mark_shutting_down(self.app)
        self.server.stop()


@pytest.fixture
def gateway_factory() -> Iterator[Callable[..., RunningGateway]]:
    """``gateway_factory(**settings)``: a gateway on a real uvicorn (loopback, free port)."""
    started: list[RunningGateway] = []

    def start(**overrides) -> RunningGateway:
        values = {"environment": "test", "jwt_signing_key": JWT_KEY, "app_api_token": APP_TOKEN}
        values.update(overrides)
        settings = GatewaySettings(**values)
        app = create_gateway_app(settings)
        server = ServerThread(app, timeout_graceful_shutdown=5).start()
        running = RunningGateway(app, server, settings)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


@pytest.fixture
def gateway(gateway_factory) -> RunningGateway:
    return gateway_factory()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=20)
    async with httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=30.0), limits=limits) as http:
        yield http
