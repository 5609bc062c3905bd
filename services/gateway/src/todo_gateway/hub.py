"""Who is connected, what they have missed, and getting each event to its owner's streams.

Pure asyncio logic, no I/O: one ``Hub`` per process, used from the event loop only.

Public API:

- ``ReplayBuffer(events_per_user, max_users, max_bytes)``: the newest ``events_per_user``
  events of each user, for ``Last-Event-ID``; at most ``max_users`` users and ``max_bytes``
  bytes of frames, evicting the least recently active user first (LRU).
  ``add(event) -> bool`` (False: that user already has this event id: a duplicate),
  ``since(user_id, event_id) -> list[Event] | None`` (the events after it; None when the id
  is not buffered), ``latest_id(user_id)``, ``users``, ``bytes``.
  The buffer is also the dedupe window: an id is recognised while it is among the user's
  newest ``events_per_user`` events (redeliveries come soon after the original).
- ``Connection``: one open stream. ``replay`` (events to send first), ``resync`` (tell the
  client to re-read), ``resync_id``, ``queue`` (live events, at most ``limit``), ``closed``
  (None or the reason), ``abort`` (set by the stream: cancels it at once, even mid-write).
  ``await next_events(timeout)`` waits for live events (False when the timeout passed first).
- ``Hub(buffer, metrics, max_connections, queue_events)``:

  * ``open(user_id, last_event_id=None) -> Connection``: register a stream and work out its
    replay in one step (no await between them, so no event falls between replay and live).
    Raises ``ConnectionLimitReached`` at ``max_connections``, ``ShuttingDown`` after ``shutdown()``.
  * ``publish(event) -> bool``: buffer it and queue it on each of the owner's streams; False
    for a duplicate (nothing happens). A stream whose queue is full is cut off (``abort``),
    the others are not held up.
  * ``close(connection, reason)``: unregister (idempotent); ``shutdown()``: refuse new
    streams and end every open one cleanly.
  * ``open_count``, ``connections_of(user_id)``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from itertools import islice

from todo_gateway.events import Event
from todo_gateway.metrics import GatewayMetrics

log = logging.getLogger("todo.gateway")

EVENT_OVERHEAD_BYTES = 200  # the Event object, its id string and the index entry, roughly


class ConnectionLimitReached(Exception):
    """This replica holds ``max_connections`` streams already."""


class ShuttingDown(Exception):
    """The replica is draining; no new streams."""


class _UserLog:
    __slots__ = ("bytes", "events", "index", "next_seq")

    def __init__(self) -> None:
        self.events: deque[Event] = deque()
        self.index: dict[str, int] = {}
        self.next_seq = 1
        self.bytes = 0


def _size(event: Event) -> int:
    return len(event.wire) + EVENT_OVERHEAD_BYTES


class ReplayBuffer:
    def __init__(self, events_per_user: int, max_users: int, max_bytes: int) -> None:
        self.events_per_user = events_per_user
        self.max_users = max_users
        self.max_bytes = max_bytes
        self._logs: OrderedDict[uuid.UUID, _UserLog] = OrderedDict()
        self.bytes = 0

    @property
    def users(self) -> int:
        return len(self._logs)

    def add(self, event: Event) -> bool:
        logs = self._logs
        user_log = logs.get(event.user_id)
        if user_log is None:
            user_log = logs[event.user_id] = _UserLog()
        else:
            logs.move_to_end(event.user_id)
            if event.id in user_log.index:
                return False
        event.seq = user_log.next_seq
        user_log.next_seq += 1
        user_log.events.append(event)
        user_log.index[event.id] = event.seq
        size = _size(event)
        user_log.bytes += size
        self.bytes += size
        if len(user_log.events) > self.events_per_user:
            self._drop_oldest(user_log)
        while len(logs) > self.max_users or (self.bytes > self.max_bytes and len(logs) > 1):
            _, evicted = logs.popitem(last=False)
            self.bytes -= evicted.bytes
        return True

    def _drop_oldest(self, user_log: _UserLog) -> None:
        old = user_log.events.popleft()
        del user_log.index[old.id]
        size = _size(old)
        user_log.bytes -= size
        self.bytes -= size

    def since(self, user_id: uuid.UUID, event_id: str) -> list[Event] | None:
        user_log = self._logs.get(user_id)
        if user_log is None:
            return None
        seq = user_log.index.get(event_id)
        if seq is None:
            return None
        self._logs.move_to_end(user_id)
        first = user_log.events[0].seq
        return list(islice(user_log.events, seq - first + 1, None))

    def latest_id(self, user_id: uuid.UUID) -> str | None:
        user_log = self._logs.get(user_id)
        return user_log.events[-1].id if user_log and user_log.events else None

    def since_start(self, user_id: uuid.UUID) -> list[Event]:
        """Every event buffered for the user, oldest first."""
        user_log = self._logs.get(user_id)
        return list(user_log.events) if user_log else []

    def ids(self, user_id: uuid.UUID) -> list[str]:
        return [event.id for event in self.since_start(user_id)]


class Connection:
    __slots__ = (
        "_waiter",
        "abort",
        "closed",
        "limit",
        "queue",
        "replay",
        "resync",
        "resync_id",
        "user_id",
    )

    def __init__(self, user_id: uuid.UUID, limit: int) -> None:
        self.user_id = user_id
        self.limit = limit
        self.queue: list[Event] = []  # a list, not a deque: 56 bytes empty against ~600
        self.replay: list[Event] = []
        self.resync = False
        self.resync_id: str | None = None
        self.closed: str | None = None
        self.abort: Callable[[], None] | None = None
        self._waiter: asyncio.Future[bool] | None = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def offer(self, event: Event) -> bool:
        """Queue a live event; False when the queue is full (the client is too slow)."""
        if len(self.queue) >= self.limit:
            return False
        self.queue.append(event)
        self._wake()
        return True

    def end(self, reason: str) -> None:
        """End the stream cleanly after what is queued."""
        if self.closed is None:
            self.closed = reason
        self._wake()

    async def next_events(self, timeout: float | None = None) -> bool:
        """Wait until there are live events to send or the stream is ending (True), or until
        ``timeout`` seconds passed (False). One future and one timer: no task per wait."""
        if self.queue or self.closed:
            return True
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, _time_out, waiter) if timeout is not None else None
        try:
            return await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def _time_out(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_result(False)


class Hub:
    def __init__(
        self,
        buffer: ReplayBuffer,
        metrics: GatewayMetrics | None = None,
        *,
        max_connections: int,
        queue_events: int,
    ) -> None:
        self.buffer = buffer
        self.metrics = metrics or GatewayMetrics()
        self.max_connections = max_connections
        self.queue_events = queue_events
        self._streams: dict[uuid.UUID, set[Connection]] = {}
        self.open_count = 0
        self.shutting_down = False
        self.metrics.buffer_users.set_function(lambda: buffer.users)
        self.metrics.buffer_bytes.set_function(lambda: buffer.bytes)

    def connections_of(self, user_id: uuid.UUID) -> set[Connection]:
        return set(self._streams.get(user_id, ()))

    def open(self, user_id: uuid.UUID, last_event_id: str | None = None) -> Connection:
        if self.shutting_down:
            self.metrics.rejected.labels("shutting_down").inc()
            raise ShuttingDown
        if self.open_count >= self.max_connections:
            self.metrics.rejected.labels("limit").inc()
            raise ConnectionLimitReached
        connection = Connection(user_id, self.queue_events)
        if last_event_id:
            missed = self.buffer.since(user_id, last_event_id)
            if missed is None:
                connection.resync = True
                connection.resync_id = self.buffer.latest_id(user_id)
                self.metrics.replays.labels("resync").inc()
            else:
                connection.replay = missed
                self.metrics.replays.labels("replayed").inc()
        self._streams.setdefault(user_id, set()).add(connection)
        self.open_count += 1
        self.metrics.open.inc()
        return connection

    def close(self, connection: Connection, reason: str = "client") -> None:
        streams = self._streams.get(connection.user_id)
        if streams is None or connection not in streams:
            return
        streams.discard(connection)
        if not streams:
            del self._streams[connection.user_id]
        if connection.closed is None:
            connection.closed = reason
        self.open_count -= 1
        self.metrics.open.dec()
        self.metrics.closed.labels(connection.closed).inc()

    def publish(self, event: Event) -> bool:
        if not self.buffer.add(event):
            self.metrics.dropped.labels("duplicate").inc()
            return False
        streams = self._streams.get(event.user_id)
        if streams:
            for connection in list(streams):
                if not connection.offer(event):
                    self.cut_off(connection)
        return True

    def cut_off(
        self, connection: Connection, reason: str = "slow_client", *, overflowed: bool = True
    ) -> None:
        """End a stream at once (its client is not reading), discarding what it has queued
        (and the event that did not fit, when ``overflowed``)."""
        if connection.closed is None:
            connection.closed = reason
        discarded = len(connection.queue) + (1 if overflowed else 0)
        connection.queue.clear()
        if discarded:
            self.metrics.dropped.labels("slow_client").inc(discarded)
        log.warning(
            "slow client cut off",
            extra={"user_id": str(connection.user_id), "reason": reason, "queue_limit": connection.limit},
        )
        self.close(connection, reason)
        if connection.abort is not None:
            connection.abort()
        else:
            connection.end(reason)

    def shutdown(self) -> None:
        """Refuse new streams; end every open stream cleanly (its client reconnects elsewhere)."""
        self.shutting_down = True
        for streams in list(self._streams.values()):
            for connection in list(streams):
                connection.end("shutdown")
