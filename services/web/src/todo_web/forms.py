"""Task and account forms: what the browser posts, what the api gets, and back again.

Times: the browser's ``<input type="datetime-local">`` sends a wall-clock time without a
zone. The form also carries ``tz``, the browser's IANA time zone (filled in by app.js, and
remembered in the ``todo_tz`` cookie for rendering); the server attaches that zone and sends
the api an ISO 8601 timestamp with its offset. Without JavaScript the zone falls back to the
cookie, then UTC, and the form says which zone it used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PRIORITIES = ("low", "medium", "high")
RECURRENCES = ("none", "daily", "weekly", "monthly")
REMINDER_PRESETS = ((5, "5 minutes"), (15, "15 minutes"), (30, "30 minutes"), (60, "1 hour"), (1440, "1 day"))
TAG_SPLIT = re.compile(r"[,\s]+")
LOCAL_FORMAT = "%Y-%m-%dT%H:%M"


def zone(name: str | None) -> ZoneInfo:
    """The named IANA zone, or UTC for anything unknown or empty."""
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


def valid_zone_name(name: str | None) -> str:
    return zone(name).key


def parse_api_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def local_input_value(value: str | None, tz: str) -> str:
    """An api timestamp as the browser's ``datetime-local`` value in zone ``tz``."""
    parsed = parse_api_time(value)
    return parsed.astimezone(zone(tz)).strftime(LOCAL_FORMAT) if parsed else ""


def local_to_api(value: str, tz: str) -> str:
    """A ``datetime-local`` value in zone ``tz`` as ISO 8601 with offset; ValueError if malformed."""
    value = value.strip()
    for fmt in (LOCAL_FORMAT, "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            naive = datetime.strptime(value, fmt)  # the zone is attached next
        except ValueError:
            continue
        return naive.replace(tzinfo=zone(tz)).isoformat()
    raise ValueError(value)


def split_tags(text: str) -> list[str]:
    """``"Work, home  errands"`` -> ``["work", "home", "errands"]`` (order kept, duplicates dropped)."""
    seen: dict[str, None] = {}
    for tag in TAG_SPLIT.split(text.strip().lower()):
        if tag:
            seen.setdefault(tag, None)
    return list(seen)


@dataclass
class TaskForm:
    """The task form as the user typed it (strings), so a refused form comes back unchanged."""

    title: str = ""
    description: str = ""
    priority: str = "medium"
    tags: str = ""
    due_at: str = ""
    tz: str = "UTC"
    remind_before_minutes: str = ""
    recurrence: str = "none"
    errors: dict[str, str] = field(default_factory=dict)

    FIELDS = ("title", "description", "priority", "tags", "due_at", "remind_before_minutes", "recurrence")

    @classmethod
    def from_form(cls, data: Any, default_tz: str) -> TaskForm:
        def text(name: str, default: str = "") -> str:
            value = data.get(name)
            return value if isinstance(value, str) else default

        return cls(
            title=text("title"),
            description=text("description"),
            priority=text("priority", "medium") or "medium",
            tags=text("tags"),
            due_at=text("due_at"),
            tz=valid_zone_name(text("tz") or default_tz),
            remind_before_minutes=text("remind_before_minutes"),
            recurrence=text("recurrence", "none") or "none",
        )

    @classmethod
    def from_task(cls, task: dict[str, Any], tz: str) -> TaskForm:
        remind = task.get("remind_before_minutes")
        return cls(
            title=task.get("title") or "",
            description=task.get("description") or "",
            priority=task.get("priority") or "medium",
            tags=", ".join(task.get("tags") or []),
            due_at=local_input_value(task.get("due_at"), tz),
            tz=valid_zone_name(tz),
            remind_before_minutes="" if remind is None else str(remind),
            recurrence=task.get("recurrence") or "none",
        )

    def payload(self) -> dict[str, Any] | None:
        """The api's JSON body, or None with `errors` filled when the form cannot be sent as is.

        Only what the api cannot judge is checked here (a malformed date or number); the
        task rules themselves are the api's, and its field errors come back to this form.
        """
        self.errors = {}
        body: dict[str, Any] = {
            "title": self.title.strip(),
            "description": self.description.strip() or None,
            "priority": self.priority,
            "tags": split_tags(self.tags),
            "recurrence": self.recurrence,
            "due_at": None,
            "remind_before_minutes": None,
        }
        if self.due_at.strip():
            try:
                body["due_at"] = local_to_api(self.due_at, self.tz)
            except ValueError:
                self.errors["due_at"] = "Enter a date and time, like 2030-01-31 09:30."
        if self.remind_before_minutes.strip():
            try:
                body["remind_before_minutes"] = int(self.remind_before_minutes.strip())
            except ValueError:
                self.errors["remind_before_minutes"] = "Enter a whole number of minutes."
        return None if self.errors else body


@dataclass
class AccountForm:
    email: str = ""
    errors: dict[str, str] = field(default_factory=dict)


def due_state(task: dict[str, Any], tz: str, now: datetime | None = None) -> str | None:
    """``"overdue"``, ``"today"`` or None, in the user's zone; completed tasks are never overdue."""
    due = parse_api_time(task.get("due_at"))
    if due is None or task.get("completed"):
        return None
    here = zone(tz)
    now = (now or datetime.now(UTC)).astimezone(here)
    if due < now:
        return "overdue"
    start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if due.astimezone(here) < start + timedelta(days=1):
        return "today"
    return None


def format_time(value: str | None, tz: str) -> str:
    """``Mon 3 Feb 2031, 09:30`` in the user's zone."""
    parsed = parse_api_time(value)
    if parsed is None:
        return ""
    local = parsed.astimezone(zone(tz))
    return f"{local:%a} {local.day} {local:%b %Y, %H:%M}"


def format_minutes(minutes: int | None) -> str:
    if not minutes:
        return ""
    for size, unit in ((10080, "week"), (1440, "day"), (60, "hour")):
        if minutes % size == 0:
            count = minutes // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
