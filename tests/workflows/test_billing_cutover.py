"""SPEC §4: billing cuts over at the moment the ownership change is committed, not when the step was
scheduled: an auto-renewal between the two is the source's, one after the commit the destination's."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.models import OrderStepInput
from domain.models import ChargeKind, OrderStatus
from store.tables import BillingHandoffRow
from tests.factory import Factory, fresh_id, root, transfer_activities, transfer_client
from tests.stores import Stores
from workflows.resource_transfer import ResourceTransfer


async def test_an_auto_renewal_between_the_schedule_and_the_commit_is_the_source_s(
    dev_env: WorkflowEnvironment, store: Stores, factory: Factory
) -> None:
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    real = transfer_activities(store)
    renewed_at: list[datetime] = []

    @activity.defn(name="reassign_ownership")
    async def renew_then_reassign(input: OrderStepInput) -> None:
        # The step is scheduled (input.at), then the provider's auto-renewal lands, then the commit.
        renewed_at.append(datetime.now(UTC))
        await store.resources.auto_renew(resource.id, at=renewed_at[0])
        await real.reassign_ownership(input)

    activities = [a for a in real.all() if getattr(a, "__name__", "") != "reassign_ownership"]
    task_queue = fresh_id("tq")
    async with Worker(
        dev_env.client,
        task_queue=task_queue,
        workflows=[ResourceTransfer],
        activities=[*activities, renew_then_reassign],
    ):
        transfers = transfer_client(dev_env.client, task_queue)
        state = await transfers.initiate(
            initiator=root(source), destination_account_id=destination.id, resource_id=resource.id
        )
        await transfers.confirm(state.order_id, root(destination))
        result = await transfers.result(state.order_id)
    assert result.status is OrderStatus.COMPLETED

    async with store.engine.connect() as connection:
        query = select(BillingHandoffRow).where(BillingHandoffRow.order_id == state.order_id)
        (handoff,) = (await connection.execute(query)).all()
    assert handoff.cut_over_at > renewed_at[0]  # cut over at the commit, after the renewal
    charges = [c for c in await store.list_charges(resource.id) if c.kind is ChargeKind.AUTO_RENEWAL]
    assert [c.payer_account_id for c in charges] == [source.id]
    # One after the commit is the destination's.
    after = await store.resources.auto_renew(resource.id, at=datetime.now(UTC))
    assert after.payer_account_id == destination.id
