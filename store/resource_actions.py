"""ResourceActions: what an owner does to a resource (SPEC §5 resource actions), auto-renewal, refund quotes.

Every public method is one transaction on the engine TransferStore uses. Visibility: an action or a read
names the acting account; a resource it does not own is RESOURCE_NOT_FOUND (never reveal other
accounts' resources), except for the management account of the owner's organization, which may read
(get, refund quote) and gets READ_ONLY_ACCESS on every action. Released resources are gone: not found.

The lock during a transfer (SPEC §3): upgrade, downgrade, renew, release, change_os, change_bandwidth,
convert_billing and attach are refused with RESOURCE_LOCKED_FOR_TRANSFER while an order holds the
resource, start once that order is confirmed (transferring); stop, detach and auto-renewal stay
allowed. The refusal is atomic: the resource row is row-locked when read, and the UPDATE that performs
the action carries `locked_by_order_id IS NULL` (start: "no transferring order holds it"), so an order
opened concurrently either sees the action done or the action sees the lock, never both.

Checks come in this order: the resource (RESOURCE_NOT_FOUND, READ_ONLY_ACCESS), the action's product and
billing method (VALIDATION_ERROR), a replayed request key, the lock, then the action's own arguments.

Charges follow domain.billing. A refund is recorded as a `refund` charge of the negated amount with
`refunds_charge_id`. Charges paid before the resource last changed hands (the current owner's billing
hand-off) refund nothing to the current owner, even if that owner had paid them in an earlier tenure.

Lock order on PostgreSQL: an ECS instance's row before an EIP's (attach, release of an ECS).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import Field
from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from domain import billing
from domain.codes import ErrorCode, TransferError
from domain.models import (
    CENT,
    Billing,
    Charge,
    ChargeKind,
    Frozen,
    InstanceStatus,
    OrderStatus,
    Product,
    Resource,
)
from store import convert
from store.queries import get, ledger_amount, must_get, rowcount
from store.repository import TransferStore
from store.tables import (
    BillingHandoffRow,
    ChargeRow,
    OrderRow,
    OrganizationMemberRow,
    OrganizationRow,
    ResourceRow,
)

MAX_BANDWIDTH_MBPS = 1000
# Whatever a charge is not paid by: masks charges from before the current owner's hand-off.
_NOBODY = ""


class ActionResult(Frozen):
    """The resource after an action, and the charges (refunds included) the action recorded."""

    resource: Resource
    charges: list[Charge] = Field(default_factory=list)


class ResourceActions:
    def __init__(self, engine: AsyncEngine) -> None:
        # The store's transaction helpers (_write: BEGIN IMMEDIATE on SQLite; _read: read-only) and its
        # reads are reused as they are.
        self._store = TransferStore(engine)

    # -- reads ----------------------------------------------------------------------------------

    async def get(self, resource_id: str, *, actor_account_id: str) -> Resource:
        """The resource if the actor owns it or manages its owner's organization."""
        async with self._store._read() as session:
            row = await _visible(session, resource_id, actor_account_id)
            return convert.resource(row)

    async def list_owned(self, owner_account_ids: set[str]) -> list[Resource]:
        """The resources these accounts own, released ones excluded, oldest first."""
        return await self._store.list_resources(owner_account_ids)

    async def list_managed(self, management_account_id: str) -> list[Resource]:
        """The resources of the members of the organization this account manages (none if it manages none)."""
        members = await self._store.managed_account_ids(management_account_id)
        return await self._store.list_resources(members) if members else []

    async def charges(self, resource_id: str, *, actor_account_id: str) -> list[Charge]:
        async with self._store._read() as session:
            await _visible(session, resource_id, actor_account_id)
            return await _charges(session, resource_id)

    async def refund_quote(
        self, resource_id: str, *, actor_account_id: str, now: datetime
    ) -> billing.RefundQuote:
        """Every charge of the resource with what it would refund its current owner at `now`."""
        async with self._store._read() as session:
            row = await _visible(session, resource_id, actor_account_id)
            charges = await _charges(session, resource_id)
            refundable = await _refundable_view(session, row, charges)
            quote = billing.refund_quote(refundable, current_owner=row.owner_account_id, now=now)
            originals = {c.id: c for c in charges}
            return billing.RefundQuote(
                items=[
                    billing.RefundLine(charge=originals[line.charge.id], refundable=line.refundable)
                    for line in quote.items
                ],
                total_refundable=quote.total_refundable,
            )

    # -- actions allowed while locked -----------------------------------------------------------

    async def stop(self, resource_id: str, *, actor_account_id: str) -> ActionResult:
        """Stops an ECS instance (stopping a stopped one changes nothing). Allowed while locked."""
        async with self._store._write() as session:
            row = await _owned(session, resource_id, actor_account_id)
            _require(row.product == Product.ECS.value, "only an ECS instance can be stopped")
            resource = await _apply(
                session, row, {"status": InstanceStatus.STOPPED.value}, lock=_ANY_LOCK_ALLOWED
            )
            return ActionResult(resource=resource)

    async def detach(self, resource_id: str, *, actor_account_id: str) -> ActionResult:
        """Detaches an EIP from its instance (a detached one changes nothing). Allowed while locked."""
        async with self._store._write() as session:
            row = await _owned(session, resource_id, actor_account_id)
            _require(row.product == Product.EIP.value, "only an EIP can be detached")
            resource = await _apply(session, row, {"attached_to": None}, lock=_ANY_LOCK_ALLOWED)
            return ActionResult(resource=resource)

    async def auto_renew(self, resource_id: str, *, at: datetime, request_key: str | None = None) -> Charge:
        """One auto-renewal of a subscription at `at`: one month charged to the account that owns the
        resource at that moment, `expires_at` extended by the month. Allowed while locked.

        With a request key, a repeat answers the first charge and changes nothing.
        """
        key = _key("auto_renew", resource_id, request_key)
        async with self._store._write() as session:
            row = await get(session, ResourceRow, resource_id, lock=True)
            if row is None or row.released:
                raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)
            if key is not None and (replayed := await _charges_by_key(session, resource_id, key)):
                return replayed[0]
            _require(row.billing == Billing.SUBSCRIPTION.value, "only a subscription is renewed")
            amount, start, end = _compute(lambda: billing.renewal_charge(convert.resource(row), 1, at))
            await _apply(session, row, {"expires_at": end}, lock=_ANY_LOCK_ALLOWED)
            charge = await _add_charge(
                session,
                row,
                kind=ChargeKind.AUTO_RENEWAL,
                amount=amount,
                period=(start, end),
                at=at,
                key=key,
            )
            return charge

    # -- actions refused while locked -----------------------------------------------------------

    async def start(self, resource_id: str, *, actor_account_id: str) -> ActionResult:
        """Starts an ECS instance; refused once the order holding the resource is confirmed."""
        async with self._store._write() as session:
            row = await _owned(session, resource_id, actor_account_id)
            _require(row.product == Product.ECS.value, "only an ECS instance can be started")
            resource = await _apply(
                session, row, {"status": InstanceStatus.RUNNING.value}, lock=_NO_CONFIRMED_ORDER
            )
            return ActionResult(resource=resource)

    async def attach(self, resource_id: str, *, actor_account_id: str, instance_id: str) -> ActionResult:
        """Attaches an EIP to an ECS instance of the same owner (the same instance again changes nothing).

        An EIP attached elsewhere must be detached first; an instance locked for its own transfer takes
        no EIP (RESOURCE_LOCKED_FOR_TRANSFER).
        """
        async with self._store._write() as session:
            # The instance's row first (see the module docstring), then the EIP's.
            instance = await get(session, ResourceRow, instance_id, lock=True)
            row = await _owned(session, resource_id, actor_account_id)
            _require(row.product == Product.EIP.value, "only an EIP can be attached")
            _refuse_if_locked(row)
            _require(
                instance is not None
                and not instance.released
                and instance.product == Product.ECS.value
                and instance.owner_account_id == row.owner_account_id,
                f"{instance_id} is not an ECS instance of this account",
            )
            assert instance is not None
            _require(
                row.attached_to in (None, instance_id),
                f"the EIP is attached to {row.attached_to}: detach it first",
            )
            if instance.locked_by_order_id is not None:
                raise TransferError(
                    ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER,
                    f"instance {instance_id} is locked for its transfer",
                )
            resource = await _apply(session, row, {"attached_to": instance_id})
            return ActionResult(resource=resource)

    async def renew(
        self,
        resource_id: str,
        *,
        actor_account_id: str,
        months: int,
        now: datetime,
        request_key: str | None = None,
    ) -> ActionResult:
        """Manual renewal of a subscription: months * monthly_price charged to the owner (`renewal`),
        `expires_at` extended. With a request key, a repeat answers the first renewal's charge."""
        key = _key("renew", resource_id, request_key)
        async with self._store._write() as session:
            row = await _owned(session, resource_id, actor_account_id)
            _require(row.billing == Billing.SUBSCRIPTION.value, "only a subscription can be renewed")
            if key is not None and (replayed := await _charges_by_key(session, resource_id, key)):
                return ActionResult(resource=convert.resource(row), charges=replayed)
            _refuse_if_locked(row)
            amount, start, end = _compute(lambda: billing.renewal_charge(convert.resource(row), months, now))
            resource = await _apply(session, row, {"expires_at": end})
            charge = await _add_charge(
                session, row, kind=ChargeKind.RENEWAL, amount=amount, period=(start, end), at=now, key=key
            )
            return ActionResult(resource=resource, charges=[charge])

    async def upgrade(
        self,
        resource_id: str,
        *,
        actor_account_id: str,
        monthly_price: Decimal,
        now: datetime,
        request_key: str | None = None,
    ) -> ActionResult:
        """Raises the monthly price. A subscription is charged domain.billing.upgrade_charge (an
        `upgrade` charge for now → expires_at, recorded even when it rounds to 0.00); pay-as-you-go
        pays the new price from now on, with no charge. With a request key, a repeat answers the first."""
        key = _key("upgrade", resource_id, request_key)
        async with self._store._write() as session:
            row = await _owned(session, resource_id, actor_account_id)
            if key is not None and (replayed := await _charges_by_key(session, resource_id, key)):
                return ActionResult(resource=convert.resource(row), charges=replayed)
            _refuse_if_locked(row)
            _require_price(monthly_price)
            _require(monthly_price > row.monthly_price, "an upgrade must raise the monthly price")
            current = convert.resource(row)
            if row.billing != Billing.SUBSCRIPTION.value:
                resource = await _apply(session, row, {"monthly_price": monthly_price})
                return ActionResult(resource=resource)
            amount, start, end = _compute(lambda: billing.upgrade_charge(current, monthly_price, now))
            resource = await _apply(session, row, {"monthly_price": monthly_price})
            charge = await _add_charge(
                session, row, kind=ChargeKind.UPGRADE, amount=amount, period=(start, end), at=now, key=key
            )
            return ActionResult(resource=resource, charges=[charge])

    async def downgrade(
        self, resource_id: str, *, actor_account_id: str, monthly_price: Decimal, now: datetime
    ) -> ActionResult:
        """Lowers the monthly price; a subscription refunds the refundable part of the owner's upgrade
        charges (domain.billing.downgrade_refunds)."""
        async with self._store._write() as session:
            row = await _owned(session, resource_id, actor_account_id)
            _refuse_if_locked(row)
            _require_price(monthly_price)
            _require(monthly_price < row.monthly_price, "a downgrade must lower the monthly price")
            refunds: list[tuple[Charge, Decimal]] = []
            if row.billing == Billing.SUBSCRIPTION.value:
                charges = await _refundable_view(session, row, await _charges(session, resource_id))
                refunds = billing.downgrade_refunds(charges, current_owner=row.owner_account_id, now=now)
            resource = await _apply(session, row, {"monthly_price": monthly_price})
            return ActionResult(resource=resource, charges=await _refund(session, row, refunds, now))

    async def release(self, resource_id: str, *, actor_account_id: str, now: datetime) -> ActionResult:
        """Releases the resource; a subscription refunds its whole refundable total
        (domain.billing.release_refunds). An EIP is detached; EIPs attached to a released ECS instance
        are detached from it. A released resource is gone (RESOURCE_NOT_FOUND from then on)."""
        async with self._store._write() as session:
            row = await _owned(session, resource_id, actor_account_id)
            _refuse_if_locked(row)
            refunds = await self._subscription_refunds(session, row, now)
            resource = await _apply(
                session, row, {"released": True, "attached_to": None, "auto_renew": False}
            )
            if row.product == Product.ECS.value:
                await session.execute(
                    update(ResourceRow)
                    .where(ResourceRow.attached_to == resource_id, ResourceRow.product == Product.EIP.value)
                    .values(attached_to=None),
                    execution_options={"synchronize_session": False},
                )
            return ActionResult(resource=resource, charges=await _refund(session, row, refunds, now))

    async def change_os(self, resource_id: str, *, actor_account_id: str) -> ActionResult:
        """Replaces the operating system of an ECS instance (the model keeps no OS: only the lock applies)."""
        async with self._store._write() as session:
            row = await _owned(session, resource_id, actor_account_id)
            _require(row.product == Product.ECS.value, "only an ECS instance has an operating system")
            resource = await _apply(session, row, {})
            return ActionResult(resource=resource)

    async def change_bandwidth(
        self, resource_id: str, *, actor_account_id: str, bandwidth_mbps: int
    ) -> ActionResult:
        async with self._store._write() as session:
            row = await _owned(session, resource_id, actor_account_id)
            _require(row.product == Product.EIP.value, "only an EIP has a bandwidth to change")
            _refuse_if_locked(row)
            _require(
                1 <= bandwidth_mbps <= MAX_BANDWIDTH_MBPS,
                f"bandwidth_mbps must be between 1 and {MAX_BANDWIDTH_MBPS}",
            )
            resource = await _apply(session, row, {"bandwidth_mbps": bandwidth_mbps})
            return ActionResult(resource=resource)

    async def convert_billing(
        self,
        resource_id: str,
        *,
        actor_account_id: str,
        now: datetime,
        to: Billing | None = None,
        months: int = 1,
        request_key: str | None = None,
    ) -> ActionResult:
        """Subscription ↔ pay-as-you-go (`to`: the target method; None: the other one).

        - to pay-as-you-go: the subscription's whole refundable total is refunded (as at release),
          `expires_at` is cleared and auto-renewal turned off;
        - to subscription: a new term of `months` (default 1) starts now: an `original` charge of
          months * monthly_price for now → now + months * 30 days, `expires_at` set to its end.
          With a request key, a repeat answers the first conversion's charge.

        Converting to the method the resource already has changes nothing (lock aside).
        """
        key = _key("convert_billing", resource_id, request_key)
        async with self._store._write() as session:
            row = await _owned(session, resource_id, actor_account_id)
            if key is not None and (replayed := await _charges_by_key(session, resource_id, key)):
                return ActionResult(resource=convert.resource(row), charges=replayed)
            _refuse_if_locked(row)
            current = Billing(row.billing)
            target = to or (
                Billing.PAY_AS_YOU_GO if current is Billing.SUBSCRIPTION else Billing.SUBSCRIPTION
            )
            if target is current:
                return ActionResult(resource=convert.resource(row))
            if target is Billing.PAY_AS_YOU_GO:
                refunds = await self._subscription_refunds(session, row, now)
                values = {"billing": target.value, "expires_at": None, "auto_renew": False}
                resource = await _apply(session, row, values)
                return ActionResult(resource=resource, charges=await _refund(session, row, refunds, now))
            # A pay-as-you-go resource has no term: renewal_charge starts the new one now.
            as_subscription = convert.resource(row).model_copy(
                update={"billing": Billing.SUBSCRIPTION, "expires_at": None}
            )
            amount, start, end = _compute(lambda: billing.renewal_charge(as_subscription, months, now))
            resource = await _apply(session, row, {"billing": target.value, "expires_at": end})
            charge = await _add_charge(
                session, row, kind=ChargeKind.ORIGINAL, amount=amount, period=(start, end), at=now, key=key
            )
            return ActionResult(resource=resource, charges=[charge])

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    async def _subscription_refunds(
        session: AsyncSession, row: ResourceRow, now: datetime
    ) -> list[tuple[Charge, Decimal]]:
        if row.billing != Billing.SUBSCRIPTION.value:
            return []
        charges = await _refundable_view(session, row, await _charges(session, row.id))
        return billing.release_refunds(charges, current_owner=row.owner_account_id, now=now)


