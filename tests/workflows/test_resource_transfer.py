"""ResourceTransfer on a real Temporal dev server with the real activities and store.

Updates are tested here (the time-skipping server mishandles them); the 24-hour expiry is in
test_expiry.py on the time-skipping server. TOTP codes are the service's (tests/api): here every message
carries the service's attestation, and the trust-boundary tests send what a client that reaches Temporal
directly could send.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.models import OpenOrderInput, OpenOrderResult
from activities.order_transactions import StepName
from domain.attestation import derive_key
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
    ReceivingConfig,
    StepStatus,
)
from domain.refusals import TransferError
from starter.client import TransferClient, sign
from tests.factory import (
    ATTESTATION_KEY,
    Factory,
    freezing_destination_activities,
    fresh_id,
    root,
    signed,
    transfer_activities,
    transfer_client,
)
from tests.stores import Stores
from worker import build_worker
from workflows import search_attributes
from workflows.messages import (
    AttestedMessage,
    CancelRequest,
    ConfirmRequest,
    OrderState,
    RejectRequest,
    TransferInput,
    TransferResult,
)
from workflows.refusals import from_update
from workflows.resource_transfer import ResourceTransfer

_Message = TypeVar("_Message", bound=AttestedMessage)

# A key that is not the service's: what a client that reaches Temporal directly signs with at best.
OTHER_KEY = derive_key("not-the-service-key", "attestation")


@pytest.fixture
async def transfers(dev_env: WorkflowEnvironment, store: Stores) -> AsyncIterator[TransferClient]:
    task_queue = fresh_id("tq")
    async with build_worker(dev_env.client, store.db, task_queue, ATTESTATION_KEY):
        yield transfer_client(dev_env.client, task_queue)


async def parties(factory: Factory) -> tuple[Account, Account]:
    return await factory.account(), await factory.account()


def confirm_request(order_id: str, principal: Principal, **fields: Any) -> ConfirmRequest:
    """A confirm as the service sends it: signed for `principal` on `order_id`."""
    values: dict[str, Any] = {"agreement_accepted": True, **fields}
    return signed(ConfirmRequest(**values), principal, Action.CONFIRM, order_id)


def with_attestation(message: _Message, **changes: Any) -> _Message:
    """`message` with fields of its attestation changed after it was signed."""
    assert message.attestation is not None
    return message.model_copy(update={"attestation": message.attestation.model_copy(update=changes)})


def stranger() -> Principal:
    return Principal(kind=PrincipalKind.ROOT, account_id=fresh_id("acc"))


# The raw messages, by name, as a client that skips the service sends them (typed loosely: the SDK's
# overloads read an async update as one that returns a coroutine).
UPDATES: dict[str, Any] = {
    "confirm": ResourceTransfer.confirm,
    "cancel": ResourceTransfer.cancel,
    "reject": ResourceTransfer.reject,
}
SIGNALS: dict[str, Any] = {
    "confirm": ResourceTransfer.confirm_signal,
    "cancel": ResourceTransfer.cancel_signal,
    "reject": ResourceTransfer.reject_signal,
}
ANOTHER_ACTION = {
    Action.INITIATE: Action.CONFIRM,
    Action.CONFIRM: Action.CANCEL,
    Action.CANCEL: Action.REJECT,
    Action.REJECT: Action.CANCEL,
}


def spoilt(message: _Message, principal: Principal, action: Action, order_id: str, how: str) -> _Message:
    """`message` claiming `principal`, `action` and `order_id`, with an attestation the worker must refuse."""
    match how:
        case "missing":
            return message
        case "another_key":  # signed by someone who has not the service's key
            return sign(OTHER_KEY, message, principal, action, order_id, at=datetime.now(UTC))
        case "forged_signature":
            return with_attestation(signed(message, principal, action, order_id), signature="0" * 64)
        case "forged_principal":  # a stranger's own attestation, its principal changed to the victim's
            return with_attestation(signed(message, stranger(), action, order_id), principal=principal)
        case "expired":  # valid for 5 minutes from its issue
            return signed(message, principal, action, order_id, at=datetime.now(UTC) - timedelta(minutes=6))
        case "another_order":
            return signed(message, principal, action, fresh_id("to"))
        case "another_action":
            return signed(message, principal, ANOTHER_ACTION[action], order_id)
    raise AssertionError(how)


async def open_order(
    transfers: TransferClient, factory: Factory, **resource_fields: Any
) -> tuple[Account, Account, OrderState]:
    source, destination = await parties(factory)
    resource = await factory.resource(source, **resource_fields)
    state = await transfers.initiate(
        initiator=root(source), destination_account_id=destination.id, resource_id=resource.id
    )
    return source, destination, state


async def history_event_types(handle: WorkflowHandle[Any, Any]) -> list[int]:
    return [event.event_type for event in (await handle.fetch_history()).events]


async def assert_still_pending(
    transfers: TransferClient, store: Stores, state: OrderState, source: Account
) -> Order:
    """Nothing moved: the order pending, its resource locked by it and still the source's."""
    assert (await transfers.state(state.order_id)).status is OrderStatus.PENDING
    order = await store.orders.get_order(state.order_id)
    assert order is not None and order.status is OrderStatus.PENDING and order.confirmed_at is None
    resource = await store.get_resource(state.resource_id)
    assert resource is not None
    assert resource.locked_by_order_id == state.order_id
    assert resource.owner_account_id == source.id
    assert resource.resource_group is None and resource.tags == {}
    return order


