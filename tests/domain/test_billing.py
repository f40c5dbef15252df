"""SPEC §3 "After transfer" and §5 resource actions: the pure billing arithmetic of domain.billing.

Every expected amount is worked out by hand in a comment; a month is 30 days.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.billing import (
    MONTH,
    downgrade_refunds,
    format_money,
    refund_quote,
    refundable,
    refunded_totals,
    release_refunds,
    renewal_charge,
    upgrade_charge,
)
from domain.models import Billing, Charge, ChargeKind, InstanceStatus, Network, Product, Resource

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
ALICE = "alice"  # the source: owned the resource before the transfer
BOB = "bob"  # the destination: the current owner

_RESOURCE = Resource(
    id="i-web",
    product=Product.ECS,
    billing=Billing.SUBSCRIPTION,
    owner_account_id=BOB,
    region="cn-hangzhou",
    created_at=NOW - 400 * DAY,
    expires_at=NOW + 45 * DAY,
    monthly_price=Decimal("100.00"),
    network=Network.VPC,
    status=InstanceStatus.STOPPED,
)


def resource(**update: Any) -> Resource:
    return _RESOURCE.model_copy(update=update)


def charge(
    id: int,
    kind: ChargeKind,
    amount: str,
    start: datetime,
    end: datetime,
    *,
    payer: str = BOB,
    refunds: int | None = None,
) -> Charge:
    return Charge(
        id=id,
        resource_id="i-web",
        payer_account_id=payer,
        kind=kind,
        amount=Decimal(amount),
        period_start=start,
        period_end=end,
        created_at=min(start, NOW),
        refunds_charge_id=refunds,
    )


def refund_of(id: int, refunded: Charge, amount: str) -> Charge:
    """A refund charge (negative amount) made now for `refunded`."""
    return charge(
        id, ChargeKind.REFUND, f"-{amount}", NOW, refunded.period_end, payer=refunded.payer_account_id
    ).model_copy(update={"refunds_charge_id": refunded.id})


def test_a_month_is_thirty_days() -> None:
    assert timedelta(days=30) == MONTH


# --- renewal ---------------------------------------------------------------------------------------


def test_renewal_charges_months_times_price_from_the_current_expiry() -> None:
    # 3 * 100.00 = 300.00; NOW+45d → NOW+45d+90d = NOW+135d
    amount, start, end = renewal_charge(resource(), 3, NOW)
    assert (amount, start, end) == (Decimal("300.00"), NOW + 45 * DAY, NOW + 135 * DAY)
    assert str(amount) == "300.00"


def test_renewal_keeps_the_cents_of_the_price() -> None:
    # 2 * 33.35 = 66.70, no rounding
    amount, _, _ = renewal_charge(resource(monthly_price=Decimal("33.35")), 2, NOW)
    assert str(amount) == "66.70"


@pytest.mark.parametrize(
    "expires_at",
    [
        pytest.param(NOW - 10 * DAY, id="expired ten days ago"),
        pytest.param(NOW, id="expires this instant"),
        pytest.param(None, id="no expiry recorded"),
    ],
)
def test_renewal_of_an_ended_term_starts_now(expires_at: datetime | None) -> None:
    # 1 * 100.00 = 100.00, NOW → NOW+30d
    assert renewal_charge(resource(expires_at=expires_at), 1, NOW) == (
        Decimal("100.00"),
        NOW,
        NOW + 30 * DAY,
    )


def test_only_subscriptions_renew() -> None:
    with pytest.raises(ValueError, match="subscription"):
        renewal_charge(resource(billing=Billing.PAY_AS_YOU_GO, expires_at=None), 1, NOW)


@pytest.mark.parametrize("months", [0, -1])
def test_renewal_needs_at_least_one_month(months: int) -> None:
    with pytest.raises(ValueError, match="months"):
        renewal_charge(resource(), months, NOW)


# --- upgrade ---------------------------------------------------------------------------------------


def test_upgrade_charges_the_difference_for_the_months_left() -> None:
    # 45 days left = 1.5 months; (160.00 - 100.00) * 1.5 = 90.00, for NOW → expires_at
    amount, start, end = upgrade_charge(resource(), Decimal("160.00"), NOW)
    assert (amount, start, end) == (Decimal("90.00"), NOW, NOW + 45 * DAY)
    assert str(amount) == "90.00"


def test_upgrade_prorates_part_days_too() -> None:
    # 45 days 12 hours left = 45.5 / 30 months; 60.00 * 45.5 / 30 = 91.00 (whole days would give 90.00)
    amount, _, end = upgrade_charge(resource(expires_at=NOW + 45 * DAY + 12 * HOUR), Decimal("160.00"), NOW)
    assert amount == Decimal("91.00")
    assert end == NOW + 45 * DAY + 12 * HOUR


def test_upgrade_rounds_half_up_to_the_fen() -> None:
    # 1 day left; (120.00 - 100.00) * 1/30 = 0.6666… → 0.67 (rounding down would give 0.66)
    amount, _, _ = upgrade_charge(resource(expires_at=NOW + DAY), Decimal("120.00"), NOW)
    assert str(amount) == "0.67"


@pytest.mark.parametrize("new_price", ["100.00", "99.99", "50.00"])
def test_upgrade_must_raise_the_price(new_price: str) -> None:
    with pytest.raises(ValueError, match="raise"):
        upgrade_charge(resource(), Decimal(new_price), NOW)


@pytest.mark.parametrize(
    ("update", "match"),
    [
        pytest.param({"billing": Billing.PAY_AS_YOU_GO, "expires_at": None}, "subscription", id="payg"),
        pytest.param({"expires_at": NOW - DAY}, "term", id="expired"),
        pytest.param({"expires_at": NOW}, "term", id="expires now"),
        pytest.param({"expires_at": None}, "term", id="no expiry"),
    ],
)
def test_upgrade_needs_a_running_subscription_term(update: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        upgrade_charge(resource(**update), Decimal("160.00"), NOW)


def test_upgrade_price_has_at_most_two_decimals() -> None:
    with pytest.raises(ValueError, match="two decimals"):
        upgrade_charge(resource(), Decimal("160.005"), NOW)


# --- refundable ------------------------------------------------------------------------------------

# Bob's renewal: 300.00 for NOW-30d → NOW+60d (90 days).
RENEWAL = charge(10, ChargeKind.RENEWAL, "300.00", NOW - 30 * DAY, NOW + 60 * DAY)


def quote_one(c: Charge, *, owner: str = BOB, at: datetime = NOW, refunded: str = "0.00") -> str:
    return format_money(refundable(c, current_owner=owner, now=at, refunded_so_far=Decimal(refunded)))


def test_the_unused_part_is_refunded_pro_rata_by_time() -> None:
    # 60 of 90 days unused: 300.00 * 60/90 = 200.00
    assert quote_one(RENEWAL) == "200.00"


def test_refunds_round_down_to_the_fen() -> None:
    # 100.00 * 60/90 = 66.666… → 66.66 (HALF_UP would give 66.67)
    c = RENEWAL.model_copy(update={"amount": Decimal("100.00")})
    assert quote_one(c) == "66.66"


def test_refunds_count_part_days() -> None:
    # 60 days 12 hours of 90 days unused: 300.00 * 60.5/90 = 201.666… → 201.66
    assert quote_one(RENEWAL, at=NOW - 12 * HOUR) == "201.66"


def test_a_period_not_started_yet_is_refunded_whole() -> None:
    # a renewal for NOW+60d → NOW+90d: nothing used, 100.00 back
    c = charge(11, ChargeKind.RENEWAL, "100.00", NOW + 60 * DAY, NOW + 90 * DAY)
    assert quote_one(c) == "100.00"


@pytest.mark.parametrize(
    "at",
    [
        pytest.param(NOW + 60 * DAY, id="period ends this instant"),
        pytest.param(NOW + 61 * DAY, id="period ended a day ago"),
    ],
)
def test_an_ended_period_refunds_nothing(at: datetime) -> None:
    assert quote_one(RENEWAL, at=at) == "0.00"


@pytest.mark.parametrize(
    "kind", [ChargeKind.ORIGINAL, ChargeKind.RENEWAL, ChargeKind.AUTO_RENEWAL, ChargeKind.UPGRADE]
)
def test_charges_made_before_the_transfer_refund_nothing_to_the_new_owner(kind: ChargeKind) -> None:
    c = RENEWAL.model_copy(update={"kind": kind, "payer_account_id": ALICE})
    assert quote_one(c, owner=BOB) == "0.00"
    # the same charge would refund its unused part to the account that paid it: 300.00 * 60/90
    assert quote_one(c, owner=ALICE) == "200.00"


def test_a_refund_charge_refunds_nothing() -> None:
    c = refund_of(12, RENEWAL, "50.00")
    assert quote_one(c) == "0.00"


@pytest.mark.parametrize(
    ("refunded", "expected"),
    [
        ("50.00", "150.00"),  # 200.00 - 50.00
        ("199.99", "0.01"),  # 200.00 - 199.99
        ("200.00", "0.00"),  # all of it
        ("250.00", "0.00"),  # more than is left: never negative
    ],
)
def test_what_was_already_refunded_is_subtracted(refunded: str, expected: str) -> None:
    assert quote_one(RENEWAL, refunded=refunded) == expected


# --- refund quote ----------------------------------------------------------------------------------

# The term ran NOW-300d → NOW+60d (360 days = 12 months at 100.00) when Alice bought it; she renewed it
# to NOW+90d, then transferred it to Bob. Bob upgraded it 30 days ago to 160.00 for the 120 days left
# (60.00 * 4 = 240.00), renewed it two months at the new price (2 * 160.00 = 320.00), and was once
# refunded 40.00 of the upgrade.
ORIGINAL = charge(1, ChargeKind.ORIGINAL, "1200.00", NOW - 300 * DAY, NOW + 60 * DAY, payer=ALICE)
ALICE_RENEWAL = charge(2, ChargeKind.RENEWAL, "100.00", NOW + 60 * DAY, NOW + 90 * DAY, payer=ALICE)
BOB_UPGRADE = charge(3, ChargeKind.UPGRADE, "240.00", NOW - 30 * DAY, NOW + 90 * DAY)
BOB_RENEWAL = charge(4, ChargeKind.RENEWAL, "320.00", NOW + 90 * DAY, NOW + 150 * DAY)
PARTIAL_REFUND = refund_of(5, BOB_UPGRADE, "40.00")
LEDGER = [ORIGINAL, ALICE_RENEWAL, BOB_UPGRADE, BOB_RENEWAL, PARTIAL_REFUND]


def test_refund_quote_lists_every_charge_with_its_refundable_part() -> None:
    quote = refund_quote(LEDGER, current_owner=BOB, now=NOW)
    assert [(line.charge.id, format_money(line.refundable)) for line in quote.items] == [
        (1, "0.00"),  # Alice's, before the transfer
        (2, "0.00"),  # Alice's, before the transfer, though not started yet
        (3, "140.00"),  # 240.00 * 90/120 = 180.00, minus the 40.00 already refunded
        (4, "320.00"),  # not started: all of it
        (5, "0.00"),  # a refund
    ]
    # 140.00 + 320.00
    assert format_money(quote.total_refundable) == "460.00"


def test_refund_quote_for_the_previous_owner_counts_only_her_charges() -> None:
    quote = refund_quote(LEDGER, current_owner=ALICE, now=NOW)
    # 1200.00 * 60/360 = 200.00, plus 100.00 not started
    assert [format_money(line.refundable) for line in quote.items] == [
        "200.00",
        "100.00",
        "0.00",
        "0.00",
        "0.00",
    ]
    assert format_money(quote.total_refundable) == "300.00"


def test_refund_quote_of_no_charges_is_zero() -> None:
    quote = refund_quote([], current_owner=BOB, now=NOW)
    assert quote.items == []
    assert format_money(quote.total_refundable) == "0.00"


def test_refunded_totals_sum_the_refund_charges_of_each_charge() -> None:
    second = refund_of(6, BOB_UPGRADE, "10.50")
    other = refund_of(7, BOB_RENEWAL, "1.00")
    # 40.00 + 10.50 for the upgrade, 1.00 for the renewal
    assert refunded_totals([*LEDGER, second, other]) == {3: Decimal("50.50"), 4: Decimal("1.00")}


# --- downgrade and release -------------------------------------------------------------------------


def test_downgrade_refunds_only_the_owners_upgrade_charges() -> None:
    alice_upgrade = charge(8, ChargeKind.UPGRADE, "90.00", NOW - 10 * DAY, NOW + 60 * DAY, payer=ALICE)
    ended_upgrade = charge(9, ChargeKind.UPGRADE, "30.00", NOW - 60 * DAY, NOW - 30 * DAY)
    refunds = downgrade_refunds([*LEDGER, alice_upgrade, ended_upgrade], current_owner=BOB, now=NOW)
    # Bob's running upgrade only: 180.00 unused - 40.00 refunded; not his renewal, not Alice's upgrade,
    # not the ended upgrade (0.00 is left out)
    assert [(c.id, format_money(amount)) for c, amount in refunds] == [(3, "140.00")]


def test_downgrade_without_upgrades_refunds_nothing() -> None:
    assert downgrade_refunds([ORIGINAL, ALICE_RENEWAL, BOB_RENEWAL], current_owner=BOB, now=NOW) == []


def test_release_refunds_every_refundable_charge() -> None:
    refunds = release_refunds(LEDGER, current_owner=BOB, now=NOW)
    # the upgrade (140.00) and the renewal (320.00); Alice's charges and the refund refund nothing
    assert [(c.id, format_money(amount)) for c, amount in refunds] == [(3, "140.00"), (4, "320.00")]
    total = refund_quote(LEDGER, current_owner=BOB, now=NOW).total_refundable
    assert sum((amount for _, amount in refunds), Decimal("0.00")) == total


def test_after_the_release_refunds_are_recorded_nothing_is_left_to_refund() -> None:
    refunds = release_refunds(LEDGER, current_owner=BOB, now=NOW)
    recorded = [refund_of(100 + i, c, str(amount)) for i, (c, amount) in enumerate(refunds)]
    quote = refund_quote([*LEDGER, *recorded], current_owner=BOB, now=NOW)
    assert format_money(quote.total_refundable) == "0.00"
    assert release_refunds([*LEDGER, *recorded], current_owner=BOB, now=NOW) == []


def test_an_upgrade_undone_at_once_refunds_exactly_its_charge() -> None:
    # 1 day left: 20.00 * 1/30 = 0.666… charged 0.67 (HALF_UP); undone the same instant, all 0.67 back
    r = resource(expires_at=NOW + DAY)
    amount, start, end = upgrade_charge(r, Decimal("120.00"), NOW)
    upgrade = charge(20, ChargeKind.UPGRADE, str(amount), start, end)
    assert [(c.id, format_money(a)) for c, a in downgrade_refunds([upgrade], current_owner=BOB, now=NOW)] == [
        (20, "0.67")
    ]


@given(
    amount_cents=st.integers(min_value=1, max_value=10**9),
    length_s=st.integers(min_value=1, max_value=10 * 365 * 86400),
    offset_s=st.integers(min_value=-400 * 86400, max_value=11 * 365 * 86400),
    refunded_cents=st.integers(min_value=0, max_value=10**9),
)
def test_refundable_stays_between_zero_and_what_is_left(
    amount_cents: int, length_s: int, offset_s: int, refunded_cents: int
) -> None:
    amount = Decimal(amount_cents) / 100
    refunded = Decimal(refunded_cents) / 100
    c = charge(30, ChargeKind.RENEWAL, str(amount), NOW, NOW + timedelta(seconds=length_s))
    at = NOW + timedelta(seconds=offset_s)
    value = refundable(c, current_owner=BOB, now=at, refunded_so_far=refunded)
    later = refundable(c, current_owner=BOB, now=at + HOUR, refunded_so_far=refunded)
    assert value == value.quantize(Decimal("0.01"))
    assert Decimal("0.00") <= value <= max(Decimal("0.00"), amount - refunded)
    assert later <= value  # time only uses a period up
    # rounded down: the exact unused value is never below the refund
    unused = max(timedelta(0), c.period_end - max(at, c.period_start))
    exact = amount * Decimal(unused // timedelta(microseconds=1)) / Decimal(length_s * 10**6)
    assert value <= max(Decimal("0.00"), exact - refunded)


# --- format_money ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("12.5", "12.50"),
        ("0", "0.00"),
        ("0.00", "0.00"),
        ("-0.00", "0.00"),
        ("-3.1", "-3.10"),
        ("1E+2", "100.00"),
        ("1234567.89", "1234567.89"),
        ("0.005", "0.01"),  # more than two decimals: HALF_UP
    ],
)
def test_format_money_always_has_two_decimals(amount: str, expected: str) -> None:
    assert format_money(Decimal(amount)) == expected


def test_format_money_refuses_non_finite_amounts() -> None:
    with pytest.raises(ValueError, match="finite"):
        format_money(Decimal("NaN"))
