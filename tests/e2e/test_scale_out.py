"""Scale-out (issue "Performance"): two worker processes and two API processes against one Temporal
server and one PostgreSQL database. A few hundred transfers go through both APIs (each order opened
through one and confirmed through the other); every order ends completed exactly once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from temporalio.api.enums.v1 import EventType
from temporalio.testing import WorkflowEnvironment

from bench.run import ADMIN_TOKEN, Product, bounded, free_port
from store.db import create_engine
from tests.factory import SECRET_KEY, fresh_id
from tests.store.conftest import postgres_database

pytestmark = pytest.mark.postgres

TRANSFERS = 200
BATCH = 25  # with one batch in flight per API: 50 items at once, well within the 8 s answer
# What the database says afterwards: orders by status, billing hand-offs (and distinct orders among
# them), events by action (and distinct orders), resources now the destination's with no lock left.
CHECKS = (
    "SELECT status, count(*) FROM orders GROUP BY status",
    "SELECT count(*), count(DISTINCT order_id) FROM billing_handoffs",
    "SELECT action, count(*), count(DISTINCT order_id) FROM order_events GROUP BY action",
    "SELECT count(*) FROM orders o JOIN resources r ON r.id = o.resource_id"
    " WHERE r.owner_account_id = o.destination_account_id AND r.locked_by_order_id IS NULL",
)


@contextmanager
def processes(commands: list[tuple[list[str], dict[str, str]]], logs: Path) -> Iterator[None]:
    started = []
    for index, (command, env) in enumerate(commands):
        output = (logs / f"process-{index}.log").open("wb")
        started.append(subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT))
    try:
        yield
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


async def ready(http: httpx.AsyncClient, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if (await http.get("/readyz")).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.3)
    raise TimeoutError(f"{http.base_url} did not become ready")


async def test_two_workers_and_two_apis_do_every_transfer_exactly_once(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with postgres_database() as url:
        env = {
            **os.environ,
            "TRANSFER_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
            "TRANSFER_DATABASE_URL": url,
            "TRANSFER_SECRET_KEY": SECRET_KEY,
            "TRANSFER_ADMIN_TOKEN": ADMIN_TOKEN,
            "TRANSFER_TASK_QUEUE": fresh_id("scale-out"),
            "TRANSFER_DATA_DIR": str(tmp_path),
            "TRANSFER_LOG_LEVEL": "WARNING",
        }
        cli = [sys.executable, "-m", "starter.cli"]
        migrated = await asyncio.create_subprocess_exec(*cli, "migrate", env=env)
        assert await asyncio.wait_for(migrated.wait(), 60) == 0
        ports = [free_port(), free_port()]
        commands = [([*cli, "worker"], env), ([*cli, "worker"], env)]
        commands += [([*cli, "api"], {**env, "TRANSFER_API_PORT": str(port)}) for port in ports]
        with processes(commands, tmp_path):
            apis = [httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) for port in ports]
            try:
                await asyncio.gather(*(ready(api) for api in apis))
                one, other = (Product(api, dev_env.client) for api in apis)
                pairs = await one.pairs(TRANSFERS, BATCH)

                async def transfer(index: int) -> list[str]:
                    opens, confirms = (one, other) if index % 2 == 0 else (other, one)
                    order_ids = await opens.initiate(pairs[index])
                    await confirms.confirm(pairs[index], order_ids)
                    await confirms.completed(order_ids)
                    return order_ids

                # One batch in flight per API: a 2-core machine runs all six processes.
                batches = await bounded(range(len(pairs)), len(apis), transfer)
                order_ids = [order_id for batch in batches for order_id in batch]
                identities = set()
                for order_id in order_ids[::10]:
                    history = await dev_env.client.get_workflow_handle(order_id).fetch_history()
                    identities |= {
                        e.workflow_task_completed_event_attributes.identity
                        for e in history.events
                        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
                    }
            finally:
                for api in apis:
                    await api.aclose()

        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                orders, handoffs, events, moved = [
                    (await connection.execute(text(query))).all() for query in CHECKS
                ]
        finally:
            await engine.dispose()

    assert len(order_ids) == len(set(order_ids)) == TRANSFERS
    assert [tuple(row) for row in orders] == [("completed", TRANSFERS)]
    assert [tuple(row) for row in handoffs] == [(TRANSFERS, TRANSFERS)]  # one hand-off per order
    # Each order's initiate, confirm and completion recorded once.
    assert sorted(tuple(row) for row in events) == [
        ("complete", TRANSFERS, TRANSFERS),
        ("confirm", TRANSFERS, TRANSFERS),
        ("initiate", TRANSFERS, TRANSFERS),
    ]
    assert [tuple(row) for row in moved] == [(TRANSFERS,)]  # every resource moved, its lock released
    assert len(identities) == 2, identities  # both workers ran transfers
