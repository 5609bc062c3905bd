"""The transactional outbox relay every Todo service that emits events uses (api, notifier).

Needs SQLAlchemy (async, asyncpg): install ``todo-shared[outbox]``.

The table (one per service database; its name is a parameter) has these columns::

    seq          bigint identity primary key   -- order of the events
    id           uuid unique                   -- the event id (the CloudEvent id)
    type         varchar                       -- the CloudEvent type
    user_id      uuid                          -- the partition key: one user's events stay in order
    <subject>    uuid                          -- the CloudEvent subject (``task_id`` by default)
    payload      jsonb                         -- the CloudEvent data
    created_at   timestamptz default now()     -- the CloudEvent time
    published_at timestamptz                   -- NULL while pending
    attempts     integer default 0
    last_error   text

plus the partial indexes ``(user_id, seq) WHERE published_at IS NULL``, ``(seq) WHERE
published_at IS NULL`` and ``(published_at) WHERE published_at IS NOT NULL``.

Writing (``insert_event_statement(table)``, or a service's own statement doing the same): in
the same transaction as the change, take the per-user transaction-scoped advisory lock
(``user_lock_key(user_id)``), then insert the row. The lock is held until commit, so a
user's events become visible in ``seq`` order (no later event commits while an earlier one
is still in flight) and the relay never has to guess about gaps.

Relaying (``OutboxRelay``, one background task per replica):

1. Claim users, not rows: lock, with ``FOR UPDATE SKIP LOCKED``, the OLDEST pending event
   of each of up to ``users_per_round`` users (a row is a candidate only if no pending row
   of the same user has a smaller ``seq``). Another replica skips a user whose oldest event
   is locked, and cannot pick that user's later events either (they are not the oldest),
   so one user's events are only ever published by one replica at a time.
2. Lock up to ``events_per_user`` pending events of each claimed user, in ``seq`` order.
3. Publish each user's events in order (users concurrently) to Dapr pub/sub
   (``pubsub``/``topic``, partition key = user id, a CloudEvent whose id is the event id);
   stop a user's run at its first failure, so nothing overtakes it.
4. Mark the published ones ``published_at = now()``, count the attempt on the failed one,
   commit. After a failure, back off exponentially with jitter (``backoff_base_seconds``
   doubling up to ``backoff_max_seconds``).

Delivery is at least once: if a replica dies between publishing and committing, the events
are published again; consumers are idempotent on the event id. Nothing is lost while the
sidecar or the broker is down: rows stay pending. Published rows are deleted after
``retention_hours``.

Public API:

- ``RelayConfig`` (table, pubsub, topic, source, subject column, tuning) and
  ``RelayConfig.from_settings(settings, table=..., topic=...)``, which reads the service's
  ``pubsub_name``, ``event_source`` and ``outbox_*`` settings.
- ``OutboxRelay(engine, dapr, config, metrics)``: ``start()`` in the lifespan, ``notify()``
  after a commit that wrote events, ``await stop()`` on shutdown; ``await run_once()`` and
  ``await refresh_metrics()`` for tests.
- ``OutboxMetrics(registry, prefix="outbox")``: ``<prefix>_backlog_events``,
  ``<prefix>_oldest_pending_age_seconds`` (gauges, all replicas), ``<prefix>_published_total``
  by type and ``<prefix>_publish_failures_total`` (this replica).
- ``OutboxStatements(table, subject_column)``: the relay's SQL, built once per table.
- ``user_lock_key(user_id)``, ``insert_event_statement(table, subject_column)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import BigInteger, Integer, String, Uuid

from todo_shared.dapr import CLOUDEVENTS_JSON, DaprClient, DaprError, cloud_event

log = logging.getLogger("todo.outbox")
_JITTER = secrets.SystemRandom()  # backoff jitter (the OS source: no seeding concerns)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _identifier(name: str) -> str:
    """Table and column names are formatted into SQL: only plain lower-case identifiers."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def user_lock_key(user_id: uuid.UUID) -> int:
    """The advisory-lock key serializing one user's event writes (64 bits of the user id)."""
    return int.from_bytes(user_id.bytes[:8], "big", signed=True)


def insert_event_statement(table: str, subject_column: str = "task_id") -> TextClause:
    """``INSERT`` of one event row after taking the per-user advisory lock, in one statement.

    Parameters: ``lock_key`` (``user_lock_key(user_id)``), ``id``, ``type``, ``user_id``,
    ``subject``, ``payload`` (a JSON-ready dict).
    """
    table, subject = _identifier(table), _identifier(subject_column)
    return text(
        f"""
        WITH user_lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(CAST(:lock_key AS bigint)))
        INSERT INTO {table} (id, type, user_id, {subject}, payload)
        SELECT CAST(:id AS uuid), CAST(:type AS varchar), CAST(:user_id AS uuid),
               CAST(:subject AS uuid), CAST(:payload AS jsonb)
        FROM user_lock
        """  # noqa: S608 - identifiers checked by _identifier
    ).bindparams(
        bindparam("lock_key", type_=BigInteger),
        bindparam("id", type_=Uuid),
        bindparam("type", type_=String),
        bindparam("user_id", type_=Uuid),
        bindparam("subject", type_=Uuid),
        bindparam("payload", type_=JSONB),
    )


