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
    published_at timestamptz                   -- NULL while pending (see below)
    attempts     integer default 0             -- failed publish attempts
    last_error   text

plus the partial indexes ``(user_id, seq) WHERE published_at IS NULL`` and ``(seq) WHERE
published_at IS NULL``. Every row in the table is an event still to publish: the relay
DELETES an event once Dapr has accepted it (one dead tuple per event, where marking it
published and deleting it later left two, plus index entries, for autovacuum to clean).
``published_at`` is only set by relays of earlier releases (which marked instead of
deleting) and every statement here still reads ``published_at IS NULL`` as pending, so
both kinds of relay can run side by side during a rolling upgrade.

Writing (``insert_event_statement(table)``, or a service's own statement doing the same): in
the same transaction as the change, take the per-user transaction-scoped advisory lock
(``user_lock_key(user_id)``), then insert the row. The lock is held until commit, so a
user's events become visible in ``seq`` order (no later event commits while an earlier one
is still in flight) and the relay never has to guess about gaps.

Relaying (``OutboxRelay``, one background task per replica), one round:

1. Claim users, not rows, in ONE statement: lock, with ``FOR UPDATE SKIP LOCKED``, the OLDEST
   pending event of each of up to ``users_per_round`` users (a row is a candidate only if
   no pending row of the same user has a smaller ``seq``), and with it up to
   ``events_per_user`` pending events of each claimed user, in ``seq`` order. Another
   replica skips a user whose oldest event is locked, and cannot pick that user's later
   events either (they are not the oldest), so one user's events are only ever published
   by one replica at a time.
2. Publish in layers with Dapr's bulk publish API (``pubsub``/``topic``; per entry the
   partition key = user id and a CloudEvent whose id is the event id): the first bulk call
   carries each claimed user's oldest event, the next one each user's second event, and so
   on. A user's next event goes out only after Dapr accepted the previous one; a user whose
   event failed (the bulk answer lists failed entries; an unreachable sidecar fails them
   all) is left out of the later layers, so nothing overtakes a failed event. Dapr
   publishes the entries of one bulk call independently and in no guaranteed order, which
   is why one call never carries two events of the same user.
3. In the same transaction: delete the published events (one statement), count the
   attempt and keep the error on the failed ones (one statement), commit. After a failure
   the relay backs off exponentially with jitter (``backoff_base_seconds`` doubling up to
   ``backoff_max_seconds``); the failed events stay pending and are retried first.

Pacing: ``notify()`` (called after a commit that wrote events) wakes the relay; it then
waits ``coalesce_seconds`` so that a burst of commits goes out in one round, and runs
rounds back to back while rounds come back full. Without notifications (another replica
wrote the events) it polls every ``poll_interval_seconds``.

Vacuuming: every published event leaves a dead row at the head of the queue, and until it is
vacuumed each claim walks over its index entries (the claim reads the oldest pending events
first). Autovacuum visits a database at most once a minute (``autovacuum_naptime``), by which
time a busy outbox has tens of thousands of them; so a relay that has deleted
``vacuum_after_events`` events runs ``VACUUM (SKIP_LOCKED)`` on the table itself, at most every
``vacuum_interval_seconds`` (a few milliseconds on a table that holds only pending events;
SKIP_LOCKED: a replica already vacuuming it is not waited for). 0 turns this off.

Delivery is at least once: if a replica dies between publishing and committing, the events
are published again; consumers are idempotent on the event id. Nothing is lost while the
sidecar or the broker is down: rows stay pending.

The SQL is SQLAlchemy Core, compiled once per table and run on the pooled asyncpg connection
(``todo_shared.sql``): a round is BEGIN, the claim, the delete, COMMIT.

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
- ``OutboxStatements(table, subject_column)``: the relay's statements (SQLAlchemy Core).
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
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    String,
    Text,
    Uuid,
    any_,
    bindparam,
    cast,
    column,
    delete,
    exists,
    func,
    insert,
    select,
    table,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from todo_shared.dapr import CLOUDEVENTS_JSON, BulkEntry, DaprClient, DaprError
from todo_shared.sql import StatementCache, driver_connection

log = logging.getLogger("todo.outbox")
_JITTER = secrets.SystemRandom()  # backoff jitter (the OS source: no seeding concerns)

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _identifier(name: str) -> str:
    """Table, column and metric names: only plain lower-case identifiers."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


def user_lock_key(user_id: uuid.UUID) -> int:
    """The advisory-lock key serializing one user's event writes (64 bits of the user id)."""
    return int.from_bytes(user_id.bytes[:8], "big", signed=True)


