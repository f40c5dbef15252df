"""Every write of the store, repeated with the same arguments, answers the same and changes nothing.

The whole database is compared (orders with their steps and events, resources, charges, hand-offs,
verifications, accounts and credentials), not just the method's answer.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from activities.order_transactions import StepAttempt, StepName
from domain.codes import ErrorCode
from domain.models import (
    Action,
    ChargeKind,
    Event,
    InstanceStatus,
    OrderStatus,
    Outcome,
    PrincipalKind,
    ReceivingConfig,
    Refusal,
)
from domain.refusals import TransferError
from tests.store.builders import NOW, RETRY_COUNTS, account, open_args, resource, snapshot, twice
from tests.stores import Stores


async def test_every_write_of_a_completed_transfer_twice(store: Stores, engine: AsyncEngine) -> None:
    later = NOW + timedelta(minutes=1)
    for account_id in ("src", "dst", "ma"):
        await twice(
            engine,
            lambda a=account_id: store.provisioning.create_account(account(a), created_at=NOW),  # type: ignore[misc]
        )
    await twice(engine, lambda: store.provisioning.update_account("dst", entity_name="Entity dst Ltd."))
    await twice(
        engine,
        lambda: store.provisioning.add_credential(account_id="src", token="t-src", kind=PrincipalKind.ROOT),
    )
    await twice(
        engine,
        lambda: store.provisioning.add_credential(
            account_id="src", token="t-ram", kind=PrincipalKind.RAM_USER, name="ops", ram_user_id="ops"
        ),
    )
    await twice(engine, lambda: store.provisioning.create_organization("org", "ma", ["src"]))
    await twice(engine, lambda: store.provisioning.create_resource(resource("r-1", "src"), at=NOW))
    await twice(
        engine,
        lambda: store.add_charge(
            resource_id="r-1",
            payer_account_id="src",
            kind=ChargeKind.RENEWAL,
            amount=Decimal("100.00"),
            period_start=NOW,
            period_end=NOW + timedelta(days=30),
            created_at=NOW,
            idempotency_key="renew-r-1",
        ),
    )
    await twice(engine, lambda: store.set_instance_status("r-1", InstanceStatus.STOPPED))
    await twice(engine, lambda: store.orders.open_order(**open_args("o-1", "r-1", "src", "dst")))
    await twice(
        engine, lambda: store.record_step("o-1", StepName.OPEN_ORDER, started_at=NOW, finished_at=later)
    )
    refused = Event(
        at=later,
        actor_account_id="dst",
        action=Action.CONFIRM,
        outcome=Outcome.REFUSED,
        code="VERIFICATION_FAILED",
    )
    await twice(
        engine, lambda: store.orders.record_event(event_id="o-1:refused-1", order_id="o-1", event=refused)
    )
    await twice(
        engine,
        lambda: store.orders.decide(
            "o-1",
            status=OrderStatus.TRANSFERRING,
            at=later,
            actor_account_id="dst",
            receiving_config=ReceivingConfig(resource_group="rg", tags={"k": "v"}),
        ),
    )
    await twice(engine, lambda: store.orders.reassign_ownership("o-1", at=NOW))
    await twice(engine, lambda: store.orders.hand_off_billing("o-1"))
    await twice(engine, lambda: store.orders.apply_receiving_config("o-1"))
    completed = await twice(
        engine, lambda: store.orders.finish("o-1", status=OrderStatus.COMPLETED, at=later)
    )
    assert completed.status is OrderStatus.COMPLETED
    recorded = await store.orders.get_order("o-1")
    assert recorded is not None
    assert [e.action for e in recorded.events] == [
        Action.INITIATE,
        Action.CONFIRM,
        Action.CONFIRM,
        Action.COMPLETE,
    ]
    # The hand-off's steps once more after the order completed (a run whose local activities' results
    # died with its worker does them again): done, nothing changes.
    before = await snapshot(engine, ignoring=RETRY_COUNTS)
    await store.orders.reassign_ownership("o-1", at=later)
    await store.orders.hand_off_billing("o-1")
    await store.orders.apply_receiving_config("o-1")
    assert await snapshot(engine, ignoring=RETRY_COUNTS) == before


async def test_every_write_of_a_compensated_transfer_twice(store: Stores, engine: AsyncEngine) -> None:
    for account_id in ("src", "dst"):
        await store.provisioning.create_account(account(account_id), created_at=NOW)
    await store.provisioning.create_resource(resource("r-1", "src"), at=NOW)
    await store.orders.open_order(**open_args("o-1", "r-1", "src", "dst"))
    await store.orders.decide("o-1", status=OrderStatus.TRANSFERRING, at=NOW, actor_account_id="dst")
    await store.orders.reassign_ownership("o-1", at=NOW)
    await store.orders.hand_off_billing("o-1")
    failure = Refusal(code=ErrorCode.ACCOUNT_FROZEN, message="frozen")
    await twice(
        engine,
        lambda: store.record_step(
            "o-1", StepName.BILLING_RESTORE, started_at=NOW, finished_at=NOW, attempts=2, error=failure
        ),
    )
    restoring = StepAttempt(name=StepName.BILLING_RESTORE, started_at=NOW, attempt=3)
    await twice(engine, lambda: store.orders.restore_billing("o-1", at=NOW, step=restoring))
    await twice(engine, lambda: store.orders.restore_ownership("o-1"))
    await twice(
        engine, lambda: store.orders.finish("o-1", status=OrderStatus.FAILED, at=NOW, failure=failure)
    )
    # The compensation once more after the order failed: done, nothing changes; the hand-off refuses.
    before = await snapshot(engine, ignoring=RETRY_COUNTS)
    await store.orders.restore_billing("o-1", at=NOW)
    await store.orders.restore_ownership("o-1")
    with pytest.raises(TransferError) as refused:
        await store.orders.reassign_ownership("o-1", at=NOW)
    assert refused.value.code is ErrorCode.ORDER_NOT_PENDING
    assert await snapshot(engine, ignoring=RETRY_COUNTS) == before


async def test_every_pending_decision_twice(store: Stores, engine: AsyncEngine) -> None:
    for account_id in ("src", "dst"):
        await store.provisioning.create_account(account(account_id), created_at=NOW)
    for status in (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED):
        await store.provisioning.create_resource(resource(f"r-{status.value}", "src"), at=NOW)
        await store.orders.open_order(**open_args(f"o-{status.value}", f"r-{status.value}", "src", "dst"))
        decided = await twice(
            engine,
            lambda s=status: store.orders.decide(f"o-{s.value}", status=s, at=NOW, actor_account_id="src"),  # type: ignore[misc]
        )
        assert decided.status is status
