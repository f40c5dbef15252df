"""The activities of a ResourceTransfer: each a method of a class that owns the order's transactions.

Every activity is idempotent by order id: the transactions' writes are conditional, so a retry (or a
second run) changes nothing. A business refusal raises a non-retryable ApplicationError typed with the
SPEC code (workflows.refusals); anything else (a database outage) is retried by Temporal with backoff.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from temporalio import activity

from activities.models import (
    AcceptConfirmationInput,
    DecideInput,
    FinishOrderInput,
    OpenOrderInput,
    OpenOrderResult,
    OrderStepInput,
    RecordRefusalInput,
)
from activities.order_transactions import OrderTransactions
from domain.clock import now
from domain.models import Action, Event, OrderStatus, Outcome, StepName
from domain.refusals import TransferError
from workflows.refusals import application_error

log = structlog.get_logger(__name__)


class TransferActivities:
    def __init__(self, orders: OrderTransactions) -> None:
        self._orders = orders

    @asynccontextmanager
    async def _step(self, order_id: str, name: StepName) -> AsyncIterator[None]:
        """Records one step of the order's detailed procedure around its work."""
        await self._orders.start_step(order_id, name, at=now(), attempt=activity.info().attempt)
        try:
            yield
        except TransferError as error:
            await self._orders.finish_step(order_id, name, at=now(), error=error.refusal)
            raise
        await self._orders.finish_step(order_id, name, at=now())

    def _log(self, order_id: str) -> structlog.stdlib.BoundLogger:
        info = activity.info()
        bound: structlog.stdlib.BoundLogger = log.bind(
            order_id=order_id,
            workflow_id=info.workflow_id,
            activity=info.activity_type,
            attempt=info.attempt,
        )
        return bound

    @activity.defn
    async def open_order(self, input: OpenOrderInput) -> OpenOrderResult:
        """Initiate: the account rules, the source's risk verification, then the resource rules and lock."""
        existing = await self._orders.get_order(input.order_id)
        if existing is not None:
            return OpenOrderResult(product=existing.product)
        source_id = input.initiator.account_id
        try:
            account_refusal = await self._orders.account_refusal(source_id, input.destination_account_id)
            if account_refusal is not None:
                raise TransferError.of(account_refusal)
            verification_started = now()
            await self._orders.verify_code(
                verification_id=input.verification.verification_id,
                account_id=source_id,
                code=input.verification.code,
                received_at=input.verification.received_at,
                order_id=input.order_id,
            )
            verified = now()
            order = await self._orders.open_order(
                order_id=input.order_id,
                resource_id=input.resource_id,
                source_account_id=source_id,
                destination_account_id=input.destination_account_id,
                agreement_version=input.agreement_version,
                created_at=input.created_at,
                expires_at=input.expires_at,
                actor_account_id=source_id,
            )
        except TransferError as error:
            self._log(input.order_id).info("initiate refused", code=error.code)
            raise application_error(error.refusal) from error
        # The order row exists only now: record the two steps that led to it.
        attempt = activity.info().attempt
        await self._orders.start_step(
            input.order_id, StepName.SOURCE_VERIFICATION, at=verification_started, attempt=attempt
        )
        await self._orders.finish_step(input.order_id, StepName.SOURCE_VERIFICATION, at=verified)
        await self._orders.start_step(input.order_id, StepName.OPEN_ORDER, at=verified, attempt=attempt)
        await self._orders.finish_step(input.order_id, StepName.OPEN_ORDER, at=now())
        self._log(input.order_id).info("order opened", resource_id=input.resource_id)
        return OpenOrderResult(product=order.product)

    @activity.defn
    async def accept_confirmation(self, input: AcceptConfirmationInput) -> None:
        """Confirm: destination verification, every rule again, the stopped state; then transferring.

        A refusal records a refused event and leaves the order pending.
        """
        order = await self._orders.get_order(input.order_id)
        if order is not None and order.status is OrderStatus.TRANSFERRING:
            return
        try:
            async with self._step(input.order_id, StepName.DESTINATION_VERIFICATION):
                await self._orders.verify_code(
                    verification_id=input.verification.verification_id,
                    account_id=input.principal.account_id,
                    code=input.verification.code,
                    received_at=input.verification.received_at,
                    order_id=input.order_id,
                )
            async with self._step(input.order_id, StepName.CONFIRMATION_CHECK):
                refusal = await self._orders.confirmation_refusal(input.order_id, at=input.at)
                if refusal is not None:
                    raise TransferError.of(refusal)
            await self._orders.decide(
                input.order_id,
                status=OrderStatus.TRANSFERRING,
                at=input.at,
                actor_account_id=input.principal.account_id,
                receiving_config=input.receiving_config,
            )
        except TransferError as error:
            await self._orders.record_event(
                event_id=input.event_id,
                order_id=input.order_id,
                event=Event(
                    at=input.at,
                    actor_account_id=input.principal.account_id,
                    action=Action.CONFIRM,
                    outcome=Outcome.REFUSED,
                    code=error.code,
                ),
            )
            self._log(input.order_id).info("confirmation refused", code=error.code)
            raise application_error(error.refusal) from error
        self._log(input.order_id).info("confirmation accepted")

    @activity.defn
    async def decide(self, input: DecideInput) -> None:
        """Records the decision that ends a pending order: cancelled, rejected or expired (lock released)."""
        try:
            await self._orders.decide(
                input.order_id,
                status=input.status,
                at=input.at,
                actor_account_id=input.actor_account_id,
                reason=input.reason,
            )
        except TransferError as error:
            raise application_error(error.refusal) from error
        self._log(input.order_id).info("order decided", status=input.status)

    @activity.defn
    async def record_refusal(self, input: RecordRefusalInput) -> None:
        """Records an attempt the workflow refused (an invalid signal, a late cancel) as an order event."""
        await self._orders.record_event(
            event_id=input.event_id,
            order_id=input.order_id,
            event=Event(
                at=input.at,
                actor_account_id=input.actor_account_id,
                action=input.action,
                outcome=Outcome.REFUSED,
                code=input.code,
            ),
        )

    async def _run_step(self, input: OrderStepInput, name: StepName) -> None:
        try:
            async with self._step(input.order_id, name):
                match name:
                    case StepName.OWNERSHIP_REASSIGNMENT:
                        await self._orders.reassign_ownership(input.order_id)
                    case StepName.BILLING_HANDOFF:
                        await self._orders.hand_off_billing(input.order_id, cut_over_at=input.at)
                    case StepName.RECEIVING_CONFIG:
                        await self._orders.apply_receiving_config(input.order_id)
                    case StepName.BILLING_RESTORE:
                        await self._orders.restore_billing(input.order_id, at=input.at)
                    case StepName.OWNERSHIP_RESTORE:
                        await self._orders.restore_ownership(input.order_id)
        except TransferError as error:
            self._log(input.order_id).warning("step refused", step=name, code=error.code)
            raise application_error(error.refusal) from error
        self._log(input.order_id).info("step done", step=name)

    @activity.defn
    async def reassign_ownership(self, input: OrderStepInput) -> None:
        await self._run_step(input, StepName.OWNERSHIP_REASSIGNMENT)

    @activity.defn
    async def hand_off_billing(self, input: OrderStepInput) -> None:
        """From the cut-over on, the destination pays; term and expiry stay as they were."""
        await self._run_step(input, StepName.BILLING_HANDOFF)

    @activity.defn
    async def apply_receiving_config(self, input: OrderStepInput) -> None:
        await self._run_step(input, StepName.RECEIVING_CONFIG)

    @activity.defn
    async def restore_billing(self, input: OrderStepInput) -> None:
        await self._run_step(input, StepName.BILLING_RESTORE)

    @activity.defn
    async def restore_ownership(self, input: OrderStepInput) -> None:
        await self._run_step(input, StepName.OWNERSHIP_RESTORE)

    @activity.defn
    async def finish_order(self, input: FinishOrderInput) -> None:
        """Completed or failed: the order's last write, which also releases the lock."""
        await self._orders.finish(input.order_id, status=input.status, at=input.at, failure=input.failure)
        self._log(input.order_id).info("order finished", status=input.status)

    def all(self) -> list[Callable[..., Any]]:
        """Every activity of the class, for a worker's registration."""
        return [
            self.open_order,
            self.accept_confirmation,
            self.decide,
            self.record_refusal,
            self.reassign_ownership,
            self.hand_off_billing,
            self.apply_receiving_config,
            self.restore_billing,
            self.restore_ownership,
            self.finish_order,
        ]
