"""The web's server-side client for the api service.

Every call forwards the signed-in user's JWT (from the ``todo_session`` cookie) as
``Authorization: Bearer`` and the current ``X-Request-ID``. With a Dapr sidecar
(``DAPR_HTTP_PORT`` set) calls go through Dapr service invocation
(``todo_shared.dapr.DaprClient.invoke``: ``http://127.0.0.1:$DAPR_HTTP_PORT/v1.0/invoke/api/method/<path>``,
with ``dapr-api-token`` when ``DAPR_API_TOKEN`` is set); without one they go straight to
``TODO_API_URL``.

Answers the api gives on purpose (4xx, with an RFC 9457 problem body) raise `ApiError`,
which carries the problem's ``detail`` and its field errors so the page can show them next
to the form fields. Transport failures and 5xx answers raise `ApiUnavailable`: the page
shows "try again" and keeps what the user typed. Reads are sent a second time first
(`ApiClient.request`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from todo_shared.dapr import DaprClient, DaprError
from todo_shared.logs import request_id_var

from todo_web.settings import WebSettings

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
RETRY_PAUSE = 0.2  # seconds before a failed read is sent again
ANSWERED_WINDOW = 10.0  # seconds an answer of the api counts as proof that it is reachable


def _field_name(error: dict[str, Any]) -> str | None:
    """The form field an error in a problem document is about, in its common spellings."""
    for key in ("field", "name", "param"):
        value = error.get(key)
        if isinstance(value, str) and value:
            return value.split(".")[0]
    loc = error.get("loc")
    if isinstance(loc, list | tuple):
        names = [str(part) for part in loc if not isinstance(part, int) and part not in ("body", "query")]
        if names:
            return names[0]
    source = error.get("source")
    pointer = error.get("pointer") or (source.get("pointer") if isinstance(source, dict) else None)
    if isinstance(pointer, str) and pointer.strip("/#"):
        return pointer.strip("/#").split("/")[0]
    return None


def _field_message(error: dict[str, Any]) -> str:
    for key in ("message", "msg", "detail", "reason", "title"):
        value = error.get(key)
        if isinstance(value, str) and value:
            return _sentence(value)
    return "Invalid value."


def _sentence(text: str) -> str:
    """``"Value error, each tag is ..."`` (pydantic's wording) -> ``"Each tag is ..."``."""
    text = re.sub(r"^(Value|Assertion) error, ", "", text.strip())
    return text[:1].upper() + text[1:]


def field_errors(problem: dict[str, Any]) -> dict[str, str]:
    """``{field: message}`` from a problem document (``errors`` / ``invalid_params`` lists or a dict)."""
    found: dict[str, str] = {}
    for key in ("errors", "invalid_params", "invalid-params", "fields"):
        value = problem.get(key)
        if isinstance(value, dict):
            for name, message in value.items():
                text = message[0] if isinstance(message, list) and message else message
                found.setdefault(str(name), _sentence(str(text)))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    name = _field_name(item)
                    if name:
                        found.setdefault(name, _field_message(item))
    return found


@dataclass
class ApiError(Exception):
    """The api refused a request on purpose (a 4xx problem+json answer)."""

    status: int
    problem: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.detail)

    @property
    def detail(self) -> str:
        detail = self.problem.get("detail") or self.problem.get("title")
        if isinstance(detail, str) and detail:
            return detail
        return f"The request was refused ({self.status})."

    @property
    def fields(self) -> dict[str, str]:
        return field_errors(self.problem)


class ApiUnavailable(Exception):
    """The api could not be reached, timed out or failed (5xx)."""


