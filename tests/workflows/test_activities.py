"""Every activity run twice, as a retry or a duplicate delivery would: the second run changes nothing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.models import (
    AcceptConfirmationInput,
    DecideInput,
    FinishOrderInput,
    OpenOrderInput,
    OrderStepInput,
    RecordRefusalInput,
)
from activities.transfer_activities import TransferActivities
from domain.codes import ErrorCode
from domain.models import AGREEMENT_VERSION, Account, Action, InstanceStatus, OrderStatus
from tests.factory import Factory, fresh_id, root, verification
from tests.store.builders import snapshot
from tests.stores import Stores
from workflows.messages import Verification


async def twice(store: Stores, activity: Callable[[Any], Awaitable[Any]], input: Any) -> Any:
    env = ActivityEnvironment()
    first = await env.run(activity, input)
    before = await snapshot(store.engine)
    second = await env.run(activity, input)
    assert second == first
    assert await snapshot(store.engine) == before
    return first


def open_input(
    order_id: str,
    resource_id: str,
    source: Account,
    destination: Account,
    answer: Verification,
    now: datetime,
) -> OpenOrderInput:
    return OpenOrderInput(
        order_id=order_id,
        resource_id=resource_id,
        initiator=root(source),
        destination_account_id=destination.id,
        agreement_version=AGREEMENT_VERSION,
        verification=answer,
        created_at=now,
        expires_at=now + timedelta(hours=24),
    )


async def test_every_activity_of_a_completed_transfer_twice(store: Stores, factory: Factory) -> None:
    activities = TransferActivities(store.orders)
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    now = datetime.now(UTC)
    await twice(
        store,
        activities.open_order,
        open_input(order_id, resource.id, source, destination, verification(source), now),
    )
    await twice(
        store,
        activities.record_refusal,
        (
            RecordRefusalInput(
                event_id=fresh_id("ev"),
                order_id=order_id,
                action=Action.CANCEL.value,
                actor_account_id=destination.id,
                code=ErrorCode.NOT_SOURCE.value,
                at=now,
            )
        ),
    )
    await twice(
        store,
        activities.accept_confirmation,
        (
            AcceptConfirmationInput(
                order_id=order_id,
                principal=root(destination),
                verification=verification(destination),
                receiving_config=None,
                at=now,
                event_id=fresh_id("ev"),
            )
        ),
    )
    step = OrderStepInput(order_id=order_id, at=now)
    for run in (
        activities.reassign_ownership,
        activities.hand_off_billing,
        activities.apply_receiving_config,
    ):
        await twice(store, run, step)
    await twice(
        store,
        activities.finish_order,
        (FinishOrderInput(order_id=order_id, status=OrderStatus.COMPLETED, at=now)),
    )
    after = await store.get_resource(resource.id)
    assert after is not None and after.owner_account_id == destination.id and after.locked_by_order_id is None


async def test_compensation_and_decisions_twice(store: Stores, factory: Factory) -> None:
    activities = TransferActivities(store.orders)
    source, destination = await factory.account(), await factory.account()
    cancelled_resource, compensated_resource = await factory.resource(source), await factory.resource(source)
    now = datetime.now(UTC)
    answer = verification(source)

    async def open_(resource_id: str) -> str:
        order_id = fresh_id("to")
        await ActivityEnvironment().run(
            activities.open_order,
            open_input(order_id, resource_id, source, destination, answer, now),
        )
        return order_id

    cancelled = await open_(cancelled_resource.id)
    await twice(
        store,
        activities.decide,
        (DecideInput(order_id=cancelled, status=OrderStatus.CANCELLED, actor_account_id=source.id, at=now)),
    )

    compensated = await open_(compensated_resource.id)
    await store.decide(compensated, status=OrderStatus.TRANSFERRING, at=now, actor_account_id=destination.id)
    step = OrderStepInput(order_id=compensated, at=now)
    await ActivityEnvironment().run(activities.reassign_ownership, step)
    await ActivityEnvironment().run(activities.hand_off_billing, step)
    for run in (activities.restore_billing, activities.restore_ownership):
        await twice(store, run, step)
    back = await store.get_resource(compensated_resource.id)
    assert back is not None and back.owner_account_id == source.id


async def test_a_refusal_is_not_retried(store: Stores, factory: Factory) -> None:
    activities = TransferActivities(store.orders)
    source, destination = await factory.account(), await factory.account()
    running = await factory.resource(source, status=InstanceStatus.RUNNING)
    now = datetime.now(UTC)
    order_id = fresh_id("to")
    await ActivityEnvironment().run(
        activities.open_order,
        open_input(order_id, running.id, source, destination, verification(source), now),
    )
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(
            activities.accept_confirmation,
            AcceptConfirmationInput(
                order_id=order_id,
                principal=root(destination),
                verification=verification(destination),
                receiving_config=None,
                at=now,
                event_id=fresh_id("ev"),
            ),
        )
    assert refused.value.type == ErrorCode.INSTANCE_NOT_STOPPED
    assert refused.value.non_retryable
