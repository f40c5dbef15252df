"""ResourceTransfer on a real Temporal dev server with the real activities and store.

Updates are tested here (the time-skipping server mishandles them); the 24-hour expiry is in
test_expiry.py on the time-skipping server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.codes import ErrorCode
from domain.models import (
    AGREEMENT_VERSION,
    Account,
    AccountKind,
    Action,
    InstanceStatus,
    Order,
    OrderStatus,
    Outcome,
    Principal,
    PrincipalKind,
    StepName,
    StepStatus,
)
from domain.refusals import TransferError
from domain.verification import code_at
from starter.client import TransferClient
from tests.factory import (
    Factory,
    freezing_destination_activities,
    fresh_id,
    root,
    verification,
    wrong_verification,
)
from tests.stores import Stores
from worker import build_worker
from workflows import search_attributes
from workflows.messages import (
    CancelRequest,
    ConfirmRequest,
    OrderState,
    RejectRequest,
    TransferResult,
    Verification,
)
from workflows.resource_transfer import ResourceTransfer


@pytest.fixture
async def transfers(dev_env: WorkflowEnvironment, store: Stores) -> AsyncIterator[TransferClient]:
    task_queue = fresh_id("tq")
    async with build_worker(dev_env.client, store.db, task_queue):
        yield TransferClient(dev_env.client, task_queue=task_queue)


async def parties(factory: Factory) -> tuple[Account, Account]:
    return await factory.account(), await factory.account()


def confirm_request(destination: Account, **fields: Any) -> ConfirmRequest:
    values: dict[str, Any] = {
        "principal": root(destination),
        "agreement_accepted": True,
        "agreement_version": AGREEMENT_VERSION,
        "verification": verification(destination),
        **fields,
    }
    return ConfirmRequest(**values)


async def open_order(
    transfers: TransferClient, factory: Factory, **resource_fields: Any
) -> tuple[Account, Account, OrderState]:
    source, destination = await parties(factory)
    resource = await factory.resource(source, **resource_fields)
    state = await transfers.initiate(
        initiator=root(source),
        destination_account_id=destination.id,
        resource_id=resource.id,
        verification=verification(source),
    )
    return source, destination, state


async def history_event_types(handle: WorkflowHandle[Any, Any]) -> list[int]:
    return [event.event_type for event in (await handle.fetch_history()).events]


async def test_full_transfer_moves_ownership_and_billing(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, destination, state = await open_order(transfers, factory)
    assert state.status is OrderStatus.PENDING
    resource = await store.get_resource(state.resource_id)
    assert resource is not None and resource.locked_by_order_id == state.order_id

    confirmed = await transfers.confirm(
        state.order_id,
        confirm_request(destination, receiving_config={"resource_group": "rg-web", "tags": {"team": "a"}}),
    )
    assert confirmed.status is OrderStatus.TRANSFERRING

    result = await transfers.result(state.order_id)
    assert result == TransferResult(order_id=state.order_id, status=OrderStatus.COMPLETED)

    resource = await store.get_resource(state.resource_id)
    assert resource is not None
    assert resource.owner_account_id == destination.id
    assert resource.locked_by_order_id is None
    assert resource.status is InstanceStatus.STOPPED  # a VPC instance stays stopped
    assert resource.resource_group == "rg-web" and resource.tags == {"team": "a"}

    order = await store.get_order(state.order_id)
    assert order is not None and order.status is OrderStatus.COMPLETED
    assert order.confirmed_at is not None and order.completed_at is not None
    assert [step.name for step in order.steps] == [
        StepName.SOURCE_VERIFICATION,
        StepName.OPEN_ORDER,
        StepName.DESTINATION_VERIFICATION,
        StepName.CONFIRMATION_CHECK,
        StepName.OWNERSHIP_REASSIGNMENT,
        StepName.BILLING_HANDOFF,
        StepName.RECEIVING_CONFIG,
    ]
    assert all(step.status is StepStatus.SUCCEEDED for step in order.steps)
    assert [(e.action, e.outcome, e.actor_account_id) for e in order.events] == [
        (Action.INITIATE, Outcome.ACCEPTED, source.id),
        (Action.CONFIRM, Outcome.ACCEPTED, destination.id),
        (Action.COMPLETE, Outcome.ACCEPTED, None),
    ]

    handle = transfers.handle(state.order_id)
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(search_attributes.TRANSFER_STATUS) == "completed"
    assert attributes.get(search_attributes.SOURCE_ACCOUNT_ID) == source.id
    assert attributes.get(search_attributes.DESTINATION_ACCOUNT_ID) == destination.id
    assert attributes.get(search_attributes.RESOURCE_ID) == state.resource_id
    assert attributes.get(search_attributes.RESOURCE_PRODUCT) == "ecs"
    assert attributes.get(search_attributes.TRANSFER_EXPIRES_AT) == state.expires_at


async def test_initiate_with_a_wrong_code_is_refused_and_writes_nothing(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, destination = await parties(factory)
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    with pytest.raises(TransferError) as refused:
        await transfers.initiate(
            initiator=root(source),
            destination_account_id=destination.id,
            resource_id=resource.id,
            verification=wrong_verification(source),
            order_id=order_id,
        )
    assert refused.value.code is ErrorCode.VERIFICATION_FAILED
    assert await store.get_order(order_id) is None
    after = await store.get_resource(resource.id)
    assert after is not None and after.locked_by_order_id is None
    result = await transfers.result(order_id)
    assert result.status is None and result.refusal is not None
    assert result.refusal.code is ErrorCode.VERIFICATION_FAILED
    attributes = (await transfers.handle(order_id).describe()).typed_search_attributes
    assert attributes.get(search_attributes.TRANSFER_STATUS) == search_attributes.REFUSED


async def test_a_ram_user_cannot_initiate(transfers: TransferClient, factory: Factory) -> None:
    source, destination = await parties(factory)
    resource = await factory.resource(source)
    ram_user = Principal(kind=PrincipalKind.RAM_USER, account_id=source.id, ram_user_id="ops")
    with pytest.raises(TransferError) as refused:
        await transfers.initiate(
            initiator=ram_user,
            destination_account_id=destination.id,
            resource_id=resource.id,
            verification=verification(source),
        )
    assert refused.value.code is ErrorCode.RAM_USER_NOT_ALLOWED


async def test_account_rules_refuse_before_the_code_is_used(
    transfers: TransferClient, factory: Factory
) -> None:
    source = await factory.account()
    destination = await factory.account(verified=False, entity_id=None, entity_name=None)
    resource = await factory.resource(source)
    answer = verification(source)
    with pytest.raises(TransferError) as refused:
        await transfers.initiate(
            initiator=root(source),
            destination_account_id=destination.id,
            resource_id=resource.id,
            verification=answer,
        )
    assert refused.value.code is ErrorCode.ACCOUNT_NOT_VERIFIED
    # The same code still works: a refusal before verification does not use it up.
    other = await factory.account()
    state = await transfers.initiate(
        initiator=root(source),
        destination_account_id=other.id,
        resource_id=resource.id,
        verification=answer.model_copy(update={"verification_id": fresh_id("v")}),
    )
    assert state.status is OrderStatus.PENDING


async def test_one_open_order_per_resource(transfers: TransferClient, factory: Factory) -> None:
    source, destination, state = await open_order(transfers, factory)
    with pytest.raises(TransferError) as refused:
        await transfers.initiate(
            initiator=root(source),
            destination_account_id=destination.id,
            resource_id=state.resource_id,
            verification=verification(source, steps_ahead=1),
        )
    assert refused.value.code is ErrorCode.RESOURCE_IN_TRANSFER


async def test_initiate_is_idempotent_by_order_id(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, destination = await parties(factory)
    resource = await factory.resource(source)
    answer = verification(source)
    order_id = fresh_id("to")
    first, second = await asyncio.gather(
        *(
            transfers.initiate(
                initiator=root(source),
                destination_account_id=destination.id,
                resource_id=resource.id,
                verification=answer,
                order_id=order_id,
            )
            for _ in range(2)
        )
    )
    assert first == second
    order = await store.get_order(order_id)
    assert order is not None and len([e for e in order.events if e.action is Action.INITIATE]) == 1


async def test_cancel_by_the_source_releases_the_lock(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, destination, state = await open_order(transfers, factory)
    cancelled = await transfers.cancel(state.order_id, root(source))
    assert cancelled.status is OrderStatus.CANCELLED
    assert (await transfers.result(state.order_id)).status is OrderStatus.CANCELLED
    resource = await store.get_resource(state.resource_id)
    assert resource is not None and resource.locked_by_order_id is None
    assert resource.owner_account_id == source.id
    attributes = (await transfers.handle(state.order_id).describe()).typed_search_attributes
    assert attributes.get(search_attributes.TRANSFER_STATUS) == "cancelled"
    # The run is closed: a late confirm learns why.
    with pytest.raises(TransferError) as late:
        await transfers.confirm(state.order_id, confirm_request(destination))
    assert late.value.code is ErrorCode.ORDER_NOT_PENDING
    assert late.value.details == {"status": "cancelled"}


async def test_reject_by_the_destination(transfers: TransferClient, factory: Factory, store: Stores) -> None:
    _, destination, state = await open_order(transfers, factory)
    rejected = await transfers.reject(state.order_id, root(destination), reason="not ours")
    assert rejected.status is OrderStatus.REJECTED
    order = await store.get_order(state.order_id)
    assert order is not None and order.status is OrderStatus.REJECTED
    assert order.events[-1].action is Action.REJECT and order.events[-1].actor_account_id == destination.id


@pytest.mark.parametrize(
    ("action", "actor", "code"),
    [
        ("confirm", "source", ErrorCode.NOT_DESTINATION),
        ("reject", "source", ErrorCode.NOT_DESTINATION),
        ("cancel", "destination", ErrorCode.NOT_SOURCE),
        ("cancel", "stranger", ErrorCode.ORDER_NOT_FOUND),
        ("confirm", "ram_user", ErrorCode.RAM_USER_NOT_ALLOWED),
    ],
)
async def test_validators_refuse_a_wrong_actor_before_anything_is_written(
    transfers: TransferClient,
    factory: Factory,
    store: Stores,
    action: str,
    actor: str,
    code: ErrorCode,
) -> None:
    source, destination, state = await open_order(transfers, factory)
    principals = {
        "source": root(source),
        "destination": root(destination),
        "stranger": root(await factory.account()),
        "ram_user": Principal(kind=PrincipalKind.RAM_USER, account_id=destination.id, ram_user_id="ops"),
    }
    handle = transfers.handle(state.order_id)
    before = await history_event_types(handle)
    order_before = await store.get_order(state.order_id)
    with pytest.raises(TransferError) as refused:
        if action == "confirm":
            await transfers.confirm(state.order_id, confirm_request(destination, principal=principals[actor]))
        elif action == "cancel":
            await transfers.cancel(state.order_id, principals[actor])
        else:
            await transfers.reject(state.order_id, principals[actor])
    assert refused.value.code is code
    assert await history_event_types(handle) == before
    assert await store.get_order(state.order_id) == order_before
    assert (await transfers.state(state.order_id)).status is OrderStatus.PENDING


async def test_confirm_without_the_agreement_is_refused(transfers: TransferClient, factory: Factory) -> None:
    _, destination, state = await open_order(transfers, factory)
    with pytest.raises(TransferError) as refused:
        await transfers.confirm(state.order_id, confirm_request(destination, agreement_accepted=False))
    assert refused.value.code is ErrorCode.AGREEMENT_NOT_ACCEPTED


async def test_a_running_vpc_instance_refuses_the_confirm_and_the_order_stays_pending(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    _, destination, state = await open_order(transfers, factory, status=InstanceStatus.RUNNING)
    with pytest.raises(TransferError) as refused:
        await transfers.confirm(state.order_id, confirm_request(destination))
    assert refused.value.code is ErrorCode.INSTANCE_NOT_STOPPED
    assert (await transfers.state(state.order_id)).status is OrderStatus.PENDING
    order = await store.get_order(state.order_id)
    assert order is not None and order.status is OrderStatus.PENDING
    refusal = order.events[-1]
    assert (refusal.action, refusal.outcome, refusal.code) == (
        Action.CONFIRM,
        Outcome.REFUSED,
        ErrorCode.INSTANCE_NOT_STOPPED,
    )

    await store.set_instance_status(state.resource_id, InstanceStatus.STOPPED)
    confirmed = await transfers.confirm(
        state.order_id, confirm_request(destination, verification=verification(destination, steps_ahead=1))
    )
    assert confirmed.status is OrderStatus.TRANSFERRING
    assert (await transfers.result(state.order_id)).status is OrderStatus.COMPLETED


async def test_a_wrong_destination_code_refuses_the_confirm(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    _, destination, state = await open_order(transfers, factory)
    with pytest.raises(TransferError) as refused:
        await transfers.confirm(
            state.order_id, confirm_request(destination, verification=wrong_verification(destination))
        )
    assert refused.value.code is ErrorCode.VERIFICATION_FAILED
    order = await store.get_order(state.order_id)
    assert order is not None and order.status is OrderStatus.PENDING
    assert order.events[-1].code == ErrorCode.VERIFICATION_FAILED


async def test_exactly_one_of_confirm_cancel_and_reject_wins(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, destination, state = await open_order(transfers, factory)
    outcomes = await asyncio.gather(
        transfers.confirm(state.order_id, confirm_request(destination)),
        transfers.cancel(state.order_id, root(source)),
        transfers.reject(state.order_id, root(destination)),
        return_exceptions=True,
    )
    winners = [o for o in outcomes if isinstance(o, OrderState)]
    losers = [o for o in outcomes if isinstance(o, TransferError)]
    assert len(winners) == 1 and len(losers) == 2, outcomes
    assert {loser.code for loser in losers} == {ErrorCode.ORDER_NOT_PENDING}
    final = await transfers.result(state.order_id)
    expected = {
        OrderStatus.TRANSFERRING: OrderStatus.COMPLETED,
        OrderStatus.CANCELLED: OrderStatus.CANCELLED,
        OrderStatus.REJECTED: OrderStatus.REJECTED,
    }
    assert winners[0].status is not None and final.status is expected[winners[0].status]
    order = await store.get_order(state.order_id)
    assert order is not None
    decisions = [e for e in order.events if e.action in (Action.CONFIRM, Action.CANCEL, Action.REJECT)]
    assert len([e for e in decisions if e.outcome is Outcome.ACCEPTED]) == 1


async def order_with_events(store: Stores, order_id: str, *, count: int) -> Order:
    """The order once it has `count` events: signals are not answered, so their effect is polled."""
    for _ in range(200):
        order = await store.get_order(order_id)
        assert order is not None
        if len(order.events) >= count:
            return order
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} never reached {count} events")


async def test_an_invalid_signal_is_recorded_and_ignored(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, destination, state = await open_order(transfers, factory)
    handle = transfers.handle(state.order_id)
    # The source pretends to confirm its own order; nothing in a signal is trusted.
    await handle.signal(ResourceTransfer.confirm_signal, confirm_request(destination, principal=root(source)))
    await handle.signal(ResourceTransfer.reject_signal, RejectRequest(principal=root(source)))
    order = await order_with_events(store, state.order_id, count=3)
    assert [(e.action, e.outcome, e.code) for e in order.events[1:]] == [
        (Action.CONFIRM, Outcome.REFUSED, ErrorCode.NOT_DESTINATION),
        (Action.REJECT, Outcome.REFUSED, ErrorCode.NOT_DESTINATION),
    ]
    assert (await transfers.state(state.order_id)).status is OrderStatus.PENDING

    await handle.signal(ResourceTransfer.cancel_signal, CancelRequest(principal=root(source)))
    assert (await transfers.result(state.order_id)).status is OrderStatus.CANCELLED


async def test_a_failure_after_ownership_moved_is_compensated(
    dev_env: WorkflowEnvironment, factory: Factory, store: Stores
) -> None:
    """The destination is frozen between the confirm and the billing hand-off: billing refuses,
    ownership and billing are restored, then the order is failed and the lock released."""
    task_queue = fresh_id("tq")
    async with Worker(
        dev_env.client,
        task_queue=task_queue,
        workflows=[ResourceTransfer],
        activities=freezing_destination_activities(store),
    ):
        transfers = TransferClient(dev_env.client, task_queue=task_queue)
        source, destination, state = await open_order(transfers, factory)
        await transfers.confirm(state.order_id, confirm_request(destination))
        result = await transfers.result(state.order_id)

    assert result.status is OrderStatus.FAILED
    assert result.failure is not None and result.failure.code is ErrorCode.ACCOUNT_FROZEN
    resource = await store.get_resource(state.resource_id)
    assert resource is not None
    assert resource.owner_account_id == source.id
    assert resource.locked_by_order_id is None
    order = await store.get_order(state.order_id)
    assert order is not None and order.status is OrderStatus.FAILED
    steps = {step.name: step for step in order.steps}
    assert steps[StepName.BILLING_HANDOFF].status is StepStatus.FAILED
    assert steps[StepName.BILLING_RESTORE].status is StepStatus.SUCCEEDED
    assert steps[StepName.OWNERSHIP_RESTORE].status is StepStatus.SUCCEEDED
    assert order.events[-1].action is Action.FAIL and order.events[-1].code == ErrorCode.ACCOUNT_FROZEN


async def test_the_destination_limits_hold_across_orders(transfers: TransferClient, factory: Factory) -> None:
    source = await factory.account()
    first = await factory.account(kind=AccountKind.ENTERPRISE)
    second = await factory.account(kind=AccountKind.ENTERPRISE)
    one, two = await factory.resource(source), await factory.resource(source)
    await transfers.initiate(
        initiator=root(source),
        destination_account_id=first.id,
        resource_id=one.id,
        verification=verification(source),
    )
    with pytest.raises(TransferError) as refused:
        await transfers.initiate(
            initiator=root(source),
            destination_account_id=second.id,
            resource_id=two.id,
            verification=verification(source, steps_ahead=1),
        )
    assert refused.value.code is ErrorCode.ENTERPRISE_DESTINATION_LIMIT


async def test_history_of_a_completed_transfer_stays_short(
    transfers: TransferClient, factory: Factory
) -> None:
    _, destination, state = await open_order(transfers, factory)
    await transfers.confirm(state.order_id, confirm_request(destination))
    await transfers.result(state.order_id)
    events = await history_event_types(transfers.handle(state.order_id))
    print(f"history of one completed transfer: {len(events)} events")
    assert events[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    assert len(events) < 80


async def test_a_late_initiate_retry_does_not_reopen_a_closed_order(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, _, state = await open_order(transfers, factory)
    await transfers.cancel(state.order_id, root(source))
    await transfers.result(state.order_id)
    retried = await transfers.initiate(
        initiator=root(source),
        destination_account_id=state.destination_account_id,
        resource_id=state.resource_id,
        verification=verification(source, steps_ahead=1),
        order_id=state.order_id,
    )
    assert retried.status is OrderStatus.CANCELLED
    runs = [run async for run in transfers.client.list_workflows(f'WorkflowId = "{state.order_id}"')]
    assert len(runs) == 1
    resource = await store.get_resource(state.resource_id)
    assert resource is not None and resource.locked_by_order_id is None


async def test_a_confirm_signal_is_checked_at_its_arrival_not_at_the_time_it_claims(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    """A code from ten minutes ago, claimed as received then, is refused: signals are not trusted."""
    _, destination, state = await open_order(transfers, factory)
    then = datetime.now(UTC) - timedelta(minutes=10)
    stale = Verification(
        verification_id=fresh_id("v"), code=code_at(destination.mfa_secret, then), received_at=then
    )
    await transfers.handle(state.order_id).signal(
        ResourceTransfer.confirm_signal, confirm_request(destination, verification=stale)
    )
    order = await order_with_events(store, state.order_id, count=2)
    refused = order.events[-1]
    assert (refused.action, refused.outcome, refused.code) == (
        Action.CONFIRM,
        Outcome.REFUSED,
        ErrorCode.VERIFICATION_FAILED,
    )
    assert (await transfers.state(state.order_id)).status is OrderStatus.PENDING


async def test_a_window_that_closed_while_the_order_opened_expires_it_at_once(
    dev_env: WorkflowEnvironment, store: Stores, factory: Factory
) -> None:
    task_queue = fresh_id("tq")
    async with build_worker(dev_env.client, store.db, task_queue):
        transfers = TransferClient(
            dev_env.client, task_queue=task_queue, confirm_window=timedelta(milliseconds=1)
        )
        _, _, state = await open_order(transfers, factory)
        assert (await transfers.result(state.order_id)).status is OrderStatus.EXPIRED
    resource = await store.get_resource(state.resource_id)
    assert resource is not None and resource.locked_by_order_id is None
