"""The activities of a ResourceTransfer: each a method of a class that owns the order's transactions.

Every activity is idempotent by order id: the transactions' writes are conditional, so a retry (or a
second run) changes nothing. A business refusal raises a non-retryable ApplicationError typed with the
SPEC code (workflows.refusals); anything else (a database outage) is retried by Temporal with backoff.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from temporalio import activity

from activities.models import (
    AcceptConfirmationInput,
    Attested,
    DecideInput,
    FinishOrderInput,
    OpenOrderInput,
    OpenOrderResult,
    OperatorCancelInput,
    OperatorCancelResult,
    OrderStepInput,
    RecordRefusalInput,
)
from activities.order_transactions import OrderTransactions, StepAttempt, StepName
from domain.attestation import attestation_refusal, too_late_refusal
from domain.clock import now
from domain.codes import ErrorCode
from domain.models import Action, Event, OrderStatus, Outcome, Principal
from domain.refusals import TransferError
from workflows.messages import ConfirmRequest
from workflows.refusals import application_error

log = structlog.get_logger(__name__)


class TransferActivities:
    def __init__(self, orders: OrderTransactions, attestation_key: bytes) -> None:
        self._orders = orders
        self._attestation_key = attestation_key

    async def _attested(
        self,
        attested: Attested,
        *,
        action: Action,
        order_id: str,
        resource_id: str | None = None,
        destination_account_id: str | None = None,
        done: OrderStatus | None = None,
    ) -> Principal:
        """The principal the message acts for, once its attestation holds (domain.attestation). Past
        its time to act, a retry whose first attempt already committed (the order is `done`) still
        holds: it changes nothing, and its run must learn that the order moved."""
        refused = attestation_refusal(
            attested.attestation,
            self._attestation_key,
            action=action,
            order_id=order_id,
            request=attested.signed,
            received_at=attested.received_at,
            resource_id=resource_id,
            destination_account_id=destination_account_id,
        )
        if refused is not None:
            raise TransferError.of(refused)
        assert attested.attestation is not None
        late = too_late_refusal(attested.attestation, now())
        if late is not None and (done is None or await self._orders.order_status(order_id) is not done):
            raise TransferError.of(late)
        return attested.attestation.principal

    @staticmethod
    def _attempt(name: StepName, started_at: datetime, finished_at: datetime | None = None) -> StepAttempt:
        """This attempt of a step, for the transaction that does its work to record."""
        return StepAttempt(
            name=name, started_at=started_at, attempt=activity.info().attempt, finished_at=finished_at
        )

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
        """Initiate: the attestation, the account rules, then the resource rules and the lock.

        The service verified the source's code before it signed the attestation; here the attestation
        is the source's verification. A retry adopts the order it opened; an order id already taken by
        another order is refused.
        """
        started = now()
        try:
            if activity.info().workflow_id != input.order_id:  # a replayed start under another id
                raise TransferError(ErrorCode.UNAUTHENTICATED, "Refused: the run is not the order's")
            principal = await self._attested(
                input.attested,
                action=Action.INITIATE,
                order_id=input.order_id,
                resource_id=input.resource_id,
                destination_account_id=input.destination_account_id,
                done=OrderStatus.PENDING,
            )
            if principal.account_id != input.source_account_id:
                raise TransferError(
                    ErrorCode.UNAUTHENTICATED, "Refused: the attestation is for another source"
                )
            verified = now()
            order = await self._orders.open_order(
                order_id=input.order_id,
                resource_id=input.resource_id,
                source_account_id=input.source_account_id,
                destination_account_id=input.destination_account_id,
                agreement_version=input.agreement_version,
                created_at=input.created_at,
                expires_at=input.expires_at,
                actor_account_id=input.source_account_id,
                # One transaction: the order (or the one a retry adopts) and the steps that led to it.
                steps=(
                    self._attempt(StepName.SOURCE_VERIFICATION, started, verified),
                    self._attempt(StepName.OPEN_ORDER, verified),
                ),
            )
        except TransferError as error:
            self._log(input.order_id).info("initiate refused", code=error.code)
            raise application_error(error.refusal) from error
        self._log(input.order_id).info("order opened", resource_id=input.resource_id)
        return OpenOrderResult(product=order.product)

    @activity.defn
    async def accept_confirmation(self, input: AcceptConfirmationInput) -> None:
        """Confirm: the attestation (the destination's verification), every rule again, the stopped
        state; then transferring. A refusal records a refused event and leaves the order pending."""
        actor: str | None = None
        try:
            # Checked before anything is written: a forged confirm leaves its refused event only. A
            # retry after the commit is answered however late it comes, and counts its attempt.
            verifying = now()
            principal = await self._attested(
                input.attested,
                action=Action.CONFIRM,
                order_id=input.order_id,
                done=OrderStatus.TRANSFERRING,
            )
            actor = principal.account_id
            checking = now()
            # One transaction: every rule again under the resource's row lock, then transferring, and
            # the two steps (a refusal records the check failed with it).
            await self._orders.decide(
                input.order_id,
                status=OrderStatus.TRANSFERRING,
                at=input.at,
                actor_account_id=actor,
                # The configuration the attestation covers, not a copy beside it.
                receiving_config=ConfirmRequest.model_validate(input.attested.signed).receiving_config,
                steps=(
                    self._attempt(StepName.DESTINATION_VERIFICATION, verifying, checking),
                    self._attempt(StepName.CONFIRMATION_CHECK, checking),
                ),
            )
        except TransferError as error:
            await self._refused(input.event_id, input.order_id, Action.CONFIRM, actor, error.code, input.at)
            self._log(input.order_id).info("confirmation refused", code=error.code)
            raise application_error(error.refusal) from error
        self._log(input.order_id).info("confirmation accepted")

    @activity.defn
    async def decide(self, input: DecideInput) -> None:
        """Records the decision that ends a pending order: cancelled or rejected (once the message's
        attestation holds), or expired; the lock is released."""
        actor: str | None = None
        try:
            if input.action is not None:
                assert input.attested is not None
                principal = await self._attested(
                    input.attested, action=input.action, order_id=input.order_id, done=input.status
                )
                actor = principal.account_id
            await self._orders.decide(
                input.order_id,
                status=input.status,
                at=input.at,
                actor_account_id=actor,
                reason=input.reason,
            )
        except TransferError as error:
            if input.action is None:  # the expiry is the workflow's own clean-up
                await self._cleanup_refused(input.order_id, "expire", error)
                return
            if error.code is ErrorCode.UNAUTHENTICATED:
                event_id = f"{activity.info().workflow_run_id}/{activity.info().activity_id}"
                await self._refused(event_id, input.order_id, input.action, None, error.code, input.at)
            raise application_error(error.refusal) from error
        self._log(input.order_id).info("order decided", status=input.status)

    @activity.defn
    async def record_refusal(self, input: RecordRefusalInput) -> None:
        """Records a message the workflow refused (a late cancel, a wrong party) as an order event: with
        its claimed actor when its attestation holds, with none and UNAUTHENTICATED when it does not."""
        actor: str | None
        code = input.code
        try:
            principal = await self._attested(input.attested, action=input.action, order_id=input.order_id)
            actor = principal.account_id
        except TransferError as error:
            actor, code = None, error.code
        await self._refused(input.event_id, input.order_id, input.action, actor, code, input.at)

    async def _refused(
        self, event_id: str, order_id: str, action: Action, actor: str | None, code: ErrorCode, at: datetime
    ) -> None:
        event = Event(at=at, actor_account_id=actor, action=action, outcome=Outcome.REFUSED, code=code)
        await self._orders.record_event(event_id=event_id, order_id=order_id, event=event)

    async def _run_step(self, input: OrderStepInput, name: StepName) -> None:
        # Each step's work and its record are one transaction.
        step = self._attempt(name, now())
        try:
            match name:
                case StepName.OWNERSHIP_REASSIGNMENT:
                    # The moment of the commit, not of the schedule: billing cuts over then.
                    await self._orders.reassign_ownership(input.order_id, step=step)
                case StepName.BILLING_HANDOFF:
                    await self._orders.hand_off_billing(input.order_id, step=step)
                case StepName.RECEIVING_CONFIG:
                    await self._orders.apply_receiving_config(input.order_id, step=step)
                case StepName.BILLING_RESTORE:
                    await self._orders.restore_billing(input.order_id, at=input.at, step=step)
                case StepName.OWNERSHIP_RESTORE:
                    await self._orders.restore_ownership(input.order_id, step=step)
        except TransferError as error:
            self._log(input.order_id).warning("step refused", step=name, code=error.code)
            raise application_error(error.refusal) from error
        self._log(input.order_id).info("step done", step=name)

    @activity.defn
    async def reassign_ownership(self, input: OrderStepInput) -> None:
        await self._run_step(input, StepName.OWNERSHIP_REASSIGNMENT)

    @activity.defn
    async def hand_off_billing(self, input: OrderStepInput) -> None:
        """Confirms the cut-over the ownership change made; term and expiry stay as they were."""
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
    async def operator_cancel(self, input: OperatorCancelInput) -> OperatorCancelResult:
        """An operator cancelled the run from Temporal: end the order cleanly (SPEC §4)."""
        status = await self._orders.operator_cancel(input.order_id, at=input.at)
        order = await self._orders.get_order(input.order_id)
        self._log(input.order_id).warning("operator's cancel", status=status)
        if order is None:
            return OperatorCancelResult(status=status)
        return OperatorCancelResult(
            status=status, product=order.product, completed_at=order.completed_at, failure=order.failure
        )

    @activity.defn
    async def finish_order(self, input: FinishOrderInput) -> None:
        """Completed or failed: the order's last write, which also releases the lock."""
        try:
            await self._orders.finish(input.order_id, status=input.status, at=input.at, failure=input.failure)
        except TransferError as error:
            await self._cleanup_refused(input.order_id, "finish", error)
            return
        self._log(input.order_id).info("order finished", status=input.status)

    async def _cleanup_refused(self, order_id: str, what: str, error: TransferError) -> None:
        """A clean-up that the database refuses (another hand changed the order: a repair, an operator)
        must not leave the run failing with the lock held: alert, release the lock of a closed order,
        and let the run end."""
        self._log(order_id).error(
            "clean-up refused: an operator should look", alert=True, step=what, code=error.code
        )
        await self._orders.release_lock_of_closed(order_id)

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
            self.operator_cancel,
            self.finish_order,
        ]
