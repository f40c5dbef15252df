"""Accounts and their credentials (root tokens and RAM users): rows in, domain models out."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain.models import Account, Principal
from store.queries import get, insert_once, rowcount, table
from store.secret_box import SECRET_BOX, SecretBox
from store.tables import AccountRow, CredentialRow

ACCOUNTS = table(AccountRow)
_BY_IDS = select(ACCOUNTS).where(ACCOUNTS.c.id.in_(bindparam("account_ids", expanding=True)))


def token_digest(token: str) -> str:
    """Only the SHA-256 of a token is kept: a leaked table grants no access."""
    return hashlib.sha256(token.encode()).hexdigest()


class AccountStore:
    """TOTP secrets are sealed at rest (store.secret_box) by the box of the session's Database."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._box: SecretBox = session.info[SECRET_BOX]

    async def get(self, account_id: str, *, lock: bool = False) -> Account | None:
        row = await get(self._session, AccountRow, account_id, lock=lock)
        return None if row is None else self._account(row)

    async def get_many(self, account_ids: Collection[str]) -> dict[str, Account]:
        """The accounts of these ids that exist, by id: one statement."""
        found = await self._session.execute(_BY_IDS, {"account_ids": list(account_ids)})
        return {row.id: self._account(row) for row in found}

    def _account(self, row: Any) -> Account:
        account = Account.model_validate(row, from_attributes=True)
        return account.model_copy(update={"mfa_secret": self._box.open(row.mfa_secret)})

    async def add(self, account: Account, *, created_at: Any) -> bool:
        """Inserts the account; False if one with its id exists (a concurrent twin, say)."""
        sealed = self._box.seal(account.mfa_secret)
        values = {**account.model_dump(), "mfa_secret": sealed, "created_at": created_at}
        return await insert_once(self._session, AccountRow, values)

    async def update(self, account_id: str, changes: dict[str, Any]) -> None:
        """Writes `changes` onto an account the caller read under lock."""
        if changes:
            statement = update(ACCOUNTS).where(ACCOUNTS.c.id == account_id).values(**changes)
            await rowcount(self._session, statement)

    async def verified_of_entity(self, entity_id: str, *, other_than: str) -> int:
        """How many other accounts of the entity are verified. On PostgreSQL an advisory lock per entity
        serializes the entity's verifications until commit (a new account is an INSERT no row lock covers)."""
        if self._session.get_bind().dialect.name == "postgresql":
            key = func.hashtextextended(entity_id, 0)
            await self._session.execute(select(func.pg_advisory_xact_lock(key)))
        count = await self._session.scalar(
            select(func.count())
            .select_from(AccountRow)
            .where(
                AccountRow.entity_id == entity_id, AccountRow.verified.is_(True), AccountRow.id != other_than
            )
        )
        return count or 0

    async def existing_ids(self, account_ids: set[str]) -> set[str]:
        return set(await self._session.scalars(select(AccountRow.id).where(AccountRow.id.in_(account_ids))))

    # -- credentials ------------------------------------------------------------------------------

    async def credential(self, token: str) -> tuple[Principal, str | None] | None:
        """The principal a token names, and the credential's name."""
        row: CredentialRow | None = await self._session.scalar(
            select(CredentialRow).where(CredentialRow.token_sha256 == token_digest(token))
        )
        if row is None:
            return None
        principal = Principal(kind=row.kind, account_id=row.account_id, ram_user_id=row.ram_user_id)
        return principal, row.name

    async def add_credential(self, principal: Principal, *, token: str, name: str | None) -> bool:
        """Keeps sha256(token) for the principal; False if the token or the RAM user id is taken."""
        values = {
            "account_id": principal.account_id,
            "kind": principal.kind,
            "ram_user_id": principal.ram_user_id,
            "name": name,
            "token_sha256": token_digest(token),
        }
        return await insert_once(self._session, CredentialRow, values)