class OutboxStatements:
    """The relay's SQL for one outbox table."""

    def __init__(self, table: str, subject_column: str = "task_id") -> None:
        t, subject = _identifier(table), _identifier(subject_column)
        self.table = t
        # S608: the only formatted parts are identifiers checked above.
        self.claim_users = text(
            f"""
            SELECT e.seq, e.user_id
            FROM {t} e
            WHERE e.published_at IS NULL
              AND NOT EXISTS (
                SELECT 1 FROM {t} p
                WHERE p.user_id = e.user_id AND p.published_at IS NULL AND p.seq < e.seq
              )
            ORDER BY e.seq
            LIMIT :users
            FOR UPDATE OF e SKIP LOCKED
            """  # noqa: S608
        ).bindparams(bindparam("users", type_=Integer))
        self.lock_batches = text(
            f"""
            SELECT b.seq, b.id, b.type, b.user_id, b.subject, b.payload, b.created_at
            FROM unnest(CAST(:user_ids AS uuid[])) AS u(user_id)
            CROSS JOIN LATERAL (
                SELECT o.seq, o.id, o.type, o.user_id, o.{subject} AS subject, o.payload, o.created_at
                FROM {t} o
                WHERE o.user_id = u.user_id AND o.published_at IS NULL
                ORDER BY o.seq
                LIMIT :per_user
                FOR UPDATE
            ) b
            ORDER BY b.user_id, b.seq
            """  # noqa: S608
        ).bindparams(bindparam("per_user", type_=Integer))
        self.mark_published = text(
            f"UPDATE {t} SET published_at = now() WHERE seq = ANY(CAST(:seqs AS bigint[]))"  # noqa: S608
        )
        self.mark_failed = text(
            f"UPDATE {t} SET attempts = attempts + 1, last_error = :error WHERE seq = :seq"  # noqa: S608
        ).bindparams(bindparam("seq", type_=BigInteger), bindparam("error", type_=String))
        oldest_age = "COALESCE(EXTRACT(EPOCH FROM (now() - min(created_at))), 0)"
        self.backlog = text(f"SELECT count(*), {oldest_age} FROM {t} WHERE published_at IS NULL")  # noqa: S608
        self.cleanup = text(
            f"""
            DELETE FROM {t} WHERE seq IN (
                SELECT seq FROM {t}
                WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => :seconds)
                LIMIT 10000
            )
            """  # noqa: S608
        )


@dataclass(frozen=True)
class RelayConfig:
    """Where the relay reads and publishes, and how it paces itself."""

    table: str
    pubsub: str
    topic: str
    source: str
    subject_column: str = "task_id"
    users_per_round: int = 20
    events_per_user: int = 50
    poll_interval_seconds: float = 0.5
    # After a local change wakes the relay, wait this long so a burst goes out in one round.
    coalesce_seconds: float = 0.01
    backoff_base_seconds: float = 0.5
    backoff_max_seconds: float = 30.0
    retention_hours: float = 24.0
    metrics_interval_seconds: float = 2.0
    stop_timeout_seconds: float = 10.0

    @classmethod
    def from_settings(cls, settings: Any, *, table: str, topic: str, **overrides: Any) -> RelayConfig:
        """From a service's settings: ``pubsub_name``, ``event_source`` and ``outbox_*``."""
        values: dict[str, Any] = {
            "table": table,
            "topic": topic,
            "pubsub": settings.pubsub_name,
            "source": settings.event_source,
        }
        for name in (
            "users_per_round",
            "events_per_user",
            "poll_interval_seconds",
            "coalesce_seconds",
            "backoff_base_seconds",
            "backoff_max_seconds",
            "retention_hours",
            "metrics_interval_seconds",
            "stop_timeout_seconds",
        ):
            if hasattr(settings, f"outbox_{name}"):
                values[name] = getattr(settings, f"outbox_{name}")
        values.update(overrides)
        return cls(**values)


@dataclass
class RoundResult:
    claimed_users: int = 0
    published: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class OutboxMetrics:
    def __init__(self, registry: CollectorRegistry, prefix: str = "outbox") -> None:
        prefix = _identifier(prefix)
        self.backlog = Gauge(
            f"{prefix}_backlog_events", "Outbox events not yet published (all replicas).", registry=registry
        )
        self.oldest_age = Gauge(
            f"{prefix}_oldest_pending_age_seconds",
            "Age of the oldest outbox event not yet published (0 when none).",
            registry=registry,
        )
        self.published = Counter(
            f"{prefix}_published_total", "Outbox events this replica published.", ("type",), registry=registry
        )
        self.failures = Counter(
            f"{prefix}_publish_failures_total",
            "Failed attempts to publish an outbox event.",
            registry=registry,
        )


