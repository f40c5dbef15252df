"""Records one workflow history per path of ResourceTransfer into tests/histories/<version>/ (`make
histories VERSION=vN`).

The replay test replays every committed history of every version against the current workflow, so a
change that would break a run in flight fails CI. A version's histories are never overwritten: record a
new version next to them (the README's "Changing the workflow" says when).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.models import OrderStepInput
from domain.codes import ErrorCode
from domain.models import Account, Action, InstanceStatus, Resource
from domain.refusals import refusal
from starter.client import TransferClient
from starter.devstack.binaries import temporal_cli
from store.db import Database, create_engine, migrate
from tests.factory import (
    SECRET_BOX,
    Factory,
    freezing_destination_activities,
    fresh_id,
    root,
    signed,
    transfer_activities,
    transfer_client,
)
from tests.stores import Stores
from workflows import search_attributes
from workflows.messages import CancelRequest, ConfirmRequest
from workflows.refusals import application_error
from workflows.resource_transfer import ResourceTransfer

HERE = Path(__file__).parent
# The version whose histories `make histories` records by default: the workflow as it is now.
CURRENT_VERSION = "v3"
# Every path a run can take (SPEC §4, §5); the replay test fails when the current version lacks one.
PATHS = (
    "completed",
    "cancelled",
    "rejected",
    "expired",
    "failed_compensated",
    "failed_before_ownership_moved",
    "refused_at_initiate",
    "confirmed_by_signal",
    "cancelled_by_signal",
    "refused_confirm_then_accepted",
    "operator_cancel",
    "window_closed_while_opening",
)


class Scenario:
    def __init__(self, store: Stores, client: Client) -> None:
        self.store, self.client, self.factory = store, client, Factory(store)

    def activities(self, path: str) -> list[Callable[..., Any]]:
        if path == "failed_compensated":
            return freezing_destination_activities(self.store)
        real = transfer_activities(self.store)
        if path != "failed_before_ownership_moved":
            return real.all()

        @activity.defn(name="reassign_ownership")
        async def refused_reassignment(input: OrderStepInput) -> None:
            raise application_error(refusal(ErrorCode.RESOURCE_NOT_FOUND))

        return [
            *(a for a in real.all() if getattr(a, "__name__", "") != "reassign_ownership"),
            refused_reassignment,
        ]

    async def run(self, path: str, transfers: TransferClient) -> str:
        source, destination = await self.factory.account(), await self.factory.account()
        fields: dict[str, Any] = {}
        if path == "refused_at_initiate":
            fields["created_at"] = datetime.now(UTC) - timedelta(days=1)  # RESOURCE_TOO_NEW
        if path == "refused_confirm_then_accepted":
            fields["status"] = InstanceStatus.RUNNING  # INSTANCE_NOT_STOPPED until the source stops it
        resource = await self.factory.resource(source, **fields)
        try:
            state = await transfers.initiate(
                initiator=root(source), destination_account_id=destination.id, resource_id=resource.id
            )
        except Exception:
            if path != "refused_at_initiate":
                raise
            return await _only_run(transfers, resource)
        await self.decide(path, transfers, state.order_id, source, destination, resource)
        return state.order_id

    async def decide(
        self,
        path: str,
        transfers: TransferClient,
        order_id: str,
        source: Account,
        destination: Account,
        resource: Resource,
    ) -> None:
        handle = transfers.handle(order_id)
        match path:
            case "cancelled":
                await transfers.cancel(order_id, root(source))
            case "rejected":
                await transfers.reject(order_id, root(destination), reason="not expected")
            case "confirmed_by_signal":
                request = signed(
                    ConfirmRequest(agreement_accepted=True), root(destination), Action.CONFIRM, order_id
                )
                await handle.signal(ResourceTransfer.confirm_signal, request)
            case "cancelled_by_signal":
                cancel = signed(CancelRequest(), root(source), Action.CANCEL, order_id)
                await handle.signal(ResourceTransfer.cancel_signal, cancel)
            case "refused_confirm_then_accepted":
                try:
                    await transfers.confirm(order_id, root(destination))
                except Exception:
                    await self.store.set_instance_status(resource.id, InstanceStatus.STOPPED)
                    await transfers.confirm(order_id, root(destination))
            case "operator_cancel":
                await handle.cancel()
            case "completed" | "failed_compensated" | "failed_before_ownership_moved":
                await transfers.confirm(order_id, root(destination))
            case "expired" | "window_closed_while_opening":
                pass
        await _closed(transfers, order_id)


async def _only_run(transfers: TransferClient, resource: Resource) -> str:
    """The id of the one run started for `resource` (an initiate refused: the caller got no order id)."""
    query = f"ResourceId = '{resource.id}'"
    async with asyncio.timeout(30):
        while True:  # visibility is eventually consistent
            async for execution in transfers.client.list_workflows(query):
                await _closed(transfers, execution.id)
                return execution.id
            await asyncio.sleep(0.2)


async def _closed(transfers: TransferClient, order_id: str) -> None:
    """Waits for the run to close, whichever way it closes."""
    async with asyncio.timeout(30):
        with contextlib.suppress(WorkflowFailureError):
            await transfers.handle(order_id).result()


async def record(path: str, version: str, scenario: Scenario) -> str:
    target = HERE / version / f"{path}.json"
    if target.exists():
        raise SystemExit(f"{target} exists: a version's histories are never overwritten")
    window = {"expired": timedelta(seconds=2), "window_closed_while_opening": timedelta(milliseconds=1)}
    task_queue = fresh_id("tq")
    client = scenario.client
    async with Worker(
        client, task_queue=task_queue, workflows=[ResourceTransfer], activities=scenario.activities(path)
    ):
        transfers = transfer_client(client, task_queue, confirm_window=window.get(path, timedelta(hours=24)))
        order_id = await scenario.run(path, transfers)
        history = await transfers.handle(order_id).fetch_history()
    target.parent.mkdir(exist_ok=True)
    target.write_text(history.to_json())
    return f"{version}/{path}: {len(history.events)} events"


async def main(version: str) -> None:
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
            scenario = Scenario(Stores(Database(engine, SECRET_BOX)), env.client)
            for path in PATHS:
                print(await record(path, version, scenario))
        finally:
            await env.shutdown()
            await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else CURRENT_VERSION))
