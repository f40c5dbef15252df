"""Routes: the caller's account's security events (SPEC §3 "Verification attempts"), its root only."""

from __future__ import annotations

from fastapi import APIRouter

from starter.api.deps import PageQueryDep, PrincipalDep, VerificationDep
from starter.api.schemas.common import ERROR_RESPONSES
from starter.api.schemas.security_events import SecurityEventList, SecurityEventOut

router = APIRouter(prefix="/v1/security-events", tags=["security events"], responses=ERROR_RESPONSES)


@router.get("", response_model=SecurityEventList, summary="Failed verifications and lockouts, newest first")
async def list_security_events(
    principal: PrincipalDep, service: VerificationDep, query: PageQueryDep
) -> SecurityEventList:
    events, next_cursor = await service.security_events(principal, limit=query.limit, cursor=query.cursor)
    return SecurityEventList(
        items=[SecurityEventOut.model_validate(e, from_attributes=True) for e in events],
        next_cursor=next_cursor,
    )
