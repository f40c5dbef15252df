"""Routes: transfers (SPEC §5): initiate, the dry run, reads, and confirm / cancel / reject, single and batch.

Thin: parse, call TransferService, shape the response. The time of receipt is taken first thing, so a
TOTP code is checked against the moment the request arrived.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import APIRouter, Body, Path

from domain.clock import now as received
from domain.models import ID_PATTERN, Order, OrderStatus, Principal, ReceivingConfig
from starter.api.deps import IdempotencyKey, OrderQuery, OrderQueryDep, PrincipalDep, TransfersDep
from starter.api.schemas.common import ERROR_RESPONSES
from starter.api.schemas.transfers import (
    BatchCancelIn,
    BatchConfirmIn,
    BatchOut,
    BatchRejectIn,
    CancelIn,
    ConfirmIn,
    Decided,
    InitiateIn,
    InitiateOut,
    NotDecided,
    NotOpened,
    Opened,
    OrderList,
    OrderOut,
    ReceivingConfigIn,
    RejectIn,
    ResourceBlockers,
    ValidateIn,
    ValidateOut,
)
from starter.services.transfers import InitiateItem, OrderItem, TransferService

router = APIRouter(prefix="/v1/transfers", tags=["transfers"], responses=ERROR_RESPONSES)

OrderId = Annotated[str, Path(pattern=ID_PATTERN, description="The transfer order id")]


def order_out(order: Order) -> OrderOut:
    return OrderOut.model_validate(order, from_attributes=True)


async def order_list(
    service: TransferService, principal: Principal, query: OrderQuery, *, organization: bool = False
) -> OrderList:
    orders, next_cursor = await service.list(
        principal,
        role=query.role,
        statuses=None if query.status is None else {query.status},
        limit=query.limit,
        cursor=query.cursor,
        organization=organization,
    )
    return OrderList(items=[order_out(o) for o in orders], next_cursor=next_cursor)


def receiving_config(config: ReceivingConfigIn | None) -> ReceivingConfig | None:
    if config is None:
        return None
    return ReceivingConfig(resource_group=config.resource_group, tags=config.tags)


def initiate_result(item: InitiateItem) -> Opened | NotOpened:
    if item.error is not None or item.order_id is None:
        assert item.error is not None, "an item without an order carries its refusal"
        return NotOpened(resource_id=item.resource_id, error=item.error)
    return Opened(
        resource_id=item.resource_id, order_id=item.order_id, status=item.status or OrderStatus.PENDING
    )


def batch_out(items: Sequence[OrderItem]) -> BatchOut:
    return BatchOut(
        results=[
            NotDecided(order_id=i.order_id, error=i.error)
            if i.error is not None
            else Decided(order_id=i.order_id, status=i.status or OrderStatus.PENDING)
            for i in items
        ]
    )


# --- initiate and the dry run ---------------------------------------------------------------------------


@router.post("", response_model=InitiateOut, summary="Initiate transfers: one order per resource")
async def initiate(
    body: InitiateIn, principal: PrincipalDep, service: TransfersDep, idempotency_key: IdempotencyKey = None
) -> InitiateOut:
    received_at = received()
    items = await service.initiate(
        principal,
        destination_account_id=body.destination_account_id,
        resource_ids=body.resource_ids,
        agreement_accepted=body.agreement_accepted,
        code=body.verification.code,
        received_at=received_at,
        idempotency_key=idempotency_key,
    )
    return InitiateOut(results=[initiate_result(item) for item in items])


@router.post("/validate", response_model=ValidateOut, summary="Dry run: every blocker of every resource")
async def validate(body: ValidateIn, principal: PrincipalDep, service: TransfersDep) -> ValidateOut:
    received_at = received()
    results = await service.validate(
        principal,
        destination_account_id=body.destination_account_id,
        resource_ids=body.resource_ids,
        received_at=received_at,
    )
    return ValidateOut(
        results=[
            ResourceBlockers(resource_id=r.resource_id, blockers=r.blockers, warnings=r.warnings)
            for r in results
        ]
    )


# --- reads ----------------------------------------------------------------------------------------------


@router.get("", response_model=OrderList, summary="The caller's orders, newest first")
async def list_orders(principal: PrincipalDep, service: TransfersDep, query: OrderQueryDep) -> OrderList:
    return await order_list(service, principal, query)


# --- batches (declared before /{order_id}/... so "batch" is never taken for an order id) ---------------


async def _confirm(
    service: TransferService,
    principal: Principal,
    order_ids: Sequence[str],
    body: ConfirmIn,
    idempotency_key: str | None,
) -> list[OrderItem]:
    received_at = received()
    return await service.confirm(
        principal,
        order_ids=order_ids,
        agreement_accepted=body.agreement_accepted,
        code=body.verification.code,
        receiving_config=receiving_config(body.receiving_config),
        received_at=received_at,
        idempotency_key=idempotency_key,
    )


@router.post("/batch/confirm", response_model=BatchOut, summary="Confirm orders (destination)")
async def batch_confirm(
    body: BatchConfirmIn,
    principal: PrincipalDep,
    service: TransfersDep,
    idempotency_key: IdempotencyKey = None,
) -> BatchOut:
    return batch_out(await _confirm(service, principal, body.order_ids, body, idempotency_key))


@router.post("/batch/cancel", response_model=BatchOut, summary="Cancel orders (source)")
async def batch_cancel(
    body: BatchCancelIn,
    principal: PrincipalDep,
    service: TransfersDep,
    idempotency_key: IdempotencyKey = None,
) -> BatchOut:
    return batch_out(
        await service.cancel(principal, order_ids=body.order_ids, idempotency_key=idempotency_key)
    )


@router.post("/batch/reject", response_model=BatchOut, summary="Reject orders (destination)")
async def batch_reject(
    body: BatchRejectIn,
    principal: PrincipalDep,
    service: TransfersDep,
    idempotency_key: IdempotencyKey = None,
) -> BatchOut:
    items = await service.reject(
        principal, order_ids=body.order_ids, reason=body.reason, idempotency_key=idempotency_key
    )
    return batch_out(items)


# --- one order: a batch of one (SPEC §5) ----------------------------------------------------------------


@router.get("/{order_id}", response_model=OrderOut, summary="One order with its steps and events")
async def get_order(order_id: OrderId, principal: PrincipalDep, service: TransfersDep) -> OrderOut:
    return order_out(await service.get(principal, order_id))


@router.post("/{order_id}/confirm", response_model=OrderOut, summary="Confirm the order (destination)")
async def confirm(
    order_id: OrderId,
    body: ConfirmIn,
    principal: PrincipalDep,
    service: TransfersDep,
    idempotency_key: IdempotencyKey = None,
) -> OrderOut:
    items = await _confirm(service, principal, [order_id], body, idempotency_key)
    return order_out(await service.answer(principal, items))


@router.post("/{order_id}/cancel", response_model=OrderOut, summary="Cancel the order (source)")
async def cancel(
    order_id: OrderId,
    principal: PrincipalDep,
    service: TransfersDep,
    body: Annotated[CancelIn | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> OrderOut:
    items = await service.cancel(principal, order_ids=[order_id], idempotency_key=idempotency_key)
    return order_out(await service.answer(principal, items))


@router.post("/{order_id}/reject", response_model=OrderOut, summary="Reject the order (destination)")
async def reject(
    order_id: OrderId,
    principal: PrincipalDep,
    service: TransfersDep,
    body: Annotated[RejectIn | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> OrderOut:
    reason = body.reason if body is not None else None
    items = await service.reject(
        principal, order_ids=[order_id], reason=reason, idempotency_key=idempotency_key
    )
    return order_out(await service.answer(principal, items))
