"""IdempotencyService: the first answer of a keyed POST, replayed to its repeats (SPEC §5).

A key is scoped to the principal that sent it and lives 24 hours; the same key with another method,
path or body is IDEMPOTENCY_KEY_REUSED. A repeat that arrives while the first request is still being
answered waits for that answer. An answer that says "not now" (5xx) is not kept: the request did
nothing, and its retry acts.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.codes import ErrorCode
from domain.refusals import RETRY_AFTER_S, TransferError
from store.db import Database
from store.idempotency import IdempotencyStore, KeyedRequest

KEY_LIFETIME = timedelta(hours=24)
# A request is answered within 10 s (SPEC §5); a claim left unanswered this long belongs to a process
# that died with it (a crash between the claim and the answer), and its retry may take the key over.
ABANDONED_AFTER = timedelta(seconds=30)
# A repeat waits this long for the first request's answer (within SPEC §5's 10 s).
WAIT_FOR_FIRST = timedelta(seconds=8)
POLL = 0.05


@dataclass(frozen=True)
class FirstAnswer:
    status: int
    body: bytes
    content_type: str | None


def given_up(first: KeyedRequest, fingerprint: str, at: datetime) -> bool:
    """The key's first request is over without an answer to replay: its 24 hours have passed, or its
    process died before it answered (the same request may then act)."""
    age = at - first.created_at
    return age >= KEY_LIFETIME or (
        first.status is None and first.fingerprint == fingerprint and age >= ABANDONED_AFTER
    )


class IdempotencyService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def begin(self, scope: str, key: str, fingerprint: str, *, at: datetime) -> FirstAnswer | None:
        """None: the key is this request's, which goes ahead; else the first request's answer."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_FIRST.total_seconds()
        while True:
            async with self._db.write() as session:
                keys = IdempotencyStore(session)
                if await keys.claim(scope, key, fingerprint, at=at):
                    return None
                first = await keys.get(scope, key)
                if (
                    first is not None
                    and given_up(first, fingerprint, at)
                    and await keys.take_over(scope, key, fingerprint, claimed_at=first.created_at, at=at)
                ):
                    return None
            if first is not None:
                if first.fingerprint != fingerprint:
                    raise TransferError(ErrorCode.IDEMPOTENCY_KEY_REUSED)
                if first.status is not None and first.body is not None:
                    return FirstAnswer(first.status, first.body, first.content_type)
            if loop.time() >= deadline:
                raise TransferError(
                    ErrorCode.SERVICE_UNAVAILABLE,
                    "The first request with this Idempotency-Key is still being answered; try again shortly",
                    {"retry_after_s": RETRY_AFTER_S},
                )
            await asyncio.sleep(POLL)

    async def forget(self, scope: str, key: str) -> None:
        """Frees the key of a request that got no answer to keep."""
        async with self._db.write() as session:
            await IdempotencyStore(session).release(scope, key)

    async def finish(
        self, scope: str, key: str, *, status: int, body: bytes, content_type: str | None
    ) -> None:
        async with self._db.write() as session:
            keys = IdempotencyStore(session)
            if status >= 500:
                await keys.release(scope, key)
            else:
                await keys.answer(scope, key, status=status, body=body, content_type=content_type)
