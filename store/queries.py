"""SQL building blocks shared by TransferStore's methods. Each runs inside the caller's transaction."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TypeVar, cast

from sqlalchemy import CursorResult, Executable, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from domain.codes import ErrorCode, TransferError
from domain.models import MAX_MONEY, Event, Order, OrderStatus, PriorDestination, Step
from store import convert
from store.tables import AccountRow, Base, OrderEventRow, OrderRow, OrderStepRow, ResourceRow

RowT = TypeVar("RowT", bound=Base)

# FOR NO KEY UPDATE on PostgreSQL (SQLite ignores FOR UPDATE: BEGIN IMMEDIATE already serializes).
# It serializes writers of the row but, unlike FOR UPDATE, does not conflict with the KEY SHARE
# locks that foreign-key checks take, so two opens with swapped accounts cannot deadlock.
ROW_LOCK = {"key_share": True}

# Orders whose destination counts for the destination limits.
COUNTING = [status.value for status in OrderStatus if status.counts_for_destination_limits]

# Keeps the ORM identity map out of UPDATEs: every row read after a write is read again.
NO_SYNC = {"synchronize_session": False}


async def get(session: AsyncSession, table: type[RowT], key: Any, *, lock: bool = False) -> RowT | None:
    """The row as committed now (populate_existing: never a stale copy from the identity map)."""
    return await session.get(table, key, populate_existing=True, with_for_update=ROW_LOCK if lock else None)


async def must_get(session: AsyncSession, table: type[RowT], key: Any) -> RowT:
    row = await get(session, table, key)
    if row is None:
        raise LookupError(f"{table.__tablename__} {key!r} vanished inside its transaction")
    return row


async def rowcount(session: AsyncSession, statement: Executable) -> int:
    """The rows an UPDATE or INSERT changed."""
    result = await session.execute(statement, execution_options=NO_SYNC)
    return cast("CursorResult[Any]", result).rowcount


async def insert_once(session: AsyncSession, table: type[Base], values: dict[str, Any]) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING: True if this call inserted the row.

    Unlike catching IntegrityError, a conflict leaves a PostgreSQL transaction usable; a concurrent
    inserter's row is waited for, and the next statement sees it.
    """
    statement: Executable
    if session.get_bind().dialect.name == "postgresql":
        statement = postgresql_insert(table).values(**values).on_conflict_do_nothing()
    else:
        statement = sqlite_insert(table).values(**values).on_conflict_do_nothing()
    return await rowcount(session, statement) == 1


async def add_event(session: AsyncSession, event_id: str, order_id: str, event: Event) -> None:
    await insert_once(
        session, OrderEventRow, {"event_id": event_id, "order_id": order_id, **event.model_dump()}
    )


async def order_with_history(session: AsyncSession, row: OrderRow) -> Order:
    """The order with its steps (by start, then name) and events (in the order they happened)."""
    return (await orders_with_history(session, [row]))[0]


async def orders_with_history(session: AsyncSession, rows: Sequence[OrderRow]) -> list[Order]:
    """The orders with their steps and events: two queries for any number of orders."""
    ids = [row.order_id for row in rows]
    steps: dict[str, list[Step]] = defaultdict(list)
    for step in await session.scalars(
        select(OrderStepRow)
        .where(OrderStepRow.order_id.in_(ids))
        .order_by(OrderStepRow.started_at, OrderStepRow.name)
    ):
        steps[step.order_id].append(convert.step(step))
    events: dict[str, list[Event]] = defaultdict(list)
    for event in await session.scalars(
        select(OrderEventRow)
        .where(OrderEventRow.order_id.in_(ids))
        .order_by(OrderEventRow.at, OrderEventRow.id)
    ):
        events[event.order_id].append(convert.event(event))
    return [convert.order(row, steps[row.order_id], events[row.order_id]) for row in rows]


async def prior_destinations(
    session: AsyncSession, source_account_id: str, *, excluding: str | None
) -> list[PriorDestination]:
    """Destinations of the source's pending, transferring and completed orders but `excluding`."""
    query = (
        select(AccountRow.id, AccountRow.kind, AccountRow.entity_id)
        .join(OrderRow, OrderRow.destination_account_id == AccountRow.id)
        .where(OrderRow.source_account_id == source_account_id, OrderRow.status.in_(COUNTING))
        .distinct()
    )
    if excluding is not None:
        query = query.where(OrderRow.order_id != excluding)
    return [
        PriorDestination.model_validate({"account_id": id_, "kind": kind, "entity_id": entity_id})
        for id_, kind, entity_id in await session.execute(query)
    ]


async def release_lock(session: AsyncSession, order_id: str) -> None:
    await session.execute(
        update(ResourceRow).where(ResourceRow.locked_by_order_id == order_id).values(locked_by_order_id=None),
        execution_options=NO_SYNC,
    )


async def move_owner(
    session: AsyncSession, order: OrderRow, from_account_id: str, to_account_id: str
) -> bool:
    """Moves the resource between the order's parties, only while this order holds its lock."""
    moved = await rowcount(
        session,
        update(ResourceRow)
        .where(
            ResourceRow.id == order.resource_id,
            ResourceRow.owner_account_id == from_account_id,
            ResourceRow.locked_by_order_id == order.order_id,
        )
        .values(owner_account_id=to_account_id),
    )
    return moved == 1


def ledger_amount(amount: Decimal) -> Decimal:
    """A computed charge the ledger can hold; a larger one is refused as bad input, not a crash."""
    if abs(amount) > MAX_MONEY:
        raise TransferError(
            ErrorCode.VALIDATION_ERROR, f"the charge {amount} exceeds the ledger's limit of {MAX_MONEY}"
        )
    return amount
