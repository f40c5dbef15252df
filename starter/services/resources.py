"""ResourceService: what an owner does to a resource (SPEC §5 resource actions), listings with blockers,
refund quotes and auto-renewal. Each method is one unit of work; the rules are domain.rules' and
domain.billing's, checked on facts read under the resource's row lock:

- visibility (`rules.resource_access_failure`): the owner's principals read and act; the management
  account's root reads (READ_ONLY_ACCESS on every action); others get RESOURCE_NOT_FOUND;
- the lock during a transfer (`rules.lock_refusal`). The refusal is atomic: an action reads the resource
  FOR NO KEY UPDATE and the lock's holder (`open_order`, the confirm) takes the same row, so an order
  opened concurrently either sees the action done or the action sees the lock, never both.

Checks come in this order: the resource (RESOURCE_NOT_FOUND, READ_ONLY_ACCESS), the action's product
and billing method (VALIDATION_ERROR), a replayed request key, the lock, then the action's arguments.

A refund is recorded as a `refund` charge of the negated amount with `refunds_charge_id`. Charges paid
before the resource last changed hands (the current owner's billing hand-off) refund nothing to the
current owner, even if that owner had paid them in an earlier tenure.
Lock order on PostgreSQL: an ECS instance's row before an EIP's (attach).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.ext.asyncio import AsyncSession

from domain import billing, rules
from domain.clock import now
from domain.codes import ErrorCode
from domain.models import (
    CENT,
    Billing,
    Charge,
    ChargeKind,
    InstanceStatus,
    Principal,
    Product,
    Refusal,
    Resource,
    ResourceAction,
)
from domain.paging import decode_cursor, encode_cursor
from domain.refusals import TransferError
from store.db import Database
from store.orders import OrderStore
from store.organizations import OrganizationStore
from store.resources import ResourceStore

MAX_BANDWIDTH_MBPS = 1000
# Whatever a charge is not paid by: masks charges from before the current owner's hand-off.
_NOBODY = ""

# What each action needs the resource to be (SPEC §5), and the message when it is not.
_PRODUCT = {
    ResourceAction.STOP: (Product.ECS, "only an ECS instance can be stopped"),
    ResourceAction.START: (Product.ECS, "only an ECS instance can be started"),
    ResourceAction.CHANGE_OS: (Product.ECS, "only an ECS instance has an operating system"),
    ResourceAction.ATTACH: (Product.EIP, "only an EIP can be attached"),
    ResourceAction.DETACH: (Product.EIP, "only an EIP can be detached"),
    ResourceAction.CHANGE_BANDWIDTH: (Product.EIP, "only an EIP has a bandwidth to change"),
}
_SUBSCRIPTION_ONLY = {ResourceAction.RENEW: "only a subscription can be renewed"}


class ActionResult(BaseModel):
    """The resource after an action, and the charges (refunds included) the action recorded."""

    model_config = ConfigDict(frozen=True)

    resource: Resource
    charges: list[Charge] = Field(default_factory=list)


class ListedResource(BaseModel):
    """A resource with the blockers a transfer of it (its owner as the source) would meet now."""

    model_config = ConfigDict(frozen=True)

    resource: Resource
    blockers: list[Refusal]
    warnings: list[Refusal]


class ResourceService:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- reads ----------------------------------------------------------------------------------

    async def get(self, resource_id: str, *, actor: Principal) -> Resource:
        """The resource if the actor's account owns it or its root manages the owner's organization."""
        async with self._db.read() as session:
            return await _visible(session, resource_id, actor, acting=False)

    async def list(
        self,
        actor: Principal,
        *,
        organization: bool = False,
        transferable: bool | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> tuple[list[ListedResource], str | None]:
        """The caller's resources (or with `organization` its members', management account root only),
        oldest first, each with its blockers; `transferable` keeps those without (false: with) them."""
        after = decode_cursor(cursor) if cursor is not None else None
        async with self._db.read() as session:
            if not organization:
                owners = {actor.account_id}
            elif rules.views_managed_accounts(actor):
                owners = await OrganizationStore(session).member_ids(actor.account_id)
            else:
                owners = set()
            resources = await ResourceStore(session).owned_by(owners) if owners else []
        at = now()
        items = [
            ListedResource(
                resource=r,
                blockers=rules.blockers(r, source_account_id=r.owner_account_id, now=at),
                warnings=rules.warnings(r),
            )
            for r in resources
        ]
        if transferable is not None:
            items = [item for item in items if (not item.blockers) is transferable]
        if after is not None:
            items = [item for item in items if (item.resource.created_at, item.resource.id) > after]
        page = items[:limit]
        if len(items) <= limit:
            return page, None
        return page, encode_cursor(page[-1].resource.created_at, page[-1].resource.id)

    async def refund_quote(self, resource_id: str, *, actor: Principal, at: datetime) -> billing.RefundQuote:
        """Every charge of the resource with what it would refund its current owner at `at`."""
        async with self._db.read() as session:
            resource = await _visible(session, resource_id, actor, acting=False)
            charges = await ResourceStore(session).charges(resource_id)
            masked = await _refundable_view(session, resource, charges)
        quote = billing.refund_quote(masked, current_owner=resource.owner_account_id, now=at)
        originals = {c.id: c for c in charges}
        return billing.RefundQuote(
            items=[
                billing.RefundLine(charge=originals[line.charge.id], refundable=line.refundable)
                for line in quote.items
            ],
            total_refundable=quote.total_refundable,
        )

    # -- actions --------------------------------------------------------------------------------

    async def perform(
        self,
        action: ResourceAction,
        resource_id: str,
        *,
        actor: Principal,
        at: datetime,
        request_key: str | None = None,
        arguments: Mapping[str, Any],
    ) -> ActionResult:
        """One owner action by its SPEC §5 name, with the arguments of its body (the HTTP API's
        `POST /v1/resources/{id}/actions/{action}`)."""
        match action:
            case ResourceAction.STOP:
                return await self.stop(resource_id, actor=actor)
            case ResourceAction.START:
                return await self.start(resource_id, actor=actor)
            case ResourceAction.ATTACH:
                return await self.attach(resource_id, actor=actor, instance_id=arguments["instance_id"])
            case ResourceAction.DETACH:
                return await self.detach(resource_id, actor=actor)
            case ResourceAction.RENEW:
                return await self.renew(
                    resource_id, actor=actor, months=arguments["months"], at=at, request_key=request_key
                )
            case ResourceAction.UPGRADE:
                price = Decimal(arguments["monthly_price"])
                return await self.upgrade(
                    resource_id, actor=actor, monthly_price=price, at=at, request_key=request_key
                )
            case ResourceAction.DOWNGRADE:
                price = Decimal(arguments["monthly_price"])
                return await self.downgrade(resource_id, actor=actor, monthly_price=price, at=at)
            case ResourceAction.RELEASE:
                return await self.release(resource_id, actor=actor, at=at)
            case ResourceAction.CHANGE_OS:
                return await self.change_os(resource_id, actor=actor)
            case ResourceAction.CHANGE_BANDWIDTH:
                return await self.change_bandwidth(
                    resource_id, actor=actor, bandwidth_mbps=arguments["bandwidth_mbps"]
                )
            case ResourceAction.CONVERT_BILLING:
                return await self.convert_billing(
                    resource_id,
                    actor=actor,
                    at=at,
                    to=arguments["billing"],
                    months=arguments["months"] or 1,
                    request_key=request_key,
                )
        raise AssertionError(f"unhandled action {action}")

    async def stop(self, resource_id: str, *, actor: Principal) -> ActionResult:
        """Stops an ECS instance (stopping a stopped one changes nothing). Allowed while locked."""
        return await self._change(ResourceAction.STOP, resource_id, actor, {"status": InstanceStatus.STOPPED})

    async def start(self, resource_id: str, *, actor: Principal) -> ActionResult:
        """Starts an ECS instance; refused once the order holding the resource is confirmed."""
        return await self._change(
            ResourceAction.START, resource_id, actor, {"status": InstanceStatus.RUNNING}
        )

    async def detach(self, resource_id: str, *, actor: Principal) -> ActionResult:
        """Detaches an EIP from its instance (a detached one changes nothing). Allowed while locked."""
        return await self._change(ResourceAction.DETACH, resource_id, actor, {"attached_to": None})

    async def change_os(self, resource_id: str, *, actor: Principal) -> ActionResult:
        """Replaces the operating system of an ECS instance (the model keeps no OS: only the lock applies)."""
        return await self._change(ResourceAction.CHANGE_OS, resource_id, actor, {})

    async def change_bandwidth(
        self, resource_id: str, *, actor: Principal, bandwidth_mbps: int
    ) -> ActionResult:
        def changes(_: Resource) -> dict[str, Any]:
            _require(
                1 <= bandwidth_mbps <= MAX_BANDWIDTH_MBPS,
                f"bandwidth_mbps must be between 1 and {MAX_BANDWIDTH_MBPS}",
            )
            return {"bandwidth_mbps": bandwidth_mbps}

        return await self._change(ResourceAction.CHANGE_BANDWIDTH, resource_id, actor, changes)

    async def attach(self, resource_id: str, *, actor: Principal, instance_id: str) -> ActionResult:
        """Attaches an EIP to an ECS instance of the same owner (the same instance again changes nothing).

        An EIP attached elsewhere must be detached first; an instance locked for its own transfer takes
        no EIP (RESOURCE_LOCKED_FOR_TRANSFER).
        """
        async with self._db.write() as session:
            resources = ResourceStore(session)
            # The instance's row first (see the module docstring), then the EIP's.
            instance = await resources.get(instance_id, lock=True)
            eip = await self._checked(session, ResourceAction.ATTACH, resource_id, actor)
            _require(
                instance is not None
                and not instance.released
                and instance.product is Product.ECS
                and instance.owner_account_id == eip.owner_account_id,
                f"{instance_id} is not an ECS instance of this account",
            )
            assert instance is not None
            _require(
                eip.attached_to in (None, instance_id),
                f"the EIP is attached to {eip.attached_to}: detach it first",
            )
            if instance.locked_by_order_id is not None:
                raise TransferError(
                    ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER,
                    f"instance {instance_id} is locked for its transfer",
                )
            return ActionResult(resource=await resources.change(resource_id, {"attached_to": instance_id}))

    async def renew(
        self, resource_id: str, *, actor: Principal, months: int, at: datetime, request_key: str | None = None
    ) -> ActionResult:
        """Manual renewal of a subscription: months * monthly_price charged to the owner (`renewal`),
        `expires_at` extended. With a request key, a repeat answers the first renewal's charge."""
        key = _key(ResourceAction.RENEW, resource_id, request_key)
        async with self._db.write() as session:
            resource = await self._checked(session, ResourceAction.RENEW, resource_id, actor, key=key)
            if isinstance(resource, ActionResult):
                return resource
            amount, start, end = _compute(lambda: billing.renewal_charge(resource, months, at))
            return await _charged(
                session, resource, {"expires_at": end}, ChargeKind.RENEWAL, amount, (start, end), at, key
            )

    async def auto_renew(self, resource_id: str, *, at: datetime, request_key: str | None = None) -> Charge:
        """One auto-renewal of a subscription at `at`: one month charged to the account that owns the
        resource at that moment, `expires_at` extended by the month. Allowed while locked.

        With a request key, a repeat answers the first charge and changes nothing.
        """
        key = None if request_key is None else f"auto_renew:{resource_id}:{request_key}"
        async with self._db.write() as session:
            resources = ResourceStore(session)
            resource = await resources.get(resource_id, lock=True)
            if resource is None or resource.released:
                raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)
            if key is not None and (replayed := await resources.charges_by_key(key)):
                return replayed[0]
            _require(resource.billing is Billing.SUBSCRIPTION, "only a subscription is renewed")
            amount, start, end = _compute(lambda: billing.renewal_charge(resource, 1, at))
            result = await _charged(
                session, resource, {"expires_at": end}, ChargeKind.AUTO_RENEWAL, amount, (start, end), at, key
            )
            return result.charges[0]

    async def upgrade(
        self,
        resource_id: str,
        *,
        actor: Principal,
        monthly_price: Decimal,
        at: datetime,
        request_key: str | None = None,
    ) -> ActionResult:
        """Raises the monthly price. A subscription is charged domain.billing.upgrade_charge (an
        `upgrade` charge for now → expires_at, recorded even when it rounds to 0.00); pay-as-you-go
        pays the new price from now on, with no charge. With a request key, a repeat answers the first."""
        key = _key(ResourceAction.UPGRADE, resource_id, request_key)
        async with self._db.write() as session:
            resource = await self._checked(session, ResourceAction.UPGRADE, resource_id, actor, key=key)
            if isinstance(resource, ActionResult):
                return resource
            _require_price(monthly_price)
            _require(monthly_price > resource.monthly_price, "an upgrade must raise the monthly price")
            changes = {"monthly_price": monthly_price}
            if resource.billing is not Billing.SUBSCRIPTION:
                return ActionResult(resource=await ResourceStore(session).change(resource_id, changes))
            amount, start, end = _compute(lambda: billing.upgrade_charge(resource, monthly_price, at))
            return await _charged(
                session, resource, changes, ChargeKind.UPGRADE, amount, (start, end), at, key
            )

    async def downgrade(
        self, resource_id: str, *, actor: Principal, monthly_price: Decimal, at: datetime
    ) -> ActionResult:
        """Lowers the monthly price; a subscription refunds the refundable part of the owner's upgrade
        charges (domain.billing.downgrade_refunds)."""
        async with self._db.write() as session:
            resource = await self._checked(session, ResourceAction.DOWNGRADE, resource_id, actor)
            _require_price(monthly_price)
            _require(monthly_price < resource.monthly_price, "a downgrade must lower the monthly price")
            refunds = await _refunds(session, resource, billing.downgrade_refunds, at)
            return await _refunded(session, resource, {"monthly_price": monthly_price}, refunds, at)

    async def release(self, resource_id: str, *, actor: Principal, at: datetime) -> ActionResult:
        """Releases the resource; a subscription refunds its whole refundable total
        (domain.billing.release_refunds). An EIP is detached; EIPs attached to a released ECS instance
        are detached from it. A released resource is gone (RESOURCE_NOT_FOUND from then on)."""
        async with self._db.write() as session:
            resource = await self._checked(session, ResourceAction.RELEASE, resource_id, actor)
            refunds = await _refunds(session, resource, billing.release_refunds, at)
            changes = {"released": True, "attached_to": None, "auto_renew": False}
            result = await _refunded(session, resource, changes, refunds, at)
            if resource.product is Product.ECS:
                await ResourceStore(session).detach_eips_from(resource_id)
            return result

    async def convert_billing(
        self,
        resource_id: str,
        *,
        actor: Principal,
        at: datetime,
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
        key = _key(ResourceAction.CONVERT_BILLING, resource_id, request_key)
        async with self._db.write() as session:
            resource = await self._checked(
                session, ResourceAction.CONVERT_BILLING, resource_id, actor, key=key
            )
            if isinstance(resource, ActionResult):
                return resource
            current = resource.billing
            target = to or (
                Billing.PAY_AS_YOU_GO if current is Billing.SUBSCRIPTION else Billing.SUBSCRIPTION
            )
            if target is current:
                return ActionResult(resource=resource)
            if target is Billing.PAY_AS_YOU_GO:
                refunds = await _refunds(session, resource, billing.release_refunds, at)
                changes: dict[str, Any] = {"billing": target, "expires_at": None, "auto_renew": False}
                return await _refunded(session, resource, changes, refunds, at)
            # A pay-as-you-go resource has no term: renewal_charge starts the new one now.
            as_subscription = resource.model_copy(
                update={"billing": Billing.SUBSCRIPTION, "expires_at": None}
            )
            amount, start, end = _compute(lambda: billing.renewal_charge(as_subscription, months, at))
            changes = {"billing": target, "expires_at": end}
            return await _charged(
                session, resource, changes, ChargeKind.ORIGINAL, amount, (start, end), at, key
            )

    # -- the checks every action takes, in order --------------------------------------------------

    async def _change(
        self,
        action: ResourceAction,
        resource_id: str,
        actor: Principal,
        changes: dict[str, Any] | Callable[[Resource], dict[str, Any]],
    ) -> ActionResult:
        async with self._db.write() as session:
            resource = await self._checked(session, action, resource_id, actor)
            values = changes(resource) if callable(changes) else changes
            return ActionResult(resource=await ResourceStore(session).change(resource_id, values))

    async def _checked(
        self,
        session: AsyncSession,
        action: ResourceAction,
        resource_id: str,
        actor: Principal,
        *,
        key: str | None = None,
    ) -> Any:
        """The resource, row-locked, once every check before the action's own arguments passed; with a
        replayed request key, the first request's ActionResult instead."""
        resources = ResourceStore(session)
        resource = await _visible(session, resource_id, actor, acting=True, lock=True)
        if action in _PRODUCT:
            product, message = _PRODUCT[action]
            _require(resource.product is product, message)
        if action in _SUBSCRIPTION_ONLY:
            _require(resource.billing is Billing.SUBSCRIPTION, _SUBSCRIPTION_ONLY[action])
        if key is not None and (replayed := await resources.charges_by_key(key)):
            return ActionResult(resource=resource, charges=replayed)
        locking = (
            await OrderStore(session).get(resource.locked_by_order_id)
            if resource.locked_by_order_id
            else None
        )
        if code := rules.lock_refusal(action, locking.status if locking else None):
            raise TransferError(code)
        return resource


async def _visible(
    session: AsyncSession, resource_id: str, actor: Principal, *, acting: bool, lock: bool = False
) -> Resource:
    resource = await ResourceStore(session).get(resource_id, lock=lock)
    manages = resource is not None and resource.owner_account_id in await OrganizationStore(
        session
    ).member_ids(actor.account_id)
    if code := rules.resource_access_failure(resource, actor, manages_owner=manages, acting=acting):
        raise TransferError(code)
    assert resource is not None
    return resource


# -- charges -------------------------------------------------------------------------------------


async def _refundable_view(
    session: AsyncSession, resource: Resource, charges: Sequence[Charge]
) -> list[Charge]:
    """The charges as domain.billing should see them for the current owner: a charge recorded before
    the owner's current tenure began is masked as paid by nobody, so it refunds 0.00 even when this
    owner paid it in an earlier tenure."""
    cut_over = await ResourceStore(session).tenure_start(resource)
    if cut_over is None:
        return list(charges)
    return [
        c.model_copy(update={"payer_account_id": _NOBODY}) if c.created_at < cut_over else c for c in charges
    ]


async def _refunds(
    session: AsyncSession,
    resource: Resource,
    refunds_of: Callable[..., list[tuple[Charge, Decimal]]],
    at: datetime,
) -> list[tuple[Charge, Decimal]]:
    """What a subscription refunds (domain.billing's `refunds_of`); pay-as-you-go refunds nothing."""
    if resource.billing is not Billing.SUBSCRIPTION:
        return []
    charges = await _refundable_view(session, resource, await ResourceStore(session).charges(resource.id))
    return refunds_of(charges, current_owner=resource.owner_account_id, now=at)


async def _charged(
    session: AsyncSession,
    resource: Resource,
    changes: dict[str, Any],
    kind: ChargeKind,
    amount: Decimal,
    period: tuple[datetime, datetime],
    at: datetime,
    key: str | None,
) -> ActionResult:
    """The action's changes and the one charge it costs the owner."""
    resources = ResourceStore(session)
    changed = await resources.change(resource.id, changes)
    charge = await resources.add_charge(
        resource_id=resource.id,
        payer_account_id=resource.owner_account_id,
        kind=kind,
        amount=amount,
        period=period,
        at=at,
        key=key,
    )
    assert charge is not None, "the key was checked for a replay under the resource's lock"
    return ActionResult(resource=changed, charges=[charge])


async def _refunded(
    session: AsyncSession,
    resource: Resource,
    changes: dict[str, Any],
    refunds: Sequence[tuple[Charge, Decimal]],
    at: datetime,
) -> ActionResult:
    """The action's changes and one `refund` charge per refunded charge: the negated amount, for the
    unused rest of its period."""
    resources = ResourceStore(session)
    changed = await resources.change(resource.id, changes)
    charges = []
    for charge, amount in refunds:
        refund = await resources.add_charge(
            resource_id=resource.id,
            payer_account_id=resource.owner_account_id,
            kind=ChargeKind.REFUND,
            amount=-amount,
            period=(max(at, charge.period_start), max(at, charge.period_end)),
            at=at,
            refunds_charge_id=charge.id,
        )
        assert refund is not None
        charges.append(refund)
    return ActionResult(resource=changed, charges=charges)


def _key(action: ResourceAction, resource_id: str, request_key: str | None) -> str | None:
    """The charge's idempotency key: one request key per action and resource, as a digest that fits its
    column whatever the key's length (up to 200 characters)."""
    if request_key is None:
        return None
    return hashlib.sha256(f"{action}\x1f{resource_id}\x1f{request_key}".encode()).hexdigest()


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
