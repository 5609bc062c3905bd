"""The next occurrence of a recurring task.

Periods are added in UTC (the stored ``due_at`` has no zone of its own): daily +1 day,
weekly +7 days, monthly the same day and time next month, clamped to that month's last
day (Jan 31 -> Feb 28, or Feb 29 in a leap year). The clamp carries over: the occurrence
after Feb 28 is Mar 28.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta


def add_month(moment: datetime) -> datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def next_due(due_at: datetime, recurrence: str) -> datetime:
    if recurrence == "daily":
        return due_at + timedelta(days=1)
    if recurrence == "weekly":
        return due_at + timedelta(weeks=1)
    if recurrence == "monthly":
        return add_month(due_at)
    raise ValueError(f"not a recurring task: {recurrence!r}")