def outbox_table(name: str, subject_column: str = "task_id") -> Any:
    """The outbox table as a lightweight Core ``table()`` (the columns the relay uses)."""
    return table(
        _identifier(name),
        column("seq", BigInteger),
        column("id", Uuid),
        column("type", String),
        column("user_id", Uuid),
        column(_identifier(subject_column), Uuid),
        column("payload", JSONB),
        column("created_at", DateTime(timezone=True)),
        column("published_at", DateTime(timezone=True)),
        column("attempts", Integer),
        column("last_error", Text),
    )


def insert_event_statement(table_name: str, subject_column: str = "task_id") -> Executable:
    """``INSERT`` of one event row after taking the per-user advisory lock, in one statement.

    Parameters: ``lock_key`` (``user_lock_key(user_id)``), ``id``, ``type``, ``user_id``,
    ``subject``, ``payload`` (a JSON-ready dict).
    """
    t = outbox_table(table_name, subject_column)
    user_lock = (
        select(func.pg_advisory_xact_lock(bindparam("lock_key", type_=BigInteger)).label("locked"))
        .cte("user_lock")
        .prefix_with("MATERIALIZED")
    )
    values = select(
        cast(bindparam("id", type_=Uuid), Uuid),
        cast(bindparam("type", type_=String), String),
        cast(bindparam("user_id", type_=Uuid), Uuid),
        cast(bindparam("subject", type_=Uuid), Uuid),
        cast(bindparam("payload", type_=JSONB), JSONB),
    ).select_from(user_lock)
    return insert(t).from_select(["id", "type", "user_id", subject_column, "payload"], values)


