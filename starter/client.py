"""The client library backend services use to drive transfer orders through Temporal.

Each order is one ResourceTransfer workflow whose id is the order id. Refusals come back as
`TransferError` with the SPEC code, whether a validator, a handler or an activity refused.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import timedelta
from typing import Any
from uuid import uuid4

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain.codes import ErrorCode
from domain.models import AGREEMENT_VERSION, OrderStatus, Principal
from domain.refusals import TransferError
from workflows import search_attributes
from workflows.messages import (
    DEFAULT_CONFIRM_WINDOW,
    DEFAULT_TASK_QUEUE,
    CancelRequest,
    ConfirmRequest,
    OrderState,
    RejectRequest,
    TransferInput,
    TransferResult,
    Verification,
)
from workflows.refusals import from_update
from workflows.resource_transfer import ResourceTransfer


def new_order_id() -> str:
    return f"to-{uuid4().hex}"


class TransferClient:
    def __init__(
        self,
        client: Client,
        *,
        task_queue: str = DEFAULT_TASK_QUEUE,
        confirm_window: timedelta = DEFAULT_CONFIRM_WINDOW,
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.confirm_window = confirm_window

    async def initiate(
        self,
        *,
        initiator: Principal,
        destination_account_id: str,
        resource_id: str,
        verification: Verification,
        order_id: str | None = None,
        agreement_version: str = AGREEMENT_VERSION,
    ) -> OrderState:
        """Starts the order's workflow and answers once the order is open (lock held) or refused.

        Retrying with the same `order_id` joins the same workflow instead of opening a second order;
        after the run has closed, a retry answers its final state and starts nothing.
        """
        order_id = order_id or new_order_id()
        transfer = TransferInput(
            order_id=order_id,
            resource_id=resource_id,
            initiator=initiator,
            destination_account_id=destination_account_id,
            agreement_version=agreement_version,
            verification=verification,
            confirm_window=self.confirm_window,
        )
        start = WithStartWorkflowOperation(
            ResourceTransfer.run,
            transfer,
            id=order_id,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A closed order is never opened again under its id: a late retry learns how it ended.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search_attributes.SOURCE_ACCOUNT_ID, initiator.account_id),
                    SearchAttributePair(search_attributes.DESTINATION_ACCOUNT_ID, destination_account_id),
                    SearchAttributePair(search_attributes.RESOURCE_ID, resource_id),
                ]
            ),
            static_summary=f"Transfer {resource_id}: {initiator.account_id} → {destination_account_id}",
        )
        try:
            opened: OrderState = await self.client.execute_update_with_start_workflow(
                "opened", start_workflow_operation=start, result_type=OrderState
            )
            return opened
        except WorkflowUpdateFailedError as error:
            raise TransferError.of(from_update(error)) from None
        except WorkflowAlreadyStartedError:
            # The start operation keeps the same error; take it, or asyncio reports it unretrieved.
            with suppress(WorkflowAlreadyStartedError):
                await start.workflow_handle()
            # The order's run has closed: answer how it ended, or the rule that refused it.
            closed = await self.state(order_id)
            if closed.refusal is not None:
                raise TransferError.of(closed.refusal) from None
            return closed

    async def confirm(self, order_id: str, request: ConfirmRequest) -> OrderState:
        return await self._update(order_id, ResourceTransfer.confirm, request)

    async def cancel(self, order_id: str, principal: Principal) -> OrderState:
        return await self._update(order_id, ResourceTransfer.cancel, CancelRequest(principal=principal))

    async def reject(self, order_id: str, principal: Principal, reason: str | None = None) -> OrderState:
        return await self._update(
            order_id, ResourceTransfer.reject, RejectRequest(principal=principal, reason=reason)
        )

    async def state(self, order_id: str) -> OrderState:
        """The workflow's view of the order (works on closed runs too)."""
        try:
            return await self.handle(order_id).query(ResourceTransfer.status)
        except RPCError as error:
            if error.status is RPCStatusCode.NOT_FOUND:
                raise TransferError(ErrorCode.ORDER_NOT_FOUND) from None
            raise

    async def result(self, order_id: str) -> TransferResult:
        return await self.handle(order_id).result()

    def handle(self, order_id: str) -> WorkflowHandle[ResourceTransfer, TransferResult]:
        return self.client.get_workflow_handle_for(ResourceTransfer.run, order_id)

    async def _update(self, order_id: str, update: Any, request: Any) -> OrderState:
        try:
            state: OrderState = await self.handle(order_id).execute_update(update, request)
            return state
        except WorkflowUpdateFailedError as error:
            raise TransferError.of(from_update(error)) from None
        except RPCError as error:
            if error.status is not RPCStatusCode.NOT_FOUND:
                raise
        # The run has closed (or never existed): its final state says why nothing can change.
        closed = await self.state(order_id)
        if closed.status is None:
            raise TransferError(ErrorCode.ORDER_NOT_FOUND)
        if closed.status is OrderStatus.EXPIRED:
            raise TransferError(ErrorCode.ORDER_EXPIRED, details={"status": closed.status.value})
        raise TransferError(ErrorCode.ORDER_NOT_PENDING, details={"status": closed.status.value})
