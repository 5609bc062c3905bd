"""A small async client for the Dapr sidecar's HTTP API (aiohttp for publish, httpx for the rest).

Public API:

- ``DaprClient(http_port, *, host="127.0.0.1", api_token=None, timeout=5.0)``:

  * ``await publish(pubsub, topic, data, *, partition_key=None, metadata=None,
    content_type="application/json")``: ``POST /v1.0/publish/{pubsub}/{topic}`` with
    ``?metadata.partitionKey=...`` (and any other ``metadata.<key>``); ``data`` is sent as
    JSON. Pass a CloudEvent (see ``cloud_event``) with
    ``content_type="application/cloudevents+json"`` to keep your own event id. Raises
    ``DaprError`` unless the sidecar answers 2xx. Publishing is the outbox relay's hot
    path, so it goes through aiohttp (keep-alive ``TCPConnector`` pool, C HTTP parser):
    0.11-0.16x the CPU of httpx per request here (``python -m bench.dapr_publish`` measures
    both). The body is written with orjson.
    A publish that fails because the sidecar closed a kept-alive connection under it is
    sent once more on a fresh connection: publishing is at least once, as the outbox is.
  * ``await publish_bulk(pubsub, topic, entries) -> dict[str, str]``: Dapr's bulk publish
    API, ``POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}``, several messages in one call
    (``BulkEntry``: entry id, event, content type, per-entry metadata such as
    ``partitionKey``). Dapr publishes the entries independently and in no guaranteed order:
    the answer maps each FAILED entry id to its error (empty when all went out). Raises
    ``DaprError`` when the sidecar is unreachable or refuses the request as a whole (then
    no entry can be assumed published). Same transport, token and retry as ``publish``.
  * ``await invoke(app_id, method, path, *, json=None, params=None, headers=None)``:
    service invocation, ``{method} /v1.0/invoke/{app_id}/method/{path}``; returns the
    ``httpx.Response`` whatever its status (raises ``DaprError`` only if the sidecar is
    unreachable).
  * ``await healthy() -> bool`` and ``await readiness_check()`` (raises ``DaprError``):
    ``GET /v1.0/healthz/outbound`` (204 once the sidecar's components are ready).
  * ``await shutdown()``: ``POST /v1.0/shutdown``, the sidecar's graceful stop (as on
    SIGTERM: it closes its servers, lets what is in flight finish and exits); raises
    ``DaprError`` unless the sidecar accepts (204).
  * ``await aclose()``; also an async context manager.
  * ``DaprClient.from_settings(settings)``: ``None`` when ``DAPR_HTTP_PORT`` is unset.

  Every call carries ``dapr-api-token`` when ``DAPR_API_TOKEN`` is set, and the current
  ``X-Request-ID``.
- ``BulkEntry(entry_id, event, content_type="application/json", metadata=None)``: one
  message of a bulk publish.
- ``DaprError``: ``status`` (None when the sidecar was unreachable) and a message without
  secrets.
- ``cloud_event(event_id, type, source, data, *, subject=None, time=None)``: a CloudEvents
  1.0 envelope (``datacontenttype: application/json``).
- ``CLOUDEVENTS_JSON``: ``application/cloudevents+json``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import httpx
import orjson
from pydantic import SecretStr
from yarl import URL

from todo_shared.logs import request_id_var
from todo_shared.settings import ServiceSettings

CLOUDEVENTS_JSON = "application/cloudevents+json"

# The sidecar closed a kept-alive connection as the request went out: safe to send again.
_STALE_CONNECTION = (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class DaprError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class BulkEntry:
    """One message of a bulk publish; ``entry_id`` must be unique within the request."""

    entry_id: str
    event: Any
    content_type: str = "application/json"
    metadata: dict[str, str] | None = None

    def as_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "entryId": self.entry_id,
            "event": self.event,
            "contentType": self.content_type,
        }
        if self.metadata:
            entry["metadata"] = self.metadata
        return entry


def cloud_event(
    event_id: str,
    type: str,
    source: str,
    data: Any,
    *,
    subject: str | None = None,
    time: datetime | None = None,
) -> dict[str, Any]:
    event = {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": type,
        "time": (time or datetime.now(UTC)).isoformat(),
        "datacontenttype": "application/json",
        "data": data,
    }
    if subject is not None:
        event["subject"] = subject
    return event


class DaprClient:
    def __init__(
        self,
        http_port: int,
        *,
        host: str = "127.0.0.1",
        api_token: SecretStr | str | None = None,
        timeout: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = f"http://{host}:{http_port}"
        self._timeout = timeout
        self._publish_session: aiohttp.ClientSession | None = None
        token = api_token.get_secret_value() if isinstance(api_token, SecretStr) else api_token
        self._headers = {"dapr-api-token": token} if token else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )

    @classmethod
    def from_settings(cls, settings: ServiceSettings, **kwargs: Any) -> DaprClient | None:
        if settings.dapr_http_port is None:
            return None
        return cls(
            settings.dapr_http_port, host=settings.dapr_host, api_token=settings.dapr_api_token, **kwargs
        )

    async def __aenter__(self) -> DaprClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._publish_session is not None:
            await self._publish_session.close()
            self._publish_session = None
        await self._http.aclose()

    def _session(self) -> aiohttp.ClientSession:
        """The publish session, made on first use (aiohttp needs the running loop)."""
        if self._publish_session is None or self._publish_session.closed:
            self._publish_session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=32, keepalive_timeout=30, ttl_dns_cache=None),
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
            )
        return self._publish_session

    def _request_headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(self._headers)
        request_id = request_id_var.get()
        if request_id:
            headers["x-request-id"] = request_id
        if extra:
            headers.update(extra)
        return headers

    async def publish(
        self,
        pubsub: str,
        topic: str,
        data: Any,
        *,
        partition_key: str | None = None,
        metadata: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        params = {f"metadata.{key}": value for key, value in (metadata or {}).items()}
        if partition_key is not None:
            params["metadata.partitionKey"] = partition_key
        target = f"/v1.0/publish/{quote(pubsub, safe='')}/{quote(topic, safe='')}"
        if params:
            target += "?" + urlencode(params, quote_via=quote)
        body = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
        status, content = await self._send(target, body, content_type, f"publish to {pubsub}/{topic}")
        if status >= 300:
            raise DaprError(
                f"publish to {pubsub}/{topic}: sidecar answered {status}: "
                f"{content[:200].decode('utf-8', 'replace')}",
                status,
            )

    async def publish_bulk(self, pubsub: str, topic: str, entries: list[BulkEntry]) -> dict[str, str]:
        """Publish ``entries`` in one call; the failed ones (entry id -> error), empty if none."""
        if not entries:
            return {}
        target = f"/v1.0-alpha1/publish/bulk/{quote(pubsub, safe='')}/{quote(topic, safe='')}"
        body = orjson.dumps(
            [entry.as_json() for entry in entries], default=str, option=orjson.OPT_NON_STR_KEYS
        )
        what = f"bulk publish to {pubsub}/{topic}"
        status, content = await self._send(target, body, "application/json", what)
        if status < 300:
            return {}
        failed: dict[str, str] = {}
        try:
            answer = orjson.loads(content)
            for item in answer["failedEntries"]:
                failed[str(item["entryId"])] = str(item.get("error") or answer.get("errorCode") or status)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            failed = {}
        known = {entry.entry_id for entry in entries}
        if not failed or not failed.keys() <= known:
            # Not a per-entry report (e.g. an unknown pub/sub, a refused token): nothing went out.
            raise DaprError(
                f"{what}: sidecar answered {status}: {content[:200].decode('utf-8', 'replace')}", status
            )
        return {
            entry_id: f"{what}: sidecar answered {status}: {error[:200]}"
            for entry_id, error in failed.items()
        }

    async def _send(self, target: str, body: bytes, content_type: str, what: str) -> tuple[int, bytes]:
        """POST ``body`` to the sidecar (the publish session); status and body of the answer."""
        url = URL(self.base_url + target, encoded=True)
        headers = self._request_headers({"content-type": content_type})
        session = self._session()
        try:
            try:
                return await self._post(session, url, body, headers)
            except _STALE_CONNECTION as exc:
                if isinstance(exc, aiohttp.ClientConnectorError):  # could not connect at all
                    raise
                return await self._post(session, url, body, headers)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = "TimeoutError" if isinstance(exc, TimeoutError) else type(exc).__name__
            raise DaprError(f"{what}: sidecar unreachable ({reason})") from None

    @staticmethod
    async def _post(
        session: aiohttp.ClientSession, url: URL, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        async with session.post(url, data=body, headers=headers) as response:
            # Read to the end, so the connection goes back to the pool (not closed).
            return response.status, await response.read()

    async def invoke(
        self,
        app_id: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        url = f"/v1.0/invoke/{quote(app_id, safe='')}/method/{path.lstrip('/')}"
        try:
            return await self._http.request(
                method.upper(),
                url,
                json=json,
                params=params,
                content=content,
                headers=self._request_headers(headers),
            )
        except httpx.HTTPError as exc:
            raise DaprError(f"invoke {app_id}: sidecar unreachable ({type(exc).__name__})") from None

    async def readiness_check(self) -> None:
        try:
            response = await self._http.get("/v1.0/healthz/outbound", headers=self._request_headers())
        except httpx.HTTPError as exc:
            raise DaprError(f"sidecar unreachable ({type(exc).__name__})") from None
        if response.status_code >= 300:
            raise DaprError(f"sidecar not ready: {response.status_code}", response.status_code)

    async def healthy(self) -> bool:
        try:
            await self.readiness_check()
        except DaprError:
            return False
        return True

    async def shutdown(self) -> None:
        try:
            response = await self._http.post("/v1.0/shutdown", headers=self._request_headers())
        except httpx.HTTPError as exc:
            raise DaprError(f"shutdown: sidecar unreachable ({type(exc).__name__})") from None
        if response.status_code >= 300:
            raise DaprError(f"shutdown refused: {response.status_code}", response.status_code)
