"""Organizations: a management account and its member accounts."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from store.queries import get, insert_once
from store.tables import OrganizationMemberRow, OrganizationRow


class OrganizationStore:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, organization_id: str) -> tuple[str, set[str]] | None:
        """The organization's management account and members."""
        row = await get(self._session, OrganizationRow, organization_id)
        if row is None:
            return None
        members = await self._session.scalars(
            select(OrganizationMemberRow.account_id).where(
                OrganizationMemberRow.organization_id == organization_id
            )
        )
        return row.management_account_id, set(members)

    async def add(self, organization_id: str, management_account_id: str) -> bool:
        values = {"id": organization_id, "management_account_id": management_account_id}
        return await insert_once(self._session, OrganizationRow, values)

    async def add_member(self, organization_id: str, account_id: str) -> bool:
        """False if the account is a member of an organization already."""
        values = {"organization_id": organization_id, "account_id": account_id}
        return await insert_once(self._session, OrganizationMemberRow, values)

    async def member_of_any(self, account_ids: set[str]) -> str | None:
        """One of the accounts that is in an organization already, if any."""
        return await self._session.scalar(
            select(OrganizationMemberRow.account_id)
            .where(OrganizationMemberRow.account_id.in_(account_ids))
            .limit(1)
        )

    async def managed_by(self, management_account_id: str) -> str | None:
        """The organization this account manages, if any."""
        return await self._session.scalar(
            select(OrganizationRow.id).where(OrganizationRow.management_account_id == management_account_id)
        )

    async def member_ids(self, management_account_id: str) -> set[str]:
        """The members of the organization this account manages (empty if it manages none)."""
        ids = await self._session.scalars(
            select(OrganizationMemberRow.account_id)
            .join(OrganizationRow, OrganizationRow.id == OrganizationMemberRow.organization_id)
            .where(OrganizationRow.management_account_id == management_account_id)
        )
        return set(ids)
