"""The web app: todo_shared's service app (health, readiness, metrics, JSON logs, request ids)
plus the pages, the static files and HTML error pages for browsers.

``GET /readyz`` checks that the api answers (through the Dapr sidecar when there is one,
which also checks the sidecar); an answer to a page's call in the last seconds counts
(`ApiClient.readiness_check`). The api client lives for the app's lifetime.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from todo_shared.app import create_app as create_service_app
from todo_shared.problems import problem_response
from todo_shared.settings import load_settings

from todo_web.apiclient import ApiClient, ApiError, ApiUnavailable
from todo_web.pages import STATIC_DIR, render
from todo_web.session import clear_session, flash
from todo_web.settings import WebSettings
from todo_web.views import CsrfRejected, SignInRequired, router

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
_NO_HEADERS_PATHS = ("/healthz", "/readyz", "/metrics")


class BrowserHeaders:
    """Security headers on every page; pages are never cached, static files are (their URLs carry a hash)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _NO_HEADERS_PATHS:
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"x-frame-options", b"DENY"),
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"cache-control", b"public, max-age=86400" if static else b"no-store"),
                ]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/html" in accept and "application/json" not in accept


def _error_page(request: Request, status: int, heading: str, message: str) -> Response:
    if _wants_html(request):
        return render(
            request, "error.html", status, heading=heading, message=message, back=None, back_label=None
        )
    if request.headers.get("accept", "").startswith("application/json") and request.method == "POST":
        return JSONResponse({"ok": False, "message": message}, status_code=status)
    return problem_response(status, message, instance=request.url.path)


def install_error_pages(app: FastAPI) -> None:
    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if not _wants_html(request):
            detail = (
                exc.detail
                if isinstance(exc.detail, str) and exc.detail != HTTPStatus(exc.status_code).phrase
                else None
            )
            return problem_response(exc.status_code, detail, instance=request.url.path, headers=exc.headers)
        if exc.status_code == 404:
            return _error_page(request, 404, "Page not found", "There is nothing at this address.")
        return _error_page(request, exc.status_code, HTTPStatus(exc.status_code).phrase, str(exc.detail))

    async def on_sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        settings = request.app.state.settings
        if (
            request.headers.get("accept", "").startswith("application/json")
            or request.url.path == "/tasks/partial"
        ):
            response: Response = problem_response(401, "Sign in first.", instance=request.url.path)
        else:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            if request.method != "GET":
                target = "/tasks"
            response = RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
            if exc.expired:
                flash(response, "Your session has expired. Please sign in again.", "info")
        if exc.expired:
            clear_session(response, settings)
        return response

    async def on_csrf(request: Request, exc: Exception) -> Response:
        return _error_page(
            request,
            403,
            "This form has expired",
            "For your security the form could not be accepted. Go back, reload the page and try again.",
        )

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        if exc.status == 404:
            return _error_page(request, 404, "Task not found", "This task does not exist, or it was deleted.")
        return _error_page(request, exc.status, "That did not work", exc.detail)

    async def on_api_unavailable(request: Request, exc: Exception) -> Response:
        return _error_page(
            request,
            503,
            "Tasks are unavailable right now",
            "The task service did not answer. Please try again in a moment.",
        )

    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(SignInRequired, on_sign_in_required)
    app.add_exception_handler(CsrfRejected, on_csrf)
    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(ApiUnavailable, on_api_unavailable)


def create_app(settings: WebSettings | None = None) -> FastAPI:
    settings = settings or load_settings(WebSettings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.api = ApiClient.from_settings(settings)
        try:
            yield
        finally:
            await app.state.api.aclose()

    async def api_ready() -> None:
        await app.state.api.readiness_check()

    app = create_service_app(
        settings,
        title="todo-web",
        description="The Todo browser UI (server-rendered).",
        lifespan=lifespan,
        readiness_checks={"api": api_ready},
        routers=[router],
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    install_error_pages(app)
    app.add_middleware(BrowserHeaders)
    return app
