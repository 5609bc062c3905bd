"""The transactional outbox: events written with the change, published later through Dapr.

Writing (``record_event``): in the same transaction as the task change, insert the event
row (uuid id, type, user, task, payload = the task snapshot); a create does both inserts in
one statement (``todo_api.store``). Before taking its ``seq`` the insert takes a per-user
transaction-scoped advisory lock, held until commit; so a user's events become visible in
``seq`` order (no later event commits while an earlier one is still in flight), and the
relay never has to guess about gaps.

Relaying (``OutboxRelay``, one background task per api replica):

1. Claim users, not rows: lock, with ``FOR UPDATE SKIP LOCKED``, the OLDEST pending event
   of each of up to ``outbox_users_per_round`` users (a row is a candidate only if no
   pending row of the same user has a smaller ``seq``). Another replica skips a user whose
   oldest event is locked, and cannot pick that user's later events either (they are not
   the oldest), so one user's events are only ever published by one replica at a time.
2. Lock up to ``outbox_events_per_user`` pending events of each claimed user, in ``seq`` order.
3. Publish each user's events in order (users concurrently) to Dapr pub/sub
   (``pubsub_name``/``task_events_topic``, partition key = user id, a CloudEvent whose id is
   the event id); stop a user's run at its first failure, so nothing overtakes it.
4. Mark the published ones ``published_at = now()``, count the attempt on the failed one,
   commit. After a failure, back off exponentially with jitter
   (``outbox_backoff_base_seconds`` doubling up to ``outbox_backoff_max_seconds``).

Delivery is at least once: if a replica dies between publishing and committing, the events
are published again; consumers are idempotent on the event id. Nothing is lost while the
sidecar or the broker is down: rows stay pending. Published rows are deleted after
``outbox_retention_hours``.

Metrics: ``outbox_backlog_events``, ``outbox_oldest_pending_age_seconds``,
``outbox_published_total``, ``outbox_publish_failures_total``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.types import BigInteger, Integer, String, Uuid
from todo_shared.dapr import CLOUDEVENTS_JSON, DaprClient, DaprError, cloud_event

from todo_api.settings import ApiSettings

log = logging.getLogger("todo.outbox")

EVENT_TYPES = ("task.created", "task.updated", "task.completed", "task.deleted")


def user_lock_key(user_id: uuid.UUID) -> int:
    """The advisory-lock key serializing one user's event writes (64 bits of the user id)."""
    return int.from_bytes(user_id.bytes[:8], "big", signed=True)


_INSERT_EVENT = text(
    """
    WITH user_lock AS MATERIALIZED (SELECT pg_advisory_xact_lock(CAST(:lock_key AS bigint)))
    INSERT INTO outbox_events (id, type, user_id, task_id, payload)
    SELECT CAST(:id AS uuid), CAST(:type AS varchar), CAST(:user_id AS uuid), CAST(:task_id AS uuid),
           CAST(:payload AS jsonb)
    FROM user_lock
    """
).bindparams(
    bindparam("lock_key", type_=BigInteger),
    bindparam("id", type_=Uuid),
    bindparam("type", type_=String),
    bindparam("user_id", type_=Uuid),
    bindparam("task_id", type_=Uuid),
    bindparam("payload", type_=JSONB),
)


def event_payload(
    event_id: uuid.UUID, event_type: str, user_id: uuid.UUID, task: dict[str, Any], occurred_at: datetime
) -> dict[str, Any]:
    """The event body consumers receive (CloudEvent ``data``): ids, type, time, the task snapshot."""
    assert event_type in EVENT_TYPES, event_type
    return {
        "event_id": str(event_id),
        "type": event_type,
        "user_id": str(user_id),
        "task_id": task["id"],
        "occurred_at": occurred_at.isoformat(),
        "task": task,
    }


async def record_event(
    conn: AsyncConnection, event_type: str, user_id: uuid.UUID, task: dict[str, Any], occurred_at: datetime
) -> uuid.UUID:
    """Insert the event for ``task`` (a JSON-ready snapshot) in the caller's transaction."""
    event_id = uuid.uuid4()
    payload = event_payload(event_id, event_type, user_id, task, occurred_at)
    await conn.execute(
        _INSERT_EVENT,
        {
            "lock_key": user_lock_key(user_id),
            "id": event_id,
            "type": event_type,
            "user_id": user_id,
            "task_id": uuid.UUID(task["id"]),
            "payload": payload,
        },
    )
    return event_id


_CLAIM_USERS = text(
    """
    SELECT e.seq, e.user_id
    FROM outbox_events e
    WHERE e.published_at IS NULL
      AND NOT EXISTS (
        SELECT 1 FROM outbox_events p
        WHERE p.user_id = e.user_id AND p.published_at IS NULL AND p.seq < e.seq
      )
    ORDER BY e.seq
    LIMIT :users
    FOR UPDATE OF e SKIP LOCKED
    """
).bindparams(bindparam("users", type_=Integer))

_LOCK_BATCHES = text(
    """
    SELECT b.seq, b.id, b.type, b.user_id, b.task_id, b.payload, b.created_at
    FROM unnest(CAST(:user_ids AS uuid[])) AS u(user_id)
    CROSS JOIN LATERAL (
        SELECT o.seq, o.id, o.type, o.user_id, o.task_id, o.payload, o.created_at
        FROM outbox_events o
        WHERE o.user_id = u.user_id AND o.published_at IS NULL
        ORDER BY o.seq
        LIMIT :per_user
        FOR UPDATE
    ) b
    ORDER BY b.user_id, b.seq
    """
).bindparams(bindparam("per_user", type_=Integer))

