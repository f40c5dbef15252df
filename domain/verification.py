"""Risk-control verification: RFC 6238 TOTP (SHA-1, 6 digits, 30 s), ±1 step, checked at a given time;
and the attempt limit of SPEC §3 ("Verification attempts")."""

from __future__ import annotations

import hmac
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import pyotp

from domain.codes import ErrorCode
from domain.models import Frozen, Principal, Refusal
from domain.refusals import refusal

STEP_SECONDS = 30
WINDOW_STEPS = 1

MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
# How far back the failures that decide a lockout now can lie.
FAILURES_LOOKBACK = FAILURE_WINDOW + LOCKOUT


class SecurityEventKind(StrEnum):
    VERIFICATION_FAILED = "verification_failed"
    VERIFICATION_LOCKED = "verification_locked"


class SecurityEvent(Frozen):
    """`GET /v1/security-events`: `{at, kind, principal, details}`."""

    at: datetime
    kind: SecurityEventKind
    principal: Principal
    details: dict[str, Any]


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


def lockout_end(failures: Sequence[datetime]) -> datetime | None:
    """When the latest lockout the failed verifications caused ends (None: they caused none).

    A lockout starts at the 5th failure within 15 minutes and lasts 15 minutes; failures before a
    lockout's end do not count towards the next one.
    """
    end: datetime | None = None
    run: list[datetime] = []
    for at in sorted(failures):
        run = [f for f in run if at - f <= FAILURE_WINDOW] + [at]
        if len(run) >= MAX_FAILURES:
            end, run = at + LOCKOUT, []
    return end


def lockout_refusal(failures: Sequence[datetime], at: datetime) -> Refusal | None:
    """TOO_MANY_ATTEMPTS while the failures keep the account locked at `at`, with the seconds left."""
    end = lockout_end(failures)
    if end is None or at >= end:
        return None
    return refusal(ErrorCode.TOO_MANY_ATTEMPTS, retry_after_s=math.ceil((end - at).total_seconds()))


def code_at(secret: str, at: datetime) -> str:
    """The code a user's authenticator shows at `at` (demo seeds and tests)."""
    return str(pyotp.TOTP(secret).at(at))
