"""SQL building blocks the stores share. Each runs inside the caller's transaction."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Executable
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from store.tables import Base

RowT = TypeVar("RowT", bound=Base)

# FOR NO KEY UPDATE on PostgreSQL (SQLite ignores FOR UPDATE: BEGIN IMMEDIATE already serializes).
# It serializes writers of the row but, unlike FOR UPDATE, does not conflict with the KEY SHARE
# locks that foreign-key checks take, so two opens with swapped accounts cannot deadlock.
ROW_LOCK = {"key_share": True}

# Keeps the ORM identity map out of UPDATEs: every row read after a write is read again.
NO_SYNC = {"synchronize_session": False}


async def get(session: AsyncSession, table: type[RowT], key: Any, *, lock: bool = False) -> RowT | None:
    """The row as committed now (populate_existing: never a stale copy from the identity map)."""
    return await session.get(table, key, populate_existing=True, with_for_update=ROW_LOCK if lock else None)


async def must_get(session: AsyncSession, table: type[RowT], key: Any) -> RowT:
    row = await get(session, table, key)
    if row is None:
        raise LookupError(f"{table.__tablename__} {key!r} vanished inside its transaction")
    return row


async def rowcount(session: AsyncSession, statement: Executable) -> int:
    """The rows an UPDATE or INSERT changed."""
    result = await session.execute(statement, execution_options=NO_SYNC)
    return cast("CursorResult[Any]", result).rowcount


async def insert_once(session: AsyncSession, table: type[Base], values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING: True if this call inserted the row.

    Unlike catching IntegrityError, a conflict leaves a PostgreSQL transaction usable; a concurrent
    inserter's row is waited for, and the next statement sees it.
    """
    statement: Executable
    if session.get_bind().dialect.name == "postgresql":
        statement = postgresql_insert(table).values(**values).on_conflict_do_nothing()
    else:
        statement = sqlite_insert(table).values(**values).on_conflict_do_nothing()
    return await rowcount(session, statement) == 1
