"""Test helpers for every service: a real uvicorn in a thread, and a stand-in Dapr sidecar.

Public API:

- ``ServerThread(app, host="127.0.0.1", port=0)``: serve an ASGI app with a real uvicorn on
  a free loopback port in a background thread (its own event loop, lifespan on).
  ``start()`` / ``stop()`` or ``with ServerThread(app) as server: server.url``.
- ``DaprSidecarStandIn(api_token=None)``: a STAND-IN for the Dapr sidecar (no daprd on this
  machine yet): a real HTTP server on a free port speaking the part of Dapr's HTTP API the
  services use, so the client code path is the production one:

  * ``POST /v1.0/publish/{pubsub}/{topic}``: records a ``PublishedMessage`` (pubsub, topic,
    ``metadata.*`` query parameters, content type, parsed body, request headers) and answers
    204; or the status set by ``fail_publishes(status)`` (until ``recover()``), with a
    Dapr-style error body. Checks ``dapr-api-token`` when ``api_token`` is set (401).
  * ``POST /v1.0-alpha1/publish/bulk/{pubsub}/{topic}`` (bulk publish): records one
    ``PublishedMessage`` per entry (its ``metadata``, ``contentType`` and ``event``) and
    answers 204; after ``fail_publishes(status)`` every entry fails (500: Dapr's answer
    listing each entry in ``failedEntries``; another status: an error without entries);
    after ``fail_partition_keys(*keys)`` only the entries with one of those partition keys
    fail (a partial failure, 500 listing them) and the others are recorded.
  * ``GET /v1.0/healthz`` and ``/v1.0/healthz/outbound``: 204, or 500 after
    ``set_healthy(False)``.
  * ``/v1.0/invoke/{app_id}/method/{path}``: proxies to ``register_app(app_id, base_url)``
    (500 ``ERR_DIRECT_INVOKE`` for an unknown app id).

  ``published`` (a copy, thread-safe), ``clear()``, ``wait_for(count, timeout)`` and its
  async twin ``await wait_for_async(count, timeout)``; ``port`` to put in
  ``DAPR_HTTP_PORT``; ``publish_attempts`` counts every publish request (single or bulk),
  failed or not; ``bulk_sizes`` lists the number of entries of each bulk request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Self

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class ServerThread:
    """A real uvicorn serving ``app`` on loopback from a background thread."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, **config: Any) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.config = config
        self.server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        self._socket = sock
        options = {"log_config": None, "access_log": False, "lifespan": "on", "timeout_graceful_shutdown": 5}
        options.update(self.config)
        config = uvicorn.Config(self.app, host=self.host, port=self.port, **options)
        self.server = uvicorn.Server(config)
        errors: list[BaseException] = []

        def serve() -> None:
            try:
                self.server.run(sockets=[sock])
            except BaseException as exc:  # SystemExit on start-up failure included
                errors.append(exc)

        self._thread = threading.Thread(target=serve, name=f"uvicorn:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"server on port {self.port} did not start: {errors!r}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"server on port {self.port} did not start within {timeout}s")
            time.sleep(0.02)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class PublishedMessage:
    pubsub: str
    topic: str
    metadata: dict[str, str]
    content_type: str
    data: Any
    headers: dict[str, str] = field(repr=False)

    @property
    def partition_key(self) -> str | None:
        return self.metadata.get("partitionKey")


