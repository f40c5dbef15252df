"""Store fixtures, parametrized over the two backends: a migrated SQLite file and a fresh PostgreSQL
database (created in the server at TRANSFER_TEST_POSTGRES_URL, dropped at the end of the session).

PostgreSQL unreachable: its tests skip locally and fail in CI (env CI set), where they must run.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from uuid import uuid4

import pytest
from sqlalchemy import delete, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from store.db import Database, create_engine, migrate, sqlite_url
from store.tables import Base
from tests.factory import SECRET_BOX
from tests.stores import Stores

POSTGRES_URL = os.environ.get(
    "TRANSFER_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def _unreachable(error: BaseException) -> None:
    reason = f"PostgreSQL at {POSTGRES_URL} is unreachable: {error}"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh, uniquely named database on the test server; its URL."""
    admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    name = f"transfer_store_{uuid4().hex[:12]}"
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    except (OSError, DBAPIError, TimeoutError) as error:
        await admin.dispose()
        _unreachable(error)
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """One migrated database per backend for the whole session; tests empty it after themselves."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path_factory.mktemp("store") / "transfer.db")
        await migrate(url)
        yield url
        return
    async with postgres_database() as url:
        await migrate(url)
        yield url


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(engine: AsyncEngine) -> AsyncIterator[Stores]:
    yield Stores(Database(engine, SECRET_BOX))
    async with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            await connection.execute(delete(table))
