"""Used risk-control verification steps: (account_id, time_step) is unique, so a code works once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from domain.codes import ErrorCode
from domain.refusals import TransferError
from domain.verification import verified_step
from store.accounts import AccountStore
from store.queries import get, insert_once
from store.tables import VerificationRow


class VerificationStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def verify(
        self,
        *,
        verification_id: str,
        account_id: str,
        code: str,
        received_at: datetime,
        order_id: str | None = None,
    ) -> None:
        """Checks a TOTP code at the time it was received (domain.verification) and uses its step up.

        A retry with the same verification_id passes without checking the code again; another
        verification of an already used step fails, also when both race.
        """
        if await self.account_of(verification_id) == account_id:
            return
        account = await AccountStore(self._session).get(account_id)
        if account is None:
            raise TransferError(ErrorCode.VERIFICATION_FAILED)
        step = verified_step(account, code, received_at)
        if not await self._use_step(verification_id, account_id, step, received_at, order_id):
            raise TransferError(ErrorCode.VERIFICATION_FAILED)

    async def account_of(self, verification_id: str) -> str | None:
        """The account a recorded verification belongs to (None: never recorded)."""
        row = await get(self._session, VerificationRow, verification_id)
        return row.account_id if row else None

    async def _use_step(
        self,
        verification_id: str,
        account_id: str,
        time_step: int,
        received_at: datetime,
        order_id: str | None,
    ) -> bool:
        """Records the step as used by this verification; False if another verification used it."""
        values = {
            "verification_id": verification_id,
            "account_id": account_id,
            "time_step": time_step,
            "received_at": received_at,
            "order_id": order_id,
        }
        if await insert_once(self._session, VerificationRow, values):
            return True
        # Either a concurrent retry of this verification won (fine) or the step is used up.
        return await self.account_of(verification_id) == account_id

    async def used_steps(self, account_id: str, steps: set[int]) -> set[int]:
        """The time steps among `steps` whose code the account has used."""
        rows = await self._session.scalars(
            select(VerificationRow.time_step).where(
                VerificationRow.account_id == account_id, VerificationRow.time_step.in_(steps)
            )
        )
        return set(rows)