class DaprSidecarStandIn:
    """A stand-in for daprd's HTTP API (publish, health, invoke) on a free loopback port."""

    def __init__(self, api_token: str | None = None) -> None:
        self.api_token = api_token
        self._lock = threading.Lock()
        self._published: list[PublishedMessage] = []
        self._publish_failure: int | None = None
        self._failing_keys: frozenset[str] = frozenset()
        self.bulk_sizes: list[int] = []
        self._healthy = True
        self._apps: dict[str, str] = {}
        self.publish_attempts = 0
        self.publish_delay = 0.0
        self._server = ServerThread(self._build_app())

    # control -----------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_publishes(self, status: int = 500) -> None:
        with self._lock:
            self._publish_failure = status

    def fail_partition_keys(self, *keys: str) -> None:
        with self._lock:
            self._failing_keys = frozenset(keys)

    def recover(self) -> None:
        with self._lock:
            self._publish_failure = None
            self._failing_keys = frozenset()

    def set_healthy(self, healthy: bool) -> None:
        self._healthy = healthy

    def register_app(self, app_id: str, base_url: str) -> None:
        self._apps[app_id] = base_url.rstrip("/")

    @property
    def published(self) -> list[PublishedMessage]:
        with self._lock:
            return list(self._published)

    def clear(self) -> None:
        with self._lock:
            self._published.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[PublishedMessage]:
        deadline = time.monotonic() + timeout
        while len(self.published) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.published)} of {count} messages published within {timeout}s")
            time.sleep(0.02)
        return self.published

    async def wait_for_async(self, count: int, timeout: float = 10.0) -> list[PublishedMessage]:
        deadline = time.monotonic() + timeout
        while len(self.published) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.published)} of {count} messages published within {timeout}s")
            await asyncio.sleep(0.02)
        return self.published

    # the HTTP API ------------------------------------------------------------
    def _authorized(self, request: Request) -> bool:
        return self.api_token is None or request.headers.get("dapr-api-token") == self.api_token

    def _build_app(self) -> Starlette:
        async def publish(request: Request) -> Response:
            with self._lock:
                self.publish_attempts += 1
                failure = self._publish_failure
            if not self._authorized(request):
                return JSONResponse({"errorCode": "ERR_UNAUTHORIZED", "message": "bad token"}, 401)
            if self.publish_delay:
                await asyncio.sleep(self.publish_delay)
            if failure is not None:
                return JSONResponse(
                    {"errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE", "message": "stand-in told to fail"}, failure
                )
            raw = await request.body()
            try:
                data = json.loads(raw) if raw else None
            except ValueError:
                data = raw.decode("utf-8", "replace")
            message = PublishedMessage(
                pubsub=request.path_params["pubsub"],
                topic=request.path_params["topic"],
                metadata={
                    k.removeprefix("metadata."): v
                    for k, v in request.query_params.items()
                    if k.startswith("metadata.")
                },
                content_type=request.headers.get("content-type", ""),
                data=data,
                headers=dict(request.headers),
            )
            with self._lock:
                self._published.append(message)
            return Response(status_code=204)

        async def publish_bulk(request: Request) -> Response:
            with self._lock:
                self.publish_attempts += 1
                failure, failing_keys = self._publish_failure, self._failing_keys
            if not self._authorized(request):
                return JSONResponse({"errorCode": "ERR_UNAUTHORIZED", "message": "bad token"}, 401)
            if self.publish_delay:
                await asyncio.sleep(self.publish_delay)
            entries = json.loads(await request.body())
            with self._lock:
                self.bulk_sizes.append(len(entries))
            if failure is not None and failure != 500:
                return JSONResponse(
                    {"errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE", "message": "stand-in told to fail"}, failure
                )
            failed = []
            for entry in entries:
                metadata = entry.get("metadata") or {}
                if failure is not None or metadata.get("partitionKey") in failing_keys:
                    failed.append({"entryId": entry["entryId"], "error": "stand-in told to fail"})
                    continue
                message = PublishedMessage(
                    pubsub=request.path_params["pubsub"],
                    topic=request.path_params["topic"],
                    metadata=metadata,
                    content_type=entry.get("contentType", ""),
                    data=entry["event"],
                    headers=dict(request.headers),
                )
                with self._lock:
                    self._published.append(message)
            if failed:
                return JSONResponse({"failedEntries": failed, "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE"}, 500)
            return Response(status_code=204)

        async def healthz(request: Request) -> Response:
            return Response(status_code=204 if self._healthy else 500)

        async def invoke(request: Request) -> Response:
            if not self._authorized(request):
                return JSONResponse({"errorCode": "ERR_UNAUTHORIZED", "message": "bad token"}, 401)
            base = self._apps.get(request.path_params["app_id"])
            if base is None:
                return JSONResponse({"errorCode": "ERR_DIRECT_INVOKE", "message": "unknown app id"}, 500)
            headers = {
                k: v
                for k, v in request.headers.items()
                if k.lower() not in {"host", "content-length", "dapr-api-token"}
            }
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                upstream = await client.request(
                    request.method,
                    "/" + request.path_params["path"],
                    params=request.query_params,
                    content=await request.body(),
                    headers=headers,
                )
            excluded = {"content-length", "transfer-encoding", "connection"}
            return Response(
                upstream.content,
                status_code=upstream.status_code,
                headers={k: v for k, v in upstream.headers.items() if k.lower() not in excluded},
            )

        methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        return Starlette(
            routes=[
                Route("/v1.0/publish/{pubsub}/{topic}", publish, methods=["POST"]),
                Route("/v1.0-alpha1/publish/bulk/{pubsub}/{topic}", publish_bulk, methods=["POST"]),
                Route("/v1.0/healthz", healthz, methods=["GET"]),
                Route("/v1.0/healthz/outbound", healthz, methods=["GET"]),
                Route("/v1.0/invoke/{app_id}/method/{path:path}", invoke, methods=methods),
            ]
        )


@contextlib.contextmanager
def dapr_sidecar_standin(api_token: str | None = None) -> Any:
    """``with dapr_sidecar_standin() as sidecar:`` — start and stop a ``DaprSidecarStandIn``."""
    sidecar = DaprSidecarStandIn(api_token).start()
    try:
        yield sidecar
    finally:
        sidecar.stop()
