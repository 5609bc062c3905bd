"""SQLAlchemy Core statements run on the engine's pooled asyncpg connection itself, for hot paths.

SQLAlchemy's ``AsyncConnection.execute`` costs more than the statement it runs on a fast
local database (result and row machinery, the greenlet hop, an explicit BEGIN): the api's
single-statement requests and the outbox relay build their SQL with SQLAlchemy Core, compile
it once, and run it with asyncpg directly (asyncpg prepares and caches each statement).
Needs the ``outbox`` extra (SQLAlchemy, asyncpg).

Public API:

- ``CompiledStatement.of(statement, dialect)``: the statement compiled for asyncpg: ``sql``
  (``$n`` placeholders, with the casts the asyncpg dialect renders) and ``args(params)``, the
  positional values with the dialect's bind processors applied and the values bound inside
  the statement itself filled in.
- ``StatementCache(dialect)``: ``cache[statement]`` compiles a statement on first use.
- ``driver_connection(engine)``: ``async with driver_connection(engine) as conn:`` a
  connection from the engine's pool as the ``asyncpg.Connection``, given back to the pool
  afterwards. A connection that was lost, or whose statement was cancelled (its protocol
  state is then unknown), is invalidated: closed, never reused. Errors pass through.
- ``CONNECTION_ERRORS``: the asyncpg/OS errors meaning the connection itself is unusable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.util import greenlet_spawn

CONNECTION_ERRORS = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    OSError,
)


@dataclass(frozen=True)
class CompiledStatement:
    """A Core statement compiled once for asyncpg."""

    sql: str
    names: tuple[str, ...]
    fixed: dict[str, Any]
    processors: dict[str, Callable[[Any], Any]]

    @classmethod
    def of(cls, statement: ClauseElement, dialect: Any) -> CompiledStatement:
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        processors = {name: p for name, p in compiled._bind_processors.items() if name in names}
        return cls(compiled.string, names, compiled.params, processors)

    def args(self, params: dict[str, Any]) -> list[Any]:
        values = []
        for name in self.names:
            value = params[name] if name in params else self.fixed[name]
            processor = self.processors.get(name)
            values.append(value if processor is None else processor(value))
        return values


class StatementCache(dict[ClauseElement, CompiledStatement]):
    """Statements compiled on first use for one dialect: ``cache[statement]``."""

    def __init__(self, dialect: Any) -> None:
        super().__init__()
        self.dialect = dialect

    def __missing__(self, statement: ClauseElement) -> CompiledStatement:
        compiled = self[statement] = CompiledStatement.of(statement, self.dialect)
        return compiled


@asynccontextmanager
async def driver_connection(engine: AsyncEngine) -> AsyncIterator[asyncpg.Connection]:
    fairy = await engine.raw_connection()
    conn = fairy.driver_connection
    try:
        yield conn
    except Exception as exc:
        if conn.is_closed() or isinstance(exc, CONNECTION_ERRORS):
            await greenlet_spawn(fairy.invalidate, exc)
        raise
    except BaseException as exc:  # cancelled mid-statement: the protocol state is unknown
        await greenlet_spawn(fairy.invalidate, exc)
        raise
    finally:
        await greenlet_spawn(fairy.close)