class OutboxRelay:
    """Publishes pending outbox events through Dapr; start() in the lifespan, stop() on shutdown."""

    def __init__(
        self, engine: AsyncEngine, dapr: DaprClient, config: RelayConfig, metrics: OutboxMetrics
    ) -> None:
        self.engine = engine
        self.dapr = dapr
        self.config = config
        self.metrics = metrics
        self.statements = OutboxStatements(config.table, config.subject_column)
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.consecutive_failures = 0
        self._last_metrics = 0.0
        self._last_cleanup = 0.0

    def notify(self) -> None:
        """A change was committed: look for events now instead of at the next poll."""
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"outbox-relay:{self.config.table}")

    async def stop(self) -> None:
        """Finish the round in flight (up to stop_timeout_seconds), then stop."""
        if self._task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.config.stop_timeout_seconds)
        except TimeoutError:
            log.warning("outbox relay did not stop in time; cancelling (its events stay pending)")
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    def backoff_delay(self) -> float:
        """Exponential backoff with jitter: a random delay in [d/2, d], d = base * 2^(failures-1), capped."""
        exponent = min(self.consecutive_failures - 1, 30)
        delay = min(self.config.backoff_max_seconds, self.config.backoff_base_seconds * 2**exponent)
        return _JITTER.uniform(delay / 2, delay)

    async def _sleep(self, seconds: float, *, wakeable: bool) -> None:
        waiters = [asyncio.ensure_future(self._stopping.wait())]
        if wakeable:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        if wakeable and self._wake.is_set() and not self._stopping.is_set():
            await asyncio.sleep(self.config.coalesce_seconds)
        self._wake.clear()

    async def _run(self) -> None:
        log.info("outbox relay started", extra={"table": self.config.table, "topic": self.config.topic})
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                result = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("outbox round failed")
                result = RoundResult(failed=1, errors=[type(exc).__name__])
            await self._housekeeping()
            if result.failed:
                self.consecutive_failures += 1
                delay = self.backoff_delay()
                log.warning(
                    "outbox publish failed; backing off",
                    extra={
                        "failures": self.consecutive_failures,
                        "delay_s": round(delay, 3),
                        "errors": result.errors[:3],
                    },
                )
                await self._sleep(delay, wakeable=False)
            elif result.claimed_users:
                self.consecutive_failures = 0
            else:
                self.consecutive_failures = 0
                await self._sleep(self.config.poll_interval_seconds, wakeable=True)
        log.info("outbox relay stopped")

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        try:
            if now - self._last_metrics >= self.config.metrics_interval_seconds:
                self._last_metrics = now
                await self.refresh_metrics()
            if self.config.retention_hours and now - self._last_cleanup >= 60:
                self._last_cleanup = now
                async with self.engine.begin() as conn:
                    await conn.execute(
                        self.statements.cleanup, {"seconds": self.config.retention_hours * 3600}
                    )
        except Exception:
            log.warning("outbox housekeeping failed", exc_info=True)

    async def refresh_metrics(self) -> tuple[int, float]:
        async with self.engine.connect() as conn:
            count, age = (await conn.execute(self.statements.backlog)).one()
        self.metrics.backlog.set(count)
        self.metrics.oldest_age.set(float(age))
        return int(count), float(age)

    async def run_once(self) -> RoundResult:
        """One round: claim users, publish their events in order, record the outcome."""
        result = RoundResult()
        sql = self.statements
        async with self.engine.connect() as conn, conn.begin():
            heads = (await conn.execute(sql.claim_users, {"users": self.config.users_per_round})).all()
            if not heads:
                return result
            result.claimed_users = len(heads)
            rows = (
                await conn.execute(
                    sql.lock_batches,
                    {"user_ids": [h.user_id for h in heads], "per_user": self.config.events_per_user},
                )
            ).all()
            by_user: dict[uuid.UUID, list[Any]] = {}
            for row in rows:
                by_user.setdefault(row.user_id, []).append(row)
            outcomes = await asyncio.gather(*(self._publish_in_order(events) for events in by_user.values()))
            published = [seq for done, _ in outcomes for seq in done]
            if published:
                await conn.execute(sql.mark_published, {"seqs": published})
            for _, failure in outcomes:
                if failure is not None:
                    seq, error = failure
                    result.failed += 1
                    result.errors.append(error)
                    await conn.execute(sql.mark_failed, {"seq": seq, "error": error[:500]})
            result.published = len(published)
        return result

    async def _publish_in_order(self, events: list[Any]) -> tuple[list[int], tuple[int, str] | None]:
        done: list[int] = []
        for event in events:
            envelope = cloud_event(
                str(event.id),
                event.type,
                self.config.source,
                event.payload,
                subject=str(event.subject),
                time=event.created_at,
            )
            try:
                await self.dapr.publish(
                    self.config.pubsub,
                    self.config.topic,
                    envelope,
                    partition_key=str(event.user_id),
                    content_type=CLOUDEVENTS_JSON,
                )
            except DaprError as exc:
                self.metrics.failures.inc()
                return done, (event.seq, str(exc))
            self.metrics.published.labels(event.type).inc()
            done.append(event.seq)
        return done, None
