"""SQLite statements run on the event loop: a writer that meets another process's write lock waits
without blocking the loop, and gives up as an outage once the busy timeout has passed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import exc, text
from sqlalchemy.ext.asyncio import create_async_engine

from store import sqlite_on_loop
from store.db import OUTAGE_ERRORS, Database, sqlite_url
from tests.factory import SECRET_BOX


def _table_with_lock_held(path: Path) -> sqlite3.Connection:
    """Another process's connection, holding the write lock of a file with one table."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("CREATE TABLE marks (n INTEGER)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO marks VALUES (1)")
    return other


async def test_a_writer_waits_for_another_connections_lock_while_the_loop_runs(tmp_path: Path) -> None:
    path = tmp_path / "transfer.db"
    other = _table_with_lock_held(path)
    db = Database.at(sqlite_url(path), SECRET_BOX)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    async def write() -> None:
        async with db.write() as session:
            await session.execute(text("INSERT INTO marks VALUES (2)"))

    ticker = asyncio.create_task(tick())
    writer = asyncio.create_task(write())
    try:
        await asyncio.sleep(0.3)
        assert not writer.done(), "the writer went ahead while another connection held the lock"
        assert ticks >= 5, f"the loop ran {ticks} times in 0.3 s: the waiting writer blocked it"
        other.execute("COMMIT")
        await asyncio.wait_for(writer, timeout=5)
        async with db.read() as session:
            marks = (await session.scalars(text("SELECT n FROM marks ORDER BY n"))).all()
        assert marks == [1, 2]
    finally:
        ticker.cancel()
        other.close()
        await db.dispose()


async def test_a_writer_gives_up_after_the_busy_timeout_as_an_outage(tmp_path: Path) -> None:
    path = tmp_path / "transfer.db"
    other = _table_with_lock_held(path)
    engine = create_async_engine(
        "sqlite+aiosqlite://", async_creator=sqlite_on_loop.connector(path, busy_timeout_s=0.2)
    )
    try:
        async with engine.connect() as connection:
            with pytest.raises(exc.OperationalError, match="database is locked") as raised:
                await connection.exec_driver_sql("BEGIN IMMEDIATE")
        assert isinstance(raised.value, OUTAGE_ERRORS)
        assert other.execute("SELECT count(*) FROM marks").fetchone() == (1,)
    finally:
        other.close()
        await engine.dispose()
