"""Every activity run twice, as a retry or a duplicate delivery would: the second run changes nothing.

And the trust boundary's last line: an activity acts on a message only once its attestation holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.models import (
    AcceptConfirmationInput,
    Attested,
    DecideInput,
    FinishOrderInput,
    OpenOrderInput,
    OpenOrderResult,
    OrderStepInput,
    RecordRefusalInput,
)
from activities.transfer_activities import TransferActivities
from domain.codes import ErrorCode
from domain.models import (
    AGREEMENT_VERSION,
    Account,
    Action,
    InstanceStatus,
    OrderStatus,
    Outcome,
    Principal,
    PrincipalKind,
    ReceivingConfig,
)
from tests.factory import Factory, fresh_id, root, signed, transfer_activities
from tests.store.builders import RETRY_COUNTS, snapshot
from tests.stores import Stores
from workflows.messages import AttestedMessage, CancelRequest, ConfirmRequest, RejectRequest, TransferInput

_Message = TypeVar("_Message", bound=AttestedMessage)


def its_run(order_id: str) -> ActivityEnvironment:
    """An activity's environment in the order's run: the run's workflow id is the order id."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=order_id)
    return env


async def its_run_opens(activities: TransferActivities, input: OpenOrderInput) -> OpenOrderResult:
    result: OpenOrderResult = await its_run(input.order_id).run(activities.open_order, input)
    return result


async def twice(store: Stores, activity: Callable[[Any], Awaitable[Any]], input: Any) -> Any:
    env = its_run(input.order_id)
    first = await env.run(activity, input)
    before = await snapshot(store.engine, ignoring=RETRY_COUNTS)
    second = await env.run(activity, input)
    assert second == first
    assert await snapshot(store.engine, ignoring=RETRY_COUNTS) == before
    return first


def initiate(order_id: str, resource_id: str, source: Account, destination: Account) -> TransferInput:
    """The initiate the service sends for the source (unsigned: sign it, or spoil it)."""
    return TransferInput(
        order_id=order_id,
        resource_id=resource_id,
        source_account_id=source.id,
        destination_account_id=destination.id,
        agreement_version=AGREEMENT_VERSION,
    )


def open_input(transfer: TransferInput, now: datetime) -> OpenOrderInput:
    """open_order's input for `transfer` as it reached the workflow at `now`."""
    return OpenOrderInput(
        order_id=transfer.order_id,
        resource_id=transfer.resource_id,
        source_account_id=transfer.source_account_id,
        destination_account_id=transfer.destination_account_id,
        agreement_version=transfer.agreement_version,
        attested=Attested.of(transfer, now),
        created_at=now,
        expires_at=now + timedelta(hours=24),
    )


def signed_open_input(
    order_id: str, resource_id: str, source: Account, destination: Account, now: datetime
) -> OpenOrderInput:
    transfer = initiate(order_id, resource_id, source, destination)
    return open_input(signed(transfer, root(source), Action.INITIATE, order_id), now)


def attested(message: AttestedMessage, principal: Principal, action: Action, order_id: str) -> Attested:
    """`message` signed for `principal`, as it reached the workflow now."""
    return Attested.of(signed(message, principal, action, order_id), datetime.now(UTC))


def with_attestation(message: _Message, **changes: Any) -> _Message:
    """`message` with fields of its attestation changed after it was signed."""
    assert message.attestation is not None
    return message.model_copy(update={"attestation": message.attestation.model_copy(update=changes)})


def forged(message: _Message, principal: Principal, action: Action, order_id: str, how: str) -> _Message:
    """`message` claiming `principal`, `action` and `order_id`, with an attestation that must not hold."""
    stranger = Principal(kind=PrincipalKind.ROOT, account_id=fresh_id("acc"))
    match how:
        case "missing":
            return message
        case "forged_signature":
            return with_attestation(signed(message, principal, action, order_id), signature="0" * 64)
        case "forged_principal":  # a stranger's own attestation, its principal changed
            return with_attestation(signed(message, stranger, action, order_id), principal=principal)
        case "expired":  # valid for 5 minutes from its issue
            return signed(message, principal, action, order_id, at=datetime.now(UTC) - timedelta(minutes=6))
        case "another_order":
            return signed(message, principal, action, fresh_id("to"))
        case "another_action":
            other = Action.REJECT if action is Action.CANCEL else Action.CANCEL
            return signed(message, principal, other, order_id)
    raise AssertionError(how)


