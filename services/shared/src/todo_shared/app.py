"""The app factory every Todo service starts from.

Public API:

- ``create_app(settings, *, title, lifespan=None, readiness_checks=None, routers=(), ...)``:
  a FastAPI app with

  * the service middleware (one pure-ASGI layer): ``X-Request-ID`` in and out (a valid
    incoming id is kept, otherwise a new one is made; it is in every log line of the
    request), request body limit (``settings.max_body_bytes`` -> 413 problem), Prometheus
    HTTP metrics by route template, one access-log line per request, and any unexpected
    exception turned into a 500 problem without internals (logged with its traceback);
  * problem+json for every error (see ``todo_shared.problems``);
  * ``GET /healthz`` (process alive), ``GET /readyz`` (runs the readiness checks
    concurrently, each with ``settings.readiness_timeout_seconds``; 503 problem naming
    what failed; 503 as soon as shutdown begins), ``GET /metrics``.

  ``lifespan`` is an optional async context manager factory ``(app) -> AsyncIterator``
  run inside the shared one (start the service's resources there). On exit the app is
  marked shutting down before the service lifespan's own shutdown runs. The ``routers``'
  routes go onto the app's own router, ahead of the health endpoints (not through
  ``include_router``; ``app.dependency_overrides`` does not reach them). FastAPI's native
  OpenTelemetry is off unless ``telemetry=`` is passed.
- ``add_readiness_check(app, name, check)``: register ``async def check() -> None`` that
  raises (or times out) when the dependency is unusable. Services add theirs (DB, Dapr).
- ``ReadinessCheck``: the type of such a check.
- ``mark_shutting_down(app)`` / ``is_shutting_down(app)``: readiness answers 503 from then on
  (``todo_shared.server.run`` calls it when SIGTERM arrives, before uvicorn drains).

``app.state`` holds ``settings``, ``registry`` (prometheus CollectorRegistry for the
service's own metrics), ``http_metrics``, ``readiness`` (name -> check), ``shutting_down``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from todo_shared.logs import request_id_var
from todo_shared.metrics import UNMATCHED_ROUTE, HttpMetrics, metrics_response, new_registry
from todo_shared.problems import (
    PROBLEM_JSON,
    install_problem_handlers,
    install_problem_openapi,
    problem_body,
)
from todo_shared.settings import ServiceSettings

log = logging.getLogger("todo.http")

ReadinessCheck = Callable[[], Awaitable[None]]
Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]

REQUEST_ID_HEADER = "x-request-id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
# FastAPI's native OpenTelemetry, off: the services export Prometheus metrics and JSON logs and
# install no OpenTelemetry SDK, so it could only ever find itself unconfigured, and asking costs
# every request ~6 µs. A service that adds an SDK passes its own ``telemetry=`` to create_app.
_NO_TELEMETRY = {"tracing": False, "metrics": False, "logs": False}


class _BodyTooLarge(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(413, "The request body is larger than this service accepts.")


class ServiceMiddleware:
    """Request id, body limit, metrics, access log and last-resort 500 problem, in one ASGI layer."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: HttpMetrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        request_id = None
        content_length = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _VALID_REQUEST_ID.match(candidate):
                    request_id = candidate
            elif name == b"content-length":
                try:
                    content_length = int(value)
                except ValueError:
                    content_length = -1
        request_id = request_id or secrets.token_hex(16)  # 32 hex digits, as uuid4().hex, cheaper
        token = request_id_var.set(request_id)
        method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
        started = time.perf_counter()
        status = 500
        response_started = False
        limit = self.max_body_bytes
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge()
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        in_progress = self.metrics.in_progress_of(method)
        in_progress.inc()
        try:
            if content_length is not None and content_length > limit:
                await self._send_problem(
                    scope, send_with_id, 413, "The request body is larger than this service accepts."
                )
            elif content_length is not None and content_length < 0:
                await self._send_problem(scope, send_with_id, 400, "Invalid Content-Length header.")
            else:
                await self.app(scope, limited_receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"method": scope["method"], "path": scope["path"]})
            if response_started:
                raise
            await self._send_problem(
                scope, send_with_id, 500, "An unexpected error occurred; it has been logged."
            )
        finally:
            elapsed = time.perf_counter() - started
            in_progress.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            self.metrics.observe(method, template, status, elapsed)
            level = logging.DEBUG if template in _QUIET_ROUTES and status < 500 else logging.INFO
            if log.isEnabledFor(level):
                log.log(
                    level,
                    "%s %s %s",
                    scope["method"],
                    template,
                    status,
                    extra={
                        "method": scope["method"],
                        "route": template,
                        "path": scope["path"],
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
            request_id_var.reset(token)

    @staticmethod
    async def _send_problem(scope: Scope, send: Send, status: int, detail: str) -> None:
        body = problem_body(status, detail, instance=scope.get("path"))
        response = JSONResponse(jsonable_encoder(body), status_code=status, media_type=PROBLEM_JSON)
        await response({**scope}, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def add_readiness_check(app: FastAPI, name: str, check: ReadinessCheck) -> None:
    app.state.readiness[name] = check


def mark_shutting_down(app: FastAPI) -> None:
    app.state.shutting_down = True


def is_shutting_down(app: FastAPI) -> bool:
    return bool(getattr(app.state, "shutting_down", False))


async def _run_check(name: str, check: ReadinessCheck, timeout: float) -> tuple[str, str | None]:
    try:
        await asyncio.wait_for(check(), timeout)
    except TimeoutError:
        return name, f"timed out after {timeout:g}s"
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else ""
        return name, f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    return name, None


def _health_router(settings: ServiceSettings) -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": settings.service_name}

    @router.get("/readyz")
    async def readyz(request: Request) -> Response:
        app: FastAPI = request.app
        if is_shutting_down(app):
            body = problem_body(503, "The service is shutting down.", instance="/readyz", checks={})
            return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)
        checks = dict(app.state.readiness)
        results = await asyncio.gather(
            *(_run_check(name, check, settings.readiness_timeout_seconds) for name, check in checks.items())
        )
        report = {name: (error or "ok") for name, error in results}
        failed = sorted(name for name, error in results if error)
        if failed:
            log.warning("not ready", extra={"failed": failed, "checks": report})
            body = problem_body(
                503, f"Not ready: {', '.join(failed)}.", instance="/readyz", checks=report, failed=failed
            )
            return JSONResponse(body, status_code=503, media_type=PROBLEM_JSON)
        return JSONResponse({"status": "ready", "checks": report})

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        return metrics_response(request.app.state.registry)

    return router


def create_app(
    settings: ServiceSettings,
    *,
    title: str | None = None,
    description: str = "",
    lifespan: Lifespan | None = None,
    readiness_checks: dict[str, ReadinessCheck] | None = None,
    routers: Iterable[APIRouter] = (),
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app with the shared middleware, problem handlers and health endpoints."""

    @asynccontextmanager
    async def shared_lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.shutting_down = False
        log.info("starting", extra={"environment": settings.environment.value, "version": settings.version})
        if lifespan is None:
            yield
        else:
            async with lifespan(app):
                try:
                    yield
                finally:
                    mark_shutting_down(app)
        mark_shutting_down(app)
        log.info("stopped")

    app = FastAPI(
        title=title or f"todo-{settings.service_name}",
        version=settings.version,
        description=description,
        lifespan=shared_lifespan,
        docs_url="/docs" if settings.is_local else None,
        redoc_url=None,
        **{"telemetry": _NO_TELEMETRY, **fastapi_kwargs},
    )
    registry = new_registry()
    app.state.settings = settings
    app.state.registry = registry
    app.state.http_metrics = HttpMetrics(registry)
    app.state.readiness = dict(readiness_checks or {})
    app.state.shutting_down = False

    install_problem_handlers(app)
    install_problem_openapi(app)
    # The routers' routes go straight onto the app's router: FastAPI (>= 0.137) keeps an
    # included router as one node of a tree that it walks again on every request (~9% of a
    # task create's CPU in the api). A route built by an APIRouter already carries the
    # router's prefix, tags, dependencies and responses, so the app serves it as it is (the
    # routers set no dependency_overrides_provider: app.dependency_overrides does not apply).
    # The services' routes come first: they take the traffic.
    for router in (*routers, _health_router(settings)):
        app.router.routes.extend(router.routes)
    app.add_middleware(
        ServiceMiddleware, max_body_bytes=settings.max_body_bytes, metrics=app.state.http_metrics
    )
    return app
