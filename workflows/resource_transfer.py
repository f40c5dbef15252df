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
from temporalio.exceptions import ApplicationError
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from activities.models import (
        AcceptConfirmationInput,
        Attested,
        DecideInput,
        FinishOrderInput,
        OpenOrderInput,
        OperatorCancelInput,
        OperatorCancelResult,
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
        EXPIRY,
        OPERATOR,
        WORKFLOW_TYPE,
        AttestedMessage,
        CancelRequest,
        ConfirmRequest,
        OrderState,
        RejectRequest,
        TransferInput,
        TransferResult,
    )
    from workflows.refusals import ACTIVITY_FAILURES, application_error, from_activity

# Each activity is one or a few millisecond database transactions: after a worker crash its retry
# starts within seconds, not after a long timeout.
ACTIVITY_TIMEOUT = timedelta(seconds=5)
# Infrastructure failures (a database outage) retry until they succeed: they delay an order, never
# fail it. Business refusals are non-retryable ApplicationErrors and stop at once.
RETRY_POLICY = RetryPolicy(
    initial_interval=timedelta(seconds=1), backoff_coefficient=2.0, maximum_interval=timedelta(seconds=30)
)
# Patch ids (README "Changing the workflow"): each names a change that runs of an older version replay
# around. v3: the order opens in a local activity, the hand-off's first step is a regular one.
V3 = "v3-open-locally-reassign-regularly"
# Past this many refusals of one actor and action, further ones are counted, not recorded (SPEC §5).
RECORDED_REFUSALS = 10


