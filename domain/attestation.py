"""Attestations (SPEC §5 "Trust boundary"): Temporal is not the API.

The service signs, for each order, what it checked after it authenticated the caller (and, for initiate
and confirm, verified the TOTP code): who acts, on which order (and for initiate which resource and
destination), which action, the digest of the rest of the request, and when. The worker acts on a message
only when `attestation_refusal` finds nothing wrong with its attestation, so a client that reaches
Temporal directly can neither act as another principal nor skip verification. An attestation carries no
code, token or secret: it may sit in a workflow's history.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field

from domain.codes import ErrorCode
from domain.models import Action, Frozen, Id, Principal, Refusal
from domain.refusals import refusal

LIFETIME = timedelta(minutes=5)
# The service answers its caller within 10 s (SPEC §5), 503 if nothing was done by then, and gives the
# code back: a message not acted on within this long after it was signed must not act later.
ACT_WITHIN = timedelta(seconds=10)
# The clocks of the API and the worker may differ a little; an attestation issued "in the future" by up to
# this much is still accepted.
CLOCK_SKEW = timedelta(seconds=30)


class Attestation(Frozen):
    principal: Principal
    action: Action
    order_id: Id
    resource_id: Id | None = None  # initiate
    destination_account_id: Id | None = None  # initiate
    request_digest: str = Field(max_length=64)
    issued_at: datetime
    expires_at: datetime
    signature: str = Field(default="", max_length=64)


def derive_key(secret: str, purpose: str) -> bytes:
    """One key per purpose from TRANSFER_SECRET_KEY, so that no two uses share a key."""
    return hmac.new(secret.encode(), f"resource-transfer/{purpose}".encode(), hashlib.sha256).digest()


def request_digest(request: Mapping[str, Any]) -> str:
    """The digest of the parts of a request the attestation does not name (agreement, receiving
    configuration, reason), so that a signed confirm cannot be replayed with another configuration."""
    return hashlib.sha256(_canonical(request)).hexdigest()


def attest(
    key: bytes,
    *,
    principal: Principal,
    action: Action,
    order_id: str,
    request: Mapping[str, Any],
    at: datetime,
    resource_id: str | None = None,
    destination_account_id: str | None = None,
) -> Attestation:
    unsigned = Attestation(
        principal=principal,
        action=action,
        order_id=order_id,
        resource_id=resource_id,
        destination_account_id=destination_account_id,
        request_digest=request_digest(request),
        issued_at=at,
        expires_at=at + LIFETIME,
    )
    return unsigned.model_copy(update={"signature": _signature(key, unsigned)})


def attestation_refusal(
    attestation: Attestation | None,
    key: bytes,
    *,
    action: Action,
    order_id: str,
    request: Mapping[str, Any],
    received_at: datetime,
    resource_id: str | None = None,
    destination_account_id: str | None = None,
) -> Refusal | None:
    """UNAUTHENTICATED when the message that carried `attestation` must not be acted on: missing, forged,
    not valid at `received_at` (when the message reached the workflow), or for another order, action,
    resource, destination or request."""
    if attestation is None:
        return _refused("the message carries no attestation")
    if not hmac.compare_digest(attestation.signature, _signature(key, attestation)):
        return _refused("the attestation's signature is not the service's")
    if not (attestation.issued_at - CLOCK_SKEW <= received_at <= attestation.expires_at):
        return _refused("the attestation was not valid when the message arrived")
    if attestation.expires_at - attestation.issued_at > LIFETIME:
        return _refused("the attestation's lifetime is longer than 5 minutes")
    expected = (action, order_id, resource_id, destination_account_id, request_digest(request))
    signed = (
        attestation.action,
        attestation.order_id,
        attestation.resource_id,
        attestation.destination_account_id,
        attestation.request_digest,
    )
    if signed != expected:
        return _refused("the attestation is for another order, action or request")
    return None


TOO_LATE = refusal(
    ErrorCode.SERVICE_UNAVAILABLE,
    "The request reached a worker after its caller was answered: nothing was done; send it again",
)


def too_late_refusal(attestation: Attestation, acted_at: datetime) -> Refusal | None:
    """SERVICE_UNAVAILABLE when the worker gets to a message after its caller was answered "not now"
    (the only SERVICE_UNAVAILABLE a workflow answers)."""
    if acted_at - attestation.issued_at <= ACT_WITHIN:
        return None
    return TOO_LATE


def _refused(why: str) -> Refusal:
    return refusal(ErrorCode.UNAUTHENTICATED, f"Refused: {why}")


def _signature(key: bytes, attestation: Attestation) -> str:
    claims = attestation.model_dump(mode="json", exclude={"signature"})
    return hmac.new(key, _canonical(claims), hashlib.sha256).hexdigest()


def _canonical(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()
