"""The api's settings: the shared ones (``todo_shared.settings``) plus the database and the outbox.

Environment variables (prefix ``TODO_``): ``TODO_DATABASE_URL`` (``postgresql://...``; the
asyncpg driver is implied), ``TODO_DB_POOL_SIZE``, ``TODO_DB_MAX_OVERFLOW``,
``TODO_MIGRATE_ON_START``, ``TODO_PUBSUB_NAME`` (``pubsub``), ``TODO_TASK_EVENTS_TOPIC``
(``task-events``), ``TODO_OUTBOX_*`` (relay tuning), ``TODO_ARGON2_*`` (hash cost).
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from todo_shared.settings import ServiceSettings


class ApiSettings(ServiceSettings):
    service_name: str = "api"

    database_url: SecretStr = SecretStr("postgresql://todo@127.0.0.1:5432/todo")
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    db_statement_timeout_ms: int = Field(default=15_000, ge=0)
    migrate_on_start: bool = False

    pubsub_name: str = "pubsub"
    task_events_topic: str = "task-events"
    event_source: str = "todo-api"

    outbox_relay_enabled: bool = True
    outbox_users_per_round: int = Field(default=20, ge=1, le=1000)
    outbox_events_per_user: int = Field(default=50, ge=1, le=10_000)
    outbox_poll_interval_seconds: float = Field(default=0.5, gt=0)
    # After a local change wakes the relay, wait this long so a burst goes out in one round.
    outbox_coalesce_seconds: float = Field(default=0.01, ge=0)
    outbox_backoff_base_seconds: float = Field(default=0.5, gt=0)
    outbox_backoff_max_seconds: float = Field(default=30.0, gt=0)
    outbox_metrics_interval_seconds: float = Field(default=2.0, gt=0)
    outbox_stop_timeout_seconds: float = Field(default=10.0, gt=0)

    # argon2id cost (argon2-cffi's RFC 9106 low-memory profile by default).
    argon2_time_cost: int = Field(default=3, ge=1)
    argon2_memory_kib: int = Field(default=65536, ge=8)
    argon2_parallelism: int = Field(default=4, ge=1)
