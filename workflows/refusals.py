"""A Refusal across Temporal: the one module that turns it into an ApplicationError and back.

An activity raises `application_error(refusal)`: never retried, benign (the SDK logs it as an expected
outcome, not a failure with a traceback), typed with the SPEC code. The workflow catches
ACTIVITY_FAILURES and reads an activity's refusal with `from_activity`, and answers an update's caller
with `application_error` again; the client reads it with `from_update`.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ActivityError, ApplicationError, ApplicationErrorCategory

from domain.codes import parse_code
from domain.models import Refusal


def application_error(refusal: Refusal) -> ApplicationError:
    return ApplicationError(
        refusal.message,
        refusal.model_dump(mode="json"),
        type=refusal.code,
        non_retryable=True,
        category=ApplicationErrorCategory.BENIGN,
    )


def _refusal(cause: BaseException | None) -> Refusal | None:
    if not isinstance(cause, ApplicationError) or (code := parse_code(cause.type)) is None:
        return None
    payload: dict[str, Any] = cause.details[0] if cause.details and isinstance(cause.details[0], dict) else {}
    return Refusal(code=code, message=cause.message, details=payload.get("details") or {})


# What an activity's failure is in the workflow: an ActivityError wrapping it (an activity), or the
# ApplicationError itself (a local activity).
ACTIVITY_FAILURES = (ActivityError, ApplicationError)


def from_activity(error: ActivityError | ApplicationError) -> Refusal:
    """The business refusal an activity raised; anything else is not ours to turn into an order status."""
    refusal = _refusal(error.cause if isinstance(error, ActivityError) else error)
    if refusal is None:
        raise error
    return refusal


def from_update(error: WorkflowUpdateFailedError) -> Refusal:
    """The refusal an update failed with; anything else propagates."""
    refusal = _refusal(error.cause)
    if refusal is None:
        raise error
    return refusal
