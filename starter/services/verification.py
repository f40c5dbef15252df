"""VerificationService: the risk-control check of the acting account (SPEC §3), done by the service
before it signs anything, and the account's security events.

A code is checked at the moment the request was received; a right one is used up, a wrong one is a
`verification_failed` event; the 5th failure within 15 minutes locks verification for 15 minutes
(`verification_locked`), during which every verification is TOO_MANY_ATTEMPTS, a right code included.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from domain import verification
from domain.codes import ErrorCode
from domain.models import Principal, PrincipalKind, Refusal
from domain.paging import decode_cursor, encode_cursor
from domain.refusals import TransferError, refusal
from domain.verification import SecurityEvent, SecurityEventKind
from store.accounts import AccountStore
from store.db import Database
from store.verifications import VerificationStore


@dataclass(frozen=True)
class Verified:
    """A code used up: which account's step, so that a request that did nothing can give it back."""

    account_id: str
    time_step: int


class VerificationService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def verify(self, principal: Principal, code: str, received_at: datetime) -> Verified:
        """Uses the code up, or refuses with VERIFICATION_FAILED or TOO_MANY_ATTEMPTS; a failure is
        recorded (committed) before the refusal is raised."""
        async with self._db.write() as session:
            checked = await _check(
                VerificationStore(session), AccountStore(session), principal, code, received_at
            )
        if isinstance(checked, Refusal):
            raise TransferError.of(checked)
        return checked

    async def release(self, verified: Verified) -> None:
        """Gives a used code back: the request it verified did nothing (SPEC §5, outages)."""
        async with self._db.write() as session:
            await VerificationStore(session).release_step(verified.account_id, verified.time_step)

    async def security_events(
        self, principal: Principal, *, limit: int, cursor: str | None
    ) -> tuple[list[SecurityEvent], str | None]:
        """The caller's account's security events, newest first (the account's root only)."""
        if principal.kind is not PrincipalKind.ROOT:
            raise TransferError(
                ErrorCode.RAM_USER_NOT_ALLOWED, "Only the account's root may read its security events"
            )
        after = None
        if cursor is not None:
            at, key = decode_cursor(cursor)
            if not key.isdigit():
                raise TransferError(ErrorCode.VALIDATION_ERROR, "malformed cursor")
            after = (at, int(key))
        async with self._db.read() as session:
            page, last = await VerificationStore(session).events(
                principal.account_id, limit=limit, after=after
            )
        return page, encode_cursor(last[0], str(last[1])) if last is not None else None


async def _check(
    verifications: VerificationStore,
    accounts: AccountStore,
    principal: Principal,
    code: str,
    received_at: datetime,
) -> Verified | Refusal:
    # The account's row lock serializes its verifications, so the 5th failure is counted once.
    account = await accounts.get(principal.account_id, lock=True)
    if account is None:
        return refusal(ErrorCode.VERIFICATION_FAILED)
    failures = await verifications.failures_since(account.id, received_at - verification.FAILURES_LOOKBACK)
    locked = verification.lockout_refusal(failures, received_at)
    if locked is not None:
        return locked
    step = verification.matching_time_step(account.mfa_secret, code, received_at)
    if step is not None and await verifications.use_step(account.id, step, received_at):
        return Verified(account_id=account.id, time_step=step)
    await verifications.add_event(
        account.id, SecurityEventKind.VERIFICATION_FAILED, at=received_at, principal=principal
    )
    if verification.lockout_end(failures) != (end := verification.lockout_end([*failures, received_at])):
        assert end is not None
        await verifications.add_event(
            account.id,
            SecurityEventKind.VERIFICATION_LOCKED,
            at=received_at,
            principal=principal,
            details={"until": end.isoformat(), "failures": verification.MAX_FAILURES},
        )
    return refusal(ErrorCode.VERIFICATION_FAILED)
