"""Task events in, reminder jobs out, notifications when they fire.

``Reminders.handle_task_event(body)`` (Dapr delivers each ``task-events`` message to the
subscription route) answers Dapr's status:

1. Parse (``events.parse_task_event``). Malformed -> ``DROP`` (Dapr moves the message to
   the dead-letter topic). An event type the notifier does not handle -> ``SUCCESS``.
2. Read, in one bulk call to the Dapr state store, the task's record (``task-<task id>``,
   a ``reminders.TaskRecord`` with its ETag) and the event's processed marker
   (``event-<event id>``). The marker exists -> a redelivery: ``duplicate``.
3. If the event supersedes the record (``reminders.supersedes``: newer ``updated_at``, or a
   deletion), write the new record AND the marker in ONE state transaction, the record
   guarded by its ETag (first write: only if still absent). Otherwise (an older event
   redelivered after a newer one) write only the marker: ``stale``. An ETag conflict (another
   replica or a redelivery wrote the record meanwhile) -> read again and decide again.
4. Bring the task's reminder job in line with the record (``reminders.plan_job``): schedule
   (overwrite) it at ``remind_at``, delete it, or leave it. Then read the record once more:
   if someone wrote a newer one meanwhile, align the job with that one (so the job always
   ends up matching the newest record, whatever order concurrent handlers finish in).
   Duplicates and stale events align the job too (the handler that wrote the record may
   have died before step 4); every job call is idempotent.

Any failure of the sidecar (state store or scheduler unreachable, its database down): steps
2-4 are tried again for up to ``task_event_retry_seconds`` (backing off), then the answer is
``RETRY``: Dapr delivers the event again. Without a resiliency policy retrying pub/sub
inbound deliveries daprd sends a RETRY straight to the dead-letter topic (see the README).
Steps 2-4 converge to the same result however often they run.

``Reminders.handle_job(name, body)`` (the scheduler's ``POST /job/<name>``) answers an HTTP
status: read the task's record and ``reminders.check_fire``: ``Deliver`` -> ``Store.deliver``
(notification + ``reminder.due`` outbox row in one database transaction, once per
occurrence) and wake the relay; ``Stale`` -> nothing; ``Reschedule`` -> put the task's job
right shortly after answering. 200 in those cases; 503 when the state store or the database
fails, so the job's failure policy calls again; 404 for a name or body that is not a
reminder job (the scheduler counts 404 as done and does not retry).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from todo_notifier.db import is_unavailable
from todo_notifier.events import PoisonEvent, TaskEvent, parse_task_event
from todo_notifier.metrics import NotifierMetrics, event_type_label
from todo_notifier.reminders import (
    Cancel,
    Deliver,
    JobData,
    JobPlan,
    Keep,
    Reschedule,
    Schedule,
    TaskRecord,
    check_fire,
    job_name,
    may_have_job,
    plan_job,
    supersedes,
    task_of_job,
)
from todo_notifier.settings import NotifierSettings
from todo_notifier.sidecar import SidecarApi, SidecarError, StateItem, upsert
from todo_notifier.store import Store

log = logging.getLogger("todo.notifier")

DaprStatus = Literal["SUCCESS", "RETRY", "DROP"]
DATABASE_ERRORS = (DBAPIError, PoolTimeoutError, ConnectionError, TimeoutError, OSError)


class Unavailable(Exception):
    """A dependency failed; the same input will work later."""


def record_key(task_id: uuid.UUID) -> str:
    return f"task-{task_id}"


def event_key(event_id: uuid.UUID) -> str:
    return f"event-{event_id}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _same(a: TaskRecord | None, b: TaskRecord | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.version, a.event_id, a.deleted) == (b.version, b.event_id, b.deleted)


class Reminders:
    def __init__(
        self,
        sidecar: SidecarApi,
        store: Store,
        settings: NotifierSettings,
        metrics: NotifierMetrics,
        *,
        wake_relay: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.sidecar = sidecar
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.wake_relay = wake_relay
        self.clock = clock
        self.grace = timedelta(seconds=settings.reminder_grace_seconds)
        self._background: set[asyncio.Task[None]] = set()

    # task events ---------------------------------------------------------------------------
    async def handle_task_event(self, body: bytes) -> DaprStatus:
        try:
            event = parse_task_event(body)
        except PoisonEvent as exc:
            log.warning("dropping a malformed task event", extra={"reason": str(exc)[:300]})
            self.metrics.task_events.labels(_type_of(body), "dropped").inc()
            return "DROP"
        if event is None:
            self.metrics.task_events.labels("other", "ignored").inc()
            return "SUCCESS"
        context = {"event_id": str(event.event_id), "event_type": event.type, "task_id": str(event.task_id)}
        deadline = time.monotonic() + self.settings.task_event_retry_seconds
        delay = 0.1
        while True:
            try:
                outcome = await self.apply(event)
                break
            except PoisonEvent as exc:
                log.warning("dropping a task event", extra={**context, "reason": str(exc)})
                self.metrics.task_events.labels(event.type, "dropped").inc()
                return "DROP"
            except (Unavailable, SidecarError) as exc:
                if time.monotonic() + delay > deadline:
                    log.warning(
                        "task event not handled; Dapr will redeliver it",
                        extra={**context, "error": str(exc)[:300]},
                    )
                    self.metrics.task_events.labels(event.type, "retried").inc()
                    return "RETRY"
                log.info("task event failed; trying again", extra={**context, "error": str(exc)[:300]})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.metrics.task_events.labels(event.type, outcome).inc()
        log.info("task event %s", outcome, extra={**context, "outcome": outcome})
        return "SUCCESS"

    async def apply(self, event: TaskEvent) -> str:
        """Steps 2-4 of the module docstring; the outcome (applied / stale / duplicate)."""
        rkey, ekey = record_key(event.task_id), event_key(event.event_id)
        attempts = self.settings.record_conflict_attempts
        for attempt in range(1, attempts + 1):
            items = await self.sidecar.get_bulk([rkey, ekey])
            item = items[rkey]
            previous = self._record(item)
            if previous is not None and previous.user_id != event.user_id:
                raise PoisonEvent("the event's user does not own the task")
            if items[ekey] is not None:
                await self._align_job(previous)
                return "duplicate"
            marker = upsert(
                ekey,
                {"type": event.type, "task_id": str(event.task_id), "at": self.clock().isoformat()},
                ttl_seconds=self.settings.record_ttl_seconds,
            )
            if not supersedes(event, previous):
                await self.sidecar.transaction([marker])
                await self._align_job(previous)
                return "stale"
            current = TaskRecord.from_event(event)
            write = upsert(
                rkey,
                current.to_json(),
                etag=item.etag if item is not None else None,
                first_write=item is None,
                ttl_seconds=None if current.active else self.settings.record_ttl_seconds,
            )
            try:
                await self.sidecar.transaction([write, marker])
            except SidecarError:
                if attempt < attempts and await self._record_changed(rkey, item):
                    self.metrics.conflicts.inc()
                    await asyncio.sleep(0.01 * attempt)
                    continue
                raise
            plan = plan_job(
                current, self.clock(), self.grace, may_have_job=may_have_job(previous, current, event)
            )
            await self._align_job(current, plan=plan)
            return "applied"
        raise Unavailable("the task's record kept changing")  # pragma: no cover - loop returns or raises

    def _record(self, item: StateItem | None) -> TaskRecord | None:
        if item is None:
            return None
        try:
            return TaskRecord.from_json(item.value)
        except (KeyError, TypeError, ValueError):
            log.error("unreadable task record; it will be replaced", extra={"key": item.key})
            return None

    async def _record_changed(self, key: str, seen: StateItem | None) -> bool:
        """After a failed write: was it a conflict (the record changed since we read it)?"""
        latest = await self.sidecar.get(key)
        if seen is None or latest is None:
            return (seen is None) != (latest is None)
        return latest.etag != seen.etag

    async def _align_job(self, record: TaskRecord | None, *, plan: JobPlan | None = None) -> None:
        """Run ``plan`` (default: align to ``record``), then follow any newer record."""
        for _ in range(self.settings.record_conflict_attempts):
            if record is None:
                return
            if plan is None:
                # Aligning to a record as it is: schedule if ahead, delete if it has no
                # reminder, but leave a passed reminder's job alone (it may be retrying).
                plan = plan_job(record, self.clock(), self.grace, may_have_job=not record.active)
            await self._run_plan(record, plan)
            if isinstance(plan, Keep):
                return  # no job call: nothing this handler did can be out of order
            latest = self._record(await self.sidecar.get(record_key(record.task_id)))
            if _same(latest, record):
                return
            record, plan = latest, None
        raise Unavailable("the task's record kept changing")

    async def _run_plan(self, record: TaskRecord, plan: JobPlan) -> None:
        name = job_name(record.task_id)
        if isinstance(plan, Schedule):
            await self.sidecar.schedule_job(
                name,
                plan.at,
                JobData.for_record(record).to_json(),
                retry_interval_seconds=self.settings.job_retry_interval_seconds,
                max_retries=self.settings.job_max_retries,
            )
            self.metrics.scheduled.inc()
            log.info(
                "reminder scheduled",
                extra={"task_id": str(record.task_id), "remind_at": plan.remind_at.isoformat()},
            )
        elif isinstance(plan, Cancel):
            try:
                await self.sidecar.delete_job(name)
            except SidecarError as exc:
                if not _not_found(exc):
                    raise
            self.metrics.cancelled.inc()
            log.info("reminder cancelled", extra={"task_id": str(record.task_id)})
        else:
            assert isinstance(plan, Keep)

    # jobs ----------------------------------------------------------------------------------
    async def handle_job(self, name: str, body: bytes) -> int:
        task_id = task_of_job(name)
        try:
            job = JobData.from_json(json.loads(body))
        except (ValueError, KeyError, TypeError):
            job = None
        if task_id is None or job is None or job.task_id != task_id:
            log.warning("not a reminder job", extra={"job": name[:200]})
            return 404
        context = {"task_id": str(task_id), "due_at": job.due_at.isoformat()}
        try:
            record = self._record(await self.sidecar.get(record_key(task_id)))
        except SidecarError as exc:
            log.warning(
                "reminder not checked; the scheduler will call again",
                extra={**context, "error": str(exc)[:300]},
            )
            self.metrics.fired.labels("retried").inc()
            return 503
        now = self.clock()
        decision = check_fire(job, record, now, self.grace)
        if isinstance(decision, Deliver):
            try:
                created = await self.store.deliver(decision.record, now)
            except DATABASE_ERRORS as exc:
                if not is_unavailable(exc):
                    raise
                log.warning(
                    "reminder not stored; the scheduler will call again",
                    extra={**context, "error": type(exc).__name__},
                )
                self.metrics.fired.labels("retried").inc()
                return 503
            outcome = "delivered" if created else "duplicate"
            if created:
                self.wake_relay()
        elif isinstance(decision, Reschedule):
            outcome = "rescheduled"
            self._spawn(self._reschedule_later(decision.record))
        else:
            outcome = "stale"
            context["reason"] = decision.reason
        self.metrics.fired.labels(outcome).inc()
        log.info("reminder %s", outcome, extra={**context, "outcome": outcome})
        return 200

    async def _reschedule_later(self, record: TaskRecord, delay: float = 1.0) -> None:
        """After the firing job's call has been answered (the scheduler finishes with that job
        first), align the task's job with its record again."""
        await asyncio.sleep(delay)
        try:
            await self._align_job(record)
        except (SidecarError, Unavailable) as exc:
            log.warning(
                "could not reschedule a moved reminder",
                extra={"task_id": str(record.task_id), "error": str(exc)[:300]},
            )

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def aclose(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)


def _not_found(exc: SidecarError) -> bool:
    return "not found" in exc.body.lower() or exc.status == 404


def _type_of(body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "other"
    if isinstance(parsed, dict):
        data = parsed.get("data")
        return event_type_label(parsed.get("type") or (data.get("type") if isinstance(data, dict) else None))
    return "other"