class _OperatorCancelled(Exception):
    """The run was cancelled while an activity was in hand, and the activity finished anyway."""


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
        self._ownership_moved = False
        self._cleaning_up = False  # after an operator's cancel: the activities run to the end
        self._failing: Refusal | None = None  # the failure being compensated
        self._unrecorded_refusals: dict[Action, int] = {}  # refusals seen per action

    async def _execute(
        self,
        activity: Any,
        input: Any,
        *,
        summary: str | None = None,
        answers_a_message: bool = False,
        in_handler: bool = False,
    ) -> Any:
        """Every activity with the same options. The hand-off's steps are local activities (a few
        millisecond transactions on the worker's own database: one marker event each, no round trip
        through the task queue), and so is the opening, which runs before any handler can act. What
        answers a message in a handler (confirm, cancel, reject, a refusal) is a regular activity, so
        that its result is in the history before the handler goes on: a signal that arrives while local
        activities run cannot make the server refuse the workflow task that holds an update's
        acceptance. An operator's cancel waits for the activity in hand to finish (it
        cannot see the cancel), so the clean-up acts on the database as it is; an activity that finished
        despite the cancel still ends the run (from the run's own path: a handler's exception would fail
        the workflow task instead).

        A `summary` only where the activity's type does not say it all (which decision, which refusal,
        how the order ends): each is one more payload that the SDK converts and visits through the
        sandbox, about 1 ms of the worker's CPU per transfer each (py-spy; README "Performance")."""
        execute = (
            workflow.execute_activity_method if answers_a_message else workflow.execute_local_activity_method
        )
        result = await execute(
            activity,
            input,
            start_to_close_timeout=ACTIVITY_TIMEOUT,
            retry_policy=RETRY_POLICY,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary=summary,
        )
        if workflow.cancellation_reason() is not None and not self._cleaning_up and not in_handler:
            raise _OperatorCancelled
        return result

    @workflow.run
    async def run(self, input: TransferInput) -> TransferResult:
        try:
            if await self._open():
                await self._await_decision()
                if self._state.status is OrderStatus.TRANSFERRING:
                    await self._hand_over()
        except (asyncio.CancelledError, _OperatorCancelled, *ACTIVITY_FAILURES):
            if workflow.cancellation_reason() is None:
                raise
            self._cleaning_up = True
            # An operator cancelled the run (Temporal UI, `temporal workflow cancel`): end the order
            # cleanly (the activity in hand may also have ended as cancelled), then end as a cancelled run.
            await self._operator_cancel()
            raise asyncio.CancelledError() from None
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._state.status is OrderStatus.FAILED:
            # A failed run, so that Temporal UI's Failures view lists the transfers that need an operator.
            assert self._state.failure is not None
            raise ApplicationError(
                f"Transfer failed: {self._state.failure.message}",
                self._state.failure.model_dump(mode="json"),
                type=self._state.failure.code,
                non_retryable=True,
            )
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

    # Every message that acts carries the service's attestation (domain.attestation). The workflow has no
    # key: what it can check without one (a missing attestation, the claimed principal's rights) refuses
    # at once; an activity checks the signature before it writes anything.

    @workflow.update(name="confirm")
    async def confirm(self, request: ConfirmRequest) -> OrderState:
        """Answers once the confirmation is accepted (attestation and state checks passed)."""
        await self._confirm(Attested.of(request, workflow.now()))
        return self._state

    @confirm.validator
    def validate_confirm(self, request: ConfirmRequest) -> None:
        self._raise_refusal(Action.CONFIRM, request, request.agreement_accepted)

    @workflow.update(name="cancel")
    async def cancel(self, request: CancelRequest) -> OrderState:
        await self._end(Action.CANCEL, Attested.of(request, workflow.now()))
        return self._state

    @cancel.validator
    def validate_cancel(self, request: CancelRequest) -> None:
        self._raise_refusal(Action.CANCEL, request)

    @workflow.update(name="reject")
    async def reject(self, request: RejectRequest) -> OrderState:
        await self._end(Action.REJECT, Attested.of(request, workflow.now()), request.reason)
        return self._state

    @reject.validator
    def validate_reject(self, request: RejectRequest) -> None:
        self._raise_refusal(Action.REJECT, request)

    # Signals carry the same requests; nothing in them is trusted: an invalid one is recorded and ignored.

    @workflow.signal(name="confirm")
    async def confirm_signal(self, request: ConfirmRequest) -> None:
        attested = Attested.of(request, workflow.now())
        await self._signalled(
            Action.CONFIRM,
            request,
            attested,
            lambda: self._confirm(attested),
            request.agreement_accepted,
        )

    @workflow.signal(name="cancel")
    async def cancel_signal(self, request: CancelRequest) -> None:
        attested = Attested.of(request, workflow.now())
        await self._signalled(Action.CANCEL, request, attested, lambda: self._end(Action.CANCEL, attested))

    @workflow.signal(name="reject")
    async def reject_signal(self, request: RejectRequest) -> None:
        attested = Attested.of(request, workflow.now())
        await self._signalled(
            Action.REJECT, request, attested, lambda: self._end(Action.REJECT, attested, request.reason)
        )

    # --- phases -------------------------------------------------------------------------------------

    async def _open(self) -> bool:
        initiator = self._input.principal
        code = ErrorCode.UNAUTHENTICATED if initiator is None else principal_failure(initiator)
        if code is not None:
            self._refuse(refusal(code))
            return False
        try:
            opened = await self._execute(
                TransferActivities.open_order,
                OpenOrderInput(
                    order_id=self._input.order_id,
                    resource_id=self._input.resource_id,
                    source_account_id=self._input.source_account_id,
                    destination_account_id=self._input.destination_account_id,
                    agreement_version=self._input.agreement_version,
                    # The start reached Temporal at the run's start time, whenever a worker gets to it.
                    attested=Attested.of(self._input, workflow.info().start_time),
                    created_at=self._state.created_at,
                    expires_at=self._state.expires_at,
                ),
                # v3 opens in a local activity: the `opened` update answers from the run's first
                # workflow task (5 events and a task-queue round trip fewer). Runs of v2 replay theirs.
                answers_a_message=not workflow.patched(V3),
            )
        except ACTIVITY_FAILURES as error:
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
                    # Recorded at the window's end, however late the worker gets to it.
                    await self._decide(OrderStatus.EXPIRED, at=self._state.expires_at)

    async def _operator_cancel(self) -> None:
        """SPEC §4: a pending order ends cancelled; a transferring one finishes its hand-off if ownership
        already moved (or its compensation, if it was failing), otherwise it ends failed with
        CANCELLED_BY_OPERATOR; the lock is released either way."""
        async with self._decision_lock:
            answer: OperatorCancelResult = await self._execute(
                TransferActivities.operator_cancel,
                OperatorCancelInput(order_id=self._state.order_id, at=workflow.now()),
            )
        if answer.status is None:
            self._refuse(
                refusal(ErrorCode.CANCELLED_BY_OPERATOR, "An operator cancelled the run before it opened")
            )
        elif answer.status is OrderStatus.TRANSFERRING and self._failing is not None:
            self._ownership_moved = True
            await self._compensate(self._failing)
        elif answer.status is OrderStatus.TRANSFERRING:
            await self._hand_over()
        elif answer.status is not self._state.status:
            # Ended by this cancel (cancelled, or failed before ownership moved), or by the activity that
            # was in hand when it came (a finished hand-off): the order's own record says which.
            ended_here = answer.status is OrderStatus.CANCELLED or (
                answer.failure is not None and answer.failure.code is ErrorCode.CANCELLED_BY_OPERATOR
            )
            self._update(
                status=answer.status,
                product=answer.product,
                failure=answer.failure,
                completed_at=answer.completed_at,
                decided_by=OPERATOR if ended_here else self._state.decided_by,
            )

    async def _hand_over(self) -> None:
        try:
            # Billing cuts over in the same transaction as the ownership (at its commit). A regular
            # activity, so that the workflow task holding the confirm's answer completes at once: behind
            # local activities it would wait for the whole hand-off (measured by `make bench`).
            await self._run_step(TransferActivities.reassign_ownership, regular=workflow.patched(V3))
            self._ownership_moved = True
            await self._run_step(TransferActivities.hand_off_billing)
            await self._run_step(TransferActivities.apply_receiving_config)
        except ACTIVITY_FAILURES as error:
            failure = from_activity(error)
            workflow.logger.warning("hand-off failed: %s", failure.code)
            await self._compensate(failure)
            return
        await self._finish(OrderStatus.COMPLETED, None)

    async def _compensate(self, failure: Refusal) -> None:
        """A failure after ownership moved restores ownership and billing before the order is failed."""
        self._failing = failure
        if self._ownership_moved:
            try:
                await self._run_step(TransferActivities.restore_billing)
                await self._run_step(TransferActivities.restore_ownership)
            except ACTIVITY_FAILURES as error:
                # Refused (another hand changed the order): still fail the order and release the lock;
                # `transfer repair` and an operator take it from there.
                workflow.logger.error(
                    "compensation refused, an operator should look: %s", from_activity(error).code
                )
        await self._finish(OrderStatus.FAILED, failure)

    # --- decisions ----------------------------------------------------------------------------------

    async def _confirm(self, attested: Attested) -> None:
        async with self._decision_lock:
            await self._refuse_if_decided(Action.CONFIRM, attested)
            at = workflow.now()
            try:
                await self._execute(
                    TransferActivities.accept_confirmation,
                    AcceptConfirmationInput(
                        order_id=self._state.order_id,
                        attested=attested,
                        at=at,
                        event_id=str(workflow.uuid4()),
                    ),
                    answers_a_message=True,
                    in_handler=True,
                )
            except ACTIVITY_FAILURES as error:
                # Refused for a verification or resource-state reason: the order stays pending.
                raise application_error(from_activity(error)) from None
            self._update(
                status=OrderStatus.TRANSFERRING, confirmed_at=at, decided_by=_claimed_account(attested)
            )

    async def _end(self, action: Action, attested: Attested, reason: str | None = None) -> None:
        async with self._decision_lock:
            await self._refuse_if_decided(action, attested)
            status = OrderStatus.CANCELLED if action is Action.CANCEL else OrderStatus.REJECTED
            try:
                await self._decide(status, at=workflow.now(), action=action, attested=attested, reason=reason)
            except ACTIVITY_FAILURES as error:
                # Its attestation did not hold (recorded by the activity): the order stays pending.
                raise application_error(from_activity(error)) from None

    async def _decide(
        self,
        status: OrderStatus,
        *,
        at: datetime,
        action: Action | None = None,
        attested: Attested | None = None,
        reason: str | None = None,
    ) -> None:
        """A cancel or reject (with its attested message), or the expiry."""
        await self._execute(
            TransferActivities.decide,
            DecideInput(
                order_id=self._state.order_id,
                status=status,
                at=at,
                action=action,
                attested=attested,
                reason=reason,
            ),
            summary=f"record {status.value}",
            answers_a_message=attested is not None,
            in_handler=attested is not None,
        )
        self._update(
            status=status, decided_by=_claimed_account(attested) if attested else EXPIRY, reason=reason
        )

    async def _finish(self, status: OrderStatus, failure: Refusal | None) -> None:
        at = workflow.now()
        await self._execute(
            TransferActivities.finish_order,
            FinishOrderInput(order_id=self._state.order_id, status=status, at=at, failure=failure),
            summary=f"record {status.value}, release lock",
        )
        self._update(
            status=status, failure=failure, completed_at=at if status is OrderStatus.COMPLETED else None
        )

    async def _run_step(
        self,
        step: Callable[[TransferActivities, OrderStepInput], Awaitable[None]],
        *,
        regular: bool = False,
    ) -> None:
        await self._execute(
            step,
            OrderStepInput(order_id=self._state.order_id, at=workflow.now()),
            answers_a_message=regular,
        )

    # --- refusals -----------------------------------------------------------------------------------

    def _refusal(
        self,
        action: Action,
        principal: Principal | None,
        agreement_accepted: bool = True,
        *,
        order_rules: bool = True,
    ) -> Refusal | None:
        """The first rule that refuses this request now, in SPEC §5's order (a message without an
        attestation first: nobody vouches for its principal). Without `order_rules`, only what needs
        no order: the validators' part, since an update a validator rejects leaves no trace."""
        if principal is None:
            return refusal(ErrorCode.UNAUTHENTICATED, "Refused: the message carries no attestation")
        code = principal_failure(principal)
        if code is None and not agreement_accepted:
            code = ErrorCode.AGREEMENT_NOT_ACCEPTED
        if code is None and self._state.status is None:
            code = ErrorCode.ORDER_NOT_FOUND  # not open (yet, or ever)
        if code is not None:
            return refusal(code)
        if not order_rules:
            return None
        return order_refusal(self._order(), principal, action=action, now=workflow.now())

    def _raise_refusal(
        self, action: Action, request: AttestedMessage, agreement_accepted: bool = True
    ) -> None:
        """A validator's check. The order's rules (party, status, window) are checked by the handler
        under the decision lock, which records a refusal as the order's event (races included)."""
        found = self._refusal(action, request.principal, agreement_accepted, order_rules=False)
        if found is not None:
            raise application_error(found)

    async def _refuse_if_decided(self, action: Action, attested: Attested) -> None:
        """Past the validator: another decision may have won while this one waited for the lock."""
        principal = attested.attestation.principal if attested.attestation is not None else None
        found = self._refusal(action, principal)
        if found is not None:
            await self._record_refusal(action, attested, found)
            raise application_error(found)

    async def _signalled(
        self,
        action: Action,
        request: AttestedMessage,
        attested: Attested,
        handle: Callable[[], Awaitable[None]],
        agreement_accepted: bool = True,
    ) -> None:
        found = self._refusal(action, request.principal, agreement_accepted)
        if found is not None:
            await self._record_refusal(action, attested, found)
            return
        try:
            await handle()
        except ApplicationError as error:
            # Already recorded where it was refused; a signal has nobody to answer.
            workflow.logger.info("signal %s refused: %s", action, error.type)

    async def _record_refusal(self, action: Action, attested: Attested, failure: Refusal) -> None:
        if self._state.status is None:
            workflow.logger.info("%s refused before the order opened: %s", action, failure.code)
            return
        # Keyed by the action alone: the claimed actor is not checked yet, so a flood that changes it
        # (forged) must not escape the count.
        key = action
        self._unrecorded_refusals[key] = seen = self._unrecorded_refusals.get(key, 0) + 1
        if seen > RECORDED_REFUSALS:
            # A flood cannot grow the history without bound: counted, not recorded one by one.
            self._state = self._state.model_copy(
                update={"unrecorded_refusals": self._state.unrecorded_refusals + 1}
            )
            return
        await self._execute(
            TransferActivities.record_refusal,
            RecordRefusalInput(
                event_id=str(workflow.uuid4()),
                order_id=self._state.order_id,
                action=action,
                attested=attested,
                code=failure.code,
                at=workflow.now(),
            ),
            summary=f"record refused {action}",
            answers_a_message=True,
            in_handler=True,
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


def _claimed_account(attested: Attested) -> str | None:
    return attested.attestation.principal.account_id if attested.attestation is not None else None


def _details(state: OrderState) -> str:
    """The readable summary Temporal UI shows for the run (ids only: no personal data)."""
    head = (
        f"**{state.status}** · {state.product} `{state.resource_id}` · "
        f"`{state.source_account_id}` → `{state.destination_account_id}`"
    )
    by = "an operator" if state.decided_by == OPERATOR else f"`{state.decided_by}`"
    match state.status:
        case OrderStatus.PENDING:
            line = f"Waiting for the destination to confirm until {state.expires_at:%Y-%m-%d %H:%M:%S} UTC."
        case OrderStatus.TRANSFERRING:
            line = f"Confirmed by {by}: reassigning ownership and handing billing over."
        case OrderStatus.COMPLETED:
            at = f" at {state.completed_at:%Y-%m-%d %H:%M:%S} UTC" if state.completed_at else ""
            line = f"Completed{at}; confirmed by {by}."
        case OrderStatus.FAILED:
            assert state.failure is not None
            line = (
                f"Failed: `{state.failure.code}`: {state.failure.message}. "
                "Ownership and billing stay with the source."
            )
        case OrderStatus.EXPIRED:
            line = "Expired: nobody confirmed within the window; the resource lock is released."
        case OrderStatus.REJECTED:
            why = f": {state.reason}" if state.reason else " (no reason given)"
            line = f"Rejected by {by}{why}. The resource lock is released."
        case _:
            line = f"Cancelled by {by}; the resource lock is released."
    if state.unrecorded_refusals:
        line += f"\n\n{state.unrecorded_refusals} more refused messages were counted, not recorded."
    return f"{head}\n\n{line}"
