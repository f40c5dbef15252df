"""What the engine's tests drive on one database: the production transactions and services, and the
reads they assert with.

`Stores` holds the writes under test (`.orders`: OrderTransactions, `.provisioning`: ProvisioningService)
and adds the reads and the two calls (instance status, a keyed charge) that tests arrange state with.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from activities.order_transactions import OrderTransactions, confirmation_refusal
from domain import rules
from domain.codes import ErrorCode
from domain.models import (
    Account,
    Charge,
    ChargeKind,
    InstanceStatus,
    Order,
    OrderStatus,
    Principal,
    PrincipalKind,
    Refusal,
    Resource,
    Role,
)
from domain.paging import decode_cursor, encode_cursor
from domain.refusals import refusal
from starter.services.provisioning import ProvisioningService
from starter.services.resources import ResourceService
from starter.services.verification import VerificationService
from store.accounts import AccountStore
from store.db import Database
from store.orders import OrderStore
from store.organizations import OrganizationStore
from store.resources import ResourceStore


def root_of(account_id: str) -> Principal:
    return Principal(kind=PrincipalKind.ROOT, account_id=account_id)


@dataclass
class Stores:
    db: Database
    orders: OrderTransactions = field(init=False)
    provisioning: ProvisioningService = field(init=False)
    resources: ResourceService = field(init=False)
    verification: VerificationService = field(init=False)

    def __post_init__(self) -> None:
        self.orders = OrderTransactions(self.db)
        self.provisioning = ProvisioningService(self.db)
        self.resources = ResourceService(self.db)
        self.verification = VerificationService(self.db)

    @property
    def engine(self) -> Any:
        return self.db.engine

    async def get_account(self, account_id: str) -> Account | None:
        async with self.db.read() as session:
            return await AccountStore(session).get(account_id)

    async def get_resource(self, resource_id: str) -> Resource | None:
        async with self.db.read() as session:
            return await ResourceStore(session).get(resource_id)

    async def list_resources(self, owner_account_ids: set[str]) -> list[Resource]:
        async with self.db.read() as session:
            return await ResourceStore(session).owned_by(owner_account_ids)

    async def list_charges(self, resource_id: str) -> list[Charge]:
        async with self.db.read() as session:
            return await ResourceStore(session).charges(resource_id)

    async def managed_account_ids(self, management_account_id: str) -> set[str]:
        async with self.db.read() as session:
            return await OrganizationStore(session).member_ids(management_account_id)

    async def list_orders(
        self,
        *,
        account_ids: set[str],
        role: Role | None,
        statuses: Collection[OrderStatus] | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Order], str | None]:
        after = decode_cursor(cursor) if cursor is not None else None
        async with self.db.read() as session:
            page, more = await OrderStore(session).page(
                account_ids=account_ids,
                role=role,
                statuses=statuses,
                limit=limit,
                after=after,
            )
        return page, encode_cursor(page[-1].created_at, page[-1].order_id) if more else None

    async def account_refusal(
        self, source_account_id: str, destination_account_id: str, *, excluding_order_id: str | None = None
    ) -> Refusal | None:
        """The request-level account rules of initiate, read as the open transaction reads them."""
        async with self.db.read() as session:
            pair = await OrderStore(session).account_pair(
                source_account_id, destination_account_id, excluding=excluding_order_id, lock=False
            )
        assert pair is not None, "unknown account"
        return rules.pair_refusal(pair)

    async def confirmation_refusal(self, order_id: str, *, at: datetime) -> Refusal | None:
        """Every rule of the confirm at `at`, read as the confirm's transaction reads them (unlocked)."""
        async with self.db.read() as session:
            order = await OrderStore(session).get(order_id, history=False)
            if order is None:
                return refusal(ErrorCode.ORDER_NOT_FOUND)
            return await confirmation_refusal(session, order, at=at, lock=False)

    async def record_step(
        self,
        order_id: str,
        name: str,
        *,
        started_at: datetime,
        finished_at: datetime,
        attempts: int = 1,
        error: Refusal | None = None,
    ) -> None:
        """One attempt of a step, as the transaction that did its work records it (store.orders)."""
        async with self.db.write() as session:
            await OrderStore(session).record_step(
                order_id, name, started_at=started_at, finished_at=finished_at, attempts=attempts, error=error
            )

    async def verify_code(self, *, account_id: str, code: str, received_at: datetime) -> None:
        """The root of `account_id` verifies `code` (VerificationService)."""
        await self.verification.verify(root_of(account_id), code, received_at)

    async def set_instance_status(self, resource_id: str, status: InstanceStatus) -> Resource:
        """The owner stops or starts the instance (ResourceService)."""
        resource = await self.get_resource(resource_id)
        owner = root_of(resource.owner_account_id if resource else "nobody")
        act = self.resources.start if status is InstanceStatus.RUNNING else self.resources.stop
        return (await act(resource_id, actor=owner)).resource

    async def add_charge(
        self,
        *,
        resource_id: str,
        payer_account_id: str,
        kind: ChargeKind,
        amount: Decimal,
        period_start: datetime,
        period_end: datetime,
        created_at: datetime,
        refunds_charge_id: int | None = None,
        idempotency_key: str | None = None,
        order_id: str | None = None,
    ) -> Charge:
        """A charge in the ledger (store.resources); a key names it, a repeat answers the first."""
        async with self.db.write() as session:
            resources = ResourceStore(session)
            charge = await resources.add_charge(
                resource_id=resource_id,
                payer_account_id=payer_account_id,
                kind=kind,
                amount=amount,
                period=(period_start, period_end),
                at=created_at,
                refunds_charge_id=refunds_charge_id,
                key=idempotency_key,
                order_id=order_id,
            )
            if charge is None:
                assert idempotency_key is not None
                (charge,) = await resources.charges_by_key(idempotency_key)
            return charge
