"""Refused clean-up (SPEC §4: the lock is released on every terminal path): when the database refuses a
run's last write because another hand changed the order, the activity alerts, releases the lock of the
closed order and lets the run end, instead of failing (or retrying) with the lock held."""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio.testing import ActivityEnvironment

from activities.models import DecideInput, FinishOrderInput
from domain.models import OrderStatus
from store.tables import ResourceRow
from tests.factory import Factory, transfer_activities
from tests.store.builders import open_args
from tests.stores import Stores


async def test_a_refused_finish_releases_the_lock_of_the_closed_order(
    store: Stores, factory: Factory
) -> None:
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    order_id = f"to-{resource.id}"
    now = datetime.now(UTC)
    await store.orders.open_order(**open_args(order_id, resource.id, source.id, destination.id, at=now))
    await store.orders.decide(
        order_id, status=OrderStatus.TRANSFERRING, at=now, actor_account_id=destination.id
    )
    # Another hand closed the order meanwhile, and left the lock (a lost write, say).
    await store.orders.finish(order_id, status=OrderStatus.FAILED, at=now)
    async with store.db.write() as session:
        row = await session.get(ResourceRow, resource.id)
        assert row is not None
        row.locked_by_order_id = order_id

    activities = transfer_activities(store)
    env = ActivityEnvironment()
    await env.run(
        activities.finish_order, FinishOrderInput(order_id=order_id, status=OrderStatus.COMPLETED, at=now)
    )
    await env.run(activities.decide, DecideInput(order_id=order_id, status=OrderStatus.EXPIRED, at=now))
    order = await store.orders.get_order(order_id)
    assert order is not None and order.status is OrderStatus.FAILED  # the other hand's status stands
    released = await store.get_resource(resource.id)
    assert released is not None and released.locked_by_order_id is None
