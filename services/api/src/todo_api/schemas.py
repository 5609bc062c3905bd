"""Request and response bodies, and every field rule of the Todo contract.

Decisions on the contract's open points:

- tags: input is trimmed and lower-cased, then must match ``^[a-z0-9-]{1,32}$``;
  duplicates are dropped (first occurrence kept, order preserved); at most 10 tags remain.
- text never contains NUL or unpaired surrogates (PostgreSQL cannot store them): 422.
- ``due_at`` must carry a time zone and lie between 1900-01-01 and 9998-12-31 (so the
  next occurrence of a recurring task always exists); it is answered in UTC.
- unknown fields are rejected (``extra="forbid"``); in PATCH, ``title``, ``priority``,
  ``recurrence`` and ``tags`` cannot be null (send ``[]`` to clear tags, ``"none"`` to stop
  recurring); ``description``, ``due_at`` and ``remind_before_minutes`` can.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

Priority = Literal["low", "medium", "high"]
Recurrence = Literal["none", "daily", "weekly", "monthly"]

TAG_PATTERN = re.compile(r"^[a-z0-9-]{1,32}$")
MAX_TAGS = 10
EARLIEST_DUE = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_DUE = datetime(9998, 12, 31, 23, 59, 59, tzinfo=UTC)


def storable(value: str) -> str:
    """PostgreSQL text cannot hold NUL; UTF-8 cannot hold unpaired surrogates."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return value


def _normalize_tag(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _check_tag(value: str) -> str:
    if not TAG_PATTERN.match(value):
        raise ValueError("each tag is 1-32 characters of a-z, 0-9 and '-'")
    return value


def _dedupe_tags(values: list[str]) -> list[str]:
    unique = list(dict.fromkeys(values))
    if len(unique) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} distinct tags")
    return unique


def _due_in_range(value: datetime) -> datetime:
    if not EARLIEST_DUE <= value <= LATEST_DUE:
        raise ValueError("must be between 1900-01-01 and 9998-12-31")
    return value.astimezone(UTC)  # answered in UTC, as the database gives it back


StorableText = Annotated[str, AfterValidator(storable)]
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), AfterValidator(storable)
]
Description = Annotated[str, StringConstraints(max_length=2000), AfterValidator(storable)]
Tag = Annotated[
    str,
    BeforeValidator(_normalize_tag),
    StringConstraints(min_length=1, max_length=32),
    AfterValidator(_check_tag),
]
Tags = Annotated[
    list[Tag],
    Field(max_length=100, description="Up to 10 distinct tags; lower-cased, then [a-z0-9-]{1,32}."),
    AfterValidator(_dedupe_tags),
]
DueAt = Annotated[AwareDatetime, AfterValidator(_due_in_range)]
RemindBefore = Annotated[int, Field(ge=1, le=10080, description="Minutes before due_at; needs due_at.")]
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
    ),
    AfterValidator(storable),
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=256), AfterValidator(storable)]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Credentials(_Input):
    email: Email
    password: Password


class UserOut(BaseModel):
    id: uuid.UUID
    email: str
    created_at: datetime


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = Field(default="bearer", description="Always bearer.")


class TaskCreate(_Input):
    title: Title
    description: Description | None = None
    priority: Priority = "medium"
    tags: Tags = Field(default_factory=list)
    due_at: DueAt | None = None
    remind_before_minutes: RemindBefore | None = None
    recurrence: Recurrence = "none"


NOT_NULL_IN_PATCH = ("title", "priority", "recurrence", "tags")


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


class TaskUpdate(_Input):
    """Only the fields sent change. ``null`` clears description, due_at, remind_before_minutes."""

    # Absent means unchanged; these four cannot be null (the default is never validated).
    title: Title = Field(default=None, json_schema_extra=_no_default)
    description: Description | None = None
    priority: Priority = Field(default=None, json_schema_extra=_no_default)
    tags: Tags = Field(default=None, json_schema_extra=_no_default)
    due_at: DueAt | None = None
    remind_before_minutes: RemindBefore | None = None
    recurrence: Recurrence = Field(default=None, json_schema_extra=_no_default)

    @field_validator(*NOT_NULL_IN_PATCH, mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("cannot be null")
        return value

    def changes(self) -> dict[str, Any]:
        return self.model_dump(include=self.model_fields_set)


class TaskOut(BaseModel):
    id: uuid.UUID
    title: str
    description: str | None
    priority: Priority
    tags: list[str]
    due_at: datetime | None
    remind_before_minutes: int | None
    recurrence: Recurrence
    completed: bool
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    series_id: uuid.UUID = Field(description="Shared by every occurrence of a recurring task.")
    next_task_id: uuid.UUID | None = Field(
        description="The occurrence created when this one was completed (recurring tasks)."
    )


TASK_FIELDS = tuple(TaskOut.model_fields)


def _other(value: Any) -> str:
    if isinstance(value, uuid.UUID):  # asyncpg's own UUID class (a subclass orjson does not know)
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(content: Any) -> bytes:
    """JSON as pydantic writes the response models (UUIDs as strings, UTC datetimes in ISO 8601
    with ``Z``, UTF-8), with orjson: routes answer task dicts (``store.task_dict``) without a
    model round trip; tests check both give the same bytes."""
    return orjson.dumps(content, default=_other, option=orjson.OPT_UTC_Z)


def jsonable(task: dict[str, Any]) -> dict[str, Any]:
    """A task (field -> Python value, UTC datetimes) as TaskOut's JSON form, without a model round
    trip: UUIDs as strings, datetimes in ISO 8601 with ``Z``, exactly as pydantic writes them."""
    out = {}
    for name in TASK_FIELDS:
        value = task[name]
        if isinstance(value, datetime):
            value = value.isoformat().replace("+00:00", "Z")
        elif isinstance(value, uuid.UUID):
            value = str(value)
        out[name] = value
    return out


class TaskPage(BaseModel):
    items: list[TaskOut]
    total: int = Field(description="Tasks matching the filters, all pages together.")
    limit: int
    offset: int


class TagCount(BaseModel):
    name: str
    count: int


class TagList(BaseModel):
    items: list[TagCount]
