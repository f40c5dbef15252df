"""Routes: organization (SPEC §5): the management account's read-only view of its members' orders and
resources."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from domain.models import OrderStatus, Role
from starter.api.deps import PrincipalDep, ResourcesDep, TransfersDep
from starter.api.routes.resources import Cursor, Limit, Transferable, resource_page
from starter.api.routes.transfers import order_list
from starter.api.schemas import ERROR_RESPONSES, OrderList, ResourcePage

router = APIRouter(prefix="/v1/organization", tags=["organization"], responses=ERROR_RESPONSES)


@router.get("/transfers", response_model=OrderList, summary="Orders of the member accounts (MA root)")
async def organization_transfers(
    principal: PrincipalDep,
    service: TransfersDep,
    role: Annotated[
        Role | None, Query(description="members as source or destination; both when absent")
    ] = None,
    status: Annotated[OrderStatus | None, Query()] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> OrderList:
    orders, next_cursor = await service.list(
        principal, role=role, status=status, limit=limit, cursor=cursor, organization=True
    )
    return order_list(orders, next_cursor)


@router.get("/resources", response_model=ResourcePage, summary="Resources of the member accounts (MA root)")
async def organization_resources(
    principal: PrincipalDep,
    resources: ResourcesDep,
    transferable: Transferable = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> ResourcePage:
    """The management account's view: its members' resources (read-only), blockers for their owners."""
    items, next_cursor = await resources.list(
        principal, organization=True, transferable=transferable, limit=limit, cursor=cursor
    )
    return resource_page(items, next_cursor)
