"""ResourceService on both backends: the transfer lock, ownership and visibility, charges and refunds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.billing import MONTH
from domain.codes import ErrorCode
from domain.models import (
    Billing,
    ChargeKind,
    InstanceStatus,
    OrderStatus,
    Product,
)
from domain.refusals import TransferError
from domain.rules import resource_blockers
from starter.services.resources import ResourceService
from tests.store.builders import (
    NOW,
    account,
    add_accounts,
    add_resources,
    open_args,
    resource,
    snapshot,
    twice,
)
from tests.stores import Stores, root_of

EXPIRES = NOW + timedelta(days=335)


@pytest.fixture
def actions(store: Stores, engine: AsyncEngine) -> ResourceService:
    return store.resources


async def setup(store: Stores) -> None:
    """Accounts src (owner), dst; an ECS subscription i-1 (CNY 100 a month, 335 days left, original
    charge 1200.00), a pay-as-you-go EIP e-1 and a pay-as-you-go ECS i-2, all of src."""
    await add_accounts(store, account("src"), account("dst"), account("stranger"))
    await add_resources(
        store,
        resource("i-1", "src"),
        resource("e-1", "src", product=Product.EIP, billing=Billing.PAY_AS_YOU_GO, expires_at=None,
                 network=None, status=None, monthly_price=Decimal("20.00"), bandwidth_mbps=5),
        resource("i-2", "src", billing=Billing.PAY_AS_YOU_GO, expires_at=None),
    )  # fmt: skip


async def open_order(store: Stores, resource_id: str, order_id: str = "o-1") -> None:
    await store.orders.open_order(**open_args(order_id, resource_id, "src", "dst"))


async def transfer(
    store: Stores, resource_id: str, order_id: str, source: str, destination: str, at: datetime
) -> None:
    """A whole transfer as the workflow writes it: open, confirm, reassign, hand off billing, complete."""
    await store.orders.open_order(**open_args(order_id, resource_id, source, destination, at=at))
    await store.orders.decide(order_id, status=OrderStatus.TRANSFERRING, at=at, actor_account_id=destination)
    await store.orders.reassign_ownership(order_id, at=at)
    await store.orders.hand_off_billing(order_id)
    await store.orders.finish(order_id, status=OrderStatus.COMPLETED, at=at)


async def refused(call: Awaitable[Any], code: ErrorCode) -> TransferError:
    with pytest.raises(TransferError) as error:
        await call
    assert error.value.code is code, error.value.message
    return error.value


# The actions SPEC §3 locks, each on a resource it applies to: (resource id, the call).
LOCKED: dict[str, tuple[str, Callable[[ResourceService], Awaitable[Any]]]] = {
    "upgrade": (
        "i-1",
        lambda a: a.upgrade("i-1", actor=root_of("src"), monthly_price=Decimal("160.00"), at=NOW),
    ),
    "downgrade": (
        "i-1",
        lambda a: a.downgrade("i-1", actor=root_of("src"), monthly_price=Decimal("80.00"), at=NOW),
    ),
    "renew": ("i-1", lambda a: a.renew("i-1", actor=root_of("src"), months=1, at=NOW)),
    "release": ("i-1", lambda a: a.release("i-1", actor=root_of("src"), at=NOW)),
    "change_os": ("i-1", lambda a: a.change_os("i-1", actor=root_of("src"))),
    "convert_billing": ("i-1", lambda a: a.convert_billing("i-1", actor=root_of("src"), at=NOW)),
    "change_bandwidth": (
        "e-1",
        lambda a: a.change_bandwidth("e-1", actor=root_of("src"), bandwidth_mbps=50),
    ),
    "attach": ("e-1", lambda a: a.attach("e-1", actor=root_of("src"), instance_id="i-2")),
}


@pytest.mark.parametrize("name", LOCKED)
async def test_a_locked_action_is_refused_while_an_order_is_open_and_allowed_after(
    store: Stores, actions: ResourceService, engine: AsyncEngine, name: str
) -> None:
    await setup(store)
    resource_id, call = LOCKED[name]
    await open_order(store, resource_id)
    before = await snapshot(engine)
    await refused(call(actions), ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER)
    assert await snapshot(engine) == before  # refused: nothing written

    await store.orders.decide("o-1", status=OrderStatus.CANCELLED, at=NOW, actor_account_id="src")
    result = await call(actions)
    assert result.resource.id == resource_id


async def test_stop_detach_and_auto_renew_stay_allowed_while_locked(
    store: Stores, actions: ResourceService
) -> None:
    await setup(store)
    await add_resources(store, resource("i-3", "src", status=InstanceStatus.RUNNING))
    await open_order(store, "i-3", "o-3")
    stopped = await actions.stop("i-3", actor=root_of("src"))
    assert stopped.resource.status is InstanceStatus.STOPPED
    assert stopped.resource.locked_by_order_id == "o-3"

    await add_resources(
        store,
        resource("e-2", "src", product=Product.EIP, billing=Billing.PAY_AS_YOU_GO, expires_at=None,
                 network=None, status=None),
    )  # fmt: skip
    await open_order(store, "e-2", "o-e2")
    assert (await actions.detach("e-2", actor=root_of("src"))).resource.attached_to is None

    await open_order(store, "i-1", "o-1")
    charge = await actions.auto_renew("i-1", at=NOW)
    assert (charge.kind, charge.amount, charge.payer_account_id) == (
        ChargeKind.AUTO_RENEWAL,
        Decimal("100.00"),
        "src",
    )
    assert (charge.period_start, charge.period_end) == (EXPIRES, EXPIRES + MONTH)
    assert (await store.get_resource("i-1")).expires_at == EXPIRES + MONTH  # type: ignore[union-attr]


async def test_start_is_refused_only_once_the_order_is_confirmed(
    store: Stores, actions: ResourceService
) -> None:
    await setup(store)
    await open_order(store, "i-1")
    started = await actions.start("i-1", actor=root_of("src"))  # pending: allowed
    assert started.resource.status is InstanceStatus.RUNNING
    await actions.stop("i-1", actor=root_of("src"))

    await store.orders.decide("o-1", status=OrderStatus.TRANSFERRING, at=NOW, actor_account_id="dst")
    await refused(actions.start("i-1", actor=root_of("src")), ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER)
    assert (await actions.stop("i-1", actor=root_of("src"))).resource.status is InstanceStatus.STOPPED

    await store.orders.finish("o-1", status=OrderStatus.FAILED, at=NOW)  # lock released, src still owns it
    assert (await actions.start("i-1", actor=root_of("src"))).resource.status is InstanceStatus.RUNNING


async def test_an_open_order_and_an_action_racing_never_both_win_late(
    store: Stores, actions: ResourceService
) -> None:
    """Either the renewal comes first (and the order opens after it) or the order does and the
    renewal is refused; never a renewal charge written under the lock."""
    await setup(store)
    outcomes = await asyncio.gather(
        store.orders.open_order(**open_args("o-1", "i-1", "src", "dst")),
        actions.renew("i-1", actor=root_of("src"), months=1, at=NOW),
        return_exceptions=True,
    )
    assert not isinstance(outcomes[0], BaseException)
    renewals = [c for c in await store.list_charges("i-1") if c.kind is ChargeKind.RENEWAL]
    if isinstance(outcomes[1], BaseException):
        assert isinstance(outcomes[1], TransferError)
        assert outcomes[1].code is ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER
        assert renewals == []
    else:
        assert len(renewals) == 1


async def test_renew_upgrade_downgrade_and_release_charge_and_refund_exactly(
    store: Stores, actions: ResourceService
) -> None:
    await setup(store)
    renewed = await actions.renew("i-1", actor=root_of("src"), months=2, at=NOW)
    [renewal] = renewed.charges
    assert (renewal.kind, renewal.amount, renewal.payer_account_id) == (
        ChargeKind.RENEWAL,
        Decimal("200.00"),
        "src",
    )
    assert (renewal.period_start, renewal.period_end) == (EXPIRES, EXPIRES + 2 * MONTH)
    assert renewed.resource.expires_at == EXPIRES + 2 * MONTH

    # 60.00 a month more for the 395 days left: 60 * 395 / 30 = 790.00
    upgraded = await actions.upgrade("i-1", actor=root_of("src"), monthly_price=Decimal("160.00"), at=NOW)
    [upgrade] = upgraded.charges
    assert (upgrade.kind, upgrade.amount) == (ChargeKind.UPGRADE, Decimal("790.00"))
    assert (upgrade.period_start, upgrade.period_end) == (NOW, EXPIRES + 2 * MONTH)
    assert upgraded.resource.monthly_price == Decimal("160.00")

    # 79 of the 395 days later the upgrade's unused part is 790 * 316 / 395 = 632.00
    later = NOW + timedelta(days=79)
    downgraded = await actions.downgrade(
        "i-1", actor=root_of("src"), monthly_price=Decimal("120.00"), at=later
    )
    [refund] = downgraded.charges
    assert (refund.kind, refund.amount, refund.refunds_charge_id) == (
        ChargeKind.REFUND,
        Decimal("-632.00"),
        upgrade.id,
    )
    assert downgraded.resource.monthly_price == Decimal("120.00")

    # original 1200.00 for 365 days, 256 left: 841.6438... -> 841.64 (down); renewal 200.00 unused;
    # the upgrade is refunded already.
    quote = await actions.refund_quote("i-1", actor=root_of("src"), at=later)
    assert [(line.charge.kind, line.refundable) for line in quote.items] == [
        (ChargeKind.ORIGINAL, Decimal("841.64")),
        (ChargeKind.RENEWAL, Decimal("200.00")),
        (ChargeKind.UPGRADE, Decimal("0.00")),
        (ChargeKind.REFUND, Decimal("0.00")),
    ]
    assert quote.total_refundable == Decimal("1041.64")

    released = await actions.release("i-1", actor=root_of("src"), at=later)
    assert released.resource.released
    assert [(c.kind, c.amount, c.refunds_charge_id) for c in released.charges] == [
        (ChargeKind.REFUND, Decimal("-841.64"), quote.items[0].charge.id),
        (ChargeKind.REFUND, Decimal("-200.00"), renewal.id),
    ]
    await refused(actions.get("i-1", actor=root_of("src")), ErrorCode.RESOURCE_NOT_FOUND)
    await refused(actions.release("i-1", actor=root_of("src"), at=later), ErrorCode.RESOURCE_NOT_FOUND)
    assert "i-1" not in {r.id for r in await store.list_resources({"src"})}


async def test_pay_as_you_go_changes_price_without_charges(store: Stores, actions: ResourceService) -> None:
    await setup(store)
    upgraded = await actions.upgrade("i-2", actor=root_of("src"), monthly_price=Decimal("150.00"), at=NOW)
    assert (upgraded.resource.monthly_price, upgraded.charges) == (Decimal("150.00"), [])
    downgraded = await actions.downgrade("i-2", actor=root_of("src"), monthly_price=Decimal("90.50"), at=NOW)
    assert (downgraded.resource.monthly_price, downgraded.charges) == (Decimal("90.50"), [])
    released = await actions.release("i-2", actor=root_of("src"), at=NOW)
    assert released.resource.released and released.charges == []
    assert await store.list_charges("i-2") == []


async def test_request_keys_make_charging_actions_idempotent(
    store: Stores, actions: ResourceService, engine: AsyncEngine
) -> None:
    await setup(store)
    renewed = await twice(
        engine, lambda: actions.renew("i-1", actor=root_of("src"), months=1, at=NOW, request_key="k1")
    )
    assert renewed.resource.expires_at == EXPIRES + MONTH
    upgraded = await twice(
        engine,
        lambda: actions.upgrade(
            "i-1", actor=root_of("src"), monthly_price=Decimal("130.00"), at=NOW, request_key="k1"
        ),
    )
    # 30.00 a month more for 365 days: 365.00
    assert [c.amount for c in upgraded.charges] == [Decimal("365.00")]
    charge = await twice(engine, lambda: actions.auto_renew("i-1", at=NOW, request_key="k1"))
    assert charge.amount == Decimal("130.00")
    converted = await twice(
        engine, lambda: actions.convert_billing("i-2", actor=root_of("src"), at=NOW, request_key="k1")
    )
    assert [c.kind for c in converted.charges] == [ChargeKind.ORIGINAL]
    # another key is another renewal
    again = await actions.renew("i-1", actor=root_of("src"), months=1, at=NOW, request_key="k2")
    assert again.resource.expires_at == EXPIRES + 3 * MONTH
    kinds = [c.kind for c in await store.list_charges("i-1")]
    assert kinds == [
        ChargeKind.ORIGINAL,
        ChargeKind.RENEWAL,
        ChargeKind.UPGRADE,
        ChargeKind.AUTO_RENEWAL,
        ChargeKind.RENEWAL,
    ]


async def test_convert_billing_both_ways(store: Stores, actions: ResourceService) -> None:
    await add_accounts(store, account("src"))
    eip = resource(
        "e-sub", "src", product=Product.EIP, network=None, status=None, monthly_price=Decimal("30.00")
    )
    await add_resources(store, eip)
    [original] = await store.list_charges("e-sub")  # 12 months: 360.00 for 365 days
    later = NOW + timedelta(days=108)  # 227 of 365 days left: 360 * 227 / 365 = 223.8904... -> 223.89
    converted = await actions.convert_billing(
        "e-sub", actor=root_of("src"), at=later, to=Billing.PAY_AS_YOU_GO
    )
    assert converted.resource.billing is Billing.PAY_AS_YOU_GO and converted.resource.expires_at is None
    assert [(c.amount, c.refunds_charge_id) for c in converted.charges] == [(Decimal("-223.89"), original.id)]
    # now transferable as far as the product goes
    assert resource_blockers(converted.resource, source_account_id="src", now=later) == []
    # the same target again changes nothing
    same = await actions.convert_billing("e-sub", actor=root_of("src"), at=later, to=Billing.PAY_AS_YOU_GO)
    assert same.charges == [] and same.resource == converted.resource

    back = await actions.convert_billing("e-sub", actor=root_of("src"), at=later, months=3)
    assert back.resource.billing is Billing.SUBSCRIPTION
    assert back.resource.expires_at == later + 3 * MONTH
    [charge] = back.charges
    assert (charge.kind, charge.amount, charge.period_start, charge.period_end) == (
        ChargeKind.ORIGINAL,
        Decimal("90.00"),
        later,
        later + 3 * MONTH,
    )


async def test_attach_detach_and_release_of_an_instance(store: Stores, actions: ResourceService) -> None:
    await setup(store)
    await add_resources(store, resource("i-other", "dst"))
    await refused(
        actions.attach("e-1", actor=root_of("src"), instance_id="i-other"), ErrorCode.VALIDATION_ERROR
    )
    await refused(actions.attach("e-1", actor=root_of("src"), instance_id="nope"), ErrorCode.VALIDATION_ERROR)
    await refused(actions.attach("e-1", actor=root_of("src"), instance_id="e-1"), ErrorCode.VALIDATION_ERROR)
    await refused(actions.attach("i-1", actor=root_of("src"), instance_id="i-2"), ErrorCode.VALIDATION_ERROR)

    attached = await actions.attach("e-1", actor=root_of("src"), instance_id="i-2")
    assert attached.resource.attached_to == "i-2"
    assert (
        await actions.attach("e-1", actor=root_of("src"), instance_id="i-2")
    ).resource == attached.resource
    await refused(actions.attach("e-1", actor=root_of("src"), instance_id="i-1"), ErrorCode.VALIDATION_ERROR)
    # an instance in transfer takes no EIP
    await open_order(store, "i-1")
    await actions.detach("e-1", actor=root_of("src"))
    await refused(
        actions.attach("e-1", actor=root_of("src"), instance_id="i-1"),
        ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER,
    )

    await actions.attach("e-1", actor=root_of("src"), instance_id="i-2")
    await actions.release("i-2", actor=root_of("src"), at=NOW)
    eip = await actions.get("e-1", actor=root_of("src"))
    assert eip.attached_to is None


async def test_wrong_product_or_billing_or_arguments_are_validation_errors(
    store: Stores, actions: ResourceService
) -> None:
    await setup(store)
    invalid: list[Awaitable[Any]] = [
        actions.start("e-1", actor=root_of("src")),
        actions.stop("e-1", actor=root_of("src")),
        actions.detach("i-1", actor=root_of("src")),
        actions.change_os("e-1", actor=root_of("src")),
        actions.change_bandwidth("i-1", actor=root_of("src"), bandwidth_mbps=10),
        actions.change_bandwidth("e-1", actor=root_of("src"), bandwidth_mbps=1001),
        actions.renew("i-2", actor=root_of("src"), months=1, at=NOW),
        actions.renew("i-1", actor=root_of("src"), months=0, at=NOW),
        actions.upgrade("i-1", actor=root_of("src"), monthly_price=Decimal("100.00"), at=NOW),
        actions.upgrade("i-1", actor=root_of("src"), monthly_price=Decimal("100.001"), at=NOW),
        actions.downgrade("i-1", actor=root_of("src"), monthly_price=Decimal("100.00"), at=NOW),
        actions.downgrade("i-1", actor=root_of("src"), monthly_price=Decimal("-1.00"), at=NOW),
        # the term has ended: nothing to upgrade
        actions.upgrade("i-1", actor=root_of("src"), monthly_price=Decimal("200.00"), at=EXPIRES),
        actions.auto_renew("e-1", at=NOW),
    ]
    for call in invalid:
        error = await refused(call, ErrorCode.VALIDATION_ERROR)
        assert error.message
    assert [c.kind for c in await store.list_charges("i-1")] == [ChargeKind.ORIGINAL]


async def test_strangers_see_nothing_and_the_management_account_only_reads(
    store: Stores, actions: ResourceService
) -> None:
    await setup(store)
    await add_accounts(store, account("ma"))
    await store.provisioning.create_organization("org", "ma", ["src"])

    for actor in ("stranger", "dst"):
        await refused(actions.get("i-1", actor=root_of(actor)), ErrorCode.RESOURCE_NOT_FOUND)
        await refused(actions.refund_quote("i-1", actor=root_of(actor), at=NOW), ErrorCode.RESOURCE_NOT_FOUND)
        await refused(actions.stop("i-1", actor=root_of(actor)), ErrorCode.RESOURCE_NOT_FOUND)
        await refused(
            actions.renew("i-1", actor=root_of(actor), months=1, at=NOW), ErrorCode.RESOURCE_NOT_FOUND
        )
    await refused(actions.get("nope", actor=root_of("src")), ErrorCode.RESOURCE_NOT_FOUND)

    assert (await actions.get("i-1", actor=root_of("ma"))).owner_account_id == "src"
    quote = await actions.refund_quote("i-1", actor=root_of("ma"), at=NOW)
    assert quote.total_refundable == Decimal("1101.36")  # 1200 * 335 / 365 = 1101.369... -> 1101.36
    assert {i.resource.id for i in (await actions.list(root_of("ma"), organization=True, limit=100))[0]} == {
        "i-1",
        "i-2",
        "e-1",
    }
    assert (await actions.list(root_of("src"), organization=True))[0] == []
    # any action, whatever the state: READ_ONLY_ACCESS
    await refused(actions.stop("i-1", actor=root_of("ma")), ErrorCode.READ_ONLY_ACCESS)
    await refused(actions.detach("e-1", actor=root_of("ma")), ErrorCode.READ_ONLY_ACCESS)
    await open_order(store, "i-1")
    await refused(
        actions.upgrade("i-1", actor=root_of("ma"), monthly_price=Decimal("200.00"), at=NOW),
        ErrorCode.READ_ONLY_ACCESS,
    )


async def test_after_a_transfer_the_new_owner_pays_and_pre_transfer_charges_refund_nothing(
    store: Stores, actions: ResourceService
) -> None:
    await setup(store)
    await actions.renew("i-1", actor=root_of("src"), months=1, at=NOW)  # src: 100.00
    cut_over = NOW + timedelta(hours=1)
    await transfer(store, "i-1", "o-1", "src", "dst", cut_over)

    await refused(actions.get("i-1", actor=root_of("src")), ErrorCode.RESOURCE_NOT_FOUND)
    await refused(actions.stop("i-1", actor=root_of("src")), ErrorCode.RESOURCE_NOT_FOUND)
    await refused(actions.refund_quote("i-1", actor=root_of("src"), at=NOW), ErrorCode.RESOURCE_NOT_FOUND)
    moved = await actions.get("i-1", actor=root_of("dst"))
    assert moved.expires_at == EXPIRES + MONTH and moved.status is InstanceStatus.STOPPED  # term unchanged

    auto = await actions.auto_renew("i-1", at=cut_over)
    assert (auto.payer_account_id, auto.amount) == ("dst", Decimal("100.00"))
    # dst upgrades 100 -> 130 five days in, 390 days left: 30 * 390 / 30 = 390.00
    upgraded = await actions.upgrade(
        "i-1", actor=root_of("dst"), monthly_price=Decimal("130.00"), at=NOW + timedelta(days=5)
    )
    assert [c.amount for c in upgraded.charges] == [Decimal("390.00")]

    # 100 days later: 290 of the upgrade's 390 days left: 390 * 290 / 390 = 290.00
    quote = await actions.refund_quote("i-1", actor=root_of("dst"), at=NOW + timedelta(days=105))
    assert [(line.charge.kind, line.charge.payer_account_id, line.refundable) for line in quote.items] == [
        (ChargeKind.ORIGINAL, "src", Decimal("0.00")),
        (ChargeKind.RENEWAL, "src", Decimal("0.00")),
        (ChargeKind.AUTO_RENEWAL, "dst", Decimal("100.00")),
        (ChargeKind.UPGRADE, "dst", Decimal("290.00")),
    ]
    assert quote.total_refundable == Decimal("390.00")
    released = await actions.release("i-1", actor=root_of("dst"), at=NOW + timedelta(days=105))
    assert sum(-c.amount for c in released.charges) == Decimal("390.00")
    assert {c.payer_account_id for c in released.charges} == {"dst"}


async def test_charges_of_an_earlier_tenure_refund_nothing_after_a_round_trip(
    store: Stores, actions: ResourceService
) -> None:
    await setup(store)
    await transfer(store, "i-1", "o-1", "src", "dst", NOW + timedelta(hours=1))
    await transfer(store, "i-1", "o-2", "dst", "src", NOW + timedelta(hours=2))
    renewed = await actions.renew("i-1", actor=root_of("src"), months=1, at=NOW + timedelta(hours=3))
    quote = await actions.refund_quote("i-1", actor=root_of("src"), at=NOW + timedelta(hours=3))
    # src paid the original charge, but before it gave the resource away
    assert [(line.charge.kind, line.refundable) for line in quote.items] == [
        (ChargeKind.ORIGINAL, Decimal("0.00")),
        (ChargeKind.RENEWAL, Decimal("100.00")),
    ]
    assert quote.items[1].charge == renewed.charges[0]
