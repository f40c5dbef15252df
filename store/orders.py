"""Transfer orders with their steps, events and billing hand-offs: rows in, domain models out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import (
    AccountPair,
    Event,
    Order,
    OrderStatus,
    PriorDestination,
    Refusal,
    Role,
    Step,
    StepStatus,
)
from store import convert
from store.accounts import ACCOUNTS, AccountStore
from store.queries import get, insert_once, rowcount, table
from store.tables import BillingHandoffRow, OrderEventRow, OrderRow, OrderStepRow

ORDERS, STEPS, EVENTS, HANDOFFS = (
    table(t) for t in (OrderRow, OrderStepRow, OrderEventRow, BillingHandoffRow)
)

# Orders whose destination counts for the destination limits.
COUNTING = [status for status in OrderStatus if status.counts_for_destination_limits]

# The destinations of a source's counting orders, built once (store.queries), and without one order.
_PRIOR_DESTINATIONS = (
    select(ACCOUNTS.c.id, ACCOUNTS.c.kind, ACCOUNTS.c.entity_id)
    .join(ORDERS, ORDERS.c.destination_account_id == ACCOUNTS.c.id)
    .where(ORDERS.c.source_account_id == bindparam("source_account_id"), ORDERS.c.status.in_(COUNTING))
    .distinct()
)
_PRIOR_DESTINATIONS_EXCLUDING = _PRIOR_DESTINATIONS.where(ORDERS.c.order_id != bindparam("excluding"))

_HANDOFF_DESTINATION_FROZEN = (
    select(HANDOFFS.c.order_id, ACCOUNTS.c.frozen)
    .outerjoin(ACCOUNTS, ACCOUNTS.c.id == HANDOFFS.c.to_account_id)
    .where(HANDOFFS.c.order_id == bindparam("order_id"))
)


class OrderStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, order_id: str, *, lock: bool = False, history: bool = True) -> Order | None:
        """The order with its steps (by start, then name) and events (in the order they happened); without
        `history`, the order's own fields only (what a rule or a transition reads: two queries fewer)."""
        row = await get(self._session, OrderRow, order_id, lock=lock)
        if row is None:
            return None
        return (await self._with_history([row]))[0] if history else convert.order(row, [], [])

    async def add(self, order: Order) -> bool:
        """Inserts a new order; False if the partial unique index finds another open order of the resource."""
        return await insert_once(
            self._session,
            OrderRow,
            order.model_dump(exclude={"failure", "steps", "events", "receiving_config"}),
        )

    async def transition(
        self, order_id: str, from_status: OrderStatus, values: dict[str, Any]
    ) -> Order | None:
        """Moves the order out of `from_status` if no one moved it first: the order after it (without its
        history), or None if this call did not move it."""
        moved = await self._session.execute(
            update(ORDERS)
            .where(ORDERS.c.order_id == order_id, ORDERS.c.status == from_status)
            .values(**values)
            .returning(*ORDERS.c)
        )
        row = moved.one_or_none()
        return None if row is None else convert.order(row, [], [])

    async def open_order_ids(self) -> list[str]:
        """The pending and transferring orders, oldest first."""
        rows = await self._session.scalars(
            select(ORDERS.c.order_id)
            .where(ORDERS.c.status.in_([OrderStatus.PENDING, OrderStatus.TRANSFERRING]))
            .order_by(ORDERS.c.created_at, ORDERS.c.order_id)
        )
        return list(rows)

    async def page(
        self,
        *,
        account_ids: set[str],
        role: Role | None,
        statuses: Collection[OrderStatus] | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> tuple[list[Order], bool]:
        """Orders whose source (or destination, or either when role is None) is one of the accounts, in
        one of `statuses` (None: any), newest first, after the (created_at, order_id) key `after`; and
        whether more follow."""
        if not account_ids:
            return [], False
        as_source = ORDERS.c.source_account_id.in_(account_ids)
        as_destination = ORDERS.c.destination_account_id.in_(account_ids)
        party = {
            Role.SOURCE: as_source,
            Role.DESTINATION: as_destination,
            None: or_(as_source, as_destination),
        }
        query = select(ORDERS).where(party[role])
        if statuses is not None:
            query = query.where(ORDERS.c.status.in_(statuses))
        if after is not None:
            created_at, order_id = after
            query = query.where(
                or_(
                    ORDERS.c.created_at < created_at,
                    and_(ORDERS.c.created_at == created_at, ORDERS.c.order_id < order_id),
                )
            )
        # One row more than the page tells whether another page follows.
        query = query.order_by(ORDERS.c.created_at.desc(), ORDERS.c.order_id.desc()).limit(limit + 1)
        rows = list(await self._session.execute(query))
        return await self._with_history(rows[:limit]), len(rows) > limit

    async def account_pair(
        self, source_account_id: str, destination_account_id: str, *, excluding: str | None, lock: bool
    ) -> AccountPair | None:
        """The facts of the account rules (None: no such source). With `lock` the source's row is locked
        first, so opens from one source serialize and the limits count every order committed before."""
        accounts = AccountStore(self._session)
        if lock:
            source = await accounts.get(source_account_id, lock=True)
            destination = await accounts.get(destination_account_id) if source else None
        else:
            found = await accounts.get_many({source_account_id, destination_account_id})
            source, destination = found.get(source_account_id), found.get(destination_account_id)
        if source is None:
            return None
        return AccountPair(
            source=source,
            destination=destination,
            prior_destinations=await self._prior_destinations(source_account_id, excluding=excluding),
        )

    async def _prior_destinations(
        self, source_account_id: str, *, excluding: str | None
    ) -> list[PriorDestination]:
        """Destinations of the source's pending, transferring and completed orders but `excluding`."""
        if excluding is None:
            found = await self._session.execute(_PRIOR_DESTINATIONS, {"source_account_id": source_account_id})
        else:
            found = await self._session.execute(
                _PRIOR_DESTINATIONS_EXCLUDING,
                {"source_account_id": source_account_id, "excluding": excluding},
            )
        return [
            PriorDestination(account_id=id_, kind=kind, entity_id=entity_id) for id_, kind, entity_id in found
        ]

    # -- the detailed procedure: events and steps --------------------------------------------------

    async def add_event(self, event_id: str, order_id: str, event: Event) -> None:
        """Appends an event once per event_id (a retried write records it once)."""
        await insert_once(
            self._session, OrderEventRow, {"event_id": event_id, "order_id": order_id, **event.model_dump()}
        )

    async def record_step(
        self,
        order_id: str,
        name: str,
        *,
        started_at: datetime,
        finished_at: datetime,
        attempts: int,
        error: Refusal | None = None,
    ) -> None:
        """One attempt of a step, recorded whole by the transaction that did its work: succeeded, or
        failed with `error`. started_at stays the first attempt's; a step that succeeded keeps its end.
        A step recorded before is retried: it counts one attempt more, or `attempts` if higher (a local
        activity run again after a worker's crash starts its count at 1 again)."""
        ended = {
            "status": StepStatus.FAILED if error else StepStatus.SUCCEEDED,
            "attempts": attempts,
            "finished_at": finished_at,
            "error_code": error.code if error else None,
            "error_message": error.message if error else None,
        }
        await self._write_step(order_id, name, at=started_at, values=ended)

    async def status(self, order_id: str) -> OrderStatus | None:
        """The order's status alone (no history loaded)."""
        row = await get(self._session, OrderRow, order_id)
        return row.status if row else None

    async def _write_step(self, order_id: str, name: str, *, at: datetime, values: dict[str, Any]) -> None:
        if await insert_once(
            self._session, OrderStepRow, {"order_id": order_id, "name": name, "started_at": at, **values}
        ):
            return
        retried = case(
            (STEPS.c.attempts + 1 > values["attempts"], STEPS.c.attempts + 1),
            else_=values["attempts"],
        )
        step = update(STEPS).where(STEPS.c.order_id == order_id, STEPS.c.name == name)
        succeeded = STEPS.c.status == StepStatus.SUCCEEDED
        failed_before = step.where(~succeeded).values(**{**values, "attempts": retried})
        if not await rowcount(self._session, failed_before):
            await rowcount(self._session, step.where(succeeded).values(attempts=retried))

    # -- billing hand-off ---------------------------------------------------------------------------

    async def destination_can_pay(self, order_id: str) -> bool | None:
        """Whether the account the order's billing was handed off to exists and is not frozen; None: no
        hand-off yet. One statement, and no account's sealed secret opened."""
        found = await self._session.execute(_HANDOFF_DESTINATION_FROZEN, {"order_id": order_id})
        row = found.one_or_none()
        return None if row is None else row.frozen is False

    async def add_handoff(self, order: Order, *, cut_over_at: datetime) -> None:
        values = {
            "order_id": order.order_id,
            "resource_id": order.resource_id,
            "from_account_id": order.source_account_id,
            "to_account_id": order.destination_account_id,
            "cut_over_at": cut_over_at,
        }
        await insert_once(self._session, BillingHandoffRow, values)

    async def revert_handoff(self, order_id: str, *, at: datetime) -> None:
        """Marks the hand-off reverted, once; without a hand-off there is nothing to revert."""
        await rowcount(
            self._session,
            update(HANDOFFS)
            .where(HANDOFFS.c.order_id == order_id, HANDOFFS.c.reverted_at.is_(None))
            .values(reverted_at=at),
        )

    async def _with_history(self, rows: Sequence[Any]) -> list[Order]:
        """The orders with their steps and events: two queries for any number of orders."""
        ids = [row.order_id for row in rows]
        steps: dict[str, list[Step]] = defaultdict(list)
        for step in await self._session.execute(
            select(STEPS).where(STEPS.c.order_id.in_(ids)).order_by(STEPS.c.started_at, STEPS.c.name)
        ):
            steps[step.order_id].append(convert.step(step))
        events: dict[str, list[Event]] = defaultdict(list)
        for event in await self._session.execute(
            select(EVENTS).where(EVENTS.c.order_id.in_(ids)).order_by(EVENTS.c.at, EVENTS.c.id)
        ):
            events[event.order_id].append(Event.model_validate(event, from_attributes=True))
        return [convert.order(row, steps[row.order_id], events[row.order_id]) for row in rows]
