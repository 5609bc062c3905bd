"""The gateway's settings: the shared ones (``todo_shared.settings``) plus streams, replay and pub/sub.

Environment variables (prefix ``TODO_``):

- pub/sub: ``TODO_PUBSUB_NAME`` (``pubsub-fanout``: a consumer group per replica),
  ``TODO_TASK_EVENTS_TOPIC`` (``task-events``), ``TODO_REMINDERS_TOPIC`` (``reminders``),
  ``TODO_TASK_EVENTS_DEAD_LETTER_TOPIC`` (``task-events-dead-letter``),
  ``TODO_REMINDERS_DEAD_LETTER_TOPIC`` (``reminders-dead-letter``);
- streams: ``TODO_HEARTBEAT_SECONDS``, ``TODO_RETRY_MILLISECONDS``, ``TODO_MAX_CONNECTIONS``,
  ``TODO_CONNECTION_QUEUE_EVENTS``, ``TODO_SEND_TIMEOUT_SECONDS``, ``TODO_BUSY_RETRY_AFTER_SECONDS``;
- replay: ``TODO_REPLAY_EVENTS_PER_USER``, ``TODO_REPLAY_MAX_USERS``, ``TODO_REPLAY_MAX_BYTES``.
"""

from __future__ import annotations

from pydantic import Field
from todo_shared.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    # Requests here are GETs and Dapr deliveries; an event bigger than 64 KiB must still reach the
    # subscriber so it can answer DROP (a 413 would be retried by the sidecar).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    pubsub_name: str = "pubsub-fanout"
    task_events_topic: str = "task-events"
    reminders_topic: str = "reminders"
    task_events_dead_letter_topic: str = "task-events-dead-letter"
    reminders_dead_letter_topic: str = "reminders-dead-letter"

    # A comment line every so often keeps proxies (ingress-nginx: 60 s read timeout) from
    # closing an idle stream and lets the server notice a vanished client.
    heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    # The `retry:` hint: how long a browser waits before reconnecting a dropped stream.
    retry_milliseconds: int = Field(default=3000, ge=100, le=600_000)
    # Open streams per replica; beyond it a 503 with Retry-After (the ingress tries elsewhere).
    max_connections: int = Field(default=10_000, ge=1)
    busy_retry_after_seconds: int = Field(default=5, ge=1, le=3600)
    # Events waiting to be written to one stream; a client that falls this far behind is cut off.
    connection_queue_events: int = Field(default=256, ge=1, le=100_000)
    # A write the client has not taken in this long ends its stream too.
    send_timeout_seconds: float = Field(default=30.0, gt=0)

    # Replay (Last-Event-ID): the newest events of each user, least recently active users evicted.
    replay_events_per_user: int = Field(default=50, ge=1, le=10_000)
    replay_max_users: int = Field(default=10_000, ge=1)
    replay_max_bytes: int = Field(default=32 * 1024 * 1024, ge=64 * 1024)
