"""The client library backend services use to drive transfer orders through Temporal.

Each order is one ResourceTransfer workflow whose id is the order id. Refusals come back as
`TransferError` with the SPEC code, whether a validator, a handler or an activity refused.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import uuid4

from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
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

from domain.attestation import TOO_LATE, attest, too_late_refusal
from domain.clock import now
from domain.codes import ErrorCode
from domain.models import AGREEMENT_VERSION, Action, OrderStatus, Principal, ReceivingConfig
from domain.refusals import TransferError, unavailable
from settings import Settings
from starter.deadline import time_left
from workflows import search_attributes
from workflows.messages import (
    DEFAULT_CONFIRM_WINDOW,
    DEFAULT_TASK_QUEUE,
    AttestedMessage,
    CancelRequest,
    ConfirmRequest,
    OrderState,
    RejectRequest,
    TransferInput,
    TransferResult,
)
from workflows.refusals import from_update
from workflows.resource_transfer import ResourceTransfer

_Message = TypeVar("_Message", bound=AttestedMessage)


def sign(
    key: bytes, message: _Message, principal: Principal, action: Action, order_id: str, *, at: datetime
) -> _Message:
    """`message` with its attestation: `principal` may do `action` on `order_id` with this request."""
    initiate = (
        {"resource_id": message.resource_id, "destination_account_id": message.destination_account_id}
        if isinstance(message, TransferInput)
        else {}
    )
    attestation = attest(
        key,
        principal=principal,
        action=action,
        order_id=order_id,
        request=message.signed(),
        at=at,
        **initiate,
    )
    return message.model_copy(update={"attestation": attestation})


# Every call to Temporal answers within this (SPEC §5: never a hang, at most 10 s).
RPC_TIMEOUT = timedelta(seconds=8)
# Temporal's answers for "not now": unreachable, too slow, overloaded, or the run not ready for an
# update (its workflow task is being retried after a worker died: FAILED_PRECONDITION, "Workflow Task in
# failed state"). A call that runs out of its rpc_timeout on the client's side ends CANCELLED.
_NOT_NOW = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.FAILED_PRECONDITION,
}


# What a request still does after its Temporal calls (release an unused code, keep its answer).
AFTER_TEMPORAL_S = 1.5


@asynccontextmanager
async def _reaching_temporal() -> AsyncIterator[None]:
    """Temporal down, slow or overloaded becomes SERVICE_UNAVAILABLE; every other error stays itself.
    Within a request, the call takes no longer than the request's deadline allows (starter.deadline)."""
    try:
        async with asyncio.timeout(time_left(AFTER_TEMPORAL_S)):
            yield
    except TimeoutError:
        raise unavailable("temporal") from None
    except RPCTimeoutOrCancelledError:
        raise unavailable("temporal") from None
    except RPCError as error:
        if error.status in _NOT_NOW:
            raise unavailable("temporal") from None
        raise
    except RuntimeError as error:
        # A lazy client that cannot connect (the server is down since the process started).
        if "connect" not in str(error):
            raise
        raise unavailable("temporal") from None


def _take_start_outcome(start: WithStartWorkflowOperation[Any, Any]) -> None:
    """The start operation keeps the call's failure too (a timeout, a closed run): read here, or asyncio
    reports it unretrieved. The SDK settles it before the call returns; it is inspected, never awaited,
    because awaiting or cancelling it from a request being cancelled would cancel the SDK's own future."""
    settled = start._workflow_handle
    if settled.done() and not settled.cancelled():
        settled.exception()


def keyed_id(principal: Principal, idempotency_key: str | None, action: Action, subject: str) -> str | None:
    """The id a keyed request gives its order or update, the same on every retry; None without a key.
    Scoped to the principal: two accounts never share one."""
    if idempotency_key is None:
        return None
    parts = (principal.account_id, principal.ram_user_id or "", idempotency_key, action.value, subject)
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


# A keyed request's ids, generation after generation: an attempt that reached its worker too late did
# nothing (its caller was answered 503), yet its ids keep that answer; a retry takes the next ones.
GENERATIONS = 20


def _generation(first: str, generation: int) -> str:
    return f"{first}-{generation}" if generation else first


def new_order_id() -> str:
    return f"to-{uuid4().hex}"


