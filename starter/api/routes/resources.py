"""Routes: resources (SPEC §5): the caller's resources with their blockers, one resource, its refund quote
and its actions; the organization view of the management account lives in routes/organization.py and
provisioning in routes/admin.py. Each route calls ResourceService."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import ValidationError

from domain.clock import now
from domain.codes import ErrorCode
from domain.models import ID_PATTERN, ResourceAction
from domain.refusals import TransferError
from starter.api.deps import IdempotencyKey, PrincipalDep, ResourcesDep
from starter.api.schemas import (
    BODIES,
    ERROR_RESPONSES,
    ActionBody,
    ActionOut,
    ChargeOut,
    ListedResource,
    RefundQuoteOut,
    ResourceOut,
    ResourcePage,
)
from starter.services.resources import ActionResult, ResourceService
from starter.services.resources import ListedResource as Listed

router = APIRouter(prefix="/v1/resources", tags=["resources"], responses=ERROR_RESPONSES)

ResourceIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="A resource id")]
Transferable = Annotated[
    bool | None,
    Query(description="true: only resources without blockers; false: only those with blockers"),
]
Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1-100")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")]


def resource_page(items: list[Listed], next_cursor: str | None) -> ResourcePage:
    return ResourcePage(
        items=[ListedResource.of(item.resource, blockers=item.blockers) for item in items],
        next_cursor=next_cursor,
    )


@router.get("", response_model=ResourcePage)
async def list_resources(
    principal: PrincipalDep,
    resources: ResourcesDep,
    transferable: Transferable = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> ResourcePage:
    """The caller's resources, each with the blockers a transfer of it would meet now."""
    items, next_cursor = await resources.list(
        principal, transferable=transferable, limit=limit, cursor=cursor
    )
    return resource_page(items, next_cursor)


@router.get("/{resource_id}", response_model=ResourceOut)
async def get_resource(resource_id: ResourceIdPath, principal: PrincipalDep, resources: ResourcesDep) -> Any:
    return ResourceOut.of(await resources.get(resource_id, actor=principal))


@router.get("/{resource_id}/refund-quote", response_model=RefundQuoteOut)
async def refund_quote(resource_id: ResourceIdPath, principal: PrincipalDep, resources: ResourcesDep) -> Any:
    """Every charge of the resource with what it would refund its current owner now, and the total."""
    quote = await resources.refund_quote(resource_id, actor=principal, at=now())
    return RefundQuoteOut.of(resource_id, quote)


@router.post("/{resource_id}/actions/{action}", response_model=ActionOut)
async def act(
    resource_id: ResourceIdPath,
    action: ResourceAction,
    principal: PrincipalDep,
    resources: ResourcesDep,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[
        dict[str, Any] | None,
        Body(
            description="Per action: attach {instance_id}, renew {months}, upgrade and downgrade "
            '{monthly_price: "12.50"}, change_bandwidth {bandwidth_mbps}, convert_billing '
            "{billing?, months?}, change_os {image_id?}; the others take none."
        ),
    ] = None,
) -> Any:
    """Operates the resource. Refused with RESOURCE_LOCKED_FOR_TRANSFER while a transfer order holds it
    (start only once the order is confirmed; stop and detach stay allowed)."""
    arguments = _arguments(action, body)
    result = await _perform(resources, action, arguments, resource_id, principal, idempotency_key)
    return ActionOut.of(
        result.resource, action=action.value, charges=[ChargeOut.of(c) for c in result.charges]
    )


def _arguments(action: ResourceAction, body: dict[str, Any] | None) -> Any:
    try:
        return BODIES[action].model_validate(body or {})
    except ValidationError as error:
        problems = [
            {"loc": ["body", *(str(part) for part in e["loc"])], "msg": e["msg"]} for e in error.errors()
        ]
        raise TransferError(
            ErrorCode.VALIDATION_ERROR, f"invalid body for {action.value}", {"errors": problems}
        ) from None


async def _perform(
    resources: ResourceService,
    action: ResourceAction,
    arguments: ActionBody,
    resource_id: str,
    actor: Any,
    key: str | None,
) -> ActionResult:
    at = now()
    args: Any = arguments
    match action:
        case ResourceAction.STOP:
            return await resources.stop(resource_id, actor=actor)
        case ResourceAction.START:
            return await resources.start(resource_id, actor=actor)
        case ResourceAction.ATTACH:
            return await resources.attach(resource_id, actor=actor, instance_id=args.instance_id)
        case ResourceAction.DETACH:
            return await resources.detach(resource_id, actor=actor)
        case ResourceAction.RENEW:
            return await resources.renew(resource_id, actor=actor, months=args.months, at=at, request_key=key)
        case ResourceAction.UPGRADE:
            price = Decimal(args.monthly_price)
            return await resources.upgrade(
                resource_id, actor=actor, monthly_price=price, at=at, request_key=key
            )
        case ResourceAction.DOWNGRADE:
            price = Decimal(args.monthly_price)
            return await resources.downgrade(resource_id, actor=actor, monthly_price=price, at=at)
        case ResourceAction.RELEASE:
            return await resources.release(resource_id, actor=actor, at=at)
        case ResourceAction.CHANGE_OS:
            return await resources.change_os(resource_id, actor=actor)
        case ResourceAction.CHANGE_BANDWIDTH:
            return await resources.change_bandwidth(
                resource_id, actor=actor, bandwidth_mbps=args.bandwidth_mbps
            )
        case ResourceAction.CONVERT_BILLING:
            return await resources.convert_billing(
                resource_id, actor=actor, at=at, to=args.billing, months=args.months or 1, request_key=key
            )
    raise AssertionError(f"unhandled action {action}")