class ApiClient:
    """Typed calls to the api's /api/v1 routes: through Dapr when ``dapr`` is given, else over ``http``."""

    def __init__(
        self,
        *,
        http: httpx.AsyncClient | None = None,
        dapr: DaprClient | None = None,
        app_id: str = "api",
        answered_window: float = ANSWERED_WINDOW,
    ) -> None:
        if (http is None) == (dapr is None):
            raise ValueError("give exactly one of http (direct) or dapr (service invocation)")
        self.http = http
        self.dapr = dapr
        self.app_id = app_id
        self.answered_window = answered_window
        self.answered_at = float("-inf")  # time.monotonic() of the api's last answer below 500

    @classmethod
    def from_settings(cls, settings: WebSettings) -> ApiClient:
        dapr = DaprClient.from_settings(settings, timeout=settings.api_timeout_seconds)
        if dapr is not None:
            return cls(dapr=dapr, app_id=settings.api_app_id)
        http = httpx.AsyncClient(
            base_url=settings.api_url.rstrip("/"),
            timeout=settings.api_timeout_seconds,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )
        return cls(http=http)

    @property
    def via(self) -> str:
        return f"dapr:{self.app_id}" if self.dapr else str(self.http.base_url) if self.http else "?"

    async def aclose(self) -> None:
        if self.dapr:
            await self.dapr.aclose()
        if self.http:
            await self.http.aclose()

    async def send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """The raw answer, whatever its status; `ApiUnavailable` if nothing answered."""
        try:
            if self.dapr is not None:
                response = await self.dapr.invoke(
                    self.app_id, method, path, json=json, params=params, headers=headers
                )
            else:
                assert self.http is not None
                sent = dict(headers or {})
                request_id = request_id_var.get()
                if request_id:
                    sent.setdefault("x-request-id", request_id)
                response = await self.http.request(method, path, json=json, params=params, headers=sent)
        except (httpx.HTTPError, DaprError) as exc:
            log.warning(
                "api unreachable",
                extra={"method": method, "path": path, "error": f"{type(exc).__name__}: {exc}"},
            )
            raise ApiUnavailable(f"{method} {path}: {type(exc).__name__}") from exc
        if response.status_code < 500:
            self.answered_at = time.monotonic()
        return response

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One call; raises `ApiError` for 4xx and `ApiUnavailable` for transport errors and 5xx.

        A read (GET) that finds the api unavailable is sent once more after `RETRY_PAUSE`, as an
        ingress retries an idempotent request on another upstream: a caller's sidecar keeps one
        connection to one api pod, and the call that meets that pod's stop goes out again on a
        new connection to a running one. Writes are never repeated (the user sees "try again").
        """
        headers = {"accept": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        if params:
            params = {k: v for k, v in params.items() if v not in (None, "")}
        attempts = 2 if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await asyncio.sleep(RETRY_PAUSE)
            try:
                response = await self.send(method, path, json=json, params=params, headers=headers)
            except ApiUnavailable:
                if attempt == attempts:
                    raise
                continue
            if response.status_code < 500:
                break
            log.warning(
                "api answered an error",
                extra={
                    "method": method,
                    "path": path,
                    "status": response.status_code,
                    "attempt": attempt,
                    "answer": response.text[:300],
                },
            )
            if attempt == attempts:
                raise ApiUnavailable(f"{method} {path}: HTTP {response.status_code}")
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {}
            raise ApiError(response.status_code, problem if isinstance(problem, dict) else {})
        return response

    # --- accounts -----------------------------------------------------------------------

    async def register(self, email: str, password: str) -> dict[str, Any]:
        response = await self.request(
            "POST", f"{API_PREFIX}/auth/register", json={"email": email, "password": password}
        )
        return response.json()

    async def login(self, email: str, password: str) -> str:
        """The access token for these credentials."""
        response = await self.request(
            "POST", f"{API_PREFIX}/auth/login", json={"email": email, "password": password}
        )
        return str(response.json()["access_token"])

    async def logout(self, token: str) -> None:
        await self.request("POST", f"{API_PREFIX}/auth/logout", token=token)

    async def me(self, token: str) -> dict[str, Any]:
        return (await self.request("GET", f"{API_PREFIX}/auth/me", token=token)).json()

    # --- tasks and tags -----------------------------------------------------------------

    async def list_tasks(self, token: str, params: dict[str, Any]) -> dict[str, Any]:
        return (await self.request("GET", f"{API_PREFIX}/tasks", token=token, params=params)).json()

    async def get_task(self, token: str, task_id: str) -> dict[str, Any]:
        return (
            await self.request("GET", f"{API_PREFIX}/tasks/{quote(task_id, safe='')}", token=token)
        ).json()

    async def create_task(self, token: str, payload: dict[str, Any]) -> dict[str, Any]:
        return (await self.request("POST", f"{API_PREFIX}/tasks", token=token, json=payload)).json()

    async def update_task(self, token: str, task_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        return (
            await self.request(
                "PATCH", f"{API_PREFIX}/tasks/{quote(task_id, safe='')}", token=token, json=payload
            )
        ).json()

    async def delete_task(self, token: str, task_id: str) -> None:
        await self.request("DELETE", f"{API_PREFIX}/tasks/{quote(task_id, safe='')}", token=token)

    async def complete_task(self, token: str, task_id: str) -> dict[str, Any]:
        return (
            await self.request("POST", f"{API_PREFIX}/tasks/{quote(task_id, safe='')}/complete", token=token)
        ).json()

    async def reopen_task(self, token: str, task_id: str) -> dict[str, Any]:
        return (
            await self.request("POST", f"{API_PREFIX}/tasks/{quote(task_id, safe='')}/reopen", token=token)
        ).json()

    async def tags(self, token: str) -> list[dict[str, Any]]:
        body = (await self.request("GET", f"{API_PREFIX}/tags", token=token)).json()
        if isinstance(body, dict):
            body = body.get("items") or body.get("tags") or []
        return list(body)

    async def readiness_check(self) -> None:
        """Raises unless the api answered a call in the last `answered_window` seconds, or
        answers its liveness probe now (and, with Dapr, the sidecar is ready).

        Real calls count: under load the probe's own call can be slower than the readiness
        timeout while pages are served, and failing it would take every web pod out of the
        Service at once (the api is the same for all of them), turning a slow api into an
        edge that answers 502 for every page, the sign-in page too."""
        if time.monotonic() - self.answered_at < self.answered_window:
            return
        if self.dapr is not None:
            await self.dapr.readiness_check()
        response = await self.send("GET", "/healthz")
        if response.status_code != 200:
            raise ApiUnavailable(f"api /healthz answered {response.status_code}")