class TransferClient:
    """Sends the service's decisions to the workflows, each message signed with an attestation
    (domain.attestation): the caller has authenticated the principal and, for initiate and confirm,
    verified its code before it calls."""

    def __init__(
        self,
        client: Client,
        *,
        attestation_key: bytes,
        task_queue: str = DEFAULT_TASK_QUEUE,
        confirm_window: timedelta = DEFAULT_CONFIRM_WINDOW,
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.confirm_window = confirm_window
        self._attestation_key = attestation_key

    @classmethod
    def of(cls, client: Client, settings: Settings) -> TransferClient:
        return cls(
            client,
            attestation_key=settings.attestation_key(),
            task_queue=settings.task_queue,
            confirm_window=settings.confirm_window,
        )

    def _attested(self, message: _Message, principal: Principal, action: Action, order_id: str) -> _Message:
        return sign(self._attestation_key, message, principal, action, order_id, at=now())

    async def initiate(
        self,
        *,
        initiator: Principal,
        destination_account_id: str,
        resource_id: str,
        order_id: str | None = None,
        agreement_version: str = AGREEMENT_VERSION,
        update_id: str | None = None,
    ) -> OrderState:
        """Starts the order's workflow and answers once the order is open (lock held) or refused.

        Retrying with the same `order_id` (and `update_id`) joins the same workflow instead of opening a
        second order; after the run has closed, a retry answers its final state and starts nothing, but
        for a run that reached its worker too late and did nothing: the retry takes the next ids.
        """
        for generation in range(GENERATIONS if order_id else 1):
            opened = await self._open(
                initiator,
                destination_account_id,
                resource_id,
                _generation(order_id, generation) if order_id else new_order_id(),
                _generation(update_id, generation) if update_id else None,
                agreement_version,
            )
            if opened is not None:
                return opened
        raise TransferError.of(TOO_LATE)

    async def _open(
        self,
        initiator: Principal,
        destination_account_id: str,
        resource_id: str,
        order_id: str,
        update_id: str | None,
        agreement_version: str,
    ) -> OrderState | None:
        """The order opened, or None if the run reached its worker too late and did nothing."""
        transfer = TransferInput(
            order_id=order_id,
            resource_id=resource_id,
            source_account_id=initiator.account_id,
            destination_account_id=destination_account_id,
            agreement_version=agreement_version,
            confirm_window=self.confirm_window,
        )
        transfer = self._attested(transfer, initiator, Action.INITIATE, order_id)
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
            async with _reaching_temporal():
                opened: OrderState = await self.client.execute_update_with_start_workflow(
                    "opened",
                    start_workflow_operation=start,
                    result_type=OrderState,
                    id=update_id,
                    rpc_timeout=RPC_TIMEOUT,
                )
            return opened
        except WorkflowUpdateFailedError as error:
            refused = from_update(error)
        except WorkflowAlreadyStartedError:
            # The order's run has closed: answer how it ended, or the rule that refused it.
            closed = await self.state(order_id)
            if closed.refusal is None:
                return closed
            refused = closed.refusal
        finally:
            _take_start_outcome(start)
        if refused.code is TOO_LATE.code:
            return None
        raise TransferError.of(refused)

    # An update id names one request: a retry with the same id (from its Idempotency-Key) answers the
    # first update's result instead of acting again.

    async def confirm(
        self,
        order_id: str,
        principal: Principal,
        receiving_config: ReceivingConfig | None = None,
        *,
        update_id: str | None = None,
    ) -> OrderState:
        request = ConfirmRequest(agreement_accepted=True, receiving_config=receiving_config)
        signed = self._attested(request, principal, Action.CONFIRM, order_id)
        return await self._update(order_id, ResourceTransfer.confirm, signed, update_id)

    async def cancel(
        self, order_id: str, principal: Principal, *, update_id: str | None = None
    ) -> OrderState:
        request = self._attested(CancelRequest(), principal, Action.CANCEL, order_id)
        return await self._update(order_id, ResourceTransfer.cancel, request, update_id)

    async def reject(
        self, order_id: str, principal: Principal, reason: str | None = None, *, update_id: str | None = None
    ) -> OrderState:
        request = self._attested(RejectRequest(reason=reason), principal, Action.REJECT, order_id)
        return await self._update(order_id, ResourceTransfer.reject, request, update_id)

    async def state(self, order_id: str) -> OrderState:
        """The workflow's view of the order (works on closed runs too)."""
        try:
            async with _reaching_temporal():
                return await self.handle(order_id).query(ResourceTransfer.status, rpc_timeout=RPC_TIMEOUT)
        except RPCError as error:
            if error.status is RPCStatusCode.NOT_FOUND:
                raise TransferError(ErrorCode.ORDER_NOT_FOUND) from None
            raise

    async def result(self, order_id: str) -> TransferResult:
        return await self.handle(order_id).result()

    def handle(self, order_id: str) -> WorkflowHandle[ResourceTransfer, TransferResult]:
        return self.client.get_workflow_handle_for(ResourceTransfer.run, order_id)

    async def _update(self, order_id: str, update: Any, request: Any, update_id: str | None) -> OrderState:
        try:
            for generation in range(GENERATIONS if update_id else 1):
                try:
                    async with _reaching_temporal():
                        state: OrderState = await self.handle(order_id).execute_update(
                            update,
                            request,
                            id=_generation(update_id, generation) if update_id else None,
                            rpc_timeout=RPC_TIMEOUT,
                        )
                    return state
                except WorkflowUpdateFailedError as error:
                    refused = from_update(error)
                    # The next id helps only a request still in time: the answer was an earlier one's.
                    if refused.code is not TOO_LATE.code or too_late_refusal(request.attestation, now()):
                        raise TransferError.of(refused) from None
            raise TransferError.of(TOO_LATE)
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
