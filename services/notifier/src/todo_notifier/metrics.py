"""The notifier's own Prometheus metrics (next to the shared HTTP metrics and outbox gauges).

- ``notifier_task_events_total{type,outcome}``: task events handled. ``outcome``:
  ``applied`` (the task's record changed), ``stale`` (older than what the record holds),
  ``duplicate`` (this event id was processed before), ``ignored`` (an event type the
  notifier does not handle), ``dropped`` (malformed: to the dead-letter topic), ``retried``
  (a dependency failed: Dapr redelivers it).
- ``notifier_reminders_scheduled_total``, ``notifier_reminders_cancelled_total``: Jobs API
  calls that scheduled (or moved) and deleted a task's reminder job.
- ``notifier_reminders_fired_total{outcome}``: reminder jobs the scheduler triggered here.
  ``delivered`` (a notification was stored), ``duplicate`` (this occurrence was already
  delivered), ``stale`` (the task was completed, deleted or moved since), ``rescheduled``
  (the task's reminder moved and its job is put right), ``retried`` (failed; the scheduler
  calls again).
- ``notifier_record_conflicts_total``: ETag conflicts writing a task's record (two
  replicas or redeliveries working on the same task at once; each is retried).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from todo_notifier.events import TASK_EVENT_TYPES


def event_type_label(value: object) -> str:
    return value if isinstance(value, str) and value in TASK_EVENT_TYPES else "other"


class NotifierMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.task_events = Counter(
            "notifier_task_events_total",
            "Task events handled, by type and outcome.",
            ("type", "outcome"),
            registry=registry,
        )
        self.scheduled = Counter(
            "notifier_reminders_scheduled_total",
            "Reminder jobs scheduled or moved (Dapr Jobs API).",
            registry=registry,
        )
        self.cancelled = Counter(
            "notifier_reminders_cancelled_total", "Reminder jobs deleted (Dapr Jobs API).", registry=registry
        )
        self.fired = Counter(
            "notifier_reminders_fired_total",
            "Reminder jobs triggered on this replica, by outcome.",
            ("outcome",),
            registry=registry,
        )
        self.conflicts = Counter(
            "notifier_record_conflicts_total",
            "ETag conflicts writing a task's reminder record (retried).",
            registry=registry,
        )
