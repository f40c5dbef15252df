"""SPEC §3, per-resource rules: resource_blockers, product support and INSTANCE_NOT_STOPPED."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from domain.codes import ErrorCode
from domain.models import Billing, InstanceStatus, Network, OrderStatus, Product, Resource, ResourceAction
from domain.rules import (
    blocker_message,
    is_transferable_product,
    lock_refusal,
    product_message,
    resource_blockers,
    stopped_state_failure,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SOURCE = "alice"
DAY = timedelta(days=1)
SECOND = timedelta(seconds=1)

_ECS = Resource(
    id="i-web",
    product=Product.ECS,
    billing=Billing.SUBSCRIPTION,
    owner_account_id=SOURCE,
    region="cn-hangzhou",
    created_at=NOW - 60 * DAY,
    expires_at=NOW + 300 * DAY,
    monthly_price=Decimal("100.00"),
    network=Network.VPC,
    status=InstanceStatus.STOPPED,
)
_EIP = Resource(
    id="eip-1",
    product=Product.EIP,
    billing=Billing.PAY_AS_YOU_GO,
    owner_account_id=SOURCE,
    region="cn-hangzhou",
    created_at=NOW - 60 * DAY,
    monthly_price=Decimal("20.00"),
    bandwidth_mbps=5,
)


def ecs(**update: Any) -> Resource:
    """A transferable subscription VPC ECS instance, stopped, of the source."""
    return _ECS.model_copy(update=update)


def ecs_payg(**update: Any) -> Resource:
    return _ECS.model_copy(update={"billing": Billing.PAY_AS_YOU_GO, "expires_at": None, **update})


def eip(**update: Any) -> Resource:
    """A transferable pay-as-you-go EIP, detached, of the source."""
    return _EIP.model_copy(update=update)


def eip_subscription(**update: Any) -> Resource:
    return _EIP.model_copy(update={"billing": Billing.SUBSCRIPTION, "expires_at": NOW + 300 * DAY, **update})


def rds(**update: Any) -> Resource:
    return _ECS.model_copy(
        update={"id": "rm-db", "product": Product.RDS, "network": None, "status": None, **update}
    )


def blockers(resource: Resource | None, *, order_id: str | None = None) -> list[ErrorCode]:
    return resource_blockers(resource, source_account_id=SOURCE, now=NOW, order_id=order_id)


# --- baseline -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param(ecs(), id="ecs subscription"),
        pytest.param(ecs_payg(), id="ecs pay-as-you-go"),
        pytest.param(eip(), id="eip pay-as-you-go"),
        pytest.param(ecs(status=InstanceStatus.RUNNING), id="ecs running (checked at confirm only)"),
    ],
)
def test_a_transferable_resource_has_no_blockers(resource: Resource) -> None:
    assert blockers(resource) == []


# --- RESOURCE_NOT_FOUND -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "resource",
    [
        pytest.param(None, id="unknown id"),
        pytest.param(ecs(owner_account_id="bob"), id="other owner"),
        pytest.param(ecs(released=True), id="released"),
        pytest.param(eip(owner_account_id="bob"), id="other owner's eip"),
    ],
)
def test_unknown_foreign_or_released_resource_is_not_found(resource: Resource | None) -> None:
    assert blockers(resource) == [ErrorCode.RESOURCE_NOT_FOUND]


def test_a_foreign_resource_reveals_no_other_blocker() -> None:
    foreign = eip_subscription(
        owner_account_id="bob",
        created_at=NOW,
        expires_at=NOW + DAY,
        attached_to="i-web",
        locked_by_order_id="order-9",
    )
    assert blockers(foreign) == [ErrorCode.RESOURCE_NOT_FOUND]


# --- PRODUCT_NOT_SUPPORTED ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("resource", "transferable"),
    [
        pytest.param(ecs(), True, id="ecs subscription"),
        pytest.param(ecs_payg(), True, id="ecs pay-as-you-go"),
        pytest.param(eip(), True, id="eip pay-as-you-go"),
        pytest.param(eip_subscription(), False, id="eip subscription"),
        pytest.param(rds(), False, id="rds subscription"),
        pytest.param(rds(billing=Billing.PAY_AS_YOU_GO, expires_at=None), False, id="rds pay-as-you-go"),
    ],
)
def test_product_support(resource: Resource, transferable: bool) -> None:
    assert is_transferable_product(resource) is transferable
    assert (ErrorCode.PRODUCT_NOT_SUPPORTED in blockers(resource)) is not transferable


def test_rds_is_not_supported() -> None:
    assert blockers(rds()) == [ErrorCode.PRODUCT_NOT_SUPPORTED]
    assert product_message(rds()) is None  # nothing the owner can do: the default message


def test_subscription_eip_is_not_supported_and_says_to_convert() -> None:
    assert blockers(eip_subscription()) == [ErrorCode.PRODUCT_NOT_SUPPORTED]
    message = product_message(eip_subscription())
    assert message is not None
    assert "convert" in message.lower()
    assert "pay-as-you-go" in message


@pytest.mark.parametrize("resource", [ecs(), ecs_payg(), eip()], ids=["ecs sub", "ecs payg", "eip payg"])
def test_supported_products_need_no_product_message(resource: Resource) -> None:
    assert product_message(resource) is None


# --- RESOURCE_TOO_NEW ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "expected"),
    [
        pytest.param(5 * DAY, [], id="exactly 5 days"),
        pytest.param(5 * DAY + SECOND, [], id="5 days + 1 s"),
        pytest.param(5 * DAY - SECOND, [ErrorCode.RESOURCE_TOO_NEW], id="5 days - 1 s"),
        pytest.param(DAY, [ErrorCode.RESOURCE_TOO_NEW], id="1 day"),
        pytest.param(timedelta(0), [ErrorCode.RESOURCE_TOO_NEW], id="just created"),
    ],
)
def test_resource_must_be_at_least_five_days_old(age: timedelta, expected: list[ErrorCode]) -> None:
    assert blockers(ecs(created_at=NOW - age)) == expected
    assert blockers(eip(created_at=NOW - age)) == expected


# --- RESOURCE_EXPIRING_SOON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remaining", "expected"),
    [
        pytest.param(3 * DAY + SECOND, [], id="3 days + 1 s"),
        pytest.param(30 * DAY, [], id="30 days"),
        pytest.param(3 * DAY, [ErrorCode.RESOURCE_EXPIRING_SOON], id="exactly 3 days"),
        pytest.param(3 * DAY - SECOND, [ErrorCode.RESOURCE_EXPIRING_SOON], id="3 days - 1 s"),
        pytest.param(timedelta(0), [ErrorCode.RESOURCE_EXPIRING_SOON], id="expires now"),
        pytest.param(-DAY, [ErrorCode.RESOURCE_EXPIRING_SOON], id="expired yesterday"),
        pytest.param(-30 * DAY, [ErrorCode.RESOURCE_EXPIRING_SOON], id="expired a month ago"),
    ],
)
def test_subscription_must_not_expire_within_three_days(
    remaining: timedelta, expected: list[ErrorCode]
) -> None:
    assert blockers(ecs(expires_at=NOW + remaining)) == expected


def test_pay_as_you_go_has_no_expiry() -> None:
    assert blockers(ecs_payg()) == []
    assert blockers(eip()) == []


def test_pay_as_you_go_ignores_a_stale_expiry_date() -> None:
    # e.g. a former subscription converted to pay-as-you-go: only subscriptions expire
    assert blockers(ecs_payg(expires_at=NOW - DAY)) == []
    assert blockers(eip(expires_at=NOW + DAY)) == []


# --- EIP_ATTACHED -------------------------------------------------------------------------------------


def test_attached_eip_is_blocked() -> None:
    assert blockers(eip(attached_to="i-web")) == [ErrorCode.EIP_ATTACHED]


def test_an_instance_with_an_eip_attached_is_blocked_and_the_message_names_the_eip() -> None:
    instance = ecs(attached_eip_ids=["eip-1", "eip-2"])
    assert blockers(instance) == [ErrorCode.EIP_ATTACHED]
    assert blocker_message(ErrorCode.EIP_ATTACHED, instance).startswith("Detach EIP eip-1, eip-2")
    assert blockers(ecs(attached_eip_ids=[])) == []


def test_detached_eip_is_not_blocked() -> None:
    assert blockers(eip(attached_to=None)) == []


# --- RESOURCE_IN_TRANSFER -----------------------------------------------------------------------------


def test_resource_locked_by_an_open_order_is_in_transfer() -> None:
    assert blockers(ecs(locked_by_order_id="order-1")) == [ErrorCode.RESOURCE_IN_TRANSFER]
    assert blockers(eip(locked_by_order_id="order-1")) == [ErrorCode.RESOURCE_IN_TRANSFER]


def test_unlocked_resource_is_not_in_transfer() -> None:
    assert blockers(ecs(locked_by_order_id=None)) == []


def test_at_confirm_the_order_own_lock_is_no_blocker() -> None:
    assert blockers(ecs(locked_by_order_id="order-1"), order_id="order-1") == []


def test_at_confirm_another_order_lock_is_a_blocker() -> None:
    assert blockers(ecs(locked_by_order_id="order-2"), order_id="order-1") == [ErrorCode.RESOURCE_IN_TRANSFER]


# --- every blocker, in SPEC §3's table order ------------------------------------------------------------


def test_too_new_expiring_and_locked_lists_all_three_in_order() -> None:
    resource = ecs(created_at=NOW - DAY, expires_at=NOW + DAY, locked_by_order_id="order-1")
    assert blockers(resource) == [
        ErrorCode.RESOURCE_TOO_NEW,
        ErrorCode.RESOURCE_EXPIRING_SOON,
        ErrorCode.RESOURCE_IN_TRANSFER,
    ]


def test_every_per_resource_blocker_in_table_order() -> None:
    resource = eip_subscription(
        created_at=NOW - DAY, expires_at=NOW - DAY, attached_to="i-web", locked_by_order_id="order-1"
    )
    assert blockers(resource) == [
        ErrorCode.PRODUCT_NOT_SUPPORTED,
        ErrorCode.RESOURCE_TOO_NEW,
        ErrorCode.RESOURCE_EXPIRING_SOON,
        ErrorCode.EIP_ATTACHED,
        ErrorCode.RESOURCE_IN_TRANSFER,
    ]


def test_attached_and_locked_eip_in_order() -> None:
    assert blockers(eip(attached_to="i-web", locked_by_order_id="order-1")) == [
        ErrorCode.EIP_ATTACHED,
        ErrorCode.RESOURCE_IN_TRANSFER,
    ]


# --- INSTANCE_NOT_STOPPED (confirm only, checked last) -----------------------------------------------


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        pytest.param(ecs(status=InstanceStatus.RUNNING), ErrorCode.INSTANCE_NOT_STOPPED, id="vpc running"),
        pytest.param(
            ecs_payg(status=InstanceStatus.RUNNING), ErrorCode.INSTANCE_NOT_STOPPED, id="vpc payg running"
        ),
        pytest.param(ecs(status=InstanceStatus.STOPPED), None, id="vpc stopped"),
        pytest.param(ecs(network=Network.CLASSIC, status=InstanceStatus.RUNNING), None, id="classic running"),
        pytest.param(ecs(network=Network.CLASSIC, status=InstanceStatus.STOPPED), None, id="classic stopped"),
        pytest.param(eip(), None, id="eip n/a"),
        pytest.param(rds(network=Network.VPC, status=InstanceStatus.RUNNING), None, id="non-ecs n/a"),
    ],
)
def test_a_vpc_instance_must_be_stopped_before_confirm(
    resource: Resource, expected: ErrorCode | None
) -> None:
    assert stopped_state_failure(resource) is expected


def test_running_state_is_not_an_initiate_blocker() -> None:
    assert ErrorCode.INSTANCE_NOT_STOPPED not in blockers(ecs(status=InstanceStatus.RUNNING))


# SPEC §3 "Lock during transfer", written out action by action so that a new action must be decided here.
LOCK_TABLE = {
    ResourceAction.UPGRADE: (True, True),
    ResourceAction.DOWNGRADE: (True, True),
    ResourceAction.RENEW: (True, True),
    ResourceAction.RELEASE: (True, True),
    ResourceAction.CHANGE_OS: (True, True),
    ResourceAction.CHANGE_BANDWIDTH: (True, True),
    ResourceAction.CONVERT_BILLING: (True, True),
    ResourceAction.ATTACH: (True, True),
    ResourceAction.START: (False, True),
    ResourceAction.STOP: (False, False),
    ResourceAction.DETACH: (False, False),
}


def test_the_lock_table_names_every_action() -> None:
    assert set(LOCK_TABLE) == set(ResourceAction)


@pytest.mark.parametrize("action", list(ResourceAction))
def test_lock_refusal_follows_spec(action: ResourceAction) -> None:
    locked_pending, locked_transferring = LOCK_TABLE[action]
    locked = ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER
    assert lock_refusal(action, OrderStatus.PENDING) == (locked if locked_pending else None)
    assert lock_refusal(action, OrderStatus.TRANSFERRING) == (locked if locked_transferring else None)
    for status in (None, *(s for s in OrderStatus if not s.is_open)):
        assert lock_refusal(action, status) is None
