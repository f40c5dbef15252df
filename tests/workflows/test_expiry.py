"""The 24-hour confirmation window, with the real 24 hours, on the time-skipping test server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from domain.models import AGREEMENT_VERSION, Action, OrderStatus, Outcome
from starter.devstack.binaries import temporal_test_server
from tests.factory import ATTESTATION_KEY, Factory, fresh_id, root, signed
from tests.stores import Stores
from worker import add_search_attributes, build_worker
from workflows import search_attributes
from workflows.messages import DEFAULT_CONFIRM_WINDOW, OrderState, TransferInput
from workflows.resource_transfer import ResourceTransfer


@pytest.fixture(scope="module")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=temporal_test_server()
    )
    # The test server cannot list search attributes, but takes new ones.
    await add_search_attributes(env.client, "default", search_attributes.ALL)
    yield env
    await env.shutdown()


async def test_an_unanswered_order_expires_after_24_hours(
    time_skipping_env: WorkflowEnvironment, factory: Factory, store: Stores
) -> None:
    assert timedelta(hours=24) == DEFAULT_CONFIRM_WINDOW
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    task_queue = fresh_id("tq")
    client = time_skipping_env.client
    async with build_worker(client, store.db, task_queue, ATTESTATION_KEY):
        handle = await client.start_workflow(
            ResourceTransfer.run,
            signed(
                TransferInput(
                    order_id=order_id,
                    resource_id=resource.id,
                    source_account_id=source.id,
                    destination_account_id=destination.id,
                    agreement_version=AGREEMENT_VERSION,
                ),
                root(source),
                Action.INITIATE,
                order_id,
            ),
            id=order_id,
            task_queue=task_queue,
        )
        started = await time_skipping_env.get_current_time()
        result = await handle.result()
        elapsed = await time_skipping_env.get_current_time() - started
        state: OrderState = await handle.query(ResourceTransfer.status)

    assert result.status is OrderStatus.EXPIRED
    assert state.expires_at - state.created_at == timedelta(hours=24)
    assert elapsed >= timedelta(hours=24)
    order = await store.orders.get_order(order_id)
    assert order is not None and order.status is OrderStatus.EXPIRED
    assert (order.events[-1].action, order.events[-1].outcome) == (Action.EXPIRE, Outcome.ACCEPTED)
    after = await store.get_resource(resource.id)
    assert after is not None and after.locked_by_order_id is None
    assert after.owner_account_id == source.id
