"""SQLite for the async engine, each statement run where it is awaited instead of on a thread.

aiosqlite runs every statement on a thread of its own and hands the result back through the event loop,
so under load each statement of a transaction waits its turn on a crowded loop: a write transaction held
SQLite's one write lock for 12 to 14 ms of wall time for about 1 ms of work, and the writers queued behind
it (README "Performance"). A statement on a local SQLite file takes microseconds, so here it runs on the
loop and a transaction holds the lock only while it works. The one wait that could block the loop, for
another process's write lock, is an `asyncio.sleep` between tries instead of SQLite's busy handler
(the connection's own busy timeout is 0), bounded like the busy timeout it replaces.

The objects offer the part of aiosqlite's Connection and Cursor that SQLAlchemy's aiosqlite dialect
calls; `create_async_engine(url, async_creator=connector(path, ...))` plugs them in. Not the dialect's
isolation-level setter (it reaches into aiosqlite's thread): store.db begins every transaction itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Another connection holds the lock (or is recovering the WAL index): trying again can succeed. Not
# SQLITE_BUSY_SNAPSHOT: a deferred reader that turned writer never can, so it fails at once.
_RETRYABLE = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_BUSY_RECOVERY})
_FIRST_PAUSE_S = 0.001
_LONGEST_PAUSE_S = 0.05


async def _unless_busy(run: Callable[[], T], busy_timeout_s: float) -> T:
    """`run()`, tried again after a pause while the database is busy, for up to `busy_timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    pause = _FIRST_PAUSE_S
    while True:
        try:
            return run()
        except sqlite3.OperationalError as error:
            if error.sqlite_errorcode not in _RETRYABLE:
                raise
            now = loop.time()
            deadline = now + busy_timeout_s if deadline is None else deadline
            if now >= deadline:
                raise
            await asyncio.sleep(min(pause, deadline - now))
            pause = min(pause * 2, _LONGEST_PAUSE_S)


class LoopCursor:
    def __init__(self, cursor: sqlite3.Cursor, busy_timeout_s: float) -> None:
        self._cursor = cursor
        self._busy_timeout_s = busy_timeout_s

    async def __aenter__(self) -> LoopCursor:
        return self

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Any = ()) -> LoopCursor:
        await _unless_busy(lambda: self._cursor.execute(sql, parameters), self._busy_timeout_s)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> LoopCursor:
        rows = list(parameters)  # a retry must see every row again
        await _unless_busy(lambda: self._cursor.executemany(sql, rows), self._busy_timeout_s)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> Sequence[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> Sequence[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class LoopConnection:
    def __init__(self, connection: sqlite3.Connection, busy_timeout_s: float) -> None:
        # The dialect reads `_connection` to tell an open connection from a closed one.
        self._connection: sqlite3.Connection | None = connection
        self._busy_timeout_s = busy_timeout_s

    def _open(self) -> sqlite3.Connection:
        if self._connection is None:
            raise ValueError("no active connection")  # what aiosqlite says; the dialect maps it
        return self._connection

    @property
    def isolation_level(self) -> str | None:
        return self._open().isolation_level

    def cursor(self) -> LoopCursor:
        return LoopCursor(self._open().cursor(), self._busy_timeout_s)

    async def commit(self) -> None:
        await _unless_busy(self._open().commit, self._busy_timeout_s)

    async def rollback(self) -> None:
        self._open().rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._open().create_function(*args, **kwargs)

    async def close(self) -> None:
        self.stop()

    def stop(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def connector(path: Path, busy_timeout_s: float) -> Callable[[], Awaitable[LoopConnection]]:
    """The `async_creator` of an engine on the SQLite file `path`."""

    async def connect() -> LoopConnection:
        # isolation_level None: the driver never BEGINs (store.db emits BEGIN itself). Any thread: the
        # pool may close a connection from the thread that collects it.
        connection = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        return LoopConnection(connection, busy_timeout_s)

    return connect
