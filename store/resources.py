"""Resources and their charges (the billing ledger): rows in, domain models out.

The resource lock (SPEC §3) is the column `locked_by_order_id`: `take_lock` is one conditional UPDATE,
so whoever changes the row holds the resource; orders.uq_orders_open_resource_id guards it a second time.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from functools import cache
from typing import Any

from sqlalchemy import Select, and_, bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.codes import ErrorCode
from domain.models import CENT, MAX_MONEY, Charge, ChargeKind, Product, Resource
from domain.refusals import TransferError
from store.queries import insert_once, rowcount, table
from store.tables import BillingHandoffRow, ChargeRow, ResourceRow

RESOURCES = table(ResourceRow)

# The statements every transfer runs, built once (store.queries: building one costs more than running
# it). An UPDATE's parameters may not take its columns' names: b_ for bound.
_ATTACHED_EIPS = (
    select(RESOURCES.c.attached_to, RESOURCES.c.id)
    .where(
        RESOURCES.c.attached_to.in_(bindparam("instance_ids", expanding=True)),
        RESOURCES.c.product == Product.EIP,
        RESOURCES.c.released.is_(False),
    )
    .order_by(RESOURCES.c.id)
)
_EIP = RESOURCES.alias("attached_eip")
_TAKE_LOCK = (
    update(RESOURCES)
    .where(
        RESOURCES.c.id == bindparam("b_resource_id"),
        RESOURCES.c.owner_account_id == bindparam("b_owner_account_id"),
        RESOURCES.c.locked_by_order_id.is_(None),
        RESOURCES.c.released.is_(False),
    )
    .values(locked_by_order_id=bindparam("b_order_id"))
)
_RELEASE_LOCK = (
    update(RESOURCES)
    .where(RESOURCES.c.locked_by_order_id == bindparam("b_order_id"))
    .values(locked_by_order_id=None)
)
_MOVE_OWNER = (
    update(RESOURCES)
    .where(
        RESOURCES.c.id == bindparam("b_resource_id"),
        RESOURCES.c.owner_account_id == bindparam("b_from_account_id"),
        RESOURCES.c.locked_by_order_id == bindparam("b_order_id"),
    )
    .values(owner_account_id=bindparam("b_to_account_id"))
)


@cache
def _one_with_attached_eips(lock: bool) -> Select[Any]:
    """A resource by id with the EIPs attached to it if it is an ECS instance, one row per EIP in id order
    (a row with attached_eip_id null: none): one statement where a by-key read and _ATTACHED_EIPS are two.
    `lock` row-locks the resource alone (PostgreSQL refuses a lock on an outer join's nullable side)."""
    attached = and_(
        RESOURCES.c.product == Product.ECS,
        _EIP.c.attached_to == RESOURCES.c.id,
        _EIP.c.product == Product.EIP,
        _EIP.c.released.is_(False),
    )
    statement = (
        select(RESOURCES, _EIP.c.id.label("attached_eip_id"))
        .outerjoin(_EIP, attached)
        .where(RESOURCES.c.id == bindparam("resource_id"))
        .order_by(_EIP.c.id)
    )
    return statement.with_for_update(of=RESOURCES, key_share=True) if lock else statement


def _resource(row: Any, attached_eip_ids: list[str] | None = None) -> Resource:
    resource = Resource.model_validate(row, from_attributes=True)
    return resource.model_copy(update={"attached_eip_ids": attached_eip_ids or []})


def _charge(row: ChargeRow) -> Charge:
    return Charge.model_validate(row, from_attributes=True)


def ledger_amount(amount: Decimal) -> Decimal:
    """A computed charge the ledger can hold; a larger one is refused as bad input, not a crash. Money is
    never rounded here: the caller decides how (a refund rounds down)."""
    if amount != amount.quantize(CENT):
        raise ValueError(f"money has at most two decimal places: {amount}")
    if abs(amount) > MAX_MONEY:
        raise TransferError(
            ErrorCode.VALIDATION_ERROR, f"the charge {amount} exceeds the ledger's limit of {MAX_MONEY}"
        )
    return amount


class ResourceStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, resource_id: str, *, lock: bool = False) -> Resource | None:
        """The resource with its attached EIPs; `lock`: row-locked (FOR NO KEY UPDATE, store.queries)."""
        found = await self._session.execute(_one_with_attached_eips(lock), {"resource_id": resource_id})
        rows = found.all()
        if not rows:
            return None
        return _resource(rows[0], [row.attached_eip_id for row in rows if row.attached_eip_id is not None])

    async def add(self, resource: Resource) -> bool:
        """Inserts the resource; False if one with its id exists."""
        values = resource.model_dump(exclude={"attached_eip_ids"})
        return await insert_once(self._session, ResourceRow, values)

    async def owned_by(self, owner_account_ids: set[str]) -> list[Resource]:
        """The resources these accounts own, released ones excluded, oldest first."""
        rows = list(
            await self._session.execute(
                select(RESOURCES)
                .where(RESOURCES.c.owner_account_id.in_(owner_account_ids), RESOURCES.c.released.is_(False))
                .order_by(RESOURCES.c.created_at, RESOURCES.c.id)
            )
        )
        eips = await self._attached_eips(rows)
        return [_resource(row, eips.get(row.id)) for row in rows]

    async def _attached_eips(self, rows: Sequence[Any]) -> dict[str, list[str]]:
        """The EIPs attached to each ECS instance among `rows`, in id order."""
        instance_ids = [row.id for row in rows if row.product is Product.ECS]
        if not instance_ids:
            return {}
        found = await self._session.execute(_ATTACHED_EIPS, {"instance_ids": instance_ids})
        eips: dict[str, list[str]] = {}
        for instance_id, eip_id in found:
            if instance_id is not None:
                eips.setdefault(instance_id, []).append(eip_id)
        return eips

    async def apply(self, resource_id: str, values: dict[str, Any]) -> None:
        """Writes `values` onto a resource the caller read under lock."""
        if values:
            statement = update(RESOURCES).where(RESOURCES.c.id == resource_id).values(**values)
            await rowcount(self._session, statement)

    async def change(self, resource_id: str, values: dict[str, Any]) -> Resource:
        """The resource after `apply`."""
        await self.apply(resource_id, values)
        changed = await self.get(resource_id)
        assert changed is not None, "change a resource read under lock first"
        return changed

    async def detach_eips_from(self, instance_id: str) -> None:
        await rowcount(
            self._session,
            update(RESOURCES)
            .where(RESOURCES.c.attached_to == instance_id, RESOURCES.c.product == Product.EIP)
            .values(attached_to=None),
        )

    # -- the lock and ownership -------------------------------------------------------------------

    async def take_lock(self, resource_id: str, *, owner_account_id: str, order_id: str) -> bool:
        """THE LOCK: one atomic conditional UPDATE; True if this order now holds the resource."""
        values = {
            "b_resource_id": resource_id,
            "b_owner_account_id": owner_account_id,
            "b_order_id": order_id,
        }
        return await rowcount(self._session, _TAKE_LOCK, values) == 1

    async def release_lock(self, order_id: str) -> None:
        await rowcount(self._session, _RELEASE_LOCK, {"b_order_id": order_id})

    async def move_owner(
        self, resource_id: str, *, order_id: str, from_account_id: str, to_account_id: str
    ) -> bool:
        """Moves the resource between an order's parties, only while that order holds its lock."""
        values = {
            "b_resource_id": resource_id,
            "b_order_id": order_id,
            "b_from_account_id": from_account_id,
            "b_to_account_id": to_account_id,
        }
        return await rowcount(self._session, _MOVE_OWNER, values) == 1

    # -- charges ----------------------------------------------------------------------------------

    async def charges(self, resource_id: str) -> list[Charge]:
        rows = await self._session.scalars(
            select(ChargeRow).where(ChargeRow.resource_id == resource_id).order_by(ChargeRow.id)
        )
        return [_charge(row) for row in rows]

    async def charges_by_key(self, key: str) -> list[Charge]:
        """The charges an idempotency key names (a repeated request answers them)."""
        rows = await self._session.scalars(
            select(ChargeRow).where(ChargeRow.idempotency_key == key).order_by(ChargeRow.id)
        )
        return [_charge(row) for row in rows]

    async def has_charge(self, charge_id: int) -> bool:
        return await self._session.get(ChargeRow, charge_id) is not None

    async def add_charge(
        self,
        *,
        resource_id: str,
        payer_account_id: str,
        kind: ChargeKind,
        amount: Decimal,
        period: tuple[datetime, datetime],
        at: datetime,
        refunds_charge_id: int | None = None,
        key: str | None = None,
        order_id: str | None = None,
    ) -> Charge | None:
        """Records a charge (a refund is negative). With a key, a second charge of that key is not
        recorded (None): the caller answers the first, `charges_by_key`."""
        values = {
            "resource_id": resource_id,
            "payer_account_id": payer_account_id,
            "kind": kind,
            "amount": ledger_amount(amount),
            "period_start": period[0],
            "period_end": period[1],
            "created_at": at,
            "refunds_charge_id": refunds_charge_id,
            "order_id": order_id,
            "idempotency_key": key,
        }
        if key is not None:
            if not await insert_once(self._session, ChargeRow, values):
                return None
            (charge,) = await self.charges_by_key(key)
            return charge
        row = ChargeRow(**values)
        self._session.add(row)
        await self._session.flush()
        return _charge(row)

    async def tenure_start(self, resource: Resource) -> datetime | None:
        """When the current owner's tenure began: the cut-over of the last billing hand-off to it that
        was not reverted (None: it has owned the resource since it was provisioned)."""
        return await self._session.scalar(
            select(BillingHandoffRow.cut_over_at)
            .where(
                BillingHandoffRow.resource_id == resource.id,
                BillingHandoffRow.to_account_id == resource.owner_account_id,
                BillingHandoffRow.reverted_at.is_(None),
            )
            .order_by(BillingHandoffRow.cut_over_at.desc())
            .limit(1)
        )
