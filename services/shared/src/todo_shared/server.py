"""Run a service under uvicorn with graceful shutdown.

Public API:

- ``run(app_factory, *, host=None, port=None)``: configure JSON logging, build the app
  (``app_factory()`` returns a FastAPI app made by ``create_app``), and serve it. On
  SIGTERM/SIGINT: readiness answers 503 at once, uvicorn stops accepting connections,
  in-flight requests drain (up to ``settings.shutdown_timeout_seconds``), then the
  lifespan shutdown runs (services stop their background work there); uvicorn then
  re-raises the signal, so the process ends as the signal's default says (143 for
  SIGTERM). Invalid settings exit 2 with a message naming the variables (no values).
- ``GracefulServer``: the ``uvicorn.Server`` subclass doing the first step; use it to
  embed a server (tests, benchmarks).
- ``uvicorn_config(app, settings, **overrides)``: the uvicorn Config ``run`` uses (uvloop
  event loop and httptools HTTP parser, both from ``uvicorn[standard]``, named rather than
  left to "auto" so a missing one fails loudly instead of silently costing throughput; our
  JSON logs, no access log or server header, graceful-shutdown timeout from settings).

One process per service instance: in Kubernetes each pod runs one, and replicas (the HPA)
scale out; ``bench/api.py`` runs the api the same way (``--replicas``, default 2 as the chart).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from todo_shared.app import mark_shutting_down
from todo_shared.logs import configure_logging
from todo_shared.settings import ServiceSettings, SettingsError

log = logging.getLogger("todo.server")


class GracefulServer(uvicorn.Server):
    """Marks the app as shutting down (readiness 503) the moment a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        mark_shutting_down(self._app)
        if not self.should_exit:
            log.info("stop signal received; draining", extra={"signal": sig})
        super().handle_exit(sig, frame)


def uvicorn_config(app: FastAPI, settings: ServiceSettings, **overrides: Any) -> uvicorn.Config:
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        "proxy_headers": True,
        "forwarded_allow_ips": "127.0.0.1",
        "timeout_graceful_shutdown": settings.shutdown_timeout_seconds,
        "timeout_keep_alive": 5,
        "lifespan": "on",
        "loop": "uvloop",
        "http": "httptools",
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)


def run(app_factory: Callable[[], FastAPI], *, host: str | None = None, port: int | None = None) -> None:
    configure_logging("INFO")
    try:
        app = app_factory()
    except SettingsError as exc:
        log.error("%s", exc)
        sys.exit(2)
    settings: ServiceSettings = app.state.settings
    configure_logging(settings.log_level, settings.service_name)
    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    server = GracefulServer(uvicorn_config(app, settings, **overrides), app)
    server.run()
    log.info("exited")
