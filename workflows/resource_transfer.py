"""ResourceTransfer: one transfer order, from initiate to a terminal status.

Open (rules, source verification, lock) → pending until a confirm, cancel or reject, or the end of the
confirmation window → after a confirm, ownership reassignment, billing hand-off and the receiving
configuration → completed. A failure after ownership moved is compensated before the order is failed.
Exactly one decision wins: every decision is taken under one lock and only from `pending`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        AcceptConfirmationInput,
        DecideInput,
        FinishOrderInput,
        OpenOrderInput,
        OrderStepInput,
        RecordRefusalInput,
    )
    from activities.transfer_activities import TransferActivities
    from domain.codes import ErrorCode
    from domain.models import Action, Order, OrderStatus, Principal, Refusal
    from domain.refusals import refusal
    from domain.rules import order_refusal, principal_failure
    from workflows import search_attributes
    from workflows.messages import (
        WORKFLOW_TYPE,
        CancelRequest,
        ConfirmRequest,
        OrderState,
        RejectRequest,
        TransferInput,
        TransferResult,
    )
    from workflows.refusals import application_error, from_activity

ACTIVITY_TIMEOUT = timedelta(seconds=30)
# Infrastructure failures (a database outage) retry until they succeed: they delay an order, never
# fail it. Business refusals are non-retryable ApplicationErrors and stop at once.
RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(minutes=1)
)


@workflow.defn(name=WORKFLOW_TYPE)
class ResourceTransfer:
    @workflow.init
    def __init__(self, input: TransferInput) -> None:
        self._input = input
        now = workflow.now()
        self._state = OrderState(
            order_id=input.order_id,
            resource_id=input.resource_id,
            source_account_id=input.source_account_id,
            destination_account_id=input.destination_account_id,
            created_at=now,
            expires_at=now + input.confirm_window,
        )
        self._decision_lock = asyncio.Lock()

    @workflow.run
    async def run(self, input: TransferInput) -> TransferResult:
        if await self._open():
            await self._await_decision()
            if self._state.status is OrderStatus.TRANSFERRING:
                await self._hand_over()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return TransferResult(
            order_id=self._state.order_id,
            status=self._state.status,
            failure=self._state.failure,
            refusal=self._state.refusal,
        )

    # --- messages -----------------------------------------------------------------------------------

    @workflow.query(name="status")
    def status(self) -> OrderState:
        return self._state

    @workflow.update(name="opened")
    async def opened(self) -> OrderState:
        """Answers once the order is open (lock held), or with the rule that refused it."""
        await workflow.wait_condition(
            lambda: self._state.status is not None or self._state.refusal is not None
        )
        if self._state.refusal is not None:
            raise application_error(self._state.refusal)
        return self._state

    @workflow.update(name="confirm")
    async def confirm(self, request: ConfirmRequest) -> OrderState:
        """Answers once the confirmation is accepted (verification and state checks passed)."""
        await self._confirm(request)
        return self._state

    @confirm.validator
    def validate_confirm(self, request: ConfirmRequest) -> None:
        self._raise_refusal(Action.CONFIRM, request.principal, request.agreement_accepted)

    @workflow.update(name="cancel")
    async def cancel(self, request: CancelRequest) -> OrderState:
        await self._end(Action.CANCEL, request.principal)
        return self._state

    @cancel.validator
    def validate_cancel(self, request: CancelRequest) -> None:
        self._raise_refusal(Action.CANCEL, request.principal)

    @workflow.update(name="reject")
    async def reject(self, request: RejectRequest) -> OrderState:
        await self._end(Action.REJECT, request.principal, request.reason)
        return self._state

    @reject.validator
    def validate_reject(self, request: RejectRequest) -> None:
        self._raise_refusal(Action.REJECT, request.principal)

    # Signals carry the same requests; nothing in them is trusted: an invalid one is recorded and ignored.

    @workflow.signal(name="confirm")
    async def confirm_signal(self, request: ConfirmRequest) -> None:
        # A signal's claimed time of receipt is not trusted either: its code is checked at its arrival.
        arrived = request.verification.model_copy(update={"received_at": workflow.now()})
        request = request.model_copy(update={"verification": arrived})
        await self._signalled(
            Action.CONFIRM, request.principal, lambda: self._confirm(request), request.agreement_accepted
        )

    @workflow.signal(name="cancel")
    async def cancel_signal(self, request: CancelRequest) -> None:
        await self._signalled(
            Action.CANCEL, request.principal, lambda: self._end(Action.CANCEL, request.principal)
        )

    @workflow.signal(name="reject")
    async def reject_signal(self, request: RejectRequest) -> None:
        await self._signalled(
            Action.REJECT,
            request.principal,
            lambda: self._end(Action.REJECT, request.principal, request.reason),
        )

    # --- phases -------------------------------------------------------------------------------------

    async def _open(self) -> bool:
        code = principal_failure(self._input.initiator)
        if code is not None:
            self._refuse(refusal(code))
            return False
        try:
            opened = await workflow.execute_activity_method(
                TransferActivities.open_order,
                OpenOrderInput(
                    order_id=self._input.order_id,
                    resource_id=self._input.resource_id,
                    initiator=self._input.initiator,
                    destination_account_id=self._input.destination_account_id,
                    agreement_version=self._input.agreement_version,
                    verification=self._input.verification,
                    created_at=self._state.created_at,
                    expires_at=self._state.expires_at,
                ),
                start_to_close_timeout=ACTIVITY_TIMEOUT,
                retry_policy=RETRY_POLICY,
                summary="open order: rules, source verification, lock",
            )
        except ActivityError as error:
            self._refuse(from_activity(error))
            return False
        self._update(status=OrderStatus.PENDING, product=opened.product)
        return True

    async def _await_decision(self) -> None:
        try:
            await workflow.wait_condition(
                lambda: self._state.status is not OrderStatus.PENDING,
                timeout=self._state.expires_at - workflow.now(),
                timeout_summary="confirmation window",
            )
        except TimeoutError:
            async with self._decision_lock:
                # A confirmation accepted while the window closed has already won.
                if self._state.status is OrderStatus.PENDING:
                    await self._decide(OrderStatus.EXPIRED, actor_account_id=None)

    async def _hand_over(self) -> None:
        ownership_moved = False
        # Billing cuts over when ownership moves, so that a charge the new owner pays in between (an
        # auto-renewal) counts as the new owner's.
        moved_at = workflow.now()
        try:
            await self._run_step(TransferActivities.reassign_ownership, "reassign ownership", at=moved_at)
            ownership_moved = True
            await self._run_step(TransferActivities.hand_off_billing, "hand off billing", at=moved_at)
            await self._run_step(TransferActivities.apply_receiving_config, "apply receiving configuration")
        except ActivityError as error:
            failure = from_activity(error)
            workflow.logger.warning("hand-off failed: %s", failure.code)
            if ownership_moved:
                await self._run_step(TransferActivities.restore_billing, "compensate: restore billing")
                await self._run_step(TransferActivities.restore_ownership, "compensate: restore ownership")
            await self._finish(OrderStatus.FAILED, failure)
            return
        await self._finish(OrderStatus.COMPLETED, None)

    # --- decisions ----------------------------------------------------------------------------------

    async def _confirm(self, request: ConfirmRequest) -> None:
        async with self._decision_lock:
            await self._refuse_if_decided(Action.CONFIRM, request.principal)
            at = workflow.now()
            try:
                await workflow.execute_activity_method(
                    TransferActivities.accept_confirmation,
                    AcceptConfirmationInput(
                        order_id=self._state.order_id,
                        principal=request.principal,
                        verification=request.verification,
                        receiving_config=request.receiving_config,
                        at=at,
                        event_id=str(workflow.uuid4()),
                    ),
                    start_to_close_timeout=ACTIVITY_TIMEOUT,
                    retry_policy=RETRY_POLICY,
                    summary="confirm: destination verification, rules, stopped state",
                )
            except ActivityError as error:
                # Refused for a verification or resource-state reason: the order stays pending.
                raise application_error(from_activity(error)) from None
            self._update(status=OrderStatus.TRANSFERRING, confirmed_at=at)

    async def _end(self, action: Action, principal: Principal, reason: str | None = None) -> None:
        async with self._decision_lock:
            await self._refuse_if_decided(action, principal)
            status = OrderStatus.CANCELLED if action is Action.CANCEL else OrderStatus.REJECTED
            await self._decide(status, actor_account_id=principal.account_id, reason=reason)

    async def _decide(
        self, status: OrderStatus, *, actor_account_id: str | None, reason: str | None = None
    ) -> None:
        await workflow.execute_activity_method(
            TransferActivities.decide,
            DecideInput(
                order_id=self._state.order_id,
                status=status,
                actor_account_id=actor_account_id,
                at=workflow.now(),
                reason=reason,
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY_POLICY,
            summary=f"record {status.value}",
        )
        self._update(status=status)

    async def _finish(self, status: OrderStatus, failure: Refusal | None) -> None:
        at = workflow.now()
        await workflow.execute_activity_method(
            TransferActivities.finish_order,
            FinishOrderInput(order_id=self._state.order_id, status=status, at=at, failure=failure),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY_POLICY,
            summary=f"record {status.value}, release lock",
        )
        self._update(
            status=status, failure=failure, completed_at=at if status is OrderStatus.COMPLETED else None
        )

    async def _run_step(
        self,
        step: Callable[[TransferActivities, OrderStepInput], Awaitable[None]],
        summary: str,
        *,
        at: datetime | None = None,
    ) -> None:
        await workflow.execute_activity_method(
            step,
            OrderStepInput(order_id=self._state.order_id, at=at or workflow.now()),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY_POLICY,
            summary=summary,
        )

    # --- refusals -----------------------------------------------------------------------------------

    def _refusal(
        self, action: Action, principal: Principal, agreement_accepted: bool = True
    ) -> Refusal | None:
        """The first rule that refuses this request now, in SPEC §5's order."""
        code = principal_failure(principal)
        if code is None and not agreement_accepted:
            code = ErrorCode.AGREEMENT_NOT_ACCEPTED
        if code is None and self._state.status is None:
            code = ErrorCode.ORDER_NOT_FOUND  # not open (yet, or ever)
        if code is not None:
            return refusal(code)
        return order_refusal(self._order(), principal, action=action, now=workflow.now())

    def _raise_refusal(self, action: Action, principal: Principal, agreement_accepted: bool = True) -> None:
        found = self._refusal(action, principal, agreement_accepted)
        if found is not None:
            raise application_error(found)

    async def _refuse_if_decided(self, action: Action, principal: Principal) -> None:
        """Past the validator: another decision may have won while this one waited for the lock."""
        found = self._refusal(action, principal)
        if found is not None:
            await self._record_refusal(action, principal, found)
            raise application_error(found)

    async def _signalled(
        self,
        action: Action,
        principal: Principal,
        handle: Callable[[], Awaitable[None]],
        agreement_accepted: bool = True,
    ) -> None:
        found = self._refusal(action, principal, agreement_accepted)
        if found is not None:
            await self._record_refusal(action, principal, found)
            return
        try:
            await handle()
        except ApplicationError as error:
            # Already recorded where it was refused; a signal has nobody to answer.
            workflow.logger.info("signal %s refused: %s", action, error.type)

    async def _record_refusal(self, action: Action, principal: Principal, failure: Refusal) -> None:
        if self._state.status is None:
            workflow.logger.info("%s refused before the order opened: %s", action, failure.code)
            return
        await workflow.execute_activity_method(
            TransferActivities.record_refusal,
            RecordRefusalInput(
                event_id=str(workflow.uuid4()),
                order_id=self._state.order_id,
                action=action,
                actor_account_id=principal.account_id,
                code=failure.code,
                at=workflow.now(),
            ),
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY_POLICY,
            summary=f"record refused {action}",
        )

    # --- state --------------------------------------------------------------------------------------

    def _order(self) -> Order:
        state = self._state
        assert state.status is not None and state.product is not None
        return Order(
            order_id=state.order_id,
            resource_id=state.resource_id,
            product=state.product,
            source_account_id=state.source_account_id,
            destination_account_id=state.destination_account_id,
            status=state.status,
            created_at=state.created_at,
            expires_at=state.expires_at,
            agreement_version=self._input.agreement_version,
        )

    def _refuse(self, failure: Refusal) -> None:
        self._state = self._state.model_copy(update={"refusal": failure})
        workflow.upsert_search_attributes(
            [search_attributes.TRANSFER_STATUS.value_set(search_attributes.REFUSED)]
        )
        workflow.set_current_details(f"**Refused** at initiate: `{failure.code}`: {failure.message}")

    def _update(self, **changes: Any) -> None:
        """Every status change goes through here: state, search attributes and the UI summary together."""
        self._state = self._state.model_copy(update=changes)
        state = self._state
        assert state.status is not None and state.product is not None
        workflow.upsert_search_attributes(
            [
                search_attributes.TRANSFER_STATUS.value_set(state.status.value),
                search_attributes.SOURCE_ACCOUNT_ID.value_set(state.source_account_id),
                search_attributes.DESTINATION_ACCOUNT_ID.value_set(state.destination_account_id),
                search_attributes.RESOURCE_ID.value_set(state.resource_id),
                search_attributes.RESOURCE_PRODUCT.value_set(state.product.value),
                search_attributes.TRANSFER_EXPIRES_AT.value_set(state.expires_at),
            ]
        )
        workflow.set_current_details(_details(state))


def _details(state: OrderState) -> str:
    """The readable summary Temporal UI shows for the run (ids only: no personal data)."""
    head = (
        f"**{state.status}** · {state.product} `{state.resource_id}` · "
        f"`{state.source_account_id}` → `{state.destination_account_id}`"
    )
    match state.status:
        case OrderStatus.PENDING:
            line = f"Waiting for the destination to confirm until {state.expires_at:%Y-%m-%d %H:%M:%S} UTC."
        case OrderStatus.TRANSFERRING:
            line = "Confirmed: reassigning ownership and handing billing over."
        case OrderStatus.COMPLETED:
            line = f"Completed at {state.completed_at:%Y-%m-%d %H:%M:%S} UTC."
        case OrderStatus.FAILED:
            assert state.failure is not None
            line = (
                f"Failed: `{state.failure.code}`: {state.failure.message}. "
                "Ownership and billing stay with the source."
            )
        case _:
            line = "Closed without a transfer; the resource lock is released."
    return f"{head}\n\n{line}"