# -- the lock conditions of the UPDATE that performs an action ---------------------------------

_NOT_LOCKED = ResourceRow.locked_by_order_id.is_(None)
_ANY_LOCK_ALLOWED = None
# start: no lock, or a lock held by an order that is not (yet) confirmed.
_NO_CONFIRMED_ORDER = or_(
    ResourceRow.locked_by_order_id.is_(None),
    ~exists().where(
        and_(
            OrderRow.order_id == ResourceRow.locked_by_order_id,
            OrderRow.status == OrderStatus.TRANSFERRING.value,
        )
    ),
)


async def _apply(
    session: AsyncSession, row: ResourceRow, values: dict[str, Any], *, lock: Any = _NOT_LOCKED
) -> Resource:
    """The action's one conditional UPDATE: only while the owner holds the resource and (unless `lock`
    is _ANY_LOCK_ALLOWED) the lock condition holds; refused with RESOURCE_LOCKED_FOR_TRANSFER else.

    An action without changes (`values` empty) still takes the lock check.
    """
    statement = update(ResourceRow).where(
        ResourceRow.id == row.id,
        ResourceRow.owner_account_id == row.owner_account_id,
        ResourceRow.released.is_(False),
    )
    if lock is not None:
        statement = statement.where(lock)
    # An empty SET is no statement: rewrite a column with itself.
    changed = await rowcount(session, statement.values(**(values or {"released": ResourceRow.released})))
    if not changed:
        current = await get(session, ResourceRow, row.id)
        if current is None or current.released or current.owner_account_id != row.owner_account_id:
            raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)
        raise TransferError(ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER)
    return convert.resource(await must_get(session, ResourceRow, row.id))


