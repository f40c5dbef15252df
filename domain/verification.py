"""Risk-control verification: RFC 6238 TOTP (SHA-1, 6 digits, 30 s), ±1 step, checked at a given time."""

from __future__ import annotations

import hmac
from datetime import datetime

import pyotp

from domain.codes import ErrorCode
from domain.models import Account
from domain.refusals import TransferError

STEP_SECONDS = 30
WINDOW_STEPS = 1


def new_secret() -> str:
    return pyotp.random_base32()


def matching_time_step(secret: str, code: str, at: datetime) -> int | None:
    """The time step whose code `code` is, within ±1 step of `at`, or None.

    The caller records the step as used: a code is single-use per account and step.
    """
    if len(code) != 6 or not (code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = int(at.timestamp()) // STEP_SECONDS
    for step in range(current - WINDOW_STEPS, current + WINDOW_STEPS + 1):
        if hmac.compare_digest(totp.at(step * STEP_SECONDS), code):
            return step
    return None


def verified_step(account: Account, code: str, received_at: datetime) -> int:
    """The time step `code` proves for `account` at `received_at`; the caller records it as used.

    Refused: ACCOUNT_FROZEN (a frozen account takes part in nothing), VERIFICATION_FAILED.
    """
    if account.frozen:
        raise TransferError(ErrorCode.ACCOUNT_FROZEN)
    step = matching_time_step(account.mfa_secret, code, received_at)
    if step is None:
        raise TransferError(ErrorCode.VERIFICATION_FAILED)
    return step


def code_at(secret: str, at: datetime) -> str:
    """The code a user's authenticator shows at `at` (demo seeds and tests)."""
    return str(pyotp.TOTP(secret).at(at))
