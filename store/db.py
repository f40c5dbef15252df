"""Engines for SQLite and PostgreSQL, the unit of work every caller of the stores opens, and the
programmatic Alembic upgrade."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from store import sqlite_on_loop
from store.secret_box import SECRET_BOX, SecretBox

MIGRATIONS = Path(__file__).parent / "migrations"

# What a database outage raises: a refused or lost connection, a pool or statement timeout.
OUTAGE_ERRORS: tuple[type[Exception], ...] = (
    exc.OperationalError,
    exc.InterfaceError,
    exc.TimeoutError,
    OSError,
    TimeoutError,
)

# asyncpg reports a server that is shutting down, starting or cut off (SQLSTATE classes 57 and 08: "the
# database system is shutting down") as a plain DBAPIError; it is an outage all the same.
_OUTAGE_SQLSTATE_CLASSES = ("08", "57")


@contextmanager
def _outages_as_outages() -> Iterator[None]:
    try:
        yield
    except exc.DBAPIError as error:
        sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
        if (
            isinstance(error, OUTAGE_ERRORS)
            or error.orig is None
            or sqlstate[:2] not in _OUTAGE_SQLSTATE_CLASSES
        ):
            raise
        raise exc.OperationalError(error.statement, error.params, error.orig) from error


# A statement waits this long for SQLite's write lock before giving up with "database is locked" (an API
# request then answers 503 within SPEC §5's 10 s; an activity retries).
SQLITE_BUSY_TIMEOUT_MS = 8_000
# PostgreSQL: a connection, a pooled connection and a statement are each waited for this long at most.
CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_S = 8

# Connection execution option of read-only transactions: on SQLite they BEGIN DEFERRED and read a
# WAL snapshot instead of queueing for the write lock.
READ_ONLY = "transfer_read_only"


def sqlite_url(path: str | Path) -> str:
    return f"sqlite+aiosqlite:///{Path(path).resolve()}"


def create_engine(url: str) -> AsyncEngine:
    """An AsyncEngine for `sqlite+aiosqlite:///path` or `postgresql+asyncpg://...`."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # pre-ping: a restarted database server costs a reconnect, not a failed activity.
        return create_async_engine(
            url,
            pool_pre_ping=True,
            pool_timeout=CONNECT_TIMEOUT_S,
            connect_args={"timeout": CONNECT_TIMEOUT_S, "command_timeout": STATEMENT_TIMEOUT_S},
            # Errors and logs never carry bound values (tokens are digests, but secrets and names are not).
            hide_parameters=True,
        )
    database = parsed.database or ":memory:"
    if database != ":memory:":
        _owner_only_file(Path(database))
    # aiosqlite's dialect, with connections whose statements run on the event loop (store.sqlite_on_loop).
    engine = create_async_engine(
        url,
        async_creator=sqlite_on_loop.connector(Path(database), SQLITE_BUSY_TIMEOUT_MS / 1000),
        hide_parameters=True,
    )
    _configure_sqlite(engine)
    return engine


def _owner_only_file(path: Path) -> None:
    """The SQLite file (and its WAL and shared-memory files, made with the same mode) is its owner's only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    path.chmod(0o600)


def _configure_sqlite(engine: AsyncEngine) -> None:
    """SQLAlchemy's documented recipe: the driver never BEGINs (the connector opens connections with
    isolation_level None), we emit BEGIN IMMEDIATE ourselves.

    Every write transaction then takes the write lock up front, so two read-then-write transactions
    serialize (the second waits up to the busy timeout) instead of one failing at its first write
    with SQLITE_BUSY. WAL lets readers of committed data proceed meanwhile.
    """

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Database:
    """The unit of work: one transaction per `write()` or `read()` block, opened by the caller (a service
    or an activity), never by the stores that run inside it (SQLAlchemy's documented session lifecycle).

    Concurrency: on SQLite every write transaction begins IMMEDIATE, so writers serialize. On PostgreSQL
    (READ COMMITTED) the stores' row locks (`lock=True`), conditional UPDATEs, INSERT ... ON CONFLICT DO
    NOTHING and an advisory lock per entity keep the rules true under concurrency.
    """

    def __init__(self, engine: AsyncEngine, secret_box: SecretBox) -> None:
        self.engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, info={SECRET_BOX: secret_box})
        # SQLite has one writer at a time: this process's writers queue here, in order, rather than
        # polling for the lock between pauses (store.sqlite_on_loop; measured: `make bench`). Other
        # processes' writers are waited for that way, up to the busy timeout.
        self._one_writer = asyncio.Lock() if engine.dialect.name == "sqlite" else None

    @classmethod
    def at(cls, url: str, secret_box: SecretBox) -> Database:
        return cls(create_engine(url), secret_box)

    @property
    def is_postgresql(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction that commits when the block ends and rolls back when it raises."""
        with _outages_as_outages():
            if self._one_writer is None:
                async with self._sessions.begin() as session:
                    yield session
                return
            # Waiting for the writer before us is bounded like SQLite's own wait (an outage, then).
            async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
                await self._one_writer.acquire()
            try:
                async with self._sessions.begin() as session:
                    yield session
            finally:
                self._one_writer.release()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction: on SQLite a plain BEGIN that never waits for writers."""
        with _outages_as_outages():
            async with self._sessions() as session:
                await session.connection(execution_options={READ_ONLY: True})
                yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def alembic_config(connection: Connection | None = None, secret_box: SecretBox | None = None) -> Config:
    """Alembic configured in code: independent of the working directory and of any .ini file. The
    secret box seals secrets an older schema kept in plain text (0004)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes[SECRET_BOX] = secret_box
    return config


async def migrate(url: str, secret_box: SecretBox | None = None) -> None:
    """`alembic upgrade head` against `url`, in one transaction."""
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync, secret_box), "head"))
    finally:
        await engine.dispose()
