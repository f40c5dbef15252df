"""The transactions of a transfer order, one unit of work each: the activities' side effects.

Every write is idempotent: repeating it with the same arguments changes nothing and answers the same.
The SPEC rules are checked here again under the row locks, by calling domain.rules (the service checked
them before Temporal was reached): the source account's row at open, the resource's row at confirm.
Refusals raise domain.refusals.TransferError.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from domain import rules
from domain.clock import now
from domain.codes import ErrorCode
from domain.models import (
    Action,
    Event,
    Order,
    OrderStatus,
    Outcome,
    ReceivingConfig,
    Refusal,
)
from domain.refusals import TransferError, refusal
from store.db import Database
from store.orders import OrderStore
from store.resources import ResourceStore


class StepName(StrEnum):
    """The steps of an order's detailed procedure, in the order they run: named where they are
    recorded, so a new step is its call in the workflow, its activity and its transaction here."""

    SOURCE_VERIFICATION = "source_verification"
    OPEN_ORDER = "open_order"
    DESTINATION_VERIFICATION = "destination_verification"
    CONFIRMATION_CHECK = "confirmation_check"
    OWNERSHIP_REASSIGNMENT = "ownership_reassignment"
    BILLING_HANDOFF = "billing_handoff"
    RECEIVING_CONFIG = "receiving_config"
    BILLING_RESTORE = "billing_restore"
    OWNERSHIP_RESTORE = "ownership_restore"


@dataclass(frozen=True)
class StepAttempt:
    """One attempt of a step of the order's detailed procedure, recorded by the transaction that does its
    work, so that a step shows done exactly when its work has committed. `finished_at` None: the commit's
    time."""

    name: StepName
    started_at: datetime
    attempt: int
    finished_at: datetime | None = None


# The status each decision gives a pending order, and the action its event records.
DECISIONS = {
    OrderStatus.TRANSFERRING: Action.CONFIRM,
    OrderStatus.CANCELLED: Action.CANCEL,
    OrderStatus.REJECTED: Action.REJECT,
    OrderStatus.EXPIRED: Action.EXPIRE,
}
ENDINGS = {OrderStatus.COMPLETED: Action.COMPLETE, OrderStatus.FAILED: Action.FAIL}


class OrderTransactions:
    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def _unit(self, order_id: str, steps: Sequence[StepAttempt] = ()) -> AsyncIterator[AsyncSession]:
        """One write transaction that also records `steps` as succeeded. A refusal rolls the work back
        and records, in a transaction of its own, the last step failed with it (the ones before it done)."""
        try:
            async with self._db.write() as session:
                yield session
                await _record_steps(OrderStore(session), order_id, steps)
        except TransferError as error:
            if steps:
                async with self._db.write() as session:
                    await _record_steps(OrderStore(session), order_id, steps, error=error.refusal)
            raise

    async def order_status(self, order_id: str) -> OrderStatus | None:
        async with self._db.read() as session:
            return await OrderStore(session).status(order_id)

    async def get_order(self, order_id: str) -> Order | None:
        async with self._db.read() as session:
            return await OrderStore(session).get(order_id)

    async def open_order(
        self,
        *,
        order_id: str,
        resource_id: str,
        source_account_id: str,
        destination_account_id: str,
        agreement_version: str,
        created_at: datetime,
        expires_at: datetime,
        actor_account_id: str,
        steps: Sequence[StepAttempt] = (),
    ) -> Order:
        """The account and resource rules under the source's row lock, the resource lock, a pending order,
        and the `steps` that led to it.

        An existing order_id is answered unchanged, without checking the rules again, if it is the same
        order (resource and accounts); another order's id is refused.
        """
        async with self._db.write() as session:
            orders, resources = OrderStore(session), ResourceStore(session)
            pair = await orders.account_pair(
                source_account_id, destination_account_id, excluding=order_id, lock=True
            )
            if (existing := await orders.get(order_id, history=False)) is not None:
                theirs = (existing.resource_id, existing.source_account_id, existing.destination_account_id)
                if theirs != (resource_id, source_account_id, destination_account_id):
                    raise TransferError(ErrorCode.VALIDATION_ERROR, "the order id belongs to another order")
                await _record_steps(orders, order_id, steps)  # a retry: one more attempt
                return existing
            if pair is None:
                raise TransferError(ErrorCode.VALIDATION_ERROR, "unknown account")
            resource = await resources.get(resource_id)
            found = rules.pair_refusal(pair) or rules.first_blocker(
                resource, source_account_id=source_account_id, now=created_at
            )
            if found is not None:
                raise TransferError.of(found)
            assert resource is not None
            locked = await resources.take_lock(
                resource_id, owner_account_id=source_account_id, order_id=order_id
            )
            order = Order(
                order_id=order_id,
                resource_id=resource_id,
                product=resource.product,
                source_account_id=source_account_id,
                destination_account_id=destination_account_id,
                status=OrderStatus.PENDING,
                created_at=created_at,
                expires_at=expires_at,
                agreement_version=agreement_version,
            )
            if not (locked and await orders.add(order)):
                raise TransferError(ErrorCode.RESOURCE_IN_TRANSFER)
            initiated = Event(
                at=created_at,
                actor_account_id=actor_account_id,
                action=Action.INITIATE,
                outcome=Outcome.ACCEPTED,
            )
            await orders.add_event(f"{order_id}:{Action.INITIATE}", order_id, initiated)
            # Only now: a refused initiate has no order to record steps of.
            await _record_steps(orders, order_id, steps)
            return order

    async def decide(
        self,
        order_id: str,
        *,
        status: OrderStatus,
        at: datetime,
        actor_account_id: str | None,
        receiving_config: ReceivingConfig | None = None,
        reason: str | None = None,
        steps: Sequence[StepAttempt] = (),
    ) -> Order:
        """A pending order becomes transferring (confirm) or cancelled / rejected / expired.

        Exactly one decision wins. Asking for the status the order already has answers the order;
        any other status refuses with ORDER_NOT_PENDING (details.status). Every decision but a
        confirm releases the lock. A confirm checks confirmation_refusal once more under the
        resource's row lock, so a start racing the confirm cannot slip in after the check.
        """
        if status not in DECISIONS:
            raise ValueError(f"an order cannot be decided to {status}")
        values: dict[str, Any] = {"status": status}
        if status is OrderStatus.TRANSFERRING:
            values["confirmed_at"] = at
            values["receiving_config"] = receiving_config.model_dump() if receiving_config else None
        event = Event(
            at=at,
            actor_account_id=actor_account_id,
            action=DECISIONS[status],
            outcome=Outcome.ACCEPTED,
            reason=reason,
        )
        return await self._transition(order_id, OrderStatus.PENDING, values, event, steps)

    async def finish(
        self, order_id: str, *, status: OrderStatus, at: datetime, failure: Refusal | None = None
    ) -> Order:
        """A transferring order becomes completed or failed and releases the lock. Idempotent like decide."""
        if status not in ENDINGS:
            raise ValueError(f"an order cannot finish as {status}")
        values: dict[str, Any] = {
            "status": status,
            "failure_code": failure.code if failure else None,
            "failure_message": failure.message if failure else None,
        }
        if status is OrderStatus.COMPLETED:
            values["completed_at"] = at
        event = Event(
            at=at,
            actor_account_id=None,
            action=ENDINGS[status],
            outcome=Outcome.ACCEPTED,
            code=failure.code if failure else None,
        )
        return await self._transition(order_id, OrderStatus.TRANSFERRING, values, event)

    async def operator_cancel(self, order_id: str, *, at: datetime) -> OrderStatus | None:
        """An operator cancelled the order's run (SPEC §4): a pending order ends cancelled (no actor,
        action operator_cancel); a transferring one whose ownership has not moved ends failed with
        CANCELLED_BY_OPERATOR; either releases the lock. Answers the order's status after it (None: no
        order): transferring means ownership moved, and the hand-off is to be finished."""
        order = await self.get_order(order_id)
        if order is None or order.status.is_terminal:
            return order.status if order else None
        if order.status is OrderStatus.PENDING:
            event = Event(
                at=at, actor_account_id=None, action=Action.OPERATOR_CANCEL, outcome=Outcome.ACCEPTED
            )
            values = {"status": OrderStatus.CANCELLED}
            return (await self._transition(order_id, OrderStatus.PENDING, values, event)).status
        if await self.ownership_moved(order_id):
            return OrderStatus.TRANSFERRING
        failed = await self.finish(
            order_id, status=OrderStatus.FAILED, at=at, failure=refusal(ErrorCode.CANCELLED_BY_OPERATOR)
        )
        return failed.status

    async def ownership_moved(self, order_id: str) -> bool:
        """Whether the order's resource is the destination's now (its ownership change has committed and
        not been restored)."""
        async with self._db.read() as session:
            order = await OrderStore(session).get(order_id, history=False)
            resource = await ResourceStore(session).get(order.resource_id) if order else None
        return (
            order is not None
            and resource is not None
            and resource.owner_account_id == order.destination_account_id
        )

    async def release_lock_of_closed(self, order_id: str) -> None:
        """Releases the lock an order holds once the order is closed (never an open order's)."""
        async with self._db.write() as session:
            order = await OrderStore(session).get(order_id, lock=True, history=False)
            if order is not None and order.status.is_terminal:
                await ResourceStore(session).release_lock(order_id)

    async def record_event(self, *, event_id: str, order_id: str, event: Event) -> None:
        """Appends an event (a refused attempt, say) once per event_id."""
        async with self._db.write() as session:
            await OrderStore(session).add_event(event_id, order_id, event)

    # -- hand-off and compensation: the order must be transferring ------------------------------

    async def reassign_ownership(
        self, order_id: str, *, at: datetime | None = None, step: StepAttempt | None = None
    ) -> None:
        """The resource passes from the source to the destination, and billing cuts over in the same
        transaction (SPEC §4: at the moment the ownership change is committed: by default the time read
        once the resource's row is held by the change; a retry keeps the first). Its status is
        untouched: a VPC ECS instance stays stopped."""
        await self._move(order_id, to_destination=True, at=at, step=step)

    async def restore_ownership(self, order_id: str, *, step: StepAttempt | None = None) -> None:
        """The resource goes back to the source if the destination holds it."""
        await self._move(order_id, to_destination=False, step=step)

    async def hand_off_billing(self, order_id: str, *, step: StepAttempt | None = None) -> None:
        """Confirms the billing hand-off that the ownership change started: the destination must be able
        to pay (a frozen one refuses it, ACCOUNT_FROZEN, and the hand-off is compensated)."""
        async with self._unit(order_id, _one(step)) as session:
            orders = OrderStore(session)
            order = await _transferring(orders, order_id, ended=OrderStatus.COMPLETED)
            if order is None:
                return
            can_pay = await orders.destination_can_pay(order_id)
            if can_pay is None:
                raise TransferError(ErrorCode.ORDER_NOT_PENDING, "ownership has not moved yet")
            if not can_pay:
                raise TransferError(ErrorCode.ACCOUNT_FROZEN)

    async def restore_billing(self, order_id: str, *, at: datetime, step: StepAttempt | None = None) -> None:
        """Reverts the billing hand-off, once; without a hand-off there is nothing to revert."""
        async with self._unit(order_id, _one(step)) as session:
            orders = OrderStore(session)
            if await _transferring(orders, order_id, ended=OrderStatus.FAILED) is not None:
                await orders.revert_handoff(order_id, at=at)

    async def apply_receiving_config(self, order_id: str, *, step: StepAttempt | None = None) -> None:
        """Writes the confirm's receiving_config onto the resource: its resource group, and its tags
        merged over the resource's (a key it names takes the new value)."""
        async with self._unit(order_id, _one(step)) as session:
            orders, resources = OrderStore(session), ResourceStore(session)
            order = await _transferring(orders, order_id, ended=OrderStatus.COMPLETED)
            if order is None or (config := order.receiving_config) is None:
                return
            resource = await resources.get(order.resource_id, lock=True)
            if resource is None:
                raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)
            changes: dict[str, Any] = {}
            if config.resource_group is not None:
                changes["resource_group"] = config.resource_group
            if config.tags:
                changes["tags"] = {**resource.tags, **config.tags}
            await resources.apply(resource.id, changes)

    async def _move(
        self,
        order_id: str,
        *,
        to_destination: bool,
        at: datetime | None = None,
        step: StepAttempt | None = None,
    ) -> None:
        async with self._unit(order_id, _one(step)) as session:
            orders = OrderStore(session)
            order = await _transferring(
                orders, order_id, ended=OrderStatus.COMPLETED if to_destination else OrderStatus.FAILED
            )
            if order is None:
                return
            source, destination = order.source_account_id, order.destination_account_id
            to = destination if to_destination else source
            resources = ResourceStore(session)
            if await resources.move_owner(
                order.resource_id,
                order_id=order_id,
                from_account_id=source if to_destination else destination,
                to_account_id=to,
            ):
                if to_destination:
                    # Read after the UPDATE holds the row: a charge that waited for it is earlier.
                    await orders.add_handoff(order, cut_over_at=at or now())
                return
            resource = await resources.get(order.resource_id)
            if resource is None or resource.owner_account_id != to:
                raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)

    async def _transition(
        self,
        order_id: str,
        from_status: OrderStatus,
        values: dict[str, Any],
        event: Event,
        steps: Sequence[StepAttempt] = (),
    ) -> Order:
        """Moves the order from `from_status` to values["status"] if no one else moved it first."""
        to_status: OrderStatus = values["status"]
        async with self._unit(order_id, steps) as session:
            orders = OrderStore(session)
            order: Order | None = None
            if to_status is OrderStatus.TRANSFERRING:
                # Read under the row's lock: no one else moves the order until this transaction ends.
                order = await orders.get(order_id, lock=True, history=False)
                if order is not None and order.status is from_status:
                    found = await confirmation_refusal(session, order, at=values["confirmed_at"], lock=True)
                    if found is not None:
                        raise TransferError.of(found)
            # Any other move checks no rule: its conditional UPDATE locks the row itself, and the order is
            # read only when nothing moved, to say why.
            moved = await orders.transition(order_id, from_status, values)
            if moved is None:
                order = order or await orders.get(order_id, history=False)
                if order is None:
                    raise TransferError(ErrorCode.ORDER_NOT_FOUND)
                if order.status is to_status:
                    return order
                raise TransferError(ErrorCode.ORDER_NOT_PENDING, details={"status": order.status.value})
            if to_status.is_terminal:
                await ResourceStore(session).release_lock(order_id)
            await orders.add_event(f"{order_id}:{event.action}", order_id, event)
            return moved


