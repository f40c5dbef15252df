"""Bodies of the security events route (SPEC §3 "Verification attempts")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from domain.models import PrincipalKind
from domain.verification import SecurityEventKind
from starter.api.schemas.common import Body


class PrincipalOut(Body):
    kind: PrincipalKind
    account_id: str
    ram_user_id: str | None


class SecurityEventOut(Body):
    at: datetime
    kind: SecurityEventKind
    principal: PrincipalOut
    details: dict[str, Any]


class SecurityEventList(Body):
    items: list[SecurityEventOut]
    next_cursor: str | None
