"""The notifier's settings: the shared ones (``todo_shared.settings``) plus its database, the
Dapr building blocks it uses (pub/sub, state store, jobs) and the outbox relay.

Environment variables (prefix ``TODO_``): ``TODO_DATABASE_URL``, ``TODO_DB_POOL_SIZE``,
``TODO_DB_MAX_OVERFLOW``, ``TODO_MIGRATE_ON_START``; ``TODO_PUBSUB_NAME`` (``pubsub``),
``TODO_TASK_EVENTS_TOPIC`` (``task-events``), ``TODO_TASK_EVENTS_DEAD_LETTER_TOPIC``
(``task-events-dead-letter``), ``TODO_REMINDERS_TOPIC`` (``reminders``), ``TODO_STATE_STORE_NAME``
(``statestore``); ``TODO_REMINDER_*``, ``TODO_JOB_*``, ``TODO_RECORD_*`` (see below);
``TODO_OUTBOX_*`` (relay tuning, as in the api).
"""

from __future__ import annotations

from pydantic import Field, SecretStr
from todo_shared.settings import ServiceSettings


class NotifierSettings(ServiceSettings):
    service_name: str = "notifier"

    database_url: SecretStr = SecretStr("postgresql://todo@127.0.0.1:5432/todo_notifier")
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    db_statement_timeout_ms: int = Field(default=15_000, ge=0)
    migrate_on_start: bool = False

    # Dapr building blocks (component names) and topics.
    pubsub_name: str = "pubsub"
    task_events_topic: str = "task-events"
    task_events_dead_letter_topic: str = Field(
        default="task-events-dead-letter",
        description="Where Dapr sends events the notifier answers DROP for.",
    )
    reminders_topic: str = "reminders"
    state_store_name: str = "statestore"
    event_source: str = "todo-notifier"
    dapr_timeout_seconds: float = Field(default=10.0, gt=0)

    # A reminder whose time passed less than this long ago when its event is handled still
    # fires (at once): consumer lag must not swallow a reminder. Older ones are not scheduled.
    reminder_grace_seconds: float = Field(default=60.0, ge=0)
    # The job's failure policy: when the notifier cannot store a fired reminder (database
    # down), the scheduler calls again every interval, up to max_retries times (default: 1 h).
    job_retry_interval_seconds: float = Field(default=5.0, gt=0)
    job_max_retries: int = Field(default=720, ge=0)
    # Per-task records of tasks without a pending reminder (completed, deleted, no due date)
    # and processed-event markers expire after this long; keep it above the task-events
    # topic's retention so a redelivered old event still finds them.
    record_ttl_seconds: int = Field(default=14 * 24 * 3600, ge=60)
    # A task event whose handling fails (state store or scheduler unreachable) is tried again
    # here for up to this long (backing off 0.1 s to 2 s) before the answer is RETRY: daprd
    # sends a RETRY to the dead-letter topic unless a resiliency policy retries it (see the
    # README), so short blips never get that far. 0: answer RETRY at once.
    task_event_retry_seconds: float = Field(default=10.0, ge=0, le=60)
    # Optimistic-concurrency attempts (ETag conflicts) on one task's record per event.
    record_conflict_attempts: int = Field(default=8, ge=1, le=100)

    outbox_relay_enabled: bool = True
    outbox_users_per_round: int = Field(default=20, ge=1, le=1000)
    outbox_events_per_user: int = Field(default=50, ge=1, le=10_000)
    outbox_poll_interval_seconds: float = Field(default=0.5, gt=0)
    outbox_coalesce_seconds: float = Field(default=0.01, ge=0)
    outbox_backoff_base_seconds: float = Field(default=0.5, gt=0)
    outbox_backoff_max_seconds: float = Field(default=30.0, gt=0)
    outbox_metrics_interval_seconds: float = Field(default=2.0, gt=0)
    outbox_stop_timeout_seconds: float = Field(default=10.0, gt=0)
