"""Records one workflow history per terminal path into tests/histories/ (`make histories`).

The replay test replays them against the current ResourceTransfer, so a nondeterministic change to
the workflow fails CI. Re-record only for an intended, versioned change of the workflow.
"""

from __future__ import annotations

import asyncio
import tempfile
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.transfer_activities import TransferActivities
from domain.models import AGREEMENT_VERSION
from starter.client import TransferClient
from starter.devstack.binaries import temporal_cli
from store.db import Database, create_engine, migrate
from tests.factory import Factory, freezing_destination_activities, fresh_id, root, verification
from tests.stores import Stores
from workflows import search_attributes
from workflows.messages import ConfirmRequest
from workflows.resource_transfer import ResourceTransfer

HERE = Path(__file__).parent
TERMINAL_PATHS = ("completed", "cancelled", "rejected", "expired", "failed_compensated")


async def record_path(path: str, client: Client, store: Stores) -> str:
    factory = Factory(store)
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    task_queue = fresh_id("tq")
    window = timedelta(seconds=2) if path == "expired" else timedelta(hours=24)
    activities = (
        freezing_destination_activities(store)
        if path == "failed_compensated"
        else TransferActivities(store.orders).all()
    )
    async with Worker(client, task_queue=task_queue, workflows=[ResourceTransfer], activities=activities):
        transfers = TransferClient(client, task_queue=task_queue, confirm_window=window)
        state = await transfers.initiate(
            initiator=root(source),
            destination_account_id=destination.id,
            resource_id=resource.id,
            verification=verification(source),
        )
        confirm = ConfirmRequest(
            principal=root(destination),
            agreement_accepted=True,
            agreement_version=AGREEMENT_VERSION,
            verification=verification(destination),
        )
        if path in ("completed", "failed_compensated"):
            await transfers.confirm(state.order_id, confirm)
        elif path == "cancelled":
            await transfers.cancel(state.order_id, root(source))
        elif path == "rejected":
            await transfers.reject(state.order_id, root(destination), reason="not expected")
        result = await transfers.result(state.order_id)
        assert result.status is not None and result.status.value == path.split("_")[0], result
        history = await transfers.handle(state.order_id).fetch_history()
    (HERE / f"{path}.json").write_text(history.to_json())
    return f"{path}: {len(history.events)} events"


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{folder}/transfer.db"
        await migrate(url)
        engine = create_engine(url)
        env = await WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter,
            dev_server_existing_path=temporal_cli(),
            search_attributes=search_attributes.ALL,
        )
        try:
            for path in TERMINAL_PATHS:
                print(await record_path(path, env.client, Stores(Database(engine))))
        finally:
            await env.shutdown()
            await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
