"""Routes: organization (SPEC §5): the management account's read-only view of its members.

GET /v1/organization/resources lives with the resource routes (starter/routes/resources.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from domain.models import OrderStatus
from starter.deps import PrincipalDep, ServiceDep
from starter.routes.transfers import Cursor, Limit, order_list
from starter.schemas import ERROR_RESPONSES, OrderList, Role

router = APIRouter(prefix="/v1/organization", tags=["organization"], responses=ERROR_RESPONSES)


@router.get("/transfers", response_model=OrderList, summary="Orders of the member accounts (MA root)")
async def organization_transfers(
    principal: PrincipalDep,
    service: ServiceDep,
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
