"""Routes: organization (SPEC §5): the management account's read-only view of its members' orders and
resources."""

from __future__ import annotations

from fastapi import APIRouter

from starter.api.deps import OrderQueryDep, PrincipalDep, ResourceQueryDep, ResourcesDep, TransfersDep
from starter.api.routes.resources import resource_page
from starter.api.routes.transfers import order_list
from starter.api.schemas.common import ERROR_RESPONSES
from starter.api.schemas.resources import ResourcePage
from starter.api.schemas.transfers import OrderList

router = APIRouter(prefix="/v1/organization", tags=["organization"], responses=ERROR_RESPONSES)


@router.get("/transfers", response_model=OrderList, summary="Orders of the member accounts (MA root)")
async def organization_transfers(
    principal: PrincipalDep, service: TransfersDep, query: OrderQueryDep
) -> OrderList:
    """The management account's view of its members' orders; `role` is the members' side."""
    return await order_list(service, principal, query, organization=True)


@router.get("/resources", response_model=ResourcePage, summary="Resources of the member accounts (MA root)")
async def organization_resources(
    principal: PrincipalDep, resources: ResourcesDep, query: ResourceQueryDep
) -> ResourcePage:
    """The management account's view: its members' resources (read-only), blockers for their owners."""
    return await resource_page(resources, principal, query, organization=True)