def _refuse_if_locked(row: ResourceRow) -> None:
    """The early, readable refusal; _apply's UPDATE is the atomic one."""
    if row.locked_by_order_id is not None:
        raise TransferError(ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER)


# -- visibility --------------------------------------------------------------------------------


async def _manages(session: AsyncSession, management_account_id: str, account_id: str) -> bool:
    """True if `management_account_id` manages the organization `account_id` is a member of."""
    found = await session.scalar(
        select(OrganizationMemberRow.account_id)
        .join(OrganizationRow, OrganizationRow.id == OrganizationMemberRow.organization_id)
        .where(
            OrganizationRow.management_account_id == management_account_id,
            OrganizationMemberRow.account_id == account_id,
        )
    )
    return found is not None


async def _visible(session: AsyncSession, resource_id: str, actor_account_id: str) -> ResourceRow:
    """The resource for reading: its owner's or its owner's management account's."""
    row = await get(session, ResourceRow, resource_id)
    if row is None or row.released:
        raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)
    if row.owner_account_id != actor_account_id and not await _manages(
        session, actor_account_id, row.owner_account_id
    ):
        raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)
    return row


async def _owned(session: AsyncSession, resource_id: str, actor_account_id: str) -> ResourceRow:
    """The resource, row-locked, for an action of its owner; the management account only reads."""
    row = await get(session, ResourceRow, resource_id, lock=True)
    if row is None or row.released:
        raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)
    if row.owner_account_id != actor_account_id:
        if await _manages(session, actor_account_id, row.owner_account_id):
            raise TransferError(ErrorCode.READ_ONLY_ACCESS)
        raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)
    return row


