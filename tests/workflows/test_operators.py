"""SPEC §4 "Operators" and §5's run outcomes: a cancel from Temporal ends the order cleanly and the run as
cancelled; a failed order is a failed run; the others are completed runs with the order's status."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.models import OrderStepInput
from domain.codes import ErrorCode
from domain.models import Account, Action, OrderStatus, Outcome
from starter.client import TransferClient
from starter.services.repair import RepairService
from tests.factory import (
    Factory,
    freezing_destination_activities,
    fresh_id,
    root,
    transfer_activities,
    transfer_client,
)
from tests.stores import Stores
from workflows.messages import OrderState
from workflows.resource_transfer import ResourceTransfer


async def _worker(
    env: WorkflowEnvironment, activities: list[Callable[..., Any]]
) -> AsyncIterator[TransferClient]:
    task_queue = fresh_id("tq")
    async with Worker(env.client, task_queue=task_queue, workflows=[ResourceTransfer], activities=activities):
        yield transfer_client(env.client, task_queue)


@pytest.fixture
async def transfers(dev_env: WorkflowEnvironment, store: Stores) -> AsyncIterator[TransferClient]:
    async for client in _worker(dev_env, transfer_activities(store).all()):
        yield client


def replacing(store: Stores, name: str, activity_fn: Callable[..., Any]) -> list[Callable[..., Any]]:
    real = transfer_activities(store).all()
    return [*(a for a in real if getattr(a, "__name__", "") != name), activity_fn]


async def opened(transfers: TransferClient, factory: Factory) -> tuple[Account, Account, OrderState]:
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    state = await transfers.initiate(
        initiator=root(source), destination_account_id=destination.id, resource_id=resource.id
    )
    return source, destination, state


async def run_status(transfers: TransferClient, order_id: str) -> WorkflowExecutionStatus.ValueType:
    return (await transfers.handle(order_id).describe()).raw_description.workflow_execution_info.status


async def until_started(started: asyncio.Event) -> None:
    async with asyncio.timeout(20):
        await started.wait()


# --- an operator's cancel -------------------------------------------------------------------------------


async def test_cancelling_a_pending_run_cancels_the_order_and_releases_the_lock(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    _, _, state = await opened(transfers, factory)
    await transfers.handle(state.order_id).cancel()
    with pytest.raises(WorkflowFailureError) as ended:
        await transfers.result(state.order_id)
    assert isinstance(ended.value.cause, CancelledError)
    assert (
        await run_status(transfers, state.order_id)
        == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_CANCELED
    )

    order = await store.orders.get_order(state.order_id)
    assert order is not None and order.status is OrderStatus.CANCELLED
    last = order.events[-1]
    assert (last.actor_account_id, last.action, last.outcome) == (
        None,
        Action.OPERATOR_CANCEL,
        Outcome.ACCEPTED,
    )
    resource = await store.get_resource(state.resource_id)
    assert resource is not None and resource.locked_by_order_id is None
    final = await transfers.state(state.order_id)
    assert (final.status, final.decided_by) == (OrderStatus.CANCELLED, "operator")


def waiting_reassignment(
    store: Stores, *, started: asyncio.Event, release: asyncio.Event
) -> Callable[..., Any]:
    """reassign_ownership that moves ownership, then waits until the test has cancelled or terminated the
    run. (A local activity holds its workflow task: the cancel reaches the run once the hand-off's
    activities are done. The branch "cancelled before ownership moved" is OrderTransactions'
    operator_cancel, tested in tests/store/test_handoff.py.)"""
    real = transfer_activities(store)

    @activity.defn(name="reassign_ownership")
    async def reassign(input: OrderStepInput) -> None:
        await real.reassign_ownership(input)
        started.set()
        await release.wait()

    return reassign


async def test_cancelled_after_ownership_moved_the_hand_off_is_finished(
    dev_env: WorkflowEnvironment, factory: Factory, store: Stores
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    reassign = waiting_reassignment(store, started=started, release=release)
    activities = replacing(store, "reassign_ownership", reassign)
    async for transfers in _worker(dev_env, activities):
        _, destination, state = await opened(transfers, factory)
        # The confirm answers once the workflow task that runs the hand-off's local activities ends.
        confirming = asyncio.create_task(transfers.confirm(state.order_id, root(destination)))
        await until_started(started)
        await transfers.handle(state.order_id).cancel()
        await asyncio.sleep(0.5)  # the cancel request reaches the run while the step is in hand
        release.set()
        with contextlib.suppress(Exception):
            await confirming
        with pytest.raises(WorkflowFailureError):
            await transfers.result(state.order_id)
        final = await transfers.state(state.order_id)
    order = await store.orders.get_order(state.order_id)
    assert order is not None and order.status is OrderStatus.COMPLETED
    assert final.status is OrderStatus.COMPLETED
    resource = await store.get_resource(state.resource_id)
    assert resource is not None and (resource.owner_account_id, resource.locked_by_order_id) == (
        destination.id,
        None,
    )


# --- run outcomes ---------------------------------------------------------------------------------------


async def test_a_failed_order_is_a_failed_run_with_its_code(
    dev_env: WorkflowEnvironment, factory: Factory, store: Stores
) -> None:
    async for transfers in _worker(dev_env, freezing_destination_activities(store)):
        _, destination, state = await opened(transfers, factory)
        await transfers.confirm(state.order_id, root(destination))
        with pytest.raises(WorkflowFailureError) as failed:
            await transfers.result(state.order_id)
        assert (
            await run_status(transfers, state.order_id)
            == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_FAILED
        )
        final = await transfers.state(state.order_id)
    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.type == ErrorCode.ACCOUNT_FROZEN
    assert final.status is OrderStatus.FAILED


async def test_a_rejected_order_is_a_completed_run_whose_details_say_who_and_why(
    transfers: TransferClient, factory: Factory
) -> None:
    _, destination, state = await opened(transfers, factory)
    await transfers.reject(state.order_id, root(destination), reason="wrong account")
    result = await transfers.result(state.order_id)
    assert result.status is OrderStatus.REJECTED
    assert (
        await run_status(transfers, state.order_id)
        == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_COMPLETED
    )
    metadata = await transfers.handle(state.order_id).query("__temporal_workflow_metadata")
    text = str(metadata)
    assert f"Rejected by `{destination.id}`" in text and "wrong account" in text


# --- transfer repair ------------------------------------------------------------------------------------


async def test_repair_cancels_the_pending_order_of_a_terminated_run_once(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    _, _, state = await opened(transfers, factory)
    repairs = RepairService(transfers, store.db, grace=timedelta(0))
    untouched = await repairs.repair(state.order_id)
    assert not untouched.changed and "open" in untouched.note  # a live run is the run's to finish

    await transfers.handle(state.order_id).terminate("probe")
    locked = await store.get_resource(state.resource_id)
    assert locked is not None and locked.locked_by_order_id == state.order_id  # what repair is for

    assert state.order_id in await repairs.open_order_ids()
    done = await repairs.repair(state.order_id)
    assert (done.before, done.after) == (OrderStatus.PENDING, OrderStatus.CANCELLED)
    order = await store.orders.get_order(state.order_id)
    assert order is not None and order.events[-1].action is Action.OPERATOR_CANCEL
    released = await store.get_resource(state.resource_id)
    assert released is not None and released.locked_by_order_id is None
    again = await repairs.repair(state.order_id)
    assert not again.changed
    assert state.order_id not in await repairs.open_order_ids()


async def test_repair_compensates_a_half_done_hand_off_of_a_terminated_run(
    dev_env: WorkflowEnvironment, factory: Factory, store: Stores
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    reassign = waiting_reassignment(store, started=started, release=release)
    async for transfers in _worker(dev_env, replacing(store, "reassign_ownership", reassign)):
        source, destination, state = await opened(transfers, factory)
        confirming = asyncio.create_task(transfers.confirm(state.order_id, root(destination)))
        await until_started(started)
        await transfers.handle(state.order_id).terminate("probe")
        moved = await store.get_resource(state.resource_id)
        assert moved is not None and moved.owner_account_id == destination.id  # half done

        repairs = RepairService(transfers, store.db, grace=timedelta(0))
        fresh = await RepairService(transfers, store.db).repair(state.order_id)
        assert not fresh.changed  # the worker may still hold the closed run's last task
        done = await repairs.repair(state.order_id)
        release.set()
        with contextlib.suppress(Exception):
            await confirming
    assert (done.before, done.after) == (OrderStatus.TRANSFERRING, OrderStatus.FAILED)
    order = await store.orders.get_order(state.order_id)
    assert order is not None and order.failure is not None
    assert order.failure.code is ErrorCode.CANCELLED_BY_OPERATOR
    restored = await store.get_resource(state.resource_id)
    assert restored is not None and (restored.owner_account_id, restored.locked_by_order_id) == (
        source.id,
        None,
    )
