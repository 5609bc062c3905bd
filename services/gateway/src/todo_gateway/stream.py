"""``GET /api/v1/events``: one Server-Sent Events stream per request, for the signed-in user.

- auth: ``todo_shared.auth.current_user_id`` (``Authorization: Bearer`` or the
  ``todo_session`` cookie; a 401 problem otherwise);
- the stream starts with ``retry: <TODO_RETRY_MILLISECONDS>`` and a ``: connected`` comment;
  then, for a reconnect with ``Last-Event-ID``, the events the client missed (from the replay
  buffer) or, when that id is not in the buffer (evicted, or never seen by this replica), one
  ``event: resync`` (``id:`` the newest event this replica has for the user, when it has one;
  ``data: {"reason": "unknown-last-event-id"}``): the client re-reads the list and the bell;
- heartbeats: a ``:`` comment after ``TODO_HEARTBEAT_SECONDS`` without a write;
- a client that does not keep up (its queue of ``TODO_CONNECTION_QUEUE_EVENTS`` overflows, or
  one write waits ``TODO_SEND_TIMEOUT_SECONDS``) is cut off at once, without holding up
  anyone else; the browser reconnects with ``Last-Event-ID``;
- ``TODO_MAX_CONNECTIONS`` streams per replica, and none while shutting down: 503
  problem+json with ``Retry-After``;
- shutdown (SIGTERM): the hub ends every stream cleanly, so uvicorn's drain finishes.

The frames are encoded by sse-starlette's ``ServerSentEvent``; the response itself is ours, a
plain ASGI callable: one extra task per stream (waiting for the client's disconnect), one
future and timer per wait. sse-starlette's ``EventSourceResponse`` runs an anyio task group of
four tasks per stream: measured 40 KiB of RSS per open stream against 0.6 KiB for uvicorn
itself, which put 5,000 streams over the 256 MiB budget (bench/gateway.py).
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import time
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send
from todo_shared.app import is_shutting_down
from todo_shared.auth import UserId
from todo_shared.problems import Problem

from todo_gateway.events import RESYNC_EVENT, sse_frame
from todo_gateway.hub import Connection, ConnectionLimitReached, Hub, ShuttingDown
from todo_gateway.settings import GatewaySettings

log = logging.getLogger("todo.gateway")

EVENTS_PATH = "/api/v1/events"
BUSY_TYPE = "urn:todo:problem:gateway-busy"
HEARTBEAT = sse_frame(comment="")
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # ingress-nginx: pass each frame on at once
]

# Set in a stream's own task when the gateway cut it off on purpose; uvicorn then logs
# "ASGI callable returned without completing response." for that task, which we filter
# (we have logged the cut-off ourselves, with the reason).
_cut_off_here: contextvars.ContextVar[bool] = contextvars.ContextVar("gateway_cut_off", default=False)
UNFINISHED_RESPONSE = "ASGI callable returned without completing response."


class CutOffLogFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_cut_off_here.get() and record.getMessage() == UNFINISHED_RESPONSE)


def install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, CutOffLogFilter) for f in logger.filters):
        logger.addFilter(CutOffLogFilter())


class _CutOff(Exception):
    """The stream's client is not reading: end the response without finishing it."""


class EventStream(Response):
    """One client's stream (an ASGI response): the preamble, then replay or resync, then live events."""

    media_type = "text/event-stream"

    def __init__(self, hub: Hub, connection: Connection, settings: GatewaySettings) -> None:
        # Not Response.__init__: there is no body to render; FastAPI only needs these.
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)
        self.hub = hub
        self.connection = connection
        self.heartbeat = settings.heartbeat_seconds
        self.send_timeout = settings.send_timeout_seconds
        self.preamble = sse_frame(retry=settings.retry_milliseconds, comment="connected")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        connection = self.connection
        task = asyncio.current_task()
        assert task is not None
        aborted = False

        def abort() -> None:
            nonlocal aborted
            aborted = True
            task.cancel()

        connection.abort = abort
        watcher = asyncio.get_running_loop().create_task(self._watch_disconnect(receive))
        try:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            await self._write(send, start)
            await self._stream(send)
            await self._write(send, {"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not aborted:
                raise  # not ours (server shutdown timed out): let it propagate
            task.uncancel()
            _cut_off_here.set(True)
        except _CutOff:
            connection.abort = None  # we are that stream: nothing to cancel
            self.hub.cut_off(connection, "slow_client", overflowed=False)
            _cut_off_here.set(True)
        finally:
            connection.abort = None
            watcher.cancel()
            self.hub.close(connection, "client")

    async def _watch_disconnect(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.connection.end("client")

    async def _write(self, send: Send, message: dict) -> None:
        try:
            async with asyncio.timeout(self.send_timeout):
                await send(message)
        except TimeoutError:
            raise _CutOff from None

    async def _body(self, send: Send, body: bytes) -> None:
        await self._write(send, {"type": "http.response.body", "body": body, "more_body": True})

    async def _stream(self, send: Send) -> None:
        connection = self.connection
        metrics = self.hub.metrics
        first = self.preamble
        if connection.resync:
            data = json.dumps({"reason": "unknown-last-event-id"})
            first += sse_frame(id=connection.resync_id, event=RESYNC_EVENT, data=data)
        if connection.replay:
            replay, connection.replay = connection.replay, []
            first += b"".join(event.wire for event in replay)
            metrics.replayed_events.inc(len(replay))
        await self._body(send, first)
        delivered, lag = metrics.delivered, metrics.lag
        while True:
            if not await connection.next_events(self.heartbeat):
                await self._body(send, HEARTBEAT)
                continue
            if connection.queue:
                batch, connection.queue = connection.queue, []
                await self._body(send, batch[0].wire if len(batch) == 1 else b"".join(e.wire for e in batch))
                now = time.time()
                delivered.inc(len(batch))
                for event in batch:
                    lag.observe(now - event.time)
            if connection.closed:
                return


def _busy(detail: str, retry_after: int) -> Problem:
    return Problem(
        503,
        detail,
        type_=BUSY_TYPE,
        headers={"Retry-After": str(retry_after)},
    )


router = APIRouter(tags=["events"])


@router.get(
    EVENTS_PATH,
    summary="Live task events and reminders for the signed-in user (Server-Sent Events)",
    response_class=Response,
    responses={
        200: {
            "description": "An endless text/event-stream: `id`, `event` (task.created, task.updated, "
            "task.completed, task.deleted, reminder.due, resync), `data` (JSON).",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        401: {"description": "No valid session cookie or bearer token."},
        503: {"description": "This replica is full or shutting down; see Retry-After."},
    },
)
async def events(
    request: Request,
    user_id: UserId,
    last_event_id: Annotated[
        str | None, Header(max_length=256, description="The id of the last event received (reconnects).")
    ] = None,
) -> Response:
    settings: GatewaySettings = request.app.state.settings
    hub: Hub = request.app.state.hub
    if is_shutting_down(request.app):
        hub.shutdown()
    try:
        connection = hub.open(user_id, last_event_id)
    except ShuttingDown:
        raise _busy("This gateway is shutting down; reconnect.", 1) from None
    except ConnectionLimitReached:
        log.warning("connection limit reached", extra={"max_connections": hub.max_connections})
        raise _busy(
            "This gateway holds as many live streams as it may; try again shortly.",
            settings.busy_retry_after_seconds,
        ) from None
    return EventStream(hub, connection, settings)