# -- charges -----------------------------------------------------------------------------------


async def _charges(session: AsyncSession, resource_id: str) -> list[Charge]:
    rows = await session.scalars(
        select(ChargeRow).where(ChargeRow.resource_id == resource_id).order_by(ChargeRow.id)
    )
    return [convert.charge(row) for row in rows]


async def _refundable_view(
    session: AsyncSession, row: ResourceRow, charges: Sequence[Charge]
) -> list[Charge]:
    """The charges as domain.billing should see them for the current owner: a charge recorded before
    the owner's current tenure began (the cut-over of the last hand-off to it that was not reverted)
    is masked as paid by nobody, so it refunds 0.00 even when this owner paid it in an earlier tenure.
    """
    cut_over = await session.scalar(
        select(BillingHandoffRow.cut_over_at)
        .where(
            BillingHandoffRow.resource_id == row.id,
            BillingHandoffRow.to_account_id == row.owner_account_id,
            BillingHandoffRow.reverted_at.is_(None),
        )
        .order_by(BillingHandoffRow.cut_over_at.desc())
        .limit(1)
    )
    if cut_over is None:
        return list(charges)
    return [
        c.model_copy(update={"payer_account_id": _NOBODY}) if c.created_at < cut_over else c for c in charges
    ]


async def _add_charge(
    session: AsyncSession,
    row: ResourceRow,
    *,
    kind: ChargeKind,
    amount: Decimal,
    period: tuple[datetime, datetime],
    at: datetime,
    key: str | None = None,
    refunds_charge_id: int | None = None,
) -> Charge:
    """A charge paid by the resource's owner (a refund: to it, with a negative amount)."""
    new = ChargeRow(
        resource_id=row.id,
        payer_account_id=row.owner_account_id,
        kind=kind.value,
        amount=ledger_amount(amount),
        period_start=period[0],
        period_end=period[1],
        created_at=at,
        refunds_charge_id=refunds_charge_id,
        idempotency_key=key,
    )
    session.add(new)
    await session.flush()
    return convert.charge(new)


