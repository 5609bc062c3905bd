"""The parts of the Dapr sidecar's HTTP API the notifier uses beyond publishing
(``todo_shared.dapr.DaprClient`` publishes and checks readiness): state and jobs.

- State (``/v1.0/state/{store}``): ``get(key)`` -> ``StateItem | None`` (value + ETag),
  ``get_bulk(keys)``, ``transaction(operations)`` (all or nothing; build operations with
  ``upsert(...)``). The notifier's keys are prefixed by daprd with the app id.
- Jobs (``/v1.0-alpha1/jobs/{name}``, Dapr 1.16's alpha HTTP API; the scheduler keeps the
  jobs and calls the app back with ``POST /job/{name}`` and the job's ``data`` as the body):
  ``schedule_job(name, due, data, retry_interval, max_retries)`` always with
  ``overwrite: true`` (without it a second schedule of the same name fails with
  AlreadyExists) and a constant failure policy (the scheduler's default is 3 retries 1 s
  apart, too few to ride out a database restart); ``delete_job(name)``; ``get_job(name)``.

Every call carries ``dapr-api-token`` (``DAPR_API_TOKEN``) when set and the request id.
Failures raise ``SidecarError`` (``status`` None when the sidecar is unreachable).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from pydantic import SecretStr
from todo_shared.logs import request_id_var

from todo_notifier.reminders import iso


class SidecarError(Exception):
    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class StateItem:
    key: str
    value: Any
    etag: str | None


def upsert(
    key: str,
    value: Any,
    *,
    etag: str | None = None,
    first_write: bool = False,
    ttl_seconds: int | None = None,
) -> dict[str, Any]:
    """A transaction operation. With ``etag`` the write succeeds only if the stored item still
    has it; with ``first_write`` and no etag, only if there is no (unexpired) item yet."""
    request: dict[str, Any] = {"key": key, "value": value}
    if etag is not None:
        request["etag"] = etag
    if etag is not None or first_write:
        request["options"] = {"concurrency": "first-write"}
    if ttl_seconds is not None:
        request["metadata"] = {"ttlInSeconds": str(ttl_seconds)}
    return {"operation": "upsert", "request": request}


def _duration(seconds: float) -> str:
    """A Go duration string (the protobuf JSON form of Duration is also ``<n>s``)."""
    millis = max(1, math.ceil(seconds * 1000))
    return f"{millis / 1000:g}s"


class SidecarApi:
    def __init__(
        self,
        http_port: int,
        *,
        store: str,
        host: str = "127.0.0.1",
        api_token: SecretStr | str | None = None,
        timeout: float = 10.0,
    ) -> None:
        token = api_token.get_secret_value() if isinstance(api_token, SecretStr) else api_token
        self.store = store
        self._headers = {"dapr-api-token": token} if token else {}
        self._http = httpx.AsyncClient(
            base_url=f"http://{host}:{http_port}",
            timeout=timeout,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _request_headers(self) -> dict[str, str]:
        headers = dict(self._headers)
        request_id = request_id_var.get()
        if request_id:
            headers["x-request-id"] = request_id
        return headers

    async def _call(self, what: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, url, headers=self._request_headers(), **kwargs)
        except httpx.HTTPError as exc:
            raise SidecarError(f"{what}: sidecar unreachable ({type(exc).__name__})") from None
        if response.status_code >= 300:
            body = response.text[:500]
            raise SidecarError(
                f"{what}: sidecar answered {response.status_code}: {body}", response.status_code, body
            )
        return response

    # state ---------------------------------------------------------------------------------
    def _state_url(self, suffix: str = "") -> str:
        return f"/v1.0/state/{quote(self.store, safe='')}{suffix}"

    async def get(self, key: str) -> StateItem | None:
        response = await self._call("state get", "GET", self._state_url("/" + quote(key, safe="")))
        if response.status_code == 204 or not response.content:
            return None
        return StateItem(key, response.json(), response.headers.get("etag"))

    async def get_bulk(self, keys: list[str]) -> dict[str, StateItem | None]:
        response = await self._call(
            "state bulk get", "POST", self._state_url("/bulk"), json={"keys": keys, "parallelism": len(keys)}
        )
        found: dict[str, StateItem | None] = dict.fromkeys(keys)
        for item in response.json():
            if item.get("error"):
                raise SidecarError(f"state bulk get: {item['error'][:200]}")
            if "data" in item and item["data"] is not None:
                found[item["key"]] = StateItem(item["key"], item["data"], item.get("etag"))
        return found

    async def transaction(self, operations: list[dict[str, Any]]) -> None:
        await self._call(
            "state transaction", "POST", self._state_url("/transaction"), json={"operations": operations}
        )

    # jobs ----------------------------------------------------------------------------------
    @staticmethod
    def _job_url(name: str) -> str:
        return f"/v1.0-alpha1/jobs/{quote(name, safe='')}"

    async def schedule_job(
        self, name: str, due: datetime, data: Any, *, retry_interval_seconds: float, max_retries: int
    ) -> None:
        body = {
            "dueTime": iso(due),
            "data": data,
            "overwrite": True,
            "failurePolicy": {
                "constant": {"interval": _duration(retry_interval_seconds), "maxRetries": max_retries}
            },
        }
        await self._call("schedule job", "POST", self._job_url(name), json=body)

    async def delete_job(self, name: str) -> None:
        await self._call("delete job", "DELETE", self._job_url(name))

    async def get_job(self, name: str) -> dict[str, Any] | None:
        """The job, or None when there is none."""
        try:
            response = await self._call("get job", "GET", self._job_url(name))
        except SidecarError as exc:
            if exc.status is not None and "not found" in exc.body.lower():
                return None
            raise
        return response.json() if response.content else None