async def test_every_activity_of_a_completed_transfer_twice(store: Stores, factory: Factory) -> None:
    activities = transfer_activities(store)
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    now = datetime.now(UTC)
    await twice(
        store, activities.open_order, signed_open_input(order_id, resource.id, source, destination, now)
    )
    await twice(
        store,
        activities.record_refusal,
        RecordRefusalInput(
            event_id=fresh_id("ev"),
            order_id=order_id,
            action=Action.CANCEL,
            attested=attested(CancelRequest(), root(destination), Action.CANCEL, order_id),
            code=ErrorCode.NOT_SOURCE,
            at=now,
        ),
    )
    await twice(
        store,
        activities.accept_confirmation,
        AcceptConfirmationInput(
            order_id=order_id,
            attested=attested(
                ConfirmRequest(agreement_accepted=True), root(destination), Action.CONFIRM, order_id
            ),
            at=now,
            event_id=fresh_id("ev"),
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
        FinishOrderInput(order_id=order_id, status=OrderStatus.COMPLETED, at=now),
    )
    after = await store.get_resource(resource.id)
    assert after is not None and after.owner_account_id == destination.id and after.locked_by_order_id is None
    order = await store.orders.get_order(order_id)
    assert order is not None
    assert [(e.action, e.outcome, e.actor_account_id) for e in order.events[:3]] == [
        (Action.INITIATE, Outcome.ACCEPTED, source.id),
        (Action.CANCEL, Outcome.REFUSED, destination.id),  # attested: recorded with its actor
        (Action.CONFIRM, Outcome.ACCEPTED, destination.id),
    ]


async def test_compensation_and_decisions_twice(store: Stores, factory: Factory) -> None:
    activities = transfer_activities(store)
    source, destination = await factory.account(), await factory.account()
    cancelled_resource, compensated_resource = await factory.resource(source), await factory.resource(source)
    now = datetime.now(UTC)

    async def open_(resource_id: str) -> str:
        order_id = fresh_id("to")
        await its_run_opens(activities, signed_open_input(order_id, resource_id, source, destination, now))
        return order_id

    cancelled = await open_(cancelled_resource.id)
    await twice(
        store,
        activities.decide,
        DecideInput(
            order_id=cancelled,
            status=OrderStatus.CANCELLED,
            at=now,
            action=Action.CANCEL,
            attested=attested(CancelRequest(), root(source), Action.CANCEL, cancelled),
        ),
    )
    order = await store.orders.get_order(cancelled)
    assert order is not None and order.status is OrderStatus.CANCELLED
    assert order.events[-1].actor_account_id == source.id

    compensated = await open_(compensated_resource.id)
    await store.orders.decide(
        compensated, status=OrderStatus.TRANSFERRING, at=now, actor_account_id=destination.id
    )
    step = OrderStepInput(order_id=compensated, at=now)
    await ActivityEnvironment().run(activities.reassign_ownership, step)
    await ActivityEnvironment().run(activities.hand_off_billing, step)
    for run in (activities.restore_billing, activities.restore_ownership):
        await twice(store, run, step)
    back = await store.get_resource(compensated_resource.id)
    assert back is not None and back.owner_account_id == source.id


async def test_a_refusal_is_not_retried(store: Stores, factory: Factory) -> None:
    activities = transfer_activities(store)
    source, destination = await factory.account(), await factory.account()
    running = await factory.resource(source, status=InstanceStatus.RUNNING)
    now = datetime.now(UTC)
    order_id = fresh_id("to")
    await its_run_opens(activities, signed_open_input(order_id, running.id, source, destination, now))
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(
            activities.accept_confirmation,
            AcceptConfirmationInput(
                order_id=order_id,
                attested=attested(
                    ConfirmRequest(agreement_accepted=True), root(destination), Action.CONFIRM, order_id
                ),
                at=now,
                event_id=fresh_id("ev"),
            ),
        )
    assert refused.value.type == ErrorCode.INSTANCE_NOT_STOPPED
    assert refused.value.non_retryable


# --- the trust boundary ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    [
        "missing",
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
async def test_open_order_refuses_an_attestation_that_does_not_hold_and_writes_nothing(
    store: Stores, factory: Factory, how: str
) -> None:
    activities = transfer_activities(store)
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    transfer = initiate(order_id, resource.id, source, destination)
    if how in ("another_resource", "another_destination"):
        # A genuine attestation of another initiate of the same order, moved onto this one.
        field = "resource_id" if how == "another_resource" else "destination_account_id"
        other = signed(
            transfer.model_copy(update={field: fresh_id("x")}), root(source), Action.INITIATE, order_id
        )
        transfer = transfer.model_copy(update={"attestation": other.attestation})
    elif how == "another_source":  # genuinely signed, for another account than the source it names
        transfer = signed(transfer, root(destination), Action.INITIATE, order_id)
    else:
        transfer = forged(transfer, root(source), Action.INITIATE, order_id, how)
    before = await snapshot(store.engine)
    with pytest.raises(ApplicationError) as refused:
        await its_run_opens(activities, open_input(transfer, datetime.now(UTC)))
    assert refused.value.type == ErrorCode.UNAUTHENTICATED
    assert refused.value.non_retryable
    assert await snapshot(store.engine) == before
    assert await store.orders.get_order(order_id) is None


FORGERIES = ["missing", "forged_signature", "forged_principal", "expired", "another_order", "another_action"]
DECISION_CASES = [
    *((action, how) for action in (Action.CONFIRM, Action.CANCEL, Action.REJECT) for how in FORGERIES),
    (Action.CONFIRM, "replayed_config"),
]


@pytest.mark.parametrize(("action", "how"), DECISION_CASES)
async def test_a_decision_whose_attestation_does_not_hold_changes_nothing_and_is_recorded_with_no_actor(
    store: Stores, factory: Factory, action: Action, how: str
) -> None:
    """The claimed actor is the party allowed to act: only the attestation stands in the way."""
    activities = transfer_activities(store)
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    now = datetime.now(UTC)
    await its_run_opens(activities, signed_open_input(order_id, resource.id, source, destination, now))
    env = ActivityEnvironment()
    # decide names its refused event by run and activity id: one run of its own, as in a workflow.
    env.info = dataclasses.replace(env.info, workflow_run_id=fresh_id("run"))
    with pytest.raises(ApplicationError) as refused:
        if action is Action.CONFIRM:
            confirm = ConfirmRequest(agreement_accepted=True)
            if how == "replayed_config":  # a genuine confirm, replayed with another configuration
                message = signed(confirm, root(destination), action, order_id).model_copy(
                    update={"receiving_config": ReceivingConfig(resource_group="rg-evil")}
                )
            else:
                message = forged(confirm, root(destination), action, order_id, how)
            await env.run(
                activities.accept_confirmation,
                AcceptConfirmationInput(
                    order_id=order_id,
                    attested=Attested.of(message, now),
                    at=now,
                    event_id=fresh_id("ev"),
                ),
            )
        else:
            request = CancelRequest() if action is Action.CANCEL else RejectRequest(reason="no")
            actor = source if action is Action.CANCEL else destination
            await env.run(
                activities.decide,
                DecideInput(
                    order_id=order_id,
                    status=OrderStatus.CANCELLED if action is Action.CANCEL else OrderStatus.REJECTED,
                    at=now,
                    action=action,
                    attested=Attested.of(forged(request, root(actor), action, order_id, how), now),
                ),
            )
    assert refused.value.type == ErrorCode.UNAUTHENTICATED
    assert refused.value.non_retryable
    order = await store.orders.get_order(order_id)
    assert order is not None and order.status is OrderStatus.PENDING and order.confirmed_at is None
    assert [(e.action, e.outcome, e.actor_account_id, e.code) for e in order.events[1:]] == [
        (action, Outcome.REFUSED, None, ErrorCode.UNAUTHENTICATED)
    ]
    after = await store.get_resource(resource.id)
    assert after is not None and after.locked_by_order_id == order_id and after.owner_account_id == source.id
    assert after.resource_group is None


@pytest.mark.parametrize("how", FORGERIES)
async def test_a_refusal_names_its_actor_only_when_its_attestation_holds(
    store: Stores, factory: Factory, how: str
) -> None:
    """Otherwise anyone could write refusals in another account's name: no actor, UNAUTHENTICATED."""
    activities = transfer_activities(store)
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    now = datetime.now(UTC)
    await its_run_opens(activities, signed_open_input(order_id, resource.id, source, destination, now))
    request = forged(CancelRequest(), root(destination), Action.CANCEL, order_id, how)
    await ActivityEnvironment().run(
        activities.record_refusal,
        RecordRefusalInput(
            event_id=fresh_id("ev"),
            order_id=order_id,
            action=Action.CANCEL,
            attested=Attested.of(request, now),
            code=ErrorCode.NOT_SOURCE,
            at=now,
        ),
    )
    order = await store.orders.get_order(order_id)
    assert order is not None and order.status is OrderStatus.PENDING
    assert [(e.action, e.outcome, e.actor_account_id, e.code) for e in order.events[1:]] == [
        (Action.CANCEL, Outcome.REFUSED, None, ErrorCode.UNAUTHENTICATED)
    ]


@pytest.mark.parametrize(
    ("issued_ago", "received_after_issue", "refused_with"),
    [
        (timedelta(seconds=5), timedelta(seconds=1), None),  # arrived in time, acted on at once
        (timedelta(minutes=0), timedelta(minutes=6), ErrorCode.UNAUTHENTICATED),  # it arrived expired
        (timedelta(minutes=0), -timedelta(minutes=2), ErrorCode.UNAUTHENTICATED),  # arrived before issue
        # arrived in time, but a worker got to it after its caller was answered 503: it must not act
        (timedelta(minutes=9), timedelta(minutes=4), ErrorCode.SERVICE_UNAVAILABLE),
    ],
)
async def test_an_attestation_must_hold_when_its_message_arrived(
    store: Stores,
    factory: Factory,
    issued_ago: timedelta,
    received_after_issue: timedelta,
    refused_with: ErrorCode | None,
) -> None:
    """The workflow's time of arrival counts for the attestation's validity; and a message acts only
    while its caller can still be told what it did (domain.attestation.ACT_WITHIN)."""
    activities = transfer_activities(store)
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    issued = datetime.now(UTC) - issued_ago
    transfer = signed(
        initiate(order_id, resource.id, source, destination),
        root(source),
        Action.INITIATE,
        order_id,
        at=issued,
    )
    opening = open_input(transfer, issued + received_after_issue)
    if refused_with is None:
        await its_run_opens(activities, opening)
        order = await store.orders.get_order(order_id)
        assert order is not None and order.status is OrderStatus.PENDING
    else:
        with pytest.raises(ApplicationError) as refused:
            await its_run_opens(activities, opening)
        assert refused.value.type == refused_with
        assert await store.orders.get_order(order_id) is None


async def test_a_late_retry_of_a_write_that_committed_is_answered_not_refused(
    store: Stores, factory: Factory
) -> None:
    """A retry that reaches the worker past ACT_WITHIN (after a crash, say) is refused as "not now"
    only if its first attempt did nothing: an order it opened, or a cancel it recorded, is answered, so
    the run learns what the database already says."""
    activities = transfer_activities(store)
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    issued = datetime.now(UTC) - timedelta(seconds=30)  # signed long ago, received at once
    transfer = signed(
        initiate(order_id, resource.id, source, destination),
        root(source),
        Action.INITIATE,
        order_id,
        at=issued,
    )
    opening = open_input(transfer, issued)
    with pytest.raises(ApplicationError) as refused:  # nothing opened yet: "not now"
        await its_run_opens(activities, opening)
    assert refused.value.type == ErrorCode.SERVICE_UNAVAILABLE
    in_time = signed(
        initiate(order_id, resource.id, source, destination), root(source), Action.INITIATE, order_id
    )
    await its_run_opens(activities, open_input(in_time, datetime.now(UTC)))
    # The late attempt again, now that the order exists: adopted.
    assert (await its_run_opens(activities, opening)).product is resource.product

    cancel = signed(CancelRequest(), root(source), Action.CANCEL, order_id)
    decided = DecideInput(
        order_id=order_id,
        status=OrderStatus.CANCELLED,
        at=datetime.now(UTC),
        action=Action.CANCEL,
        attested=Attested.of(cancel, datetime.now(UTC)),
    )
    await ActivityEnvironment().run(activities.decide, decided)
    late_cancel = signed(CancelRequest(), root(source), Action.CANCEL, order_id, at=issued)
    late = decided.model_copy(update={"attested": Attested.of(late_cancel, issued)})
    await ActivityEnvironment().run(activities.decide, late)  # the cancel committed: answered
    order = await store.orders.get_order(order_id)
    assert order is not None and order.status is OrderStatus.CANCELLED
    assert [e.action for e in order.events] == [Action.INITIATE, Action.CANCEL]


async def test_a_start_replayed_under_another_workflow_id_opens_nothing(
    store: Stores, factory: Factory
) -> None:
    """A real initiate's input, attestation and all, started again under another workflow id (a client
    that reaches Temporal directly): its run is not the order's, and adopts nothing."""
    activities = transfer_activities(store)
    source, destination = await factory.account(), await factory.account()
    resource = await factory.resource(source)
    order_id = fresh_id("to")
    opening = signed_open_input(order_id, resource.id, source, destination, datetime.now(UTC))
    await its_run_opens(activities, opening)
    before = await snapshot(store.engine)
    with pytest.raises(ApplicationError) as refused:
        await its_run(fresh_id("to")).run(activities.open_order, opening)
    assert refused.value.type == ErrorCode.UNAUTHENTICATED and refused.value.non_retryable
    assert await snapshot(store.engine) == before
