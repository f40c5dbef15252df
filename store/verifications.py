"""Verifications of accounts: the TOTP steps used up ((account_id, time_step) is unique, so a code works
once) and the security events (failures and lockouts) that the attempt limit counts."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Principal
from domain.verification import SecurityEvent, SecurityEventKind
from store.queries import insert_once
from store.tables import SecurityEventRow, VerificationRow


class VerificationStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def use_step(self, account_id: str, time_step: int, received_at: datetime) -> bool:
        """Records the step as used; False if it was used before (also when two verifications race)."""
        values = {
            "verification_id": uuid4().hex,
            "account_id": account_id,
            "time_step": time_step,
            "received_at": received_at,
            "order_id": None,
        }
        return await insert_once(self._session, VerificationRow, values)

    async def release_step(self, account_id: str, time_step: int) -> None:
        await self._session.execute(
            delete(VerificationRow).where(
                VerificationRow.account_id == account_id, VerificationRow.time_step == time_step
            )
        )

    async def used_steps(self, account_id: str, steps: set[int]) -> set[int]:
        """The time steps among `steps` whose code the account has used."""
        rows = await self._session.scalars(
            select(VerificationRow.time_step).where(
                VerificationRow.account_id == account_id, VerificationRow.time_step.in_(steps)
            )
        )
        return set(rows)

    async def failures_since(self, account_id: str, since: datetime) -> list[datetime]:
        rows = await self._session.scalars(
            select(SecurityEventRow.at).where(
                SecurityEventRow.account_id == account_id,
                SecurityEventRow.kind == SecurityEventKind.VERIFICATION_FAILED,
                SecurityEventRow.at >= since,
            )
        )
        return list(rows)

    async def add_event(
        self,
        account_id: str,
        kind: SecurityEventKind,
        *,
        at: datetime,
        principal: Principal,
        details: dict[str, Any] | None = None,
    ) -> None:
        self._session.add(
            SecurityEventRow(
                account_id=account_id,
                at=at,
                kind=kind,
                principal=principal.model_dump(mode="json"),
                details=details or {},
            )
        )

    async def events(
        self, account_id: str, *, limit: int, after: tuple[datetime, int] | None = None
    ) -> tuple[list[SecurityEvent], tuple[datetime, int] | None]:
        """The account's security events, newest first, and the key of the next page (None: the last)."""
        query = select(SecurityEventRow).where(SecurityEventRow.account_id == account_id)
        if after is not None:
            at, row_id = after
            query = query.where(
                (SecurityEventRow.at < at) | ((SecurityEventRow.at == at) & (SecurityEventRow.id < row_id))
            )
        rows = list(
            await self._session.scalars(
                query.order_by(SecurityEventRow.at.desc(), SecurityEventRow.id.desc()).limit(limit + 1)
            )
        )
        page = [
            SecurityEvent(
                at=row.at,
                kind=row.kind,
                principal=Principal.model_validate(row.principal),
                details=row.details,
            )
            for row in rows[:limit]
        ]
        more = len(rows) > limit
        return page, (rows[limit - 1].at, rows[limit - 1].id) if more else None