class OutboxStatements:
    """The relay's SQL for one outbox table (SQLAlchemy Core; compiled once per engine)."""

    def __init__(self, table_name: str, subject_column: str = "task_id") -> None:
        t = outbox_table(table_name, subject_column)
        self.table = t.name
        pending = t.c.published_at.is_(None)
        e, p, o = t.alias("e"), t.alias("p"), t.alias("o")
        older_pending = exists().where(
            p.c.user_id == e.c.user_id, p.c.published_at.is_(None), p.c.seq < e.c.seq
        )
        heads = (
            select(e.c.seq, e.c.user_id)
            .where(e.c.published_at.is_(None), ~older_pending)
            .order_by(e.c.seq)
            .limit(bindparam("users", type_=Integer))
            .with_for_update(of=e, skip_locked=True)
            .cte("heads")
        )
        batch = (
            select(
                o.c.seq,
                o.c.id,
                o.c.type,
                o.c.user_id,
                o.c[subject_column].label("subject"),
                cast(o.c.payload, Text).label("payload"),  # spliced into the envelope as it is
                o.c.created_at,
            )
            .where(o.c.user_id == heads.c.user_id, o.c.published_at.is_(None))
            .order_by(o.c.seq)
            .limit(bindparam("per_user", type_=Integer))
            .with_for_update(of=o)
            .lateral("b")
        )
        # Step 1 in one statement: the claimed users' heads and, with them, their next events.
        self.claim = select(batch).select_from(heads.join(batch, true())).order_by(batch.c.seq)
        seqs = bindparam("seqs", type_=ARRAY(BigInteger))
        self.delete_published = delete(t).where(t.c.seq == any_(seqs))
        failures = (
            func.unnest(seqs, bindparam("errors", type_=ARRAY(Text)))
            .table_valued(column("seq", BigInteger), column("error", Text), name="f")
            .render_derived()
        )
        self.mark_failed = (
            update(t)
            .where(t.c.seq == failures.c.seq)
            .values(attempts=t.c.attempts + 1, last_error=failures.c.error)
        )
        self.backlog = select(
            func.count(),
            func.coalesce(func.extract("epoch", func.now() - func.min(t.c.created_at)), 0),
        ).where(pending)


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
    metrics_interval_seconds: float = 2.0
    stop_timeout_seconds: float = 10.0
    vacuum_after_events: int = 1000
    vacuum_interval_seconds: float = 1.0

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
            "metrics_interval_seconds",
            "stop_timeout_seconds",
            "vacuum_after_events",
            "vacuum_interval_seconds",
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
    # The round took as much as it may (users_per_round users, or events_per_user events of
    # a user): more is probably waiting, so the next round starts at once.
    full: bool = False
    bulk_calls: int = 0


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
        self._compiled = StatementCache(engine.dialect) if engine is not None else None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.consecutive_failures = 0
        self._last_metrics = 0.0
        self._last_vacuum = 0.0
        self.deleted_since_vacuum = 0
        self.vacuums = 0

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
        if wakeable and self._wake.is_set():  # woken while the last round ran: no timers needed
            if not self._stopping.is_set():
                await asyncio.sleep(self.config.coalesce_seconds)
            return
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

    async def _run(self) -> None:
        log.info("outbox relay started", extra={"table": self.config.table, "topic": self.config.topic})
        while not self._stopping.is_set():
            self._wake.clear()  # what is committed from now on wakes the next round
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
                continue
            self.consecutive_failures = 0
            if not result.full:
                await self._sleep(self.config.poll_interval_seconds, wakeable=True)
        log.info("outbox relay stopped")

    async def _housekeeping(self) -> None:
        now = time.monotonic()
        config = self.config
        try:
            if now - self._last_metrics >= config.metrics_interval_seconds:
                self._last_metrics = now
                await self.refresh_metrics()
            if (
                config.vacuum_after_events
                and self.deleted_since_vacuum >= config.vacuum_after_events
                and now - self._last_vacuum >= config.vacuum_interval_seconds
            ):
                self._last_vacuum = now
                await self.vacuum()
        except Exception:
            log.warning("outbox housekeeping failed", exc_info=True)

    async def vacuum(self) -> None:
        """``VACUUM (SKIP_LOCKED)`` the table: the dead rows of published events go."""
        self.deleted_since_vacuum = 0
        async with driver_connection(self.engine) as conn:
            await conn.execute(f"VACUUM (SKIP_LOCKED) {self.statements.table}")
        self.vacuums += 1

    async def refresh_metrics(self) -> tuple[int, float]:
        backlog = self._compiled[self.statements.backlog]
        async with driver_connection(self.engine) as conn:
            count, age = await conn.fetchrow(backlog.sql, *backlog.args({}))
        self.metrics.backlog.set(count)
        self.metrics.oldest_age.set(float(age))
        return int(count), float(age)

    async def run_once(self) -> RoundResult:
        """One round: claim users, publish their events in layers, delete what went out."""
        result = RoundResult()
        sql, config = self.statements, self.config
        claim = self._compiled[sql.claim]
        async with driver_connection(self.engine) as conn, conn.transaction():
            rows = await conn.fetch(
                claim.sql, *claim.args({"users": config.users_per_round, "per_user": config.events_per_user})
            )
            if not rows:
                return result
            by_user: dict[uuid.UUID, list[Any]] = {}
            for row in rows:
                by_user.setdefault(row["user_id"], []).append(row)
            result.claimed_users = len(by_user)
            result.full = len(by_user) >= config.users_per_round or any(
                len(events) >= config.events_per_user for events in by_user.values()
            )
            published, failed = await self._publish_in_layers(list(by_user.values()), result)
            if published:
                done = self._compiled[sql.delete_published]
                await conn.execute(done.sql, *done.args({"seqs": published}))
            if failed:
                mark = self._compiled[sql.mark_failed]
                seqs, errors = zip(*failed, strict=True)
                await conn.execute(
                    mark.sql, *mark.args({"seqs": list(seqs), "errors": [e[:500] for e in errors]})
                )
            result.published = len(published)
            result.failed = len(failed)
            self.deleted_since_vacuum += len(published)
            result.errors = [error for _, error in failed]
        return result

    def _entry(self, event: Any) -> BulkEntry:
        envelope = {
            "specversion": "1.0",
            "id": str(event["id"]),
            "source": self.config.source,
            "type": event["type"],
            "subject": str(event["subject"]),
            "time": event["created_at"].isoformat(),
            "datacontenttype": "application/json",
            "data": orjson.Fragment(event["payload"]),
        }
        return BulkEntry(envelope["id"], envelope, CLOUDEVENTS_JSON, {"partitionKey": str(event["user_id"])})

    async def _publish_in_layers(
        self, queues: list[list[Any]], result: RoundResult
    ) -> tuple[list[int], list[tuple[int, str]]]:
        """Each user's events in order, one per user per bulk call; a failed event ends its user's run."""
        published: list[int] = []
        failed: list[tuple[int, str]] = []
        types: Tally[str] = Tally()
        active = queues
        depth = 0
        while active:
            layer = {}
            for events in active:
                entry = self._entry(events[depth])
                layer[entry.entry_id] = (entry, events)
            result.bulk_calls += 1
            try:
                failures = await self.dapr.publish_bulk(
                    self.config.pubsub, self.config.topic, [entry for entry, _ in layer.values()]
                )
            except DaprError as exc:
                failures = dict.fromkeys(layer, str(exc))
            depth += 1
            active = []
            for entry_id, (_, events) in layer.items():
                event = events[depth - 1]
                error = failures.get(entry_id)
                if error is not None:
                    failed.append((event["seq"], error))
                    continue
                published.append(event["seq"])
                types[event["type"]] += 1
                if depth < len(events):
                    active.append(events)
        for event_type, count in types.items():
            self.metrics.published.labels(event_type).inc(count)
        if failed:
            self.metrics.failures.inc(len(failed))
        return published, failed
