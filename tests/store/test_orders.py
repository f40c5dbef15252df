"""Opening orders under the lock, deciding and finishing them, and reading them back."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from activities.order_transactions import DECISIONS, StepName
from domain.codes import ErrorCode
from domain.models import (
    Action,
    Billing,
    Event,
    InstanceStatus,
    OrderStatus,
    Outcome,
    Product,
    ReceivingConfig,
    Refusal,
    StepStatus,
)
from domain.refusals import TransferError
from store.tables import OrderRow, ResourceRow
from tests.store.builders import (
    NOW,
    account,
    add_accounts,
    add_resources,
    enterprise,
    open_args,
    pending_order,
    resource,
)
from tests.stores import Stores


def code_of(found: Refusal | None) -> ErrorCode | None:
    return found.code if found is not None else None


async def refusal(call: Any) -> TransferError:
    with pytest.raises(TransferError) as refused:
        await call
    return refused.value


async def test_open_order_takes_the_lock_and_records_the_initiation(store: Stores) -> None:
    order = await pending_order(store)
    assert order.status is OrderStatus.PENDING and order.product is Product.ECS
    assert (order.created_at, order.expires_at) == (NOW, NOW + timedelta(hours=24))
    recorded = await store.orders.get_order(order.order_id)
    assert recorded is not None
    assert [(e.action, e.outcome, e.actor_account_id) for e in recorded.events] == [
        (Action.INITIATE, Outcome.ACCEPTED, "src")
    ]
    locked = await store.get_resource("r-o-1")
    assert locked is not None and locked.locked_by_order_id == "o-1" and locked.owner_account_id == "src"
    assert recorded.model_copy(update={"steps": [], "events": []}) == order  # the opening answers its fields
    assert await store.orders.get_order("o-2") is None


async def test_an_existing_order_is_answered_unchanged_without_the_rules(store: Stores) -> None:
    order = await pending_order(store)
    await store.provisioning.update_account("src", frozen=True)  # would refuse a new order
    assert await store.orders.open_order(**open_args("o-1", "r-o-1", "src", "dst")) == order


async def test_open_order_refuses_by_the_rules_in_their_order(store: Stores) -> None:
    await add_accounts(
        store,
        account("src"),
        account("dst"),
        account("cold", frozen=True),
        account("new", verified=False, entity_id=None, entity_name=None),
    )
    await add_resources(
        store,
        resource("r-ok", "src"),
        resource("r-theirs", "dst"),
        resource("r-young", "src", created_at=NOW - timedelta(days=1), expires_at=NOW + timedelta(days=1)),
        resource("eip-sub", "src", product=Product.EIP, network=None, status=None),
        resource(
            "eip-on",
            "src",
            product=Product.EIP,
            billing=Billing.PAY_AS_YOU_GO,
            expires_at=None,
            network=None,
            status=None,
            attached_to="r-ok",
        ),
        resource("rds-1", "src", product=Product.RDS, network=None, status=None),
    )
    cases = [
        (open_args("o", "r-ok", "src", "ghost"), ErrorCode.DESTINATION_NOT_FOUND),
        (open_args("o", "r-ok", "src", "new"), ErrorCode.ACCOUNT_NOT_VERIFIED),
        (open_args("o", "r-ok", "src", "cold"), ErrorCode.ACCOUNT_FROZEN),
        (open_args("o", "r-ok", "src", "src"), ErrorCode.SAME_ACCOUNT),
        (open_args("o", "r-theirs", "src", "dst"), ErrorCode.RESOURCE_NOT_FOUND),
        (open_args("o", "ghost", "src", "dst"), ErrorCode.RESOURCE_NOT_FOUND),
        (open_args("o", "rds-1", "src", "dst"), ErrorCode.PRODUCT_NOT_SUPPORTED),
        (open_args("o", "r-young", "src", "dst"), ErrorCode.RESOURCE_TOO_NEW),
        (open_args("o", "eip-on", "src", "dst"), ErrorCode.EIP_ATTACHED),
    ]
    for arguments, code in cases:
        assert (await refusal(store.orders.open_order(**arguments))).code is code
    converted = await refusal(store.orders.open_order(**open_args("o", "eip-sub", "src", "dst")))
    assert converted.code is ErrorCode.PRODUCT_NOT_SUPPORTED and "pay-as-you-go" in converted.message
    assert await store.orders.get_order("o") is None
    assert (await store.get_resource("r-ok")).locked_by_order_id is None  # type: ignore[union-attr]


async def test_one_open_order_per_resource_under_concurrency(store: Stores, engine: AsyncEngine) -> None:
    await add_accounts(store, account("src"), *(account(f"dst-{n}") for n in range(10)))
    await add_resources(store, resource("r-1", "src"))
    results = await asyncio.gather(
        *(store.orders.open_order(**open_args(f"o-{n}", "r-1", "src", f"dst-{n}")) for n in range(10)),
        return_exceptions=True,
    )
    opened = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(opened) == 1
    assert all(isinstance(r, TransferError) and r.code is ErrorCode.RESOURCE_IN_TRANSFER for r in refused)
    async with engine.connect() as connection:
        pending = await connection.scalar(
            select(func.count()).select_from(OrderRow).where(OrderRow.resource_id == "r-1")
        )
        lock = await connection.scalar(select(ResourceRow.locked_by_order_id).where(ResourceRow.id == "r-1"))
    assert pending == 1 and lock == opened[0].order_id


async def test_an_individual_reaches_one_enterprise_only_under_concurrency(store: Stores) -> None:
    await add_accounts(store, account("src"), enterprise("corp-a", "a"), enterprise("corp-b", "b"))
    await add_resources(store, resource("r-1", "src"), resource("r-2", "src"))
    results = await asyncio.gather(
        store.orders.open_order(**open_args("o-a", "r-1", "src", "corp-a")),
        store.orders.open_order(**open_args("o-b", "r-2", "src", "corp-b")),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 1
    assert isinstance(refused[0], TransferError) and refused[0].code is ErrorCode.ENTERPRISE_DESTINATION_LIMIT


async def test_closed_orders_leave_the_destination_limits(store: Stores) -> None:
    await add_accounts(store, account("src"), enterprise("corp-a", "a"), enterprise("corp-b", "b"))
    await add_resources(store, resource("r-1", "src"), resource("r-2", "src"))
    await store.orders.open_order(**open_args("o-a", "r-1", "src", "corp-a"))
    blocked = await refusal(store.orders.open_order(**open_args("o-b", "r-2", "src", "corp-b")))
    assert blocked.code is ErrorCode.ENTERPRISE_DESTINATION_LIMIT
    await store.orders.decide("o-a", status=OrderStatus.CANCELLED, at=NOW, actor_account_id="src")
    await store.orders.open_order(**open_args("o-b", "r-2", "src", "corp-b"))


async def test_confirm_and_cancel_race_and_exactly_one_wins(store: Stores) -> None:
    for n in range(4):
        order = await pending_order(store, f"o-{n}")
        confirm = store.orders.decide(
            order.order_id, status=OrderStatus.TRANSFERRING, at=NOW, actor_account_id="dst"
        )
        cancel = store.orders.decide(
            order.order_id, status=OrderStatus.CANCELLED, at=NOW, actor_account_id="src"
        )
        expire = store.orders.decide(
            order.order_id, status=OrderStatus.EXPIRED, at=NOW, actor_account_id=None
        )
        results = await asyncio.gather(confirm, cancel, expire, return_exceptions=True)
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 2
        winner = won[0].status
        for error in lost:
            assert isinstance(error, TransferError) and error.code is ErrorCode.ORDER_NOT_PENDING
            assert error.details == {"status": winner.value}
        final = await store.orders.get_order(order.order_id)
        assert final is not None and final.status is winner
        assert [e.action for e in final.events] == [Action.INITIATE, DECISIONS[winner]]
        lock = (await store.get_resource(order.resource_id)).locked_by_order_id  # type: ignore[union-attr]
        assert lock == (order.order_id if winner is OrderStatus.TRANSFERRING else None)


async def test_decide_records_the_decision(store: Stores) -> None:
    order = await pending_order(store)
    config = ReceivingConfig(resource_group="rg-new", tags={"team": "b"})
    confirmed = await store.orders.decide(
        order.order_id,
        status=OrderStatus.TRANSFERRING,
        at=NOW + timedelta(hours=1),
        actor_account_id="dst",
        receiving_config=config,
    )
    assert confirmed.status is OrderStatus.TRANSFERRING and confirmed.confirmed_at == NOW + timedelta(hours=1)
    recorded = await store.orders.get_order(order.order_id)
    assert recorded is not None and recorded.events[-1] == Event(
        at=NOW + timedelta(hours=1), actor_account_id="dst", action=Action.CONFIRM, outcome=Outcome.ACCEPTED
    )
    # the same decision again answers the order; another one is refused with the status
    assert await store.orders.decide(
        order.order_id, status=OrderStatus.TRANSFERRING, at=NOW, actor_account_id="dst"
    ) == (confirmed)
    late = await refusal(
        store.orders.decide(order.order_id, status=OrderStatus.REJECTED, at=NOW, actor_account_id="dst")
    )
    assert (late.code, late.details) == (ErrorCode.ORDER_NOT_PENDING, {"status": "transferring"})
    missing = await refusal(
        store.orders.decide("ghost", status=OrderStatus.CANCELLED, at=NOW, actor_account_id="src")
    )
    assert missing.code is ErrorCode.ORDER_NOT_FOUND
    with pytest.raises(ValueError):
        await store.orders.decide(order.order_id, status=OrderStatus.COMPLETED, at=NOW, actor_account_id=None)


async def test_every_terminal_status_releases_the_lock(store: Stores) -> None:
    for status in (OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED):
        order = await pending_order(store, f"o-{status.value}")
        await store.orders.decide(order.order_id, status=status, at=NOW, actor_account_id=None)
        assert (await store.get_resource(order.resource_id)).locked_by_order_id is None  # type: ignore[union-attr]
    for status in (OrderStatus.COMPLETED, OrderStatus.FAILED):
        order = await pending_order(store, f"o-{status.value}")
        early = await refusal(store.orders.finish(order.order_id, status=status, at=NOW))
        assert early.details == {"status": "pending"}
        await store.orders.decide(
            order.order_id, status=OrderStatus.TRANSFERRING, at=NOW, actor_account_id="dst"
        )
        failure = (
            Refusal(code=ErrorCode.ACCOUNT_FROZEN, message="frozen") if status is OrderStatus.FAILED else None
        )
        done = await store.orders.finish(
            order.order_id, status=status, at=NOW + timedelta(minutes=1), failure=failure
        )
        assert done.status is status and done.failure == failure
        assert done.completed_at == (NOW + timedelta(minutes=1) if status is OrderStatus.COMPLETED else None)
        recorded = await store.orders.get_order(order.order_id)
        assert recorded is not None
        last = recorded.events[-1]
        assert (last.action, last.actor_account_id, last.code) == (
            Action.COMPLETE if status is OrderStatus.COMPLETED else Action.FAIL,
            None,
            failure.code if failure else None,
        )
        assert (await store.get_resource(order.resource_id)).locked_by_order_id is None  # type: ignore[union-attr]
    # a released resource takes a new order
    await store.orders.open_order(**open_args("o-again", "r-o-cancelled", "src", "dst"))


async def test_record_event_and_steps_make_the_detailed_procedure(store: Stores) -> None:
    order = await pending_order(store)
    refused = Event(
        at=NOW + timedelta(minutes=5),
        actor_account_id="dst",
        action=Action.CONFIRM,
        outcome=Outcome.REFUSED,
        code=ErrorCode.INSTANCE_NOT_STOPPED,
    )
    await store.orders.record_event(event_id="e-1", order_id=order.order_id, event=refused)
    await store.orders.record_event(event_id="e-1", order_id=order.order_id, event=refused)
    t = NOW + timedelta(minutes=10)
    failure = Refusal(code=ErrorCode.INSTANCE_NOT_STOPPED, message="stop it")
    name = StepName.CONFIRMATION_CHECK
    second = timedelta(seconds=1)
    await store.record_step(order.order_id, name, started_at=t, finished_at=t + second, error=failure)
    await store.record_step(
        order.order_id, name, started_at=t + 5 * second, finished_at=t + 6 * second, attempts=2
    )
    # a retry of a step that succeeded counts its attempt and keeps the rest
    await store.record_step(
        order.order_id, name, started_at=t + 8 * second, finished_at=t + 9 * second, attempts=3
    )
    await store.record_step(
        order.order_id, StepName.DESTINATION_VERIFICATION, started_at=t, finished_at=t + 2 * second
    )
    got = await store.orders.get_order(order.order_id)
    assert got is not None
    assert [e.code for e in got.events] == [None, ErrorCode.INSTANCE_NOT_STOPPED]
    check, verification = got.steps
    assert (check.name, check.status, check.started_at, check.finished_at, check.attempts, check.error) == (
        StepName.CONFIRMATION_CHECK,
        StepStatus.SUCCEEDED,
        t,
        t + timedelta(seconds=6),
        3,
        None,
    )
    assert (verification.name, verification.status, verification.finished_at) == (
        StepName.DESTINATION_VERIFICATION,
        StepStatus.SUCCEEDED,
        t + 2 * second,
    )


async def test_a_step_run_again_after_a_crash_counts_one_more_attempt(store: Stores) -> None:
    """A local activity run again by the next worker starts its own count at 1 again."""
    order = await pending_order(store)
    name, t = StepName.BILLING_HANDOFF, NOW + timedelta(minutes=10)
    for minute in range(3):
        at = t + timedelta(minutes=minute)
        await store.record_step(order.order_id, name, started_at=at, finished_at=at, attempts=1)
    got = await store.orders.get_order(order.order_id)
    assert got is not None
    ((step_name, attempts, started_at, finished_at),) = [
        (s.name, s.attempts, s.started_at, s.finished_at) for s in got.steps
    ]
    assert (step_name, attempts, started_at, finished_at) == (name, 3, t, t)


async def test_list_orders_pages_newest_first(store: Stores) -> None:
    await add_accounts(store, *(account(a) for a in ("a", "b", "c", "d")))
    # a -> b, b -> c and c -> d, two of them at the same instant (the order id breaks the tie)
    plan = [
        ("o-1", "a", "b", 0),
        ("o-2", "b", "c", 1),
        ("o-3", "a", "b", 1),
        ("o-4", "c", "d", 2),
        ("o-5", "a", "b", 3),
        ("o-6", "b", "c", 4),
        ("o-7", "a", "b", 5),
    ]
    for order_id, source, destination, minute in plan:
        await add_resources(store, resource(f"r-{order_id}", source))
        at = NOW + timedelta(minutes=minute)
        await store.orders.open_order(**open_args(order_id, f"r-{order_id}", source, destination, at=at))
    await store.orders.decide("o-5", status=OrderStatus.CANCELLED, at=NOW, actor_account_id="a")

    async def every_page(**filters: Any) -> list[str]:
        ids: list[str] = []
        cursor = None
        for _ in range(10):
            page, cursor = await store.list_orders(limit=2, cursor=cursor, **filters)
            assert len(page) <= 2
            # Listed orders are whole: the same as get_order, steps and events included.
            assert page == [await store.orders.get_order(o.order_id) for o in page]
            ids += [o.order_id for o in page]
            if cursor is None:
                return ids
        raise AssertionError("pagination does not end")

    assert await every_page(account_ids={"b"}, role=None, statuses=None) == [
        "o-7",
        "o-6",
        "o-5",
        "o-3",
        "o-2",
        "o-1",
    ]
    assert await every_page(account_ids={"b"}, role="source", statuses=None) == ["o-6", "o-2"]
    assert await every_page(account_ids={"b"}, role="destination", statuses=None) == [
        "o-7",
        "o-5",
        "o-3",
        "o-1",
    ]
    assert await every_page(account_ids={"a", "c"}, role="source", statuses={OrderStatus.PENDING}) == [
        "o-7",
        "o-4",
        "o-3",
        "o-1",
    ]
    assert await every_page(account_ids={"a"}, role=None, statuses={OrderStatus.CANCELLED}) == ["o-5"]
    assert await every_page(account_ids=set(), role=None, statuses=None) == []
    # Several statuses (the console's "My Confirmed Resource Transfers": all but pending), full pages.
    not_pending = set(OrderStatus) - {OrderStatus.PENDING}
    await store.orders.decide("o-1", status=OrderStatus.REJECTED, at=NOW, actor_account_id="b")
    assert await every_page(account_ids={"b"}, role="destination", statuses=not_pending) == ["o-5", "o-1"]
    everything, cursor = await store.list_orders(
        account_ids={"a", "b", "c", "d"}, role=None, statuses=None, limit=100, cursor=None
    )
    assert len(everything) == 7 and cursor is None
    for bad in ("!!!", "bm90IGpzb24", "WzFd", "WyJ4IiwieSJd"):
        with pytest.raises(TransferError) as refused:
            await store.list_orders(account_ids={"a"}, role=None, statuses=None, limit=2, cursor=bad)
        assert refused.value.code is ErrorCode.VALIDATION_ERROR


async def test_confirmation_failure_rechecks_every_rule_and_stopped_state_last(
    store: Stores, engine: AsyncEngine
) -> None:
    order = await pending_order(store)
    assert await store.confirmation_refusal(order.order_id, at=NOW) is None  # its own lock is no blocker
    await store.set_instance_status(order.resource_id, InstanceStatus.RUNNING)
    found = await store.confirmation_refusal(order.order_id, at=NOW)
    assert found is not None and found.code is ErrorCode.INSTANCE_NOT_STOPPED and found.message
    await store.provisioning.update_account("dst", frozen=True)
    assert code_of(await store.confirmation_refusal(order.order_id, at=NOW)) is ErrorCode.ACCOUNT_FROZEN
    await store.provisioning.update_account("dst", frozen=False)
    expiring = NOW + timedelta(days=333)
    assert code_of(await store.confirmation_refusal(order.order_id, at=expiring)) is (
        ErrorCode.RESOURCE_EXPIRING_SOON
    )
    async with engine.begin() as connection:  # another order's lock would block
        await connection.execute(
            update(ResourceRow)
            .where(ResourceRow.id == order.resource_id)
            .values(locked_by_order_id="o-other")
        )
    assert code_of(await store.confirmation_refusal(order.order_id, at=NOW)) is ErrorCode.RESOURCE_IN_TRANSFER
    assert code_of(await store.confirmation_refusal("ghost", at=NOW)) is ErrorCode.ORDER_NOT_FOUND


async def test_confirmation_failure_does_not_count_the_order_itself(store: Stores) -> None:
    await add_accounts(store, account("src"), enterprise("corp-a", "a"), enterprise("corp-b", "b"))
    await add_resources(store, resource("r-1", "src"))
    await store.orders.open_order(**open_args("o-a", "r-1", "src", "corp-a"))
    assert await store.confirmation_refusal("o-a", at=NOW) is None
    assert await store.account_refusal("src", "corp-a") is None
    assert code_of(await store.account_refusal("src", "corp-b")) is ErrorCode.ENTERPRISE_DESTINATION_LIMIT
    assert await store.account_refusal("src", "corp-b", excluding_order_id="o-a") is None


async def test_a_confirm_needs_the_instance_stopped_even_after_the_check(store: Stores) -> None:
    order = await pending_order(store)
    await store.set_instance_status(order.resource_id, InstanceStatus.RUNNING)
    late_start = await refusal(
        store.orders.decide(order.order_id, status=OrderStatus.TRANSFERRING, at=NOW, actor_account_id="dst")
    )
    assert late_start.code is ErrorCode.INSTANCE_NOT_STOPPED
    assert (await store.orders.get_order(order.order_id)).status is OrderStatus.PENDING  # type: ignore[union-attr]
    # cancel, reject and expire need no stopped instance
    await store.orders.decide(order.order_id, status=OrderStatus.CANCELLED, at=NOW, actor_account_id="src")


async def test_a_start_racing_a_confirm_never_leaves_a_running_instance_in_transfer(
    store: Stores,
) -> None:
    for n in range(6):
        order = await pending_order(store, f"o-{n}")
        start, confirm = await asyncio.gather(
            store.set_instance_status(order.resource_id, InstanceStatus.RUNNING),
            store.orders.decide(
                order.order_id, status=OrderStatus.TRANSFERRING, at=NOW, actor_account_id="dst"
            ),
            return_exceptions=True,
        )
        resource = await store.get_resource(order.resource_id)
        final = await store.orders.get_order(order.order_id)
        assert resource is not None and final is not None
        if final.status is OrderStatus.TRANSFERRING:
            assert isinstance(start, TransferError) and start.code is ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER  # type: ignore[has-type]
            assert resource.status is InstanceStatus.STOPPED
        else:
            assert isinstance(confirm, TransferError) and confirm.code is ErrorCode.INSTANCE_NOT_STOPPED  # type: ignore[has-type]
            assert resource.status is InstanceStatus.RUNNING and final.status is OrderStatus.PENDING
