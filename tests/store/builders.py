"""Test data for the store: accounts, resources and order arguments at a fixed NOW."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.models import (
    AGREEMENT_VERSION,
    Account,
    AccountKind,
    Billing,
    InstanceStatus,
    Network,
    Order,
    Product,
    Resource,
)
from store.tables import Base
from tests.stores import Stores

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
WINDOW = timedelta(hours=24)

T = TypeVar("T")


def account(account_id: str, **fields: Any) -> Account:
    """A verified individual with an entity of its own unless told otherwise."""
    values: dict[str, Any] = {
        "id": account_id,
        "name": f"Account {account_id}",
        "kind": AccountKind.INDIVIDUAL,
        "verified": True,
        "entity_id": f"ent-{account_id}",
        "entity_name": f"Entity {account_id}",
        "mfa_secret": SECRET,
        **fields,
    }
    return Account(**values)


def enterprise(account_id: str, entity: str = "acme", **fields: Any) -> Account:
    return account(
        account_id, kind=AccountKind.ENTERPRISE, entity_id=entity, entity_name=f"{entity} Ltd.", **fields
    )


def resource(resource_id: str, owner: str, **fields: Any) -> Resource:
    """A transferable stopped VPC ECS subscription: 30 days old, 335 days left, CNY 100 a month."""
    values: dict[str, Any] = {
        "id": resource_id,
        "product": Product.ECS,
        "billing": Billing.SUBSCRIPTION,
        "owner_account_id": owner,
        "region": "cn-hangzhou",
        "created_at": NOW - timedelta(days=30),
        "expires_at": NOW + timedelta(days=335),
        "monthly_price": Decimal("100.00"),
        "network": Network.VPC,
        "status": InstanceStatus.STOPPED,
        **fields,
    }
    return Resource(**values)


async def add_accounts(store: Stores, *accounts: Account) -> None:
    for item in accounts:
        await store.provisioning.create_account(item, created_at=NOW)


async def add_resources(store: Stores, *resources: Resource) -> None:
    for item in resources:
        await store.provisioning.create_resource(item, at=NOW)


def open_args(
    order_id: str, resource_id: str, source: str, destination: str, *, at: datetime = NOW
) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "resource_id": resource_id,
        "source_account_id": source,
        "destination_account_id": destination,
        "agreement_version": AGREEMENT_VERSION,
        "created_at": at,
        "expires_at": at + WINDOW,
        "actor_account_id": source,
    }


async def pending_order(
    store: Stores, order_id: str = "o-1", *, source: str = "src", destination: str = "dst"
) -> Order:
    """Accounts `source` and `destination`, a resource r-<order_id> and its pending order."""
    for account_id in (source, destination):
        if await store.get_account(account_id) is None:
            await add_accounts(store, account(account_id))
    await add_resources(store, resource(f"r-{order_id}", source))
    return await store.orders.open_order(**open_args(order_id, f"r-{order_id}", source, destination))


# What a retry changes by design: a recorded step run again counts one more attempt.
RETRY_COUNTS = frozenset({("order_steps", "attempts")})


async def snapshot(
    engine: AsyncEngine, *, ignoring: frozenset[tuple[str, str]] = frozenset()
) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order: the whole state of the store (but the
    `ignoring` (table, column) pairs)."""
    state: dict[str, list[tuple[Any, ...]]] = {}
    async with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if (table.name, c.name) not in ignoring]
            rows = await connection.execute(select(*columns).order_by(*table.primary_key.columns))
            state[table.name] = [tuple(row) for row in rows]
    return state


async def twice(engine: AsyncEngine, call: Callable[[], Awaitable[T]]) -> T:
    """Runs a write twice: the second answers the same and changes nothing but the attempts it counts."""
    first = await call()
    before = await snapshot(engine, ignoring=RETRY_COUNTS)
    second = await call()
    assert second == first
    assert await snapshot(engine, ignoring=RETRY_COUNTS) == before
    return first
