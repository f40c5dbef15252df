"""The worker: runs ResourceTransfer workflows and their activities until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import compileall
import functools
import gc
import os
import signal
from collections.abc import Callable, Collection, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.worker import Worker

import workflows
from activities.order_transactions import OrderTransactions
from activities.transfer_activities import TransferActivities
from logs import configure_logging
from settings import Settings, connect_temporal
from store.db import Database
from workflows import search_attributes
from workflows.resource_transfer import ResourceTransfer

log = structlog.get_logger(__name__)

GRACEFUL_SHUTDOWN = timedelta(seconds=20)
# Runs kept in memory between their tasks: enough for the ones in progress (a hand-off's tasks follow one
# another), not for the pending ones, which wait hours for a decision and are replayed when it comes.
# Every cached run's objects are scanned by each full garbage collection (measured: `make bench`).
MAX_CACHED_RUNS = 300

# Fault injection, for the fault suite only (`make chaos`): never set in production.
FAULT_KILL_AFTER = "TRANSFER_FAULT_KILL_AFTER"  # activity names, comma-separated
FAULT_MARKS = "TRANSFER_FAULT_MARKS"  # a folder: which (activity, order) were killed once
KILL_GRACE_S = 2.0


async def register_search_attributes(client: Client, namespace: str) -> list[str]:
    """Adds the search attributes the namespace lacks; returns the names it added."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    known = set(existing.custom_attributes) | set(existing.system_attributes)
    missing = [key for key in search_attributes.ALL if key.name not in known]
    if missing:
        await add_search_attributes(client, namespace, missing)
    return sorted(key.name for key in missing)


async def add_search_attributes(
    client: Client, namespace: str, keys: Sequence[SearchAttributeKey[Any]]
) -> None:
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=namespace,
            # The SDK's enum mirrors the API's numbering.
            search_attributes={
                key.name: IndexedValueType.ValueType(key.indexed_value_type.value) for key in keys
            },
        )
    )


def compile_workflow_modules(folder: Path = Path(workflows.__file__).parent) -> None:
    """The sandbox imports the workflow modules afresh for every run, from their bytecode when it exists.
    With PYTHONDONTWRITEBYTECODE (or a tree installed without bytecode) each run compiled them from
    source again: 15 % of the worker's CPU under `make bench`. Written once here; a read-only tree
    just goes without."""
    compileall.compile_dir(folder, quiet=2)


class KillAfterWrite:
    """Makes the named activities SIGKILL the worker after their work committed and before they return,
    once per activity and order (a mark file each, so the restarted worker's retry goes through). Other
    activities that finish their work within KILL_GRACE_S die unanswered with it, as in a real crash."""

    def __init__(self, names: Collection[str], marks: Path) -> None:
        self._names, self._marks = frozenset(names), marks
        self._armed = False

    @classmethod
    def from_environment(cls) -> KillAfterWrite | None:
        names = [n for n in os.environ.get(FAULT_KILL_AFTER, "").split(",") if n]
        if not names:
            return None
        marks = Path(os.environ[FAULT_MARKS])
        marks.mkdir(parents=True, exist_ok=True)
        log.warning("fault injection on: activities kill this worker", activities=names)
        return cls(names, marks)

    def wrap(self, activities: Sequence[Callable[..., Any]]) -> list[Callable[..., Any]]:
        return [self._killing(fn) if fn.__name__ in self._names else fn for fn in activities]

    def _killing(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def killing(input: Any) -> Any:
            result = await fn(input)
            info = activity.info()
            try:
                (self._marks / f"{info.activity_type}.{info.workflow_id}").touch(exist_ok=False)
            except FileExistsError:
                return result  # this order's kill happened: the retry answers
            if not self._armed:
                self._armed = True
                asyncio.get_running_loop().call_later(KILL_GRACE_S, os.kill, os.getpid(), signal.SIGKILL)
            await asyncio.Event().wait()  # the process dies before this returns
            return result

        return killing


def build_worker(
    client: Client,
    db: Database,
    task_queue: str,
    attestation_key: bytes,
    *,
    faults: KillAfterWrite | None = None,
) -> Worker:
    compile_workflow_modules()
    activities = TransferActivities(OrderTransactions(db), attestation_key).all()
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ResourceTransfer],
        activities=faults.wrap(activities) if faults else activities,
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        max_cached_workflows=MAX_CACHED_RUNS,
    )


async def run(settings: Settings, stop: asyncio.Event) -> None:
    client = await connect_temporal(settings)
    added = await register_search_attributes(client, settings.namespace)
    if added:
        log.info("search attributes registered", names=added)
    db = Database.at(settings.effective_database_url, settings.secret_box())
    try:
        worker = build_worker(
            client,
            db,
            settings.task_queue,
            settings.attestation_key(),
            faults=KillAfterWrite.from_environment(),
        )
        # What was imported and built to start lives as long as the process: out of the collector's
        # sight, a full collection scans only the runs' objects (a third less time, README "Performance").
        gc.collect()
        gc.freeze()
        async with worker:
            log.info("worker started", task_queue=settings.task_queue, namespace=settings.namespace)
            await stop.wait()
            log.info("worker stopping: finishing the tasks in hand")
    finally:
        await db.dispose()


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(settings, stop)

    asyncio.run(serve())


if __name__ == "__main__":
    main()
