"""RepairService: `transfer repair` (SPEC §4 "Operators"). No order stays pending or transferring in the
database while its run is closed.

A run that was terminated (or whose last database write was lost) left its order open: repair brings the
database to the run's final state — the status the run reached, or, when it closed still open, an
operator's cancel (a pending order cancelled; a transferring one compensated and failed with
CANCELLED_BY_OPERATOR) — releasing the lock. It acts only on closed runs, through the same transactions
the activities use, so it is idempotent: a second repair finds nothing to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.order_transactions import OrderTransactions
from domain.clock import now
from domain.codes import ErrorCode
from domain.models import Order, OrderStatus, Refusal
from domain.refusals import refusal
from starter.client import RPC_TIMEOUT, TransferClient
from store.db import Database
from store.orders import OrderStore
from workflows.messages import OrderState


@dataclass(frozen=True)
class Repair:
    order_id: str
    before: OrderStatus | None
    after: OrderStatus | None
    note: str

    @property
    def changed(self) -> bool:
        return self.before is not self.after


# A worker may still be finishing the workflow task it had in hand when the run closed (its local
# activities write until the task's completion is refused): repair leaves a run this fresh alone.
CLOSED_GRACE = timedelta(seconds=15)


class RepairService:
    def __init__(self, transfers: TransferClient, db: Database, *, grace: timedelta = CLOSED_GRACE) -> None:
        self._transfers = transfers
        self._db = db
        self._orders = OrderTransactions(db)
        self._grace = grace

    async def open_order_ids(self) -> list[str]:
        """The orders the database holds as pending or transferring (`transfer repair --all`)."""
        async with self._db.read() as session:
            return await OrderStore(session).open_order_ids()

    async def repair(self, order_id: str) -> Repair:
        order = await self._orders.get_order(order_id)
        if order is None:
            return Repair(order_id, None, None, "no such order in the database")
        if order.status.is_terminal:
            return Repair(order_id, order.status, order.status, "already closed: nothing to repair")
        closed = await self._closed_run(order_id)
        if closed is False:
            return Repair(order_id, order.status, order.status, "its run is open or just closed: not now")
        state = closed if isinstance(closed, OrderState) else None
        target = state.status if state is not None else None
        if target is not None and target.is_terminal:
            note = f"brought to its run's final state ({target.value})"
            await self._bring_to(order, target, state.failure if state else None)
        else:
            note = "its run closed with the order open (terminated?): an operator's cancel"
            await self._operator_cancel(order)
        after = await self._orders.get_order(order_id)
        return Repair(order_id, order.status, after.status if after else None, note)

    async def _closed_run(self, order_id: str) -> OrderState | bool:
        """False while the run is open; else its final state, or True when it has none to tell (gone
        from Temporal, terminated, timed out: it stopped wherever it was)."""
        handle = self._transfers.handle(order_id)
        try:
            described = await handle.describe(rpc_timeout=RPC_TIMEOUT)
        except RPCError as error:
            if error.status is RPCStatusCode.NOT_FOUND:
                return True
            raise
        if described.status is WorkflowExecutionStatus.RUNNING:
            return False
        if described.close_time is not None and now() - described.close_time < self._grace:
            return False
        if described.status in (WorkflowExecutionStatus.TERMINATED, WorkflowExecutionStatus.TIMED_OUT):
            return True
        return await self._transfers.state(order_id)

    async def _bring_to(self, order: Order, status: OrderStatus, failure: Refusal | None) -> None:
        at = now()
        if order.status is OrderStatus.PENDING and status in (
            OrderStatus.CANCELLED,
            OrderStatus.REJECTED,
            OrderStatus.EXPIRED,
        ):
            await self._orders.decide(order.order_id, status=status, at=at, actor_account_id=None)
        elif order.status is OrderStatus.TRANSFERRING and status is OrderStatus.COMPLETED:
            await self._orders.reassign_ownership(order.order_id, at=at)
            await self._orders.apply_receiving_config(order.order_id)
            await self._orders.finish(order.order_id, status=OrderStatus.COMPLETED, at=at)
        elif order.status is OrderStatus.TRANSFERRING:
            await self._compensate(order, failure or refusal(ErrorCode.CANCELLED_BY_OPERATOR))
        else:
            # The run and the database disagree beyond a lost write (pending here, transferring or
            # completed there): the run's side cannot be replayed, so the order is cancelled.
            await self._operator_cancel(order)

    async def _operator_cancel(self, order: Order) -> None:
        if order.status is OrderStatus.TRANSFERRING:
            await self._compensate(order, refusal(ErrorCode.CANCELLED_BY_OPERATOR))
        else:
            await self._orders.operator_cancel(order.order_id, at=now())

    async def _compensate(self, order: Order, failure: Refusal) -> None:
        """A half-done hand-off is undone (billing, then ownership) before the order is failed."""
        at = now()
        await self._orders.restore_billing(order.order_id, at=at)
        await self._orders.restore_ownership(order.order_id)
        await self._orders.finish(order.order_id, status=OrderStatus.FAILED, at=at, failure=failure)