async def test_full_transfer_moves_ownership_and_billing(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, destination, state = await open_order(transfers, factory)
    assert state.status is OrderStatus.PENDING
    resource = await store.get_resource(state.resource_id)
    assert resource is not None and resource.locked_by_order_id == state.order_id

    confirmed = await transfers.confirm(
        state.order_id,
        root(destination),
        ReceivingConfig(resource_group="rg-web", tags={"team": "a"}),
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

    order = await store.orders.get_order(state.order_id)
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


async def test_initiate_from_a_client_without_the_service_key_is_refused_and_writes_nothing(
    dev_env: WorkflowEnvironment, transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    """The library itself, keyed wrongly: the worker, not the client, decides what is attested."""
    source, destination = await parties(factory)
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    impostor = TransferClient(dev_env.client, attestation_key=OTHER_KEY, task_queue=transfers.task_queue)
    with pytest.raises(TransferError) as refused:
        await impostor.initiate(
            initiator=root(source),
            destination_account_id=destination.id,
            resource_id=resource.id,
            order_id=order_id,
        )
    assert refused.value.code is ErrorCode.UNAUTHENTICATED
    assert await store.orders.get_order(order_id) is None
    after = await store.get_resource(resource.id)
    assert after is not None and after.locked_by_order_id is None
    result = await transfers.result(order_id)
    assert result.status is None and result.refusal is not None
    assert result.refusal.code is ErrorCode.UNAUTHENTICATED
    attributes = (await transfers.handle(order_id).describe()).typed_search_attributes
    assert attributes.get(search_attributes.TRANSFER_STATUS) == search_attributes.REFUSED


@pytest.mark.parametrize(
    "how",
    [
        "missing",
        "another_key",
        "forged_signature",
        "forged_principal",
        "expired",
        "another_order",
        "another_action",
        "another_resource",
        "another_destination",
        "another_source",
    ],
)
async def test_a_direct_start_without_a_valid_attestation_opens_no_order(
    dev_env: WorkflowEnvironment, transfers: TransferClient, factory: Factory, store: Stores, how: str
) -> None:
    """`start_workflow` straight to Temporal, skipping the service: no order, no lock."""
    source, destination = await parties(factory)
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    transfer = TransferInput(
        order_id=order_id,
        resource_id=resource.id,
        source_account_id=source.id,
        destination_account_id=destination.id,
        agreement_version=AGREEMENT_VERSION,
    )
    if how in ("another_resource", "another_destination"):
        # A genuine attestation of another initiate of the same order, moved onto this one.
        field = "resource_id" if how == "another_resource" else "destination_account_id"
        elsewhere = transfer.model_copy(update={field: fresh_id("x")})
        other = signed(elsewhere, root(source), Action.INITIATE, order_id)
        transfer = transfer.model_copy(update={"attestation": other.attestation})
    elif how == "another_source":
        # Genuinely signed, but for someone else than the source it names.
        transfer = signed(transfer, stranger(), Action.INITIATE, order_id)
    else:
        transfer = spoilt(transfer, root(source), Action.INITIATE, order_id, how)
    handle = await dev_env.client.start_workflow(
        ResourceTransfer.run, transfer, id=order_id, task_queue=transfers.task_queue
    )
    # Bounded: an order opened by mistake would wait out its 24-hour window.
    result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result.status is None and result.refusal is not None
    assert result.refusal.code is ErrorCode.UNAUTHENTICATED
    assert await store.orders.get_order(order_id) is None
    after = await store.get_resource(resource.id)
    assert after is not None and after.locked_by_order_id is None and after.owner_account_id == source.id
    attributes = (await handle.describe()).typed_search_attributes
    assert attributes.get(search_attributes.TRANSFER_STATUS) == search_attributes.REFUSED


async def test_a_ram_user_cannot_initiate(transfers: TransferClient, factory: Factory) -> None:
    source, destination = await parties(factory)
    resource = await factory.resource(source)
    ram_user = Principal(kind=PrincipalKind.RAM_USER, account_id=source.id, ram_user_id="ops")
    with pytest.raises(TransferError) as refused:
        await transfers.initiate(
            initiator=ram_user, destination_account_id=destination.id, resource_id=resource.id
        )
    assert refused.value.code is ErrorCode.RAM_USER_NOT_ALLOWED


async def test_account_rules_refuse_and_leave_the_resource_free(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    """An account rule refuses before the lock: the same resource can go elsewhere at once."""
    source = await factory.account()
    destination = await factory.account(verified=False, entity_id=None, entity_name=None)
    resource = await factory.resource(source)
    with pytest.raises(TransferError) as refused:
        await transfers.initiate(
            initiator=root(source), destination_account_id=destination.id, resource_id=resource.id
        )
    assert refused.value.code is ErrorCode.ACCOUNT_NOT_VERIFIED
    after = await store.get_resource(resource.id)
    assert after is not None and after.locked_by_order_id is None
    other = await factory.account()
    state = await transfers.initiate(
        initiator=root(source), destination_account_id=other.id, resource_id=resource.id
    )
    assert state.status is OrderStatus.PENDING


async def test_one_open_order_per_resource(transfers: TransferClient, factory: Factory) -> None:
    source, destination, state = await open_order(transfers, factory)
    with pytest.raises(TransferError) as refused:
        await transfers.initiate(
            initiator=root(source), destination_account_id=destination.id, resource_id=state.resource_id
        )
    assert refused.value.code is ErrorCode.RESOURCE_IN_TRANSFER


async def test_initiate_is_idempotent_by_order_id(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, destination = await parties(factory)
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    first, second = await asyncio.gather(
        *(
            transfers.initiate(
                initiator=root(source),
                destination_account_id=destination.id,
                resource_id=resource.id,
                order_id=order_id,
            )
            for _ in range(2)
        )
    )
    assert first == second
    order = await store.orders.get_order(order_id)
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
        await transfers.confirm(state.order_id, root(destination))
    assert late.value.code is ErrorCode.ORDER_NOT_PENDING
    assert late.value.details == {"status": "cancelled"}


async def test_reject_by_the_destination(transfers: TransferClient, factory: Factory, store: Stores) -> None:
    _, destination, state = await open_order(transfers, factory)
    rejected = await transfers.reject(state.order_id, root(destination), reason="not ours")
    assert rejected.status is OrderStatus.REJECTED
    order = await store.orders.get_order(state.order_id)
    assert order is not None and order.status is OrderStatus.REJECTED
    assert order.events[-1].action is Action.REJECT and order.events[-1].actor_account_id == destination.id
    assert order.events[-1].reason == "not ours"


@pytest.mark.parametrize(
    ("action", "actor", "code"),
    [
        ("confirm", "source", ErrorCode.NOT_DESTINATION),
        ("reject", "source", ErrorCode.NOT_DESTINATION),
        ("cancel", "destination", ErrorCode.NOT_SOURCE),
        ("cancel", "stranger", ErrorCode.ORDER_NOT_FOUND),
    ],
)
async def test_a_wrong_party_is_refused_and_only_its_refusal_is_recorded(
    transfers: TransferClient,
    factory: Factory,
    store: Stores,
    action: str,
    actor: str,
    code: ErrorCode,
) -> None:
    """The order's rules are checked under the decision lock (a race included): the refusal becomes the
    order's event, with the attested actor, and nothing else changes."""
    source, destination, state = await open_order(transfers, factory)
    principals = {
        "source": root(source),
        "destination": root(destination),
        "stranger": root(await factory.account()),
    }
    order_before = await store.orders.get_order(state.order_id)
    assert order_before is not None
    with pytest.raises(TransferError) as refused:
        if action == "confirm":
            await transfers.confirm(state.order_id, principals[actor])
        elif action == "cancel":
            await transfers.cancel(state.order_id, principals[actor])
        else:
            await transfers.reject(state.order_id, principals[actor])
    assert refused.value.code is code
    order = await assert_still_pending(transfers, store, state, source)
    assert order.steps == order_before.steps
    assert order.events[:-1] == order_before.events
    last = order.events[-1]
    assert (last.action, last.outcome, last.actor_account_id, last.code) == (
        Action(action),
        Outcome.REFUSED,
        principals[actor].account_id,
        code,
    )


@pytest.mark.parametrize("action", ["confirm", "cancel", "reject"])
async def test_validators_refuse_a_ram_user_before_anything_is_written(
    transfers: TransferClient, factory: Factory, store: Stores, action: str
) -> None:
    """What needs no order is the validators': a refused update leaves no trace, not even in history."""
    source, destination, state = await open_order(transfers, factory)
    account = source if action == "cancel" else destination
    ram_user = Principal(kind=PrincipalKind.RAM_USER, account_id=account.id, ram_user_id="ops")
    handle = transfers.handle(state.order_id)
    before = await history_event_types(handle)
    order_before = await store.orders.get_order(state.order_id)
    with pytest.raises(TransferError) as refused:
        if action == "confirm":
            await transfers.confirm(state.order_id, ram_user)
        elif action == "cancel":
            await transfers.cancel(state.order_id, ram_user)
        else:
            await transfers.reject(state.order_id, ram_user)
    assert refused.value.code is ErrorCode.RAM_USER_NOT_ALLOWED
    assert await history_event_types(handle) == before
    assert await store.orders.get_order(state.order_id) == order_before
    assert (await transfers.state(state.order_id)).status is OrderStatus.PENDING


async def test_confirm_without_the_agreement_is_refused(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    _, destination, state = await open_order(transfers, factory)
    handle = transfers.handle(state.order_id)
    before = await history_event_types(handle)
    order_before = await store.orders.get_order(state.order_id)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            UPDATES["confirm"], confirm_request(state.order_id, root(destination), agreement_accepted=False)
        )
    assert from_update(refused.value).code is ErrorCode.AGREEMENT_NOT_ACCEPTED
    assert await history_event_types(handle) == before
    assert await store.orders.get_order(state.order_id) == order_before
    assert (await transfers.state(state.order_id)).status is OrderStatus.PENDING


async def test_a_running_vpc_instance_refuses_the_confirm_and_the_order_stays_pending(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    _, destination, state = await open_order(transfers, factory, status=InstanceStatus.RUNNING)
    with pytest.raises(TransferError) as refused:
        await transfers.confirm(state.order_id, root(destination))
    assert refused.value.code is ErrorCode.INSTANCE_NOT_STOPPED
    assert (await transfers.state(state.order_id)).status is OrderStatus.PENDING
    order = await store.orders.get_order(state.order_id)
    assert order is not None and order.status is OrderStatus.PENDING
    refusal = order.events[-1]
    assert (refusal.action, refusal.outcome, refusal.code, refusal.actor_account_id) == (
        Action.CONFIRM,
        Outcome.REFUSED,
        ErrorCode.INSTANCE_NOT_STOPPED,
        destination.id,
    )

    await store.set_instance_status(state.resource_id, InstanceStatus.STOPPED)
    confirmed = await transfers.confirm(state.order_id, root(destination))
    assert confirmed.status is OrderStatus.TRANSFERRING
    assert (await transfers.result(state.order_id)).status is OrderStatus.COMPLETED


async def test_a_confirm_from_a_client_without_the_service_key_is_refused(
    dev_env: WorkflowEnvironment, transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    """The destination's principal, signed with another key: refused, recorded with no actor."""
    source, destination, state = await open_order(transfers, factory)
    impostor = TransferClient(dev_env.client, attestation_key=OTHER_KEY, task_queue=transfers.task_queue)
    with pytest.raises(TransferError) as refused:
        await impostor.confirm(state.order_id, root(destination))
    assert refused.value.code is ErrorCode.UNAUTHENTICATED
    order = await assert_still_pending(transfers, store, state, source)
    assert (order.events[-1].action, order.events[-1].actor_account_id, order.events[-1].code) == (
        Action.CONFIRM,
        None,
        ErrorCode.UNAUTHENTICATED,
    )


UPDATE_CASES = [
    ("confirm", "missing"),
    ("confirm", "another_key"),
    ("confirm", "forged_signature"),
    ("confirm", "forged_principal"),
    ("confirm", "expired"),
    ("confirm", "another_order"),
    ("confirm", "another_action"),
    ("confirm", "replayed_config"),
    ("cancel", "missing"),
    ("cancel", "forged_principal"),
    ("cancel", "expired"),
    ("cancel", "another_action"),
    ("reject", "missing"),
    ("reject", "forged_signature"),
    ("reject", "another_order"),
]


def untrusted(action: str, how: str, order_id: str, source: Account, destination: Account) -> AttestedMessage:
    """The confirm, cancel or reject of the party allowed to send it, its attestation spoilt as `how`
    says; `replayed_config` is a genuine confirm replayed with another receiving configuration."""
    if action == "confirm":
        if how == "replayed_config":
            genuine = confirm_request(order_id, root(destination))
            return genuine.model_copy(update={"receiving_config": ReceivingConfig(resource_group="rg-evil")})
        confirm = ConfirmRequest(agreement_accepted=True)
        return spoilt(confirm, root(destination), Action.CONFIRM, order_id, how)
    if action == "cancel":
        return spoilt(CancelRequest(), root(source), Action.CANCEL, order_id, how)
    return spoilt(RejectRequest(reason="no"), root(destination), Action.REJECT, order_id, how)


@pytest.mark.parametrize(("action", "how"), UPDATE_CASES)
async def test_an_update_without_a_valid_attestation_is_refused_and_changes_nothing(
    transfers: TransferClient, factory: Factory, store: Stores, action: str, how: str
) -> None:
    """Sent straight to Temporal: refused UNAUTHENTICATED, the order untouched. A missing attestation
    is refused by the validator (not even in the history); any other by the activity, recorded with no
    actor since nobody vouches for the one claimed."""
    source, destination, state = await open_order(transfers, factory)
    handle = transfers.handle(state.order_id)
    history_before = await history_event_types(handle)
    order_before = await store.orders.get_order(state.order_id)
    assert order_before is not None
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        request = untrusted(action, how, state.order_id, source, destination)
        await handle.execute_update(UPDATES[action], request)
    assert from_update(refused.value).code is ErrorCode.UNAUTHENTICATED
    order = await assert_still_pending(transfers, store, state, source)
    if how == "missing":
        assert await history_event_types(handle) == history_before
        assert order == order_before
    else:
        assert order.events[:-1] == order_before.events
        assert [(e.action, e.outcome, e.actor_account_id, e.code) for e in order.events[-1:]] == [
            (Action(action), Outcome.REFUSED, None, ErrorCode.UNAUTHENTICATED)
        ]


async def test_exactly_one_of_confirm_cancel_and_reject_wins(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, destination, state = await open_order(transfers, factory)
    outcomes = await asyncio.gather(
        transfers.confirm(state.order_id, root(destination)),
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
    order = await store.orders.get_order(state.order_id)
    assert order is not None
    decisions = [e for e in order.events if e.action in (Action.CONFIRM, Action.CANCEL, Action.REJECT)]
    assert len([e for e in decisions if e.outcome is Outcome.ACCEPTED]) == 1


async def order_with_events(store: Stores, order_id: str, *, count: int) -> Order:
    """The order once it has `count` events: signals are not answered, so their effect is polled."""
    for _ in range(200):
        order = await store.orders.get_order(order_id)
        assert order is not None
        if len(order.events) >= count:
            return order
        await asyncio.sleep(0.05)
    raise AssertionError(f"order {order_id} never reached {count} events")


async def test_an_invalid_signal_is_recorded_and_ignored(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, _, state = await open_order(transfers, factory)
    handle = transfers.handle(state.order_id)
    # The source, genuinely attested, tries to confirm and reject its own order: the rules still apply.
    await handle.signal(ResourceTransfer.confirm_signal, confirm_request(state.order_id, root(source)))
    await handle.signal(
        ResourceTransfer.reject_signal, signed(RejectRequest(), root(source), Action.REJECT, state.order_id)
    )
    order = await order_with_events(store, state.order_id, count=3)
    # Each signal's handler records its own refusal: in either order.
    assert sorted((e.action, e.outcome, e.actor_account_id, e.code) for e in order.events[1:]) == [
        (Action.CONFIRM, Outcome.REFUSED, source.id, ErrorCode.NOT_DESTINATION),
        (Action.REJECT, Outcome.REFUSED, source.id, ErrorCode.NOT_DESTINATION),
    ]
    await assert_still_pending(transfers, store, state, source)

    await handle.signal(
        ResourceTransfer.cancel_signal, signed(CancelRequest(), root(source), Action.CANCEL, state.order_id)
    )
    assert (await transfers.result(state.order_id)).status is OrderStatus.CANCELLED


SIGNAL_CASES = [
    ("confirm", "missing"),
    ("confirm", "another_key"),
    ("confirm", "forged_principal"),
    ("confirm", "another_order"),
    ("confirm", "another_action"),
    ("confirm", "replayed_config"),
    ("cancel", "missing"),
    ("cancel", "another_key"),
    ("cancel", "expired"),
    ("cancel", "another_order"),
    ("reject", "forged_signature"),
    ("reject", "forged_principal"),
    ("reject", "another_action"),
]


@pytest.mark.parametrize(("action", "how"), SIGNAL_CASES)
async def test_a_signal_without_a_valid_attestation_is_recorded_as_refused_and_changes_nothing(
    transfers: TransferClient, factory: Factory, store: Stores, action: str, how: str
) -> None:
    """A signal has nobody to answer: its refusal is an order event with no actor and UNAUTHENTICATED."""
    source, destination, state = await open_order(transfers, factory)
    await transfers.handle(state.order_id).signal(
        SIGNALS[action], untrusted(action, how, state.order_id, source, destination)
    )
    order = await order_with_events(store, state.order_id, count=2)
    assert [(e.action, e.outcome, e.actor_account_id, e.code) for e in order.events[1:]] == [
        (Action(action), Outcome.REFUSED, None, ErrorCode.UNAUTHENTICATED)
    ]
    await assert_still_pending(transfers, store, state, source)


async def test_a_cancel_signal_forged_for_the_source_changes_nothing(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    """Someone claims the source's principal with a signature of its own making: the order stays the
    destination's to confirm."""
    source, destination, state = await open_order(transfers, factory)
    forged = with_attestation(
        signed(CancelRequest(), root(source), Action.CANCEL, state.order_id), signature="f" * 64
    )
    assert forged.principal == root(source)
    await transfers.handle(state.order_id).signal(ResourceTransfer.cancel_signal, forged)
    order = await order_with_events(store, state.order_id, count=2)
    refused = order.events[-1]
    assert (refused.action, refused.outcome, refused.actor_account_id, refused.code) == (
        Action.CANCEL,
        Outcome.REFUSED,
        None,
        ErrorCode.UNAUTHENTICATED,
    )
    await assert_still_pending(transfers, store, state, source)

    confirmed = await transfers.confirm(state.order_id, root(destination))
    assert confirmed.status is OrderStatus.TRANSFERRING
    assert (await transfers.result(state.order_id)).status is OrderStatus.COMPLETED


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
        transfers = transfer_client(dev_env.client, task_queue)
        source, destination, state = await open_order(transfers, factory)
        await transfers.confirm(state.order_id, root(destination))
        # A failed order is a failed run, its failure typed with the code.
        with pytest.raises(WorkflowFailureError) as failed:
            await transfers.result(state.order_id)
        final = await transfers.state(state.order_id)

    assert isinstance(failed.value.cause, ApplicationError)
    assert failed.value.cause.type == ErrorCode.ACCOUNT_FROZEN
    assert final.status is OrderStatus.FAILED
    assert final.failure is not None and final.failure.code is ErrorCode.ACCOUNT_FROZEN
    resource = await store.get_resource(state.resource_id)
    assert resource is not None
    assert resource.owner_account_id == source.id
    assert resource.locked_by_order_id is None
    order = await store.orders.get_order(state.order_id)
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
    await transfers.initiate(initiator=root(source), destination_account_id=first.id, resource_id=one.id)
    with pytest.raises(TransferError) as refused:
        await transfers.initiate(initiator=root(source), destination_account_id=second.id, resource_id=two.id)
    assert refused.value.code is ErrorCode.ENTERPRISE_DESTINATION_LIMIT


async def test_history_of_a_completed_transfer_stays_short(
    transfers: TransferClient, factory: Factory
) -> None:
    _, destination, state = await open_order(transfers, factory)
    await transfers.confirm(state.order_id, root(destination))
    await transfers.result(state.order_id)
    events = await history_event_types(transfers.handle(state.order_id))
    print(f"history of one completed transfer: {len(events)} events")
    assert events[-1] == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED
    assert len(events) < 80


@contextlib.contextmanager
def asyncio_reports() -> Iterator[list[str]]:
    """What asyncio reports to the loop's exception handler meanwhile (an exception never retrieved is
    reported when its future is collected, hence the collection before the handler is put back)."""
    loop = asyncio.get_running_loop()
    reports: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reports.append(str(context.get("message"))))
    try:
        yield reports
    finally:
        gc.collect()
        loop.set_exception_handler(previous)


async def test_a_late_initiate_retry_does_not_reopen_a_closed_order(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    source, _, state = await open_order(transfers, factory)
    await transfers.cancel(state.order_id, root(source))
    await transfers.result(state.order_id)
    with asyncio_reports() as reports:
        retried = await transfers.initiate(
            initiator=root(source),
            destination_account_id=state.destination_account_id,
            resource_id=state.resource_id,
            order_id=state.order_id,
        )
    assert retried.status is OrderStatus.CANCELLED
    assert reports == [], "the start operation's failure was left unretrieved"
    runs = [run async for run in transfers.client.list_workflows(f'WorkflowId = "{state.order_id}"')]
    assert len(runs) == 1
    resource = await store.get_resource(state.resource_id)
    assert resource is not None and resource.locked_by_order_id is None


async def test_a_confirm_signal_is_checked_at_its_arrival_not_at_the_time_it_claims(
    transfers: TransferClient, factory: Factory, store: Stores
) -> None:
    """A confirm the service signed ten minutes ago is refused: the workflow, not the message, says when
    it arrived, and its attestation had expired by then."""
    source, destination, state = await open_order(transfers, factory)
    then = datetime.now(UTC) - timedelta(minutes=10)
    request = ConfirmRequest(agreement_accepted=True)
    stale = signed(request, root(destination), Action.CONFIRM, state.order_id, at=then)
    await transfers.handle(state.order_id).signal(ResourceTransfer.confirm_signal, stale)
    order = await order_with_events(store, state.order_id, count=2)
    refused = order.events[-1]
    assert (refused.action, refused.outcome, refused.actor_account_id, refused.code) == (
        Action.CONFIRM,
        Outcome.REFUSED,
        None,
        ErrorCode.UNAUTHENTICATED,
    )
    await assert_still_pending(transfers, store, state, source)


async def test_a_window_that_closed_while_the_order_opened_expires_it_at_once(
    dev_env: WorkflowEnvironment, store: Stores, factory: Factory
) -> None:
    """The expiry is recorded at the window's end, not when the worker got to it."""
    task_queue = fresh_id("tq")
    async with build_worker(dev_env.client, store.db, task_queue, ATTESTATION_KEY):
        transfers = transfer_client(dev_env.client, task_queue, confirm_window=timedelta(milliseconds=1))
        _, _, state = await open_order(transfers, factory)
        assert (await transfers.result(state.order_id)).status is OrderStatus.EXPIRED
    resource = await store.get_resource(state.resource_id)
    assert resource is not None and resource.locked_by_order_id is None
    order = await store.orders.get_order(state.order_id)
    assert order is not None and order.status is OrderStatus.EXPIRED
    expiry = order.events[-1]
    assert (expiry.action, expiry.outcome, expiry.actor_account_id) == (Action.EXPIRE, Outcome.ACCEPTED, None)
    assert expiry.at == order.expires_at


async def test_signals_that_arrive_while_the_order_opens_keep_its_answer(
    dev_env: WorkflowEnvironment, factory: Factory, store: Stores
) -> None:
    """Since v3 the order opens in a local activity, in the run's first workflow task with the `opened`
    update's acceptance. Signals that land meanwhile (refused: nothing is open yet) must not lose that
    answer, open the order twice or leave it half open."""
    real = transfer_activities(store)

    @activity.defn(name="open_order")
    async def slow_open_order(input: OpenOrderInput) -> OpenOrderResult:
        await asyncio.sleep(1)  # long enough for the signals below to land inside the task
        return await real.open_order(input)

    task_queue = fresh_id("tq")
    activities = [a for a in real.all() if getattr(a, "__name__", "") != "open_order"]
    async with Worker(
        dev_env.client,
        task_queue=task_queue,
        workflows=[ResourceTransfer],
        activities=[*activities, slow_open_order],
    ):
        transfers = transfer_client(dev_env.client, task_queue)
        source, destination = await parties(factory)
        resource = await factory.resource(source)
        order_id = fresh_id("to")
        opening = asyncio.create_task(
            transfers.initiate(
                initiator=root(source),
                destination_account_id=destination.id,
                resource_id=resource.id,
                order_id=order_id,
            )
        )
        landed = 0
        handle = transfers.handle(order_id)
        while not opening.done():
            with contextlib.suppress(RPCError):  # before the run exists
                await handle.signal("cancel", untrusted("cancel", "missing", order_id, source, destination))
                landed += 1
            await asyncio.sleep(0.05)
        state = await opening

        assert landed > 0
        assert state.status is OrderStatus.PENDING
        order = await assert_still_pending(transfers, store, state, source)
        # Opened once; a signal handled after the opening is a recorded refusal, one before it only logged.
        opened, *refused = [(e.action, e.outcome, e.actor_account_id, e.code) for e in order.events]
        assert opened == (Action.INITIATE, Outcome.ACCEPTED, source.id, None)
        assert len(refused) <= landed
        assert set(refused) <= {(Action.CANCEL, Outcome.REFUSED, None, ErrorCode.UNAUTHENTICATED)}
