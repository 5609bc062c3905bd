"""Reminder logic (pure: no I/O): the per-task record, event ordering, the job plan, the check
made when a job fires, notification ids and messages.

- ``TaskRecord``: what the notifier knows of one task: owner, title, due date, reminder,
  completed / deleted, and ``version`` (the applied event's ``TaskEvent.version``). It lives
  in the Dapr state store (``todo_notifier.records``). ``remind_at`` is
  ``due_at - remind_before_minutes`` while the task is open and not deleted, else ``None``.
- ``supersedes(event, record)``: whether ``event`` is newer than what ``record`` holds. A
  deletion is final (task ids are never reused): nothing supersedes it, and it supersedes
  everything. Otherwise the newer ``version`` (the task's ``updated_at``) wins, so a
  redelivered older event never undoes a newer one.
- ``plan_job(current, now, grace, may_have_job)``: ``Schedule(at)`` when the reminder time
  is ahead (or passed less than ``grace`` ago: it fires at once), else ``Cancel`` when a job
  may exist, else ``Keep``. One job per task (``job_name``): scheduling overwrites it, so
  creating and moving are the same operation.
- ``check_fire(job, record, now, grace)``: when a job fires, ``Deliver`` only if the
  record still holds exactly the reminder the job was made for (same owner, due date and
  reminder time); ``Reschedule`` if the record holds a different reminder still ahead (the
  job is stale and the right one must exist); otherwise ``Stale`` (completed, deleted, moved
  into the past: nothing to do).
- ``notification_id(task_id, due_at)``: uuid5 of the task and the occurrence's due date, so
  one occurrence has one notification id whoever computes it (replicas, retries, restarts);
  it is also the ``reminder.due`` CloudEvent id.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from todo_notifier.events import TaskEvent

JOB_PREFIX = "reminder-"
NOTIFICATION_NAMESPACE = uuid.UUID("6f1d3c0e-3a8b-5b7e-9a43-2f5d0c1e7b21")


def utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def iso(value: datetime | None) -> str | None:
    """UTC ISO 8601 with microseconds and ``Z`` (what Go's RFC 3339 parser reads too)."""
    if value is None:
        return None
    return utc(value).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("time without a zone")
    return utc(parsed)


def reminder_time(due_at: datetime | None, remind_before_minutes: int | None) -> datetime | None:
    if due_at is None or remind_before_minutes is None:
        return None
    return utc(due_at) - timedelta(minutes=remind_before_minutes)


@dataclass(frozen=True)
class TaskRecord:
    task_id: uuid.UUID
    user_id: uuid.UUID
    title: str
    due_at: datetime | None
    remind_before_minutes: int | None
    completed: bool
    deleted: bool
    version: datetime
    event_id: uuid.UUID

    @property
    def remind_at(self) -> datetime | None:
        if self.completed or self.deleted:
            return None
        return reminder_time(self.due_at, self.remind_before_minutes)

    @property
    def active(self) -> bool:
        return self.remind_at is not None

    @classmethod
    def from_event(cls, event: TaskEvent) -> TaskRecord:
        task = event.task
        return cls(
            task_id=event.task_id,
            user_id=event.user_id,
            title=task.title,
            due_at=utc(task.due_at) if task.due_at else None,
            remind_before_minutes=task.remind_before_minutes,
            completed=task.completed,
            deleted=event.is_deletion,
            version=utc(event.version),
            event_id=event.event_id,
        )

    def to_json(self) -> dict[str, Any]:
        value = asdict(self)
        value.update(
            task_id=str(self.task_id),
            user_id=str(self.user_id),
            due_at=iso(self.due_at),
            version=iso(self.version),
            event_id=str(self.event_id),
            remind_at=iso(self.remind_at),  # for people reading the state store; derived
        )
        return value

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TaskRecord:
        return cls(
            task_id=uuid.UUID(value["task_id"]),
            user_id=uuid.UUID(value["user_id"]),
            title=str(value["title"]),
            due_at=parse_time(value.get("due_at")),
            remind_before_minutes=value.get("remind_before_minutes"),
            completed=bool(value["completed"]),
            deleted=bool(value["deleted"]),
            version=parse_time(value["version"]),  # type: ignore[arg-type]
            event_id=uuid.UUID(value["event_id"]),
        )

    def same_reminder(self, other: TaskRecord | None) -> bool:
        return other is not None and (self.due_at, self.remind_at) == (other.due_at, other.remind_at)


def supersedes(event: TaskEvent, record: TaskRecord | None) -> bool:
    if record is None:
        return True
    if record.deleted:
        return False
    if event.is_deletion:
        return True
    return utc(event.version) > record.version


def may_have_job(previous: TaskRecord | None, current: TaskRecord, event: TaskEvent) -> bool:
    """After applying ``event``: could a job exist that does not match ``current``?"""
    if previous is None:
        # No record: a task the notifier has not seen (then no job), unless its record
        # expired or was lost; only a creation is sure to have none.
        return event.type != "task.created"
    return previous.active and not current.same_reminder(previous)


@dataclass(frozen=True)
class Schedule:
    at: datetime  # when the job fires (never before now)
    remind_at: datetime


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Keep:
    pass


JobPlan = Schedule | Cancel | Keep


def plan_job(current: TaskRecord, now: datetime, grace: timedelta, *, may_have_job: bool) -> JobPlan:
    remind_at = current.remind_at
    if remind_at is not None and remind_at >= now - grace:
        return Schedule(at=max(remind_at, now), remind_at=remind_at)
    return Cancel() if may_have_job else Keep()


def job_name(task_id: uuid.UUID) -> str:
    return f"{JOB_PREFIX}{task_id}"


def task_of_job(name: str) -> uuid.UUID | None:
    if not name.startswith(JOB_PREFIX):
        return None
    try:
        return uuid.UUID(name.removeprefix(JOB_PREFIX))
    except ValueError:
        return None


@dataclass(frozen=True)
class JobData:
    """What a reminder job carries (the Jobs API ``data``), returned when it fires."""

    task_id: uuid.UUID
    user_id: uuid.UUID
    due_at: datetime
    remind_at: datetime

    @classmethod
    def for_record(cls, record: TaskRecord) -> JobData:
        assert record.due_at is not None and record.remind_at is not None
        return cls(record.task_id, record.user_id, record.due_at, record.remind_at)

    def to_json(self) -> dict[str, str]:
        return {
            "task_id": str(self.task_id),
            "user_id": str(self.user_id),
            "due_at": iso(self.due_at),  # type: ignore[dict-item]
            "remind_at": iso(self.remind_at),  # type: ignore[dict-item]
        }

    @classmethod
    def from_json(cls, value: Any) -> JobData:
        """Raises ValueError (or KeyError/TypeError) when ``value`` is not job data."""
        if not isinstance(value, dict):
            raise TypeError("job data is not an object")
        due_at, remind_at = parse_time(value["due_at"]), parse_time(value["remind_at"])
        if due_at is None or remind_at is None:
            raise ValueError("job data without times")
        return cls(uuid.UUID(value["task_id"]), uuid.UUID(value["user_id"]), due_at, remind_at)


@dataclass(frozen=True)
class Deliver:
    record: TaskRecord


@dataclass(frozen=True)
class Reschedule:
    record: TaskRecord


@dataclass(frozen=True)
class Stale:
    reason: str


FireDecision = Deliver | Reschedule | Stale


def check_fire(job: JobData, record: TaskRecord | None, now: datetime, grace: timedelta) -> FireDecision:
    if record is None:
        return Stale("no record of the task")
    if record.user_id != job.user_id or record.task_id != job.task_id:
        return Stale("the job does not match the task's owner")
    if record.deleted:
        return Stale("the task was deleted")
    if record.completed:
        return Stale("the task was completed")
    remind_at = record.remind_at
    if remind_at is None:
        return Stale("the task has no reminder any more")
    if (record.due_at, remind_at) == (job.due_at, job.remind_at):
        return Deliver(record)
    if remind_at >= now - grace:
        return Reschedule(record)
    return Stale("the reminder was moved")


def notification_id(task_id: uuid.UUID, due_at: datetime) -> uuid.UUID:
    return uuid.uuid5(NOTIFICATION_NAMESPACE, f"{task_id}|{iso(due_at)}")


def _duration(minutes: int) -> str:
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    parts = []
    for amount, unit in ((days, "day"), (hours, "hour"), (mins, "minute")):
        if amount:
            parts.append(f"{amount} {unit}{'s' if amount != 1 else ''}")
    return " ".join(parts) or "0 minutes"


def reminder_message(title: str, remind_before_minutes: int) -> str:
    """``Reminder: “Pay rent” is due in 1 hour 30 minutes.`` (zone-free: the browser shows times)."""
    return f"Reminder: “{title}” is due in {_duration(remind_before_minutes)}."
