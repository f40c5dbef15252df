"""The hand-off after a confirm, and its compensation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.codes import ErrorCode
from domain.models import Action, InstanceStatus, Order, OrderStatus, ReceivingConfig
from domain.refusals import TransferError
from store.tables import BillingHandoffRow, ResourceRow
from tests.store.builders import NOW, pending_order
from tests.stores import Stores


async def transferring_order(store: Stores, config: ReceivingConfig | None = None) -> Order:
    order = await pending_order(store)
    return await store.orders.decide(
        order.order_id,
        status=OrderStatus.TRANSFERRING,
        at=NOW,
        actor_account_id="dst",
        receiving_config=config,
    )


async def handoffs(engine: AsyncEngine) -> list[tuple[object, ...]]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(BillingHandoffRow))
        return [tuple(row) for row in rows]


async def test_the_hand_off_moves_ownership_billing_and_receiving_config(
    store: Stores, engine: AsyncEngine
) -> None:
    config = ReceivingConfig(resource_group="rg-dst", tags={"team": "dst", "env": "prod"})
    order = await transferring_order(store, config)
    async with engine.begin() as connection:
        await connection.execute(
            update(ResourceRow)
            .where(ResourceRow.id == order.resource_id)
            .values(tags={"team": "src", "x": "1"})
        )
    cut_over = NOW + timedelta(minutes=1)
    await store.orders.reassign_ownership(order.order_id, at=cut_over)
    await store.orders.hand_off_billing(order.order_id)
    await store.orders.apply_receiving_config(order.order_id)
    moved = await store.get_resource(order.resource_id)
    assert moved is not None
    assert moved.owner_account_id == "dst" and moved.status is InstanceStatus.STOPPED
    assert moved.resource_group == "rg-dst" and moved.tags == {"team": "dst", "x": "1", "env": "prod"}
    assert moved.locked_by_order_id == order.order_id  # until the order finishes
    assert await handoffs(engine) == [(order.order_id, order.resource_id, "src", "dst", cut_over, None)]
    await store.orders.finish(order.order_id, status=OrderStatus.COMPLETED, at=cut_over)
    done = await store.get_resource(order.resource_id)
    assert done is not None and done.owner_account_id == "dst" and done.locked_by_order_id is None
    assert done.expires_at == moved.expires_at  # term and expiry unchanged


async def test_a_frozen_destination_refuses_billing_and_the_hand_off_is_undone(
    store: Stores, engine: AsyncEngine
) -> None:
    order = await transferring_order(store)
    await store.orders.reassign_ownership(order.order_id, at=NOW)
    await store.provisioning.update_account("dst", frozen=True)
    with pytest.raises(TransferError) as refused:
        await store.orders.hand_off_billing(order.order_id)
    assert refused.value.code is ErrorCode.ACCOUNT_FROZEN
    # Billing cut over with the ownership (one transaction); the compensation reverts both.
    assert [row[-1] for row in await handoffs(engine)] == [None]
    await store.orders.restore_billing(order.order_id, at=NOW)
    assert [row[-1] for row in await handoffs(engine)] == [NOW]
    await store.orders.restore_ownership(order.order_id)
    await store.orders.restore_ownership(order.order_id)
    restored = await store.get_resource(order.resource_id)
    assert restored is not None and restored.owner_account_id == "src"


async def test_restore_billing_reverts_the_hand_off_once(store: Stores, engine: AsyncEngine) -> None:
    order = await transferring_order(store)
    await store.orders.reassign_ownership(order.order_id, at=NOW)
    await store.orders.hand_off_billing(order.order_id)
    reverted = NOW + timedelta(minutes=2)
    await store.orders.restore_billing(order.order_id, at=reverted)
    await store.orders.restore_billing(order.order_id, at=reverted + timedelta(minutes=1))
    assert [row[-1] for row in await handoffs(engine)] == [reverted]
    await store.orders.restore_ownership(order.order_id)
    await store.orders.finish(order.order_id, status=OrderStatus.FAILED, at=reverted)
    resource = await store.get_resource(order.resource_id)
    assert resource is not None and (resource.owner_account_id, resource.locked_by_order_id) == ("src", None)


async def test_hand_off_steps_need_a_transferring_order(store: Stores) -> None:
    order = await pending_order(store)
    calls = [
        store.orders.reassign_ownership(order.order_id, at=NOW),
        store.orders.hand_off_billing(order.order_id),
        store.orders.apply_receiving_config(order.order_id),
        store.orders.restore_billing(order.order_id, at=NOW),
        store.orders.restore_ownership(order.order_id),
    ]
    for call in calls:
        with pytest.raises(TransferError) as refused:
            await call
        assert (refused.value.code, refused.value.details) == (
            ErrorCode.ORDER_NOT_PENDING,
            {"status": "pending"},
        )
    with pytest.raises(TransferError) as refused:
        await store.orders.reassign_ownership("ghost", at=NOW)
    assert refused.value.code is ErrorCode.ORDER_NOT_FOUND


async def test_ownership_moves_only_between_the_parties(store: Stores, engine: AsyncEngine) -> None:
    order = await transferring_order(store)
    async with engine.begin() as connection:
        await connection.execute(
            update(ResourceRow).where(ResourceRow.id == order.resource_id).values(owner_account_id="dst")
        )
    # already the destination's: nothing to do
    await store.orders.reassign_ownership(order.order_id, at=NOW)
    async with engine.begin() as connection:  # somebody else's now (it cannot happen, but if it did)
        await connection.execute(
            update(ResourceRow).where(ResourceRow.id == order.resource_id).values(locked_by_order_id=None)
        )
        await connection.execute(
            update(ResourceRow).where(ResourceRow.id == order.resource_id).values(owner_account_id="src")
        )
    with pytest.raises(TransferError) as refused:
        # the order no longer holds the lock
        await store.orders.reassign_ownership(order.order_id, at=NOW)
    assert refused.value.code is ErrorCode.RESOURCE_NOT_FOUND


# --- an operator's cancel (SPEC §4) ---------------------------------------------------------------------


async def test_an_operator_s_cancel_of_a_pending_order_cancels_it(store: Stores) -> None:
    order = await pending_order(store)
    assert await store.orders.operator_cancel(order.order_id, at=NOW) is OrderStatus.CANCELLED
    cancelled = await store.orders.get_order(order.order_id)
    assert cancelled is not None and cancelled.events[-1].action is Action.OPERATOR_CANCEL
    assert cancelled.events[-1].actor_account_id is None
    resource = await store.get_resource(order.resource_id)
    assert resource is not None and resource.locked_by_order_id is None
    assert await store.orders.operator_cancel(order.order_id, at=NOW) is OrderStatus.CANCELLED  # once


async def test_an_operator_s_cancel_before_ownership_moved_fails_the_order(store: Stores) -> None:
    order = await transferring_order(store)
    assert await store.orders.operator_cancel(order.order_id, at=NOW) is OrderStatus.FAILED
    failed = await store.orders.get_order(order.order_id)
    assert failed is not None and failed.failure is not None
    assert failed.failure.code is ErrorCode.CANCELLED_BY_OPERATOR
    resource = await store.get_resource(order.resource_id)
    assert resource is not None and (resource.owner_account_id, resource.locked_by_order_id) == ("src", None)


async def test_an_operator_s_cancel_after_ownership_moved_leaves_the_hand_off_to_finish(
    store: Stores,
) -> None:
    order = await transferring_order(store)
    await store.orders.reassign_ownership(order.order_id, at=NOW)
    assert await store.orders.operator_cancel(order.order_id, at=NOW) is OrderStatus.TRANSFERRING
    still = await store.orders.get_order(order.order_id)
    assert still is not None and still.status is OrderStatus.TRANSFERRING
    assert await store.orders.operator_cancel("ghost", at=NOW) is None
