"""Idempotency keys of the HTTP API (SPEC §5): the first answer to a keyed POST, by principal and key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from store.queries import get, insert_once, rowcount
from store.secret_box import SECRET_BOX, SecretBox
from store.tables import IdempotencyKeyRow


@dataclass(frozen=True)
class KeyedRequest:
    fingerprint: str
    created_at: datetime
    status: int | None  # None while the first request is in progress
    body: bytes | None
    content_type: str | None


class IdempotencyStore:
    """First answers are kept sealed (store.secret_box): an account's provisioning answer holds its
    token and TOTP secret."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._box: SecretBox = session.info[SECRET_BOX]

    async def claim(self, scope: str, key: str, fingerprint: str, *, at: datetime) -> bool:
        """Records the key as taken by this request; False if it was taken before."""
        values = {"scope": scope, "key": key, "fingerprint": fingerprint, "created_at": at}
        return await insert_once(self._session, IdempotencyKeyRow, values)

    async def get(self, scope: str, key: str) -> KeyedRequest | None:
        row = await get(self._session, IdempotencyKeyRow, (scope, key))
        if row is None:
            return None
        body = self._box.open_bytes(row.body) if row.body is not None else None
        return KeyedRequest(row.fingerprint, row.created_at, row.status, body, row.content_type)

    async def answer(
        self, scope: str, key: str, *, status: int, body: bytes, content_type: str | None
    ) -> None:
        await self._session.execute(
            update(IdempotencyKeyRow)
            .where(IdempotencyKeyRow.scope == scope, IdempotencyKeyRow.key == key)
            .values(status=status, body=self._box.seal_bytes(body), content_type=content_type)
        )

    async def take_over(
        self, scope: str, key: str, fingerprint: str, *, claimed_at: datetime, at: datetime
    ) -> bool:
        """Claims again, for this request, a key whose claim of `claimed_at` is given up (its request's
        process died unanswered, or its 24 hours are over); False if another request took it first."""
        statement = (
            update(IdempotencyKeyRow)
            .where(
                IdempotencyKeyRow.scope == scope,
                IdempotencyKeyRow.key == key,
                IdempotencyKeyRow.created_at == claimed_at,
            )
            .values(fingerprint=fingerprint, created_at=at, status=None, body=None, content_type=None)
        )
        return await rowcount(self._session, statement) == 1

    async def release(self, scope: str, key: str) -> None:
        """Forgets the key (its request did nothing, or its 24 hours are over)."""
        await self._session.execute(
            delete(IdempotencyKeyRow).where(IdempotencyKeyRow.scope == scope, IdempotencyKeyRow.key == key)
        )
