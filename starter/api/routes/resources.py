"""Routes: resources (SPEC §5): the caller's resources with their blockers, one resource, its refund quote
and its actions; the organization view of the management account lives in routes/organization.py and
provisioning in routes/admin.py. Each route calls ResourceService."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path
from pydantic import ValidationError

from domain.clock import now
from domain.codes import ErrorCode
from domain.models import ID_PATTERN, Principal, ResourceAction
from domain.refusals import TransferError
from starter.api.deps import IdempotencyKey, PrincipalDep, ResourceQuery, ResourceQueryDep, ResourcesDep
from starter.api.schemas.common import ERROR_RESPONSES
from starter.api.schemas.resources import (
    BODIES,
    ActionOut,
    ChargeOut,
    ListedResource,
    RefundQuoteOut,
    ResourceOut,
    ResourcePage,
)
from starter.services.resources import ResourceService

router = APIRouter(prefix="/v1/resources", tags=["resources"], responses=ERROR_RESPONSES)

ResourceIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="A resource id")]


async def resource_page(
    resources: ResourceService, principal: Principal, query: ResourceQuery, *, organization: bool = False
) -> ResourcePage:
    items, next_cursor = await resources.list(
        principal,
        organization=organization,
        transferable=query.transferable,
        limit=query.limit,
        cursor=query.cursor,
    )
    return ResourcePage(
        items=[
            ListedResource.of(item.resource, blockers=item.blockers, warnings=item.warnings) for item in items
        ],
        next_cursor=next_cursor,
    )


@router.get("", response_model=ResourcePage)
async def list_resources(
    principal: PrincipalDep, resources: ResourcesDep, query: ResourceQueryDep
) -> ResourcePage:
    """The caller's resources, each with the blockers a transfer of it would meet now."""
    return await resource_page(resources, principal, query)


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
    result = await resources.perform(
        action, resource_id, actor=principal, at=now(), request_key=idempotency_key, arguments=arguments
    )
    return ActionOut.of(
        result.resource, action=action.value, charges=[ChargeOut.of(c) for c in result.charges]
    )


def _arguments(action: ResourceAction, body: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return BODIES[action].model_validate(body or {}).model_dump()
    except ValidationError as error:
        problems = [
            {"loc": ["body", *(str(part) for part in e["loc"])], "msg": e["msg"]} for e in error.errors()
        ]
        raise TransferError(
            ErrorCode.VALIDATION_ERROR, f"invalid body for {action.value}", {"errors": problems}
        ) from None