async def _refund(
    session: AsyncSession, row: ResourceRow, refunds: Iterable[tuple[Charge, Decimal]], now: datetime
) -> list[Charge]:
    """One `refund` charge per refunded charge: the negated amount, for the unused rest of its period."""
    return [
        await _add_charge(
            session,
            row,
            kind=ChargeKind.REFUND,
            amount=-amount,
            period=(max(now, charge.period_start), max(now, charge.period_end)),
            at=now,
            refunds_charge_id=charge.id,
        )
        for charge, amount in refunds
    ]


async def _charges_by_key(session: AsyncSession, resource_id: str, key: str) -> list[Charge]:
    rows = await session.scalars(
        select(ChargeRow).where(ChargeRow.idempotency_key == key, ChargeRow.resource_id == resource_id)
    )
    return [convert.charge(r) for r in rows]


def _key(action: str, resource_id: str, request_key: str | None) -> str | None:
    """The charge's idempotency key: one request key per action and resource."""
    return None if request_key is None else f"{action}:{resource_id}:{request_key}"


# -- validation --------------------------------------------------------------------------------


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise TransferError(ErrorCode.VALIDATION_ERROR, message)


def _require_price(monthly_price: Decimal) -> None:
    _require(
        monthly_price.is_finite() and monthly_price >= 0 and monthly_price == monthly_price.quantize(CENT),
        "monthly_price must be a non-negative amount with two decimals",
    )


def _compute(
    compute: Callable[[], tuple[Decimal, datetime, datetime]],
) -> tuple[Decimal, datetime, datetime]:
    """domain.billing's refusals (a term that has ended, a price that does not rise...) and dates out
    of range are VALIDATION_ERRORs."""
    try:
        return compute()
    except (ValueError, OverflowError) as error:
        raise TransferError(ErrorCode.VALIDATION_ERROR, str(error)) from None
