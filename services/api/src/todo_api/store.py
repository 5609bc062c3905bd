"""Data access: users, tasks and tags. Every task change writes its outbox event in the same
transaction (``todo_api.outbox.record_event``); every query is scoped to the owner, so
another user's task is simply not found (404).

List filters (combined with AND):

- ``status``: ``open`` | ``done`` | ``all`` (default).
- ``priority``, ``tag`` (one tag; lower-cased like tag input).
- ``q``: case-insensitive substring of title or description (ILIKE, wildcards escaped).
- ``due``: ``overdue`` = due before now and not completed; ``today`` = due from 00:00 today
  to 00:00 tomorrow; ``week`` = due from 00:00 today to 00:00 seven days later. "Today" is
  in UTC unless ``tz`` (an IANA zone such as ``Europe/Paris``) is given.
- ``sort``: ``created`` (default, newest first), ``due`` (nulls last either way),
  ``priority`` (low < medium < high), ``title`` (case-insensitive); ``order`` asc|desc
  (default desc for created, asc otherwise). Ties break on creation time, then id.
- pagination: ``limit`` (1-100, default 20) and ``offset``; the page carries ``total``.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from sqlalchemy import and_, bindparam, case, func, insert, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.types import BigInteger, DateTime, Integer, String, Uuid
from todo_shared.problems import Problem, validation_problem
from todo_shared.sql import CONNECTION_ERRORS, CompiledStatement, StatementCache, driver_connection

from todo_api.outbox import event_payload, record_event, user_lock_key
from todo_api.recurrence import next_due
from todo_api.schemas import TASK_FIELDS, TaskCreate, TaskUpdate, dumps, jsonable
from todo_api.tables import tasks, users

UTC_ZONE = ZoneInfo("UTC")
TASK_COLUMNS = [c for c in tasks.c if c.name != "user_id"]
_PRIORITY_RANK = case({"low": 0, "medium": 1, "high": 2}, value=tasks.c.priority)

# Hot statements are built once: building a Core statement costs more than running it.
_INSERT_TASK = insert(tasks).returning(*TASK_COLUMNS)
_OWNED = and_(tasks.c.id == bindparam("task_id"), tasks.c.user_id == bindparam("owner_id"))
_SELECT_TASK = select(*TASK_COLUMNS).where(_OWNED)
_SELECT_TASK_LOCKED = _SELECT_TASK.with_for_update()
_DELETE_TASK = tasks.delete().where(_OWNED).returning(*TASK_COLUMNS)
_COMPLETE_TASK = (
    update(tasks)
    .where(tasks.c.id == bindparam("task_id"))
    .values(completed=True, completed_at=func.now(), updated_at=func.now(), next_task_id=bindparam("next_id"))
    .returning(*TASK_COLUMNS)
)
_REOPEN_TASK = (
    update(tasks)
    .where(tasks.c.id == bindparam("task_id"))
    .values(completed=False, completed_at=None, updated_at=func.now())
    .returning(*TASK_COLUMNS)
)
# A create is one statement, so one round trip in an implicit transaction: the task row, the
# per-user advisory lock (see todo_api.outbox), and the event row with the task snapshot.
_CREATE_TASK_WITH_EVENT = text(
    """
    WITH new_task AS (
        INSERT INTO tasks (id, user_id, series_id, title, description, priority, tags, due_at,
                           remind_before_minutes, recurrence, created_at, updated_at)
        VALUES (:id, :user_id, :id, :title, :description, :priority, :tags, :due_at,
                :remind_before_minutes, :recurrence, :now, :now)
        RETURNING id
    ), user_lock AS MATERIALIZED (
        SELECT pg_advisory_xact_lock(CAST(:lock_key AS bigint))
    )
    INSERT INTO outbox_events (id, type, user_id, task_id, payload, created_at)
    SELECT CAST(:event_id AS uuid), 'task.created', CAST(:user_id AS uuid), new_task.id,
           CAST(:payload AS jsonb), CAST(:now AS timestamptz)
    FROM new_task, user_lock
    """
).bindparams(
    bindparam("id", type_=Uuid),
    bindparam("user_id", type_=Uuid),
    bindparam("title", type_=String),
    bindparam("description", type_=String),
    bindparam("priority", type_=String),
    bindparam("tags", type_=ARRAY(String)),
    bindparam("due_at", type_=DateTime(timezone=True)),
    bindparam("remind_before_minutes", type_=Integer),
    bindparam("recurrence", type_=String),
    bindparam("now", type_=DateTime(timezone=True)),
    bindparam("lock_key", type_=BigInteger),
    bindparam("event_id", type_=Uuid),
    bindparam("payload", type_=String),  # JSON text (schemas.dumps)
)
_INSERT_USER = (
    pg_insert(users)
    .on_conflict_do_nothing(index_elements=[func.lower(users.c.email)])
    .returning(users.c.id, users.c.email, users.c.created_at)
)
_USER_BY_EMAIL = select(users).where(func.lower(users.c.email) == func.lower(bindparam("email")))
_USER_BY_ID = select(users.c.id, users.c.email, users.c.created_at).where(users.c.id == bindparam("user_id"))
_SET_PASSWORD_HASH = (
    update(users).where(users.c.id == bindparam("user_id")).values(password_hash=bindparam("hash"))
)
_TAG = func.unnest(tasks.c.tags).label("tag")
_USER_TAGS = select(_TAG).where(tasks.c.user_id == bindparam("owner_id")).subquery()
_TAG_COUNTS = (
    select(_USER_TAGS.c.tag, func.count().label("n"))
    .group_by(_USER_TAGS.c.tag)
    .order_by(func.count().desc(), _USER_TAGS.c.tag)
)


class TaskNotFoundError(Problem):
    def __init__(self) -> None:
        super().__init__(404, "No such task.", title="Not Found", type_="urn:todo:problem:task-not-found")


def task_dict(row: Any) -> dict[str, Any]:
    """A task row (SQLAlchemy Row or asyncpg Record) as the API's task: TaskOut's fields, in its
    order, as Python values (``schemas.dumps`` writes them as pydantic would)."""
    mapping = row._mapping if hasattr(row, "_mapping") else row
    return {name: mapping[name] for name in TASK_FIELDS}


def snapshot(row: Any) -> dict[str, Any]:
    """The task as the API shows it, JSON-ready (the event payload's ``task``)."""
    return jsonable(task_dict(row))


class DatabaseUnavailableError(Exception):
    """The connection to PostgreSQL was lost, or the server is shutting down or refusing us,
    during a single statement (``Store._driver``). The app answers 503 with Retry-After."""


_UNAVAILABLE = CONNECTION_ERRORS


@dataclass(frozen=True)
class ListQuery:
    status: str = "all"
    priority: str | None = None
    tag: str | None = None
    q: str | None = None
    due: str | None = None
    tz: ZoneInfo = UTC_ZONE
    sort: str = "created"
    order: str | None = None
    limit: int = 20
    offset: int = 0


def _escape_like(text_: str) -> str:
    return text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _day_start(now: datetime, tz: ZoneInfo, days: int = 0) -> datetime:
    local_date = now.astimezone(tz).date() + timedelta(days=days)
    return datetime.combine(local_date, time(), tzinfo=tz)


@dataclass(frozen=True)
class _Shape:
    """What a list query's SQL depends on; the values travel as bind parameters."""

    status: str
    priority: bool
    tag: bool
    search: bool
    due: str | None
    sort: str
    order: str


def _shape(query: ListQuery) -> _Shape:
    order = query.order or ("desc" if query.sort == "created" else "asc")
    return _Shape(
        query.status, bool(query.priority), bool(query.tag), bool(query.q), query.due, query.sort, order
    )


def _conditions(shape: _Shape) -> list[Any]:
    conds: list[Any] = [tasks.c.user_id == bindparam("owner_id")]
    if shape.status == "open":
        conds.append(tasks.c.completed.is_(False))
    elif shape.status == "done":
        conds.append(tasks.c.completed.is_(True))
    if shape.priority:
        conds.append(tasks.c.priority == bindparam("priority"))
    if shape.tag:
        conds.append(tasks.c.tags.contains(bindparam("tags", type_=ARRAY(String))))
    if shape.search:
        pattern = bindparam("pattern", type_=String)
        conds.append(
            or_(tasks.c.title.ilike(pattern, escape="\\"), tasks.c.description.ilike(pattern, escape="\\"))
        )
    if shape.due == "overdue":
        conds.extend(
            [tasks.c.due_at < bindparam("now", type_=DateTime(timezone=True)), tasks.c.completed.is_(False)]
        )
    elif shape.due in ("today", "week"):
        conds.extend(
            [
                tasks.c.due_at >= bindparam("start", type_=DateTime(timezone=True)),
                tasks.c.due_at < bindparam("end", type_=DateTime(timezone=True)),
            ]
        )
    return conds


def _ordering(shape: _Shape) -> list[Any]:
    key = {
        "created": tasks.c.created_at,
        "due": tasks.c.due_at,
        "priority": _PRIORITY_RANK,
        "title": func.lower(tasks.c.title),
    }[shape.sort]
    direction = (lambda c: c.desc()) if shape.order == "desc" else (lambda c: c.asc())
    primary = direction(key)
    if shape.sort == "due":
        primary = primary.nulls_last()
    return [primary, direction(tasks.c.created_at), direction(tasks.c.id)]


@functools.cache
def _list_statements(shape: _Shape) -> tuple[Any, Any]:
    """The page query (with the total as a window count) and the count-only query, built once per shape."""
    where = and_(*_conditions(shape))
    page = (
        select(*TASK_COLUMNS, func.count().over().label("_total"))
        .where(where)
        .order_by(*_ordering(shape))
        .limit(bindparam("limit", type_=Integer))
        .offset(bindparam("offset", type_=Integer))
    )
    return page, select(func.count()).select_from(tasks).where(where)


def _list_params(user_id: uuid.UUID, query: ListQuery, now: datetime) -> dict[str, Any]:
    params: dict[str, Any] = {"owner_id": user_id, "limit": query.limit, "offset": query.offset}
    if query.priority:
        params["priority"] = query.priority
    if query.tag:
        params["tags"] = [query.tag]
    if query.q:
        params["pattern"] = f"%{_escape_like(query.q)}%"
    if query.due == "overdue":
        params["now"] = now
    elif query.due in ("today", "week"):
        params["start"] = _day_start(now, query.tz)
        params["end"] = _day_start(now, query.tz, 1 if query.due == "today" else 7)
    return params


def _nothing() -> None:
    return None


def _check_dependencies(task: dict[str, Any]) -> None:
    errors = {}
    if task.get("due_at") is None:
        if task.get("remind_before_minutes") is not None:
            errors["remind_before_minutes"] = "A reminder needs due_at."
        if task.get("recurrence", "none") != "none":
            errors["recurrence"] = "A recurring task needs due_at."
    if errors:
        raise validation_problem(errors)


class Store:
    """Data access on the engine's pool.

    Single statements (reads and the one-statement create) run on the pooled connection's
    asyncpg connection itself (``_driver``): no BEGIN/COMMIT round trips (asyncpg runs each
    statement in its own implicit transaction) and none of SQLAlchemy's per-execute work; the
    SQL is still built with SQLAlchemy Core, compiled once per statement (``_compiled``).
    Multi-statement changes run in SQLAlchemy transactions (``engine.begin()``).

    ``on_change`` is called after every committed task change (the app points it at the
    outbox relay's ``notify``, so events go out without waiting for a poll).
    """

    def __init__(self, engine: AsyncEngine, on_change: Callable[[], None] | None = None) -> None:
        self.engine = engine
        self.on_change = on_change or _nothing
        self._statements = StatementCache(engine.dialect)

    def _compiled(self, statement: ClauseElement) -> CompiledStatement:
        return self._statements[statement]

    @asynccontextmanager
    async def _driver(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection from the engine's pool, as the asyncpg connection (``driver_connection``);
        a connection lost or refused becomes ``DatabaseUnavailableError``."""
        try:
            async with driver_connection(self.engine) as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise DatabaseUnavailableError(type(exc).__name__) from exc

    async def _fetch(self, statement: ClauseElement, params: dict[str, Any]) -> list[asyncpg.Record]:
        compiled = self._compiled(statement)
        async with self._driver() as conn:
            return await conn.fetch(compiled.sql, *compiled.args(params))

    async def _fetchrow(self, statement: ClauseElement, params: dict[str, Any]) -> asyncpg.Record | None:
        compiled = self._compiled(statement)
        async with self._driver() as conn:
            return await conn.fetchrow(compiled.sql, *compiled.args(params))

    # users -------------------------------------------------------------------
    async def create_user(self, email: str, password_hash: str) -> Any | None:
        """The new user's row, or None when the email is taken (case-insensitively)."""
        values = {"id": uuid.uuid4(), "email": email, "password_hash": password_hash}
        async with self.engine.begin() as conn:
            return (await conn.execute(_INSERT_USER, values)).one_or_none()

    async def user_by_email(self, email: str) -> asyncpg.Record | None:
        return await self._fetchrow(_USER_BY_EMAIL, {"email": email})

    async def user_by_id(self, user_id: uuid.UUID) -> asyncpg.Record | None:
        return await self._fetchrow(_USER_BY_ID, {"user_id": user_id})

    async def update_password_hash(self, user_id: uuid.UUID, password_hash: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_SET_PASSWORD_HASH, {"user_id": user_id, "hash": password_hash})

    # tasks -------------------------------------------------------------------
    async def create_task(self, user_id: uuid.UUID, data: TaskCreate) -> dict[str, Any]:
        """Insert the task and its task.created event in one statement; the task (``task_dict``)."""
        task_id, event_id, now = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
        task = {  # TaskOut's fields, in its order
            "id": task_id,
            **data.model_dump(),
            "completed": False,
            "completed_at": None,
            "created_at": now,
            "updated_at": now,
            "series_id": task_id,
            "next_task_id": None,
        }
        _check_dependencies(task)
        # The event's JSON is written once, from the task's Python values (``dumps`` writes them
        # as ``jsonable`` would), and handed to PostgreSQL as text for its jsonb cast.
        payload = dumps(event_payload(event_id, "task.created", user_id, task, now)).decode()
        params = {
            **task,
            "user_id": user_id,
            "now": now,
            "lock_key": user_lock_key(user_id),
            "event_id": event_id,
            "payload": payload,
        }
        compiled = self._compiled(_CREATE_TASK_WITH_EVENT)
        async with self._driver() as conn:
            await conn.execute(compiled.sql, *compiled.args(params))
        self.on_change()
        return task

    async def get_task(self, user_id: uuid.UUID, task_id: uuid.UUID) -> dict[str, Any]:
        row = await self._fetchrow(_SELECT_TASK, {"task_id": task_id, "owner_id": user_id})
        if row is None:
            raise TaskNotFoundError()
        return task_dict(row)

    async def list_tasks(self, user_id: uuid.UUID, query: ListQuery) -> tuple[list[dict[str, Any]], int]:
        page, count = _list_statements(_shape(query))
        params = _list_params(user_id, query, datetime.now(UTC))
        page_sql = self._compiled(page)
        async with self._driver() as conn:
            rows = await conn.fetch(page_sql.sql, *page_sql.args(params))
            if rows:
                total = rows[0]["_total"]
            elif query.offset:
                count_sql = self._compiled(count)
                total = await conn.fetchval(count_sql.sql, *count_sql.args(params))
            else:
                total = 0
        return [task_dict(row) for row in rows], total

    async def _locked(self, conn: AsyncConnection, user_id: uuid.UUID, task_id: uuid.UUID) -> Any:
        row = (
            await conn.execute(_SELECT_TASK_LOCKED, {"task_id": task_id, "owner_id": user_id})
        ).one_or_none()
        if row is None:
            raise TaskNotFoundError()
        return row

    async def update_task(self, user_id: uuid.UUID, task_id: uuid.UUID, patch: TaskUpdate) -> dict[str, Any]:
        requested = patch.changes()
        async with self.engine.begin() as conn:
            current = await self._locked(conn, user_id, task_id)
            merged = {**dict(current._mapping), **requested}
            _check_dependencies(merged)
            changes = {k: v for k, v in requested.items() if getattr(current, k) != v}
            if not changes:
                return task_dict(current)
            stmt = (
                update(tasks)
                .where(tasks.c.id == task_id)
                .values(**changes, updated_at=func.now())
                .returning(*TASK_COLUMNS)
            )
            row = (await conn.execute(stmt)).one()
            await record_event(conn, "task.updated", user_id, snapshot(row), row.updated_at)
        self.on_change()
        return task_dict(row)

    async def delete_task(self, user_id: uuid.UUID, task_id: uuid.UUID) -> None:
        async with self.engine.begin() as conn:
            row = (await conn.execute(_DELETE_TASK, {"task_id": task_id, "owner_id": user_id})).one_or_none()
            if row is None:
                raise TaskNotFoundError()
            await record_event(conn, "task.deleted", user_id, snapshot(row), datetime.now(UTC))
        self.on_change()

    async def complete_task(self, user_id: uuid.UUID, task_id: uuid.UUID) -> dict[str, Any]:
        """Complete a task; a recurring one gets its next occurrence, exactly once.

        The row lock serializes concurrent completes; ``next_task_id`` remembers the
        occurrence already created, so a retry, a race or reopen + complete creates none.
        Completing a completed task changes nothing and writes no event.
        """
        async with self.engine.begin() as conn:
            current = await self._locked(conn, user_id, task_id)
            if current.completed:
                return task_dict(current)
            next_row = None
            next_id = current.next_task_id
            if current.recurrence != "none" and current.due_at is not None and next_id is None:
                next_id = uuid.uuid4()
                following = {
                    "id": next_id,
                    "user_id": user_id,
                    "series_id": current.series_id,
                    "title": current.title,
                    "description": current.description,
                    "priority": current.priority,
                    "tags": list(current.tags),
                    "due_at": next_due(current.due_at, current.recurrence),
                    "remind_before_minutes": current.remind_before_minutes,
                    "recurrence": current.recurrence,
                }
                next_row = (await conn.execute(_INSERT_TASK, following)).one()
            row = (await conn.execute(_COMPLETE_TASK, {"task_id": task_id, "next_id": next_id})).one()
            await record_event(conn, "task.completed", user_id, snapshot(row), row.updated_at)
            if next_row is not None:
                await record_event(conn, "task.created", user_id, snapshot(next_row), next_row.created_at)
        self.on_change()
        return task_dict(row)

    async def reopen_task(self, user_id: uuid.UUID, task_id: uuid.UUID) -> dict[str, Any]:
        """Mark a completed task open again (a task.updated event); open tasks are left as they are."""
        async with self.engine.begin() as conn:
            current = await self._locked(conn, user_id, task_id)
            if not current.completed:
                return task_dict(current)
            row = (await conn.execute(_REOPEN_TASK, {"task_id": task_id})).one()
            await record_event(conn, "task.updated", user_id, snapshot(row), row.updated_at)
        self.on_change()
        return task_dict(row)

    async def tag_counts(self, user_id: uuid.UUID) -> list[tuple[str, int]]:
        return [(r["tag"], r["n"]) for r in await self._fetch(_TAG_COUNTS, {"owner_id": user_id})]