_MARK_PUBLISHED = text(
    "UPDATE outbox_events SET published_at = now() WHERE seq = ANY(CAST(:seqs AS bigint[]))"
)
_MARK_FAILED = text(
    "UPDATE outbox_events SET attempts = attempts + 1, last_error = :error WHERE seq = :seq"
).bindparams(bindparam("seq", type_=BigInteger), bindparam("error", type_=String))
_BACKLOG = text(
    "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM (now() - min(created_at))), 0) "
    "FROM outbox_events WHERE published_at IS NULL"
)
_CLEANUP = text(
    """
    DELETE FROM outbox_events WHERE seq IN (
        SELECT seq FROM outbox_events
        WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => :seconds)
        LIMIT 10000
    )
    """
)


@dataclass
class RoundResult:
    claimed_users: int = 0
    published: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class OutboxMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.backlog = Gauge(
            "outbox_backlog_events", "Outbox events not yet published (all replicas).", registry=registry
        )
        self.oldest_age = Gauge(
            "outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox event not yet published (0 when none).",
            registry=registry,
        )
        self.published = Counter(
            "outbox_published_total", "Outbox events this replica published.", ("type",), registry=registry
        )
        self.failures = Counter(
            "outbox_publish_failures_total", "Failed attempts to publish an outbox event.", registry=registry
        )


class OutboxRelay:
    """Publishes pending outbox events through Dapr; start() in the lifespan, stop() on shutdown."""

    def __init__(
        self,
        engine: AsyncEngine,
        dapr: DaprClient,
        settings: ApiSettings,
        metrics: OutboxMetrics,
    ) -> None:
        self.engine = engine
        self.dapr = dapr
        self.settings = settings
        self.metrics = metrics
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
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Finish the round in flight (up to outbox_stop_timeout_seconds), then stop."""
        if self._task is None:
            return
        self._stopping.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), self.settings.outbox_stop_timeout_seconds)
        except TimeoutError:
            log.warning("outbox relay did not stop in time; cancelling (its events stay pending)")
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None

    def backoff_delay(self) -> float:
        """Exponential backoff with jitter: a random delay in [d/2, d], d = base * 2^(failures-1), capped."""
        exponent = min(self.consecutive_failures - 1, 30)
        delay = min(
            self.settings.outbox_backoff_max_seconds, self.settings.outbox_backoff_base_seconds * 2**exponent
        )
        return random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not cryptography

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
            await asyncio.sleep(self.settings.outbox_coalesce_seconds)
        self._wake.clear()

    async def _run(self) -> None:
        log.info("outbox relay started")
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
                await self._sleep(self.settings.outbox_poll_interval_seconds, wakeable=True)
        log.info("outbox relay stopped")

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        try:
            if now - self._last_metrics >= self.settings.outbox_metrics_interval_seconds:
                self._last_metrics = now
                await self.refresh_metrics()
            if self.settings.outbox_retention_hours and now - self._last_cleanup >= 60:
                self._last_cleanup = now
                async with self.engine.begin() as conn:
                    await conn.execute(_CLEANUP, {"seconds": self.settings.outbox_retention_hours * 3600})
        except Exception:
            log.warning("outbox housekeeping failed", exc_info=True)

    async def refresh_metrics(self) -> tuple[int, float]:
        async with self.engine.connect() as conn:
            count, age = (await conn.execute(_BACKLOG)).one()
        self.metrics.backlog.set(count)
        self.metrics.oldest_age.set(float(age))
        return int(count), float(age)

    async def run_once(self) -> RoundResult:
        """One round: claim users, publish their events in order, record the outcome."""
        result = RoundResult()
        async with self.engine.connect() as conn, conn.begin():
            heads = (await conn.execute(_CLAIM_USERS, {"users": self.settings.outbox_users_per_round})).all()
            if not heads:
                return result
            result.claimed_users = len(heads)
            rows = (
                await conn.execute(
                    _LOCK_BATCHES,
                    {
                        "user_ids": [h.user_id for h in heads],
                        "per_user": self.settings.outbox_events_per_user,
                    },
                )
            ).all()
            by_user: dict[uuid.UUID, list[Any]] = {}
            for row in rows:
                by_user.setdefault(row.user_id, []).append(row)
            outcomes = await asyncio.gather(*(self._publish_in_order(events) for events in by_user.values()))
            published = [seq for done, _ in outcomes for seq in done]
            if published:
                await conn.execute(_MARK_PUBLISHED, {"seqs": published})
            for _, failure in outcomes:
                if failure is not None:
                    seq, error = failure
                    result.failed += 1
                    result.errors.append(error)
                    await conn.execute(_MARK_FAILED, {"seq": seq, "error": error[:500]})
            result.published = len(published)
        return result

    async def _publish_in_order(self, events: list[Any]) -> tuple[list[int], tuple[int, str] | None]:
        done: list[int] = []
        for event in events:
            envelope = cloud_event(
                str(event.id),
                event.type,
                self.settings.event_source,
                event.payload,
                subject=str(event.task_id),
                time=event.created_at,
            )
            try:
                await self.dapr.publish(
                    self.settings.pubsub_name,
                    self.settings.task_events_topic,
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
