"""The billing arithmetic of SPEC §3 ("After transfer") and §5 (resource actions, refund quotes).

Pure and deterministic: no clock (`now` is a parameter), no I/O, Decimal only (never float).

Conventions, shared by every function here:
- A month is 30 days (`MONTH`) wherever charges are computed (SPEC, Fine points).
- Time is prorated exactly, to the microsecond (datetime's own resolution): a fraction of a period is
  the ratio of two integer microsecond counts, never a float and never truncated to whole days. The
  upgrade charge and the refund of that upgrade charge therefore use the same measure of time.
- Rounding to the fen (CNY 0.01):
  - a charge computed for the customer (an upgrade) rounds HALF_UP;
  - a refund rounds DOWN (SPEC §3: "pro rata by time, rounded down to the fen");
  - a renewal is months * monthly_price, exact, so it never rounds.
- Amounts in and out have two decimals. A refund is returned here as a positive amount; the caller
  records it as a `refund` charge of the negated amount, with `refunds_charge_id` set to the charge it
  refunds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, localcontext

from domain.models import CENT, Billing, Charge, ChargeKind, Frozen, Money, Resource

MONTH = timedelta(days=30)
ZERO = Decimal("0.00")

_MICROSECOND = timedelta(microseconds=1)


class RefundLine(Frozen):
    """One charge of a resource and what it would refund the current owner now."""

    charge: Charge
    refundable: Money


class RefundQuote(Frozen):
    """Every charge of a resource with its refundable part, and their total (SPEC §5 refund quote)."""

    items: list[RefundLine]
    total_refundable: Money


def _micros(span: timedelta) -> int:
    return span // _MICROSECOND


def _prorate(amount: Decimal, part: timedelta, whole: timedelta, rounding: str) -> Decimal:
    """amount * part / whole, rounded to the fen with `rounding`.

    The quotient is computed with 60 significant digits, far more than any amount * a microsecond
    count needs, so that only the final quantize rounds.
    """
    with localcontext() as ctx:
        ctx.prec = 60
        exact = amount * Decimal(_micros(part)) / Decimal(_micros(whole))
        return exact.quantize(CENT, rounding=rounding)


def _require_money(value: Decimal, what: str) -> None:
    if not value.is_finite() or value != value.quantize(CENT, rounding=ROUND_DOWN):
        raise ValueError(f"{what} must be a finite amount with at most two decimals")


def renewal_charge(resource: Resource, months: int, now: datetime) -> tuple[Decimal, datetime, datetime]:
    """A manual renewal (or, with months=1, an auto-renewal) of a subscription resource.

    Returns (amount, period_start, period_end): amount = months * monthly_price (exact, no rounding);
    the period starts at the current `expires_at`, or at `now` when the term has already ended (or the
    resource has no `expires_at`), and lasts months * 30 days. The new `expires_at` is period_end.

    Raises ValueError for a resource that is not a subscription or a month count below 1.
    """
    if resource.billing is not Billing.SUBSCRIPTION:
        raise ValueError("only a subscription resource can be renewed")
    if isinstance(months, bool) or not isinstance(months, int) or months < 1:
        raise ValueError("months must be a whole number of at least 1")
    expires_at = resource.expires_at
    start = expires_at if expires_at is not None and expires_at > now else now
    amount = (resource.monthly_price * months).quantize(CENT)
    return amount, start, start + months * MONTH


def upgrade_charge(
    resource: Resource, new_monthly_price: Decimal, now: datetime
) -> tuple[Decimal, datetime, datetime]:
    """The charge for raising a subscription's monthly price for the rest of its term.

    Returns (amount, period_start, period_end) with the period now → `expires_at` and
    amount = (new - old monthly_price) * months left, months left = (expires_at - now) / 30 days
    measured exactly (to the microsecond, see the module docstring), rounded HALF_UP to the fen: a
    charge computed for the customer. With very little term left the amount may round to 0.00.

    Example: 100.00 → 160.00 with 45 days left: 60.00 * 45/30 = 90.00.

    Raises ValueError when the resource is not a subscription, its term has ended (no `expires_at`
    or `expires_at` <= now), or the new price is not greater than the current one (or has more than
    two decimals).
    """
    if resource.billing is not Billing.SUBSCRIPTION:
        raise ValueError("only a subscription resource is charged for an upgrade")
    _require_money(new_monthly_price, "the new monthly price")
    if new_monthly_price <= resource.monthly_price:
        raise ValueError("an upgrade must raise the monthly price")
    expires_at = resource.expires_at
    if expires_at is None or expires_at <= now:
        raise ValueError("the subscription's term has ended")
    difference = new_monthly_price - resource.monthly_price
    amount = _prorate(difference, expires_at - now, MONTH, ROUND_HALF_UP)
    return amount, now, expires_at


def refundable(charge: Charge, *, current_owner: str, now: datetime, refunded_so_far: Decimal) -> Decimal:
    """What `charge` would refund the resource's current owner at `now`, rounded DOWN to the fen.

    - a `refund` charge refunds 0.00;
    - a charge paid by another account refunds 0.00 (charges made before a transfer: SPEC §3);
    - otherwise (original, renewal, auto_renewal, upgrade) the unused part of its period, pro rata by
      time: amount * (period_end - max(now, period_start)) / (period_end - period_start), minus
      `refunded_so_far` (the positive total already refunded for this charge), never below 0.00.
      A period that has ended, or an empty one, refunds 0.00.

    Rounding down then subtracting a two-decimal amount equals subtracting then rounding down.
    """
    if charge.kind is ChargeKind.REFUND or charge.payer_account_id != current_owner:
        return ZERO
    whole = charge.period_end - charge.period_start
    unused = charge.period_end - max(now, charge.period_start)
    if whole <= timedelta(0) or unused <= timedelta(0) or charge.amount <= 0:
        return ZERO
    unused_value = _prorate(charge.amount, unused, whole, ROUND_DOWN)
    return max(ZERO, (unused_value - refunded_so_far).quantize(CENT, rounding=ROUND_DOWN))


def refunded_totals(charges: Iterable[Charge]) -> dict[int, Decimal]:
    """What has already been refunded per charge id: the sum of -amount of the refund charges whose
    `refunds_charge_id` is that id. Charges never refunded are absent (0.00)."""
    totals: dict[int, Decimal] = {}
    for c in charges:
        if c.kind is ChargeKind.REFUND and c.refunds_charge_id is not None:
            totals[c.refunds_charge_id] = totals.get(c.refunds_charge_id, ZERO) - c.amount
    return totals


def _lines(charges: Sequence[Charge], *, current_owner: str, now: datetime) -> list[RefundLine]:
    refunded = refunded_totals(charges)
    return [
        RefundLine(
            charge=charge,
            refundable=refundable(
                charge,
                current_owner=current_owner,
                now=now,
                refunded_so_far=refunded.get(charge.id, ZERO),
            ),
        )
        for charge in charges
    ]


def refund_quote(charges: Iterable[Charge], *, current_owner: str, now: datetime) -> RefundQuote:
    """Every charge of one resource, in the order given, with what it would refund `current_owner`.

    Refund charges and charges paid by other accounts are listed with 0.00. `charges` must be all the
    charges of the resource (refund charges included), so that earlier refunds are subtracted.
    """
    items = _lines(list(charges), current_owner=current_owner, now=now)
    total = sum((line.refundable for line in items), ZERO)
    return RefundQuote(items=items, total_refundable=total)


def downgrade_refunds(
    charges: Iterable[Charge], *, current_owner: str, now: datetime
) -> list[tuple[Charge, Decimal]]:
    """A downgrade refunds the refundable part of the current owner's `upgrade` charges (SPEC §5).

    Returns (upgrade charge, positive refund) for each upgrade charge with something left to refund,
    in the order given; charges refunding 0.00 are left out (no empty refund charges).
    """
    return [
        (line.charge, line.refundable)
        for line in _lines(list(charges), current_owner=current_owner, now=now)
        if line.charge.kind is ChargeKind.UPGRADE and line.refundable > 0
    ]


def release_refunds(
    charges: Iterable[Charge], *, current_owner: str, now: datetime
) -> list[tuple[Charge, Decimal]]:
    """Releasing a subscription refunds the whole refundable total (SPEC §5).

    Returns (charge, positive refund) for every charge with something left to refund, in the order
    given; the refunds add up to `refund_quote(...).total_refundable`.
    """
    return [
        (line.charge, line.refundable)
        for line in _lines(list(charges), current_owner=current_owner, now=now)
        if line.refundable > 0
    ]


def format_money(amount: Decimal) -> str:
    """Money as a decimal string with exactly two decimals: "12.50", "0.00", "-3.10".

    Amounts are expected to have two decimals already; one with more is rounded HALF_UP to the fen.
    A negative zero prints as "0.00".
    """
    if not amount.is_finite():
        raise ValueError("money must be a finite amount")
    cents = amount.quantize(CENT, rounding=ROUND_HALF_UP)
    if cents.is_zero():
        cents = ZERO
    return f"{cents:f}"
