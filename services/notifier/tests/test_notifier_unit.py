"""Pure logic of the notifier (rung L0): parsing task events, the reminder schedule, event
ordering, the job plan and the check made when a job fires."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from notifier_testlib import Task
from todo_notifier.events import PoisonEvent, parse_task_event
from todo_notifier.reminders import (
    Cancel,
    Deliver,
    JobData,
    Keep,
    Reschedule,
    Schedule,
    Stale,
    TaskRecord,
    check_fire,
    iso,
    job_name,
    may_have_job,
    notification_id,
    plan_job,
    reminder_message,
    reminder_time,
    supersedes,
    task_of_job,
)

pytestmark = pytest.mark.unit

NOW = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
GRACE = timedelta(seconds=60)
USER = uuid.uuid4()


def task(**fields) -> Task:
    values = {
        "user_id": USER,
        "due_at": NOW + timedelta(hours=1),
        "remind_before_minutes": 15,
        "created_at": NOW,
    }
    values.update(fields)
    return Task(**values)


def record_of(t: Task, event_type: str = "task.updated") -> TaskRecord:
    return TaskRecord.from_event(parse_task_event(t.event(event_type)))


# -- parsing ---------------------------------------------------------------------------------------


def test_an_api_event_parses_into_its_fields():
    t = task(title="Pay rent")
    envelope = t.event("task.created")
    event = parse_task_event(json.dumps(envelope).encode())
    assert str(event.event_id) == envelope["id"]
    assert event.type == "task.created"
    assert (event.user_id, event.task_id) == (USER, t.id)
    assert event.task.title == "Pay rent"
    assert event.task.due_at == NOW + timedelta(hours=1)
    assert event.task.remind_before_minutes == 15
    assert event.version == t.updated_at
    assert not event.is_deletion


def test_dapr_extras_and_unknown_task_fields_are_accepted():
    envelope = task().event("task.updated")
    envelope.update(topic="task-events", pubsubname="pubsub", traceparent="00-ab-cd-01")
    envelope["data"]["task"]["some_future_field"] = {"x": 1}
    assert parse_task_event(envelope).type == "task.updated"


def test_data_sent_as_a_json_string_and_bare_payloads_parse():
    envelope = task().event("task.completed")
    as_string = {**envelope, "data": json.dumps(envelope["data"])}
    assert parse_task_event(as_string).type == "task.completed"
    assert parse_task_event(envelope["data"]).type == "task.completed"  # rawPayload subscriptions


def test_an_event_type_the_notifier_does_not_handle_is_ignored_not_poison():
    envelope = task().event("task.updated")
    envelope["type"] = envelope["data"]["type"] = "task.archived"
    assert parse_task_event(envelope) is None


def _broken(mutate) -> dict:
    envelope = task().event("task.updated")
    mutate(envelope)
    return envelope


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"id": "x", "data": 5}).encode(), "no data object"),
        (_broken(lambda e: e["data"].pop("user_id")), "user_id"),
        (_broken(lambda e: e["data"].update(user_id="nope")), "user_id"),
        (_broken(lambda e: e["data"].update(occurred_at="2030-01-01T00:00:00")), "occurred_at"),
        (_broken(lambda e: e.update(id=str(uuid.uuid4()))), "CloudEvent id"),
        (_broken(lambda e: e.update(type="task.deleted")), "CloudEvent type"),
        (_broken(lambda e: e["data"].update(task_id=str(uuid.uuid4()))), "task_id"),
        (_broken(lambda e: e["data"]["task"].pop("title")), "title"),
        (_broken(lambda e: e["data"]["task"].update(completed="maybe")), "completed"),
        (_broken(lambda e: e["data"]["task"].update(remind_before_minutes=0)), "remind_before_minutes"),
        (_broken(lambda e: e["data"]["task"].update(remind_before_minutes=10081)), "remind_before_minutes"),
        (_broken(lambda e: e["data"]["task"].update(due_at=None)), "without due_at"),
        (_broken(lambda e: e["data"]["task"].update(due_at="tomorrow")), "due_at"),
    ],
)
def test_malformed_events_are_poison(body, reason):
    with pytest.raises(PoisonEvent, match=reason):
        parse_task_event(body)


# -- schedule --------------------------------------------------------------------------------------


def test_the_reminder_is_due_at_minus_remind_before():
    assert reminder_time(NOW, 15) == NOW - timedelta(minutes=15)
    assert reminder_time(NOW, 10080) == NOW - timedelta(days=7)
    assert reminder_time(None, 15) is None
    assert reminder_time(NOW, None) is None
    paris = datetime(2030, 5, 1, 14, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert reminder_time(paris, 1) == datetime(2030, 5, 1, 11, 59, tzinfo=UTC)


def test_a_record_has_a_reminder_only_while_open_with_due_and_minutes():
    assert record_of(task()).remind_at == NOW + timedelta(minutes=45)
    assert record_of(task(completed=True), "task.completed").remind_at is None
    assert record_of(task(), "task.deleted").remind_at is None
    assert record_of(task(due_at=None, remind_before_minutes=None)).remind_at is None
    assert record_of(task(remind_before_minutes=None)).remind_at is None


def test_a_record_survives_its_json_form():
    record = record_of(task())
    assert TaskRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_a_reminder_ahead_is_scheduled_at_its_time():
    assert plan_job(record_of(task()), NOW, GRACE, may_have_job=True) == Schedule(
        at=NOW + timedelta(minutes=45), remind_at=NOW + timedelta(minutes=45)
    )


def test_a_reminder_that_just_passed_fires_at_once_an_older_one_is_not_scheduled():
    just = record_of(task(due_at=NOW + timedelta(minutes=15) - timedelta(seconds=30)))
    assert plan_job(just, NOW, GRACE, may_have_job=False) == Schedule(
        at=NOW, remind_at=NOW - timedelta(seconds=30)
    )
    old = record_of(task(due_at=NOW))  # reminder 15 minutes ago
    assert plan_job(old, NOW, GRACE, may_have_job=False) == Keep()
    assert plan_job(old, NOW, GRACE, may_have_job=True) == Cancel()


def test_no_reminder_cancels_only_when_a_job_may_exist():
    done = record_of(task(completed=True), "task.completed")
    assert plan_job(done, NOW, GRACE, may_have_job=True) == Cancel()
    assert plan_job(done, NOW, GRACE, may_have_job=False) == Keep()


def test_which_changes_may_leave_a_job_behind():
    t = task()
    created = parse_task_event(t.event("task.created"))
    with_reminder = TaskRecord.from_event(created)
    assert not may_have_job(None, with_reminder, created), "a new task has no job yet"
    updated = parse_task_event(t.change(title="Renamed").event("task.updated"))
    assert not may_have_job(with_reminder, TaskRecord.from_event(updated), updated), "same reminder"
    moved = parse_task_event(t.change(due_at=NOW + timedelta(hours=3)).event("task.updated"))
    assert may_have_job(with_reminder, TaskRecord.from_event(moved), moved)
    completed = parse_task_event(t.change(completed=True).event("task.completed"))
    assert may_have_job(with_reminder, TaskRecord.from_event(completed), completed)
    assert may_have_job(None, TaskRecord.from_event(completed), completed), "unknown history: cancel"
    plain = task(due_at=None, remind_before_minutes=None)
    ev = parse_task_event(plain.event("task.created"))
    later = parse_task_event(plain.change(title="x").event("task.updated"))
    assert not may_have_job(TaskRecord.from_event(ev), TaskRecord.from_event(later), later)


# -- ordering --------------------------------------------------------------------------------------


def test_a_newer_event_supersedes_an_older_one_never_the_reverse():
    t = task()
    first = parse_task_event(t.event("task.created"))
    second = parse_task_event(t.change(due_at=NOW + timedelta(hours=2)).event("task.updated"))
    assert supersedes(first, None)
    assert supersedes(second, TaskRecord.from_event(first))
    assert not supersedes(first, TaskRecord.from_event(second)), "a redelivered older event"
    assert not supersedes(second, TaskRecord.from_event(second)), "the same event again"


def test_a_deletion_is_final():
    t = task()
    created = parse_task_event(t.event("task.created"))
    deleted = parse_task_event(t.event("task.deleted"))  # snapshot: the task as it was
    assert supersedes(deleted, TaskRecord.from_event(created))
    tombstone = TaskRecord.from_event(deleted)
    assert tombstone.deleted
    later = parse_task_event(t.change(title="x").event("task.updated"))
    assert not supersedes(later, tombstone)
    assert not supersedes(created, tombstone)


def test_complete_then_reopen_then_an_old_complete_redelivered():
    t = task()
    completed = parse_task_event(t.change(completed=True).event("task.completed"))
    reopened = parse_task_event(t.change(completed=False).event("task.updated"))
    record = TaskRecord.from_event(reopened)
    assert record.active
    assert not supersedes(completed, record)


# -- firing ----------------------------------------------------------------------------------------


def test_a_job_for_the_current_reminder_delivers():
    record = record_of(task())
    job = JobData.for_record(record)
    assert check_fire(job, record, NOW, GRACE) == Deliver(record)
    assert JobData.from_json(json.loads(json.dumps(job.to_json()))) == job


def test_a_stale_job_does_not_deliver():
    t = task()
    record = record_of(t)
    job = JobData.for_record(record)
    assert isinstance(check_fire(job, None, NOW, GRACE), Stale)
    assert check_fire(job, record_of(t.change(completed=True), "task.completed"), NOW, GRACE) == Stale(
        "the task was completed"
    )
    assert check_fire(job, record_of(t, "task.deleted"), NOW, GRACE) == Stale("the task was deleted")
    no_reminder = record_of(t.change(completed=False, remind_before_minutes=None))
    assert check_fire(job, no_reminder, NOW, GRACE) == Stale("the task has no reminder any more")
    into_the_past = record_of(t.change(remind_before_minutes=15, due_at=NOW - timedelta(hours=1)))
    assert check_fire(job, into_the_past, NOW, GRACE) == Stale("the reminder was moved")
    other_owner = JobData(job.task_id, uuid.uuid4(), job.due_at, job.remind_at)
    assert isinstance(check_fire(other_owner, record, NOW, GRACE), Stale)


def test_a_job_for_a_moved_reminder_still_ahead_reschedules():
    t = task()
    job = JobData.for_record(record_of(t))
    moved = record_of(t.change(due_at=NOW + timedelta(hours=5)))
    assert check_fire(job, moved, NOW, GRACE) == Reschedule(moved)


def test_one_occurrence_has_one_notification_id():
    task_id = uuid.uuid4()
    due = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    same_instant = due.astimezone(ZoneInfo("Asia/Tokyo"))
    assert notification_id(task_id, due) == notification_id(task_id, same_instant)
    assert notification_id(task_id, due) != notification_id(task_id, due + timedelta(days=1))
    assert notification_id(task_id, due) != notification_id(uuid.uuid4(), due)
    assert notification_id(task_id, due).version == 5


def test_job_names_carry_the_task_id():
    task_id = uuid.uuid4()
    assert task_of_job(job_name(task_id)) == task_id
    assert task_of_job("something-else") is None
    assert task_of_job("reminder-not-a-uuid") is None
    assert "|" not in job_name(task_id)  # the scheduler refuses names with |


@pytest.mark.parametrize(
    ("minutes", "text"),
    [
        (1, "1 minute"),
        (15, "15 minutes"),
        (60, "1 hour"),
        (90, "1 hour 30 minutes"),
        (1440, "1 day"),
        (10080, "7 days"),
        (1501, "1 day 1 hour 1 minute"),
    ],
)
def test_the_message_names_the_task_and_the_lead_time(minutes, text):
    assert reminder_message("Pay rent", minutes) == f"Reminder: “Pay rent” is due in {text}."


def test_times_are_written_in_utc_for_the_scheduler():
    assert iso(datetime(2030, 5, 1, 14, 0, 0, 5, tzinfo=UTC)) == "2030-05-01T14:00:00.000005Z"
    assert iso(None) is None
