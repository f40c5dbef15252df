"""Durable edges (issue "Trust boundary" 6): an open_order retry adopts its order and refuses another
order's input; a flood of refusals of one actor and action is counted, not recorded, past the first 10;
and a keyed retry of an update answers the first update (an order still opening answers "not now":
tests/api/test_trust_boundary.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

import starter.client
from domain.attestation import ACT_WITHIN
from domain.codes import ErrorCode
from domain.models import Action, OrderStatus, Outcome
from domain.refusals import TransferError
from starter.client import TransferClient
from tests.factory import (
    ATTESTATION_KEY,
    Factory,
    fresh_id,
    root,
    signed,
    transfer_activities,
    transfer_client,
)
from tests.stores import Stores
from tests.workflows.test_activities import its_run_opens, signed_open_input
from worker import build_worker
from workflows.messages import ConfirmRequest
from workflows.resource_transfer import RECORDED_REFUSALS, ResourceTransfer


@pytest.fixture
async def transfers(dev_env: WorkflowEnvironment, store: Stores) -> AsyncIterator[TransferClient]:
    task_queue = fresh_id("tq")
    async with build_worker(dev_env.client, store.db, task_queue, ATTESTATION_KEY):
        yield transfer_client(dev_env.client, task_queue)


async def test_an_open_order_retry_adopts_its_order_and_refuses_another_orders_input(
    store: Stores, factory: Factory
) -> None:
    source, destination = await factory.account(), await factory.account()
    first, second = await factory.resource(source), await factory.resource(source)
    order_id = fresh_id("to")
    now = datetime.now(UTC)
    activities = transfer_activities(store)
    opened = await its_run_opens(activities, signed_open_input(order_id, first.id, source, destination, now))
    again = await its_run_opens(activities, signed_open_input(order_id, first.id, source, destination, now))
    assert again == opened
    with pytest.raises(ApplicationError) as refused:
        await its_run_opens(activities, signed_open_input(order_id, second.id, source, destination, now))
    assert refused.value.type == ErrorCode.VALIDATION_ERROR
    untouched = await store.get_resource(second.id)
    assert untouched is not None and untouched.locked_by_order_id is None


async def test_refusals_past_the_first_ten_of_one_actor_and_action_are_counted_not_recorded(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    state = await transfers.initiate(
        initiator=root(source), destination_account_id=destination.id, resource_id=resource.id
    )
    handle = transfers.handle(state.order_id)
    flood = RECORDED_REFUSALS + 5
    for _ in range(flood):  # the source trying to confirm its own order: NOT_DESTINATION each time
        request = signed(
            ConfirmRequest(agreement_accepted=True), root(source), Action.CONFIRM, state.order_id
        )
        await handle.signal(ResourceTransfer.confirm_signal, request)
    # The last signal is processed once a query sees all of them counted.
    for _ in range(100):
        counted = await transfers.state(state.order_id)
        order = await store.orders.get_order(state.order_id)
        assert order is not None
        refused = [e for e in order.events if e.outcome is Outcome.REFUSED]
        if counted.unrecorded_refusals == flood - RECORDED_REFUSALS and len(refused) == RECORDED_REFUSALS:
            break
        await asyncio.sleep(0.1)
    assert counted.unrecorded_refusals == flood - RECORDED_REFUSALS
    assert [(e.actor_account_id, e.code) for e in refused] == [
        (source.id, ErrorCode.NOT_DESTINATION)
    ] * RECORDED_REFUSALS


async def test_a_keyed_retry_of_an_update_answers_the_first_update(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    state = await transfers.initiate(
        initiator=root(source), destination_account_id=destination.id, resource_id=resource.id
    )
    first = await transfers.cancel(state.order_id, root(source), update_id="cancel-once")
    # The answer was lost; the retry names the same update: the first result, not ORDER_NOT_PENDING.
    retried = await transfers.cancel(state.order_id, root(source), update_id="cancel-once")
    assert retried == first
    order = await store.orders.get_order(state.order_id)
    assert order is not None and [e.action for e in order.events].count(Action.CANCEL) == 1


async def test_a_keyed_retry_after_an_attempt_that_came_too_late_acts(
    transfers: TransferClient, factory: Factory, store: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attempt that reached its worker too late did nothing, and its ids keep that answer: a retry
    with the same key takes the next ids and acts; a retry after that answers what it did."""
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    signed_at = [datetime.now(UTC) - 2 * ACT_WITHIN]  # the first signature: long before the worker

    def clock() -> datetime:
        return signed_at.pop() if signed_at else datetime.now(UTC)

    monkeypatch.setattr(starter.client, "now", clock)
    opened = await transfers.initiate(
        initiator=root(source),
        destination_account_id=destination.id,
        resource_id=resource.id,
        order_id="to-keyed",
        update_id="open-keyed",
    )
    assert (opened.order_id, opened.status) == ("to-keyed-1", OrderStatus.PENDING)
    again = await transfers.initiate(
        initiator=root(source),
        destination_account_id=destination.id,
        resource_id=resource.id,
        order_id="to-keyed",
        update_id="open-keyed",
    )
    assert again == opened

    signed_at.append(datetime.now(UTC) - 2 * ACT_WITHIN)
    with pytest.raises(TransferError) as late:  # an unkeyed update has no next id: "not now"
        await transfers.cancel(opened.order_id, root(source))
    assert late.value.code is ErrorCode.SERVICE_UNAVAILABLE
    signed_at.append(datetime.now(UTC) - 2 * ACT_WITHIN)
    with pytest.raises(TransferError) as late:  # the keyed attempt too late: nothing done
        await transfers.cancel(opened.order_id, root(source), update_id="cancel-keyed")
    assert late.value.code is ErrorCode.SERVICE_UNAVAILABLE
    cancelled = await transfers.cancel(opened.order_id, root(source), update_id="cancel-keyed")
    assert cancelled.status is OrderStatus.CANCELLED
    assert await transfers.cancel(opened.order_id, root(source), update_id="cancel-keyed") == cancelled
    assert await store.orders.get_order("to-keyed") is None  # the late attempt opened nothing
    order = await store.orders.get_order(opened.order_id)
    assert order is not None and [e.action for e in order.events] == [Action.INITIATE, Action.CANCEL]