async def confirmation_refusal(session: Any, order: Order, *, at: datetime, lock: bool) -> Refusal | None:
    """The facts of rules.confirmation_refusal for the order; with `lock` the resource's row is locked (a
    start of the instance locks it too, so the two serialize)."""
    pair = await OrderStore(session).account_pair(
        order.source_account_id, order.destination_account_id, excluding=order.order_id, lock=False
    )
    assert pair is not None, "an order's source account exists"
    resource = await ResourceStore(session).get(order.resource_id, lock=lock)
    return rules.confirmation_refusal(pair, resource, order_id=order.order_id, now=at)


def _one(step: StepAttempt | None) -> Sequence[StepAttempt]:
    return () if step is None else (step,)


async def _record_steps(
    orders: OrderStore, order_id: str, steps: Sequence[StepAttempt], *, error: Refusal | None = None
) -> None:
    """The steps done, or with `error` the last one failed with it."""
    at = now()
    for index, step in enumerate(steps):
        await orders.record_step(
            order_id,
            step.name,
            started_at=step.started_at,
            finished_at=step.finished_at or at,
            attempts=step.attempt,
            error=error if index == len(steps) - 1 else None,
        )


async def _transferring(orders: OrderStore, order_id: str, *, ended: OrderStatus) -> Order | None:
    """The order, row-locked, if it is transferring: the hand-off steps run only then. None once it has
    `ended` the way the step leads (completed for the hand-off's steps, failed for the compensation's):
    the step committed before, and its run is doing it again (a local activity's result is lost with a
    worker that dies before the workflow task completes, even after the order's last write)."""
    order = await orders.get(order_id, lock=True, history=False)
    if order is None:
        raise TransferError(ErrorCode.ORDER_NOT_FOUND)
    if order.status is ended:
        return None
    if order.status is not OrderStatus.TRANSFERRING:
        raise TransferError(ErrorCode.ORDER_NOT_PENDING, details={"status": order.status.value})
    return order
