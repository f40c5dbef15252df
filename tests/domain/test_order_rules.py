"""SPEC §3/§5, per-order rules of confirm, cancel and reject, and the order statuses' properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.codes import ErrorCode
from domain.models import AGREEMENT_VERSION, Action, Order, OrderStatus, Principal, PrincipalKind, Product
from domain.rules import order_failure, order_state_failure, views_managed_accounts

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
SOURCE = "alice"
DESTINATION = "bob"
STRANGER = "carol"
ACTIONS = ["confirm", "cancel", "reject"]
NOT_PENDING = [
    OrderStatus.TRANSFERRING,
    OrderStatus.COMPLETED,
    OrderStatus.FAILED,
    OrderStatus.CANCELLED,
    OrderStatus.REJECTED,
]

_ORDER = Order(
    order_id="order-1",
    resource_id="i-web",
    product=Product.ECS,
    source_account_id=SOURCE,
    destination_account_id=DESTINATION,
    status=OrderStatus.PENDING,
    created_at=NOW - timedelta(hours=1),
    expires_at=NOW + timedelta(hours=23),
    agreement_version=AGREEMENT_VERSION,
)


def order(**update: Any) -> Order:
    """A pending order from alice to bob, inside its confirmation window."""
    return _ORDER.model_copy(update=update)


def root(account_id: str) -> Principal:
    return Principal(kind=PrincipalKind.ROOT, account_id=account_id)


def the_party_for(action: str) -> str:
    return SOURCE if action == "cancel" else DESTINATION


def the_wrong_party_for(action: str) -> str:
    return DESTINATION if action == "cancel" else SOURCE


def failure(
    the_order: Order | None,
    account_id: str,
    action: str,
    *,
    now: datetime = NOW,
    manages_a_party: bool = False,
) -> ErrorCode | None:
    return order_failure(
        the_order, root(account_id), action=Action(action), now=now, manages_a_party=manages_a_party
    )


# --- baseline -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("account_id", "action"),
    [(DESTINATION, "confirm"), (DESTINATION, "reject"), (SOURCE, "cancel")],
)
def test_the_right_party_may_act_on_a_pending_order(account_id: str, action: str) -> None:
    assert failure(order(), account_id, action) is None


# --- ORDER_NOT_FOUND ----------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_unknown_order_is_not_found(action: str) -> None:
    assert failure(None, DESTINATION, action) is ErrorCode.ORDER_NOT_FOUND
    assert failure(None, STRANGER, action, manages_a_party=True) is ErrorCode.ORDER_NOT_FOUND


@pytest.mark.parametrize("action", ACTIONS)
def test_an_order_the_caller_is_no_party_to_is_not_found(action: str) -> None:
    assert failure(order(), STRANGER, action) is ErrorCode.ORDER_NOT_FOUND


# --- READ_ONLY_ACCESS ---------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_the_management_account_of_a_party_may_not_act(action: str) -> None:
    assert failure(order(), STRANGER, action, manages_a_party=True) is ErrorCode.READ_ONLY_ACCESS


@pytest.mark.parametrize("status", list(OrderStatus))
def test_read_only_access_whatever_the_order_state(status: OrderStatus) -> None:
    the_order = order(status=status, expires_at=NOW - SECOND)
    for action in ACTIONS:
        assert failure(the_order, STRANGER, action, manages_a_party=True) is ErrorCode.READ_ONLY_ACCESS


@pytest.mark.parametrize("action", ACTIONS)
def test_a_management_account_that_is_itself_the_party_acts_as_the_party(action: str) -> None:
    assert failure(order(), the_party_for(action), action, manages_a_party=True) is None


# --- NOT_DESTINATION / NOT_SOURCE ---------------------------------------------------------------------


@pytest.mark.parametrize("action", ["confirm", "reject"])
def test_the_source_may_not_confirm_or_reject(action: str) -> None:
    assert failure(order(), SOURCE, action) is ErrorCode.NOT_DESTINATION


def test_the_destination_may_not_cancel() -> None:
    assert failure(order(), DESTINATION, "cancel") is ErrorCode.NOT_SOURCE


# --- ORDER_EXPIRED ------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ACTIONS)
def test_an_expired_order_is_expired(action: str) -> None:
    the_order = order(status=OrderStatus.EXPIRED, expires_at=NOW - SECOND)
    assert failure(the_order, the_party_for(action), action) is ErrorCode.ORDER_EXPIRED


@pytest.mark.parametrize("action", ACTIONS)
def test_a_pending_order_past_its_window_is_expired(action: str) -> None:
    the_order = order(expires_at=NOW)
    party = the_party_for(action)
    assert failure(the_order, party, action, now=NOW) is ErrorCode.ORDER_EXPIRED
    assert failure(the_order, party, action, now=NOW + SECOND) is ErrorCode.ORDER_EXPIRED
    assert failure(the_order, party, action, now=NOW - SECOND) is None


# --- ORDER_NOT_PENDING --------------------------------------------------------------------------------


@pytest.mark.parametrize("status", NOT_PENDING)
@pytest.mark.parametrize("action", ACTIONS)
def test_an_order_that_is_no_longer_pending_is_refused(status: OrderStatus, action: str) -> None:
    assert failure(order(status=status), the_party_for(action), action) is ErrorCode.ORDER_NOT_PENDING


@pytest.mark.parametrize("status", NOT_PENDING)
def test_a_finished_order_past_its_window_is_not_pending_rather_than_expired(status: OrderStatus) -> None:
    the_order = order(status=status, expires_at=NOW - SECOND)
    assert failure(the_order, DESTINATION, "confirm") is ErrorCode.ORDER_NOT_PENDING


@pytest.mark.parametrize(
    ("status", "expires_at", "expected"),
    [
        (OrderStatus.PENDING, NOW + SECOND, None),
        (OrderStatus.PENDING, NOW, ErrorCode.ORDER_EXPIRED),
        (OrderStatus.EXPIRED, NOW + SECOND, ErrorCode.ORDER_EXPIRED),
        (OrderStatus.EXPIRED, NOW - SECOND, ErrorCode.ORDER_EXPIRED),
        *[(status, NOW + SECOND, ErrorCode.ORDER_NOT_PENDING) for status in NOT_PENDING],
    ],
)
def test_order_state_failure(status: OrderStatus, expires_at: datetime, expected: ErrorCode | None) -> None:
    assert order_state_failure(status, expires_at, now=NOW) is expected


# --- rule order: ORDER_NOT_FOUND, READ_ONLY_ACCESS, NOT_DESTINATION/NOT_SOURCE, ORDER_EXPIRED, ... ----


@pytest.mark.parametrize("action", ACTIONS)
def test_not_found_comes_first(action: str) -> None:
    the_order = order(status=OrderStatus.EXPIRED, expires_at=NOW - SECOND)
    assert failure(the_order, STRANGER, action) is ErrorCode.ORDER_NOT_FOUND


@pytest.mark.parametrize("action", ACTIONS)
def test_read_only_access_comes_before_state(action: str) -> None:
    for the_order in (order(status=OrderStatus.COMPLETED), order(expires_at=NOW - SECOND)):
        assert failure(the_order, STRANGER, action, manages_a_party=True) is ErrorCode.READ_ONLY_ACCESS


@pytest.mark.parametrize(
    ("action", "expected"),
    [
        ("confirm", ErrorCode.NOT_DESTINATION),
        ("reject", ErrorCode.NOT_DESTINATION),
        ("cancel", ErrorCode.NOT_SOURCE),
    ],
)
@pytest.mark.parametrize(
    "the_order",
    [
        pytest.param(order(status=OrderStatus.EXPIRED, expires_at=NOW - SECOND), id="expired"),
        pytest.param(order(expires_at=NOW - SECOND), id="pending past window"),
        pytest.param(order(status=OrderStatus.COMPLETED), id="completed"),
    ],
)
def test_wrong_party_comes_before_state(the_order: Order, action: str, expected: ErrorCode) -> None:
    assert failure(the_order, the_wrong_party_for(action), action) is expected


def test_expired_comes_before_not_pending() -> None:
    # an order the expiry timer closed is EXPIRED, never merely "not pending"
    the_order = order(status=OrderStatus.EXPIRED, expires_at=NOW - SECOND)
    assert failure(the_order, DESTINATION, "confirm") is ErrorCode.ORDER_EXPIRED


# --- OrderStatus --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "counts"),
    [
        (OrderStatus.PENDING, True),
        (OrderStatus.TRANSFERRING, True),
        (OrderStatus.COMPLETED, True),
        (OrderStatus.FAILED, False),
        (OrderStatus.CANCELLED, False),
        (OrderStatus.REJECTED, False),
        (OrderStatus.EXPIRED, False),
    ],
)
def test_which_statuses_count_for_destination_limits(status: OrderStatus, counts: bool) -> None:
    assert status.counts_for_destination_limits is counts


@pytest.mark.parametrize(
    ("status", "is_open"),
    [
        (OrderStatus.PENDING, True),
        (OrderStatus.TRANSFERRING, True),
        (OrderStatus.COMPLETED, False),
        (OrderStatus.FAILED, False),
        (OrderStatus.CANCELLED, False),
        (OrderStatus.REJECTED, False),
        (OrderStatus.EXPIRED, False),
    ],
)
def test_open_orders_hold_the_lock_and_the_rest_are_terminal(status: OrderStatus, is_open: bool) -> None:
    assert status.is_open is is_open
    assert status.is_terminal is not is_open


def test_all_seven_statuses_are_covered() -> None:
    assert {s.value for s in OrderStatus} == {
        "pending",
        "transferring",
        "completed",
        "failed",
        "cancelled",
        "rejected",
        "expired",
    }


def test_only_a_root_views_the_accounts_it_manages() -> None:
    assert views_managed_accounts(Principal(kind=PrincipalKind.ROOT, account_id="ma"))
    assert not views_managed_accounts(
        Principal(kind=PrincipalKind.RAM_USER, account_id="ma", ram_user_id="ops")
    )
