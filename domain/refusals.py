"""The exception that carries a Refusal, from wherever a rule refuses to the HTTP envelope.

Across Temporal a refusal travels as an ApplicationError typed with its code: workflows.refusals is
the one place that converts in both directions.
"""

from __future__ import annotations

from typing import Any

from domain.codes import ErrorCode, default_message
from domain.models import Refusal


class TransferError(Exception):
    """A refused request or step: `refusal` says why (code, message in words, details)."""

    def __init__(self, code: ErrorCode, message: str | None = None, details: dict[str, Any] | None = None):
        self.refusal = Refusal(code=code, message=message or default_message(code), details=details or {})
        super().__init__(f"{code}: {self.refusal.message}")

    @classmethod
    def of(cls, refusal: Refusal) -> TransferError:
        return cls(refusal.code, refusal.message, refusal.details)

    @property
    def code(self) -> ErrorCode:
        return self.refusal.code

    @property
    def message(self) -> str:
        return self.refusal.message

    @property
    def details(self) -> dict[str, Any]:
        return self.refusal.details


RETRY_AFTER_S = 5


def unavailable(failing: str) -> TransferError:
    """SERVICE_UNAVAILABLE (503, Retry-After): a dependency (`temporal`, `database`) cannot be reached."""
    return TransferError(
        ErrorCode.SERVICE_UNAVAILABLE,
        f"The {failing} cannot be reached right now; try again shortly",
        {"retry_after_s": RETRY_AFTER_S, "failing": [failing]},
    )


def refusal(code: ErrorCode, message: str | None = None, **details: Any) -> Refusal:
    """A Refusal with the code's SPEC message unless told otherwise."""
    return Refusal(code=code, message=message or default_message(code), details=details)
