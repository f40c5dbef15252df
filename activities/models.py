"""One input (and where there is one, result) model per activity."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from domain.attestation import Attestation
from domain.codes import ErrorCode
from domain.models import Action, Id, OrderStatus, Product, Refusal
from workflows.messages import AttestedMessage


class ActivityModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Attested(ActivityModel):
    """What an activity needs to check a message's attestation before it acts on the message."""

    attestation: Attestation | None
    signed: dict[str, Any]  # AttestedMessage.signed(): the part the request digest covers
    received_at: datetime  # when the message reached the workflow: the attestation must be valid then

    @classmethod
    def of(cls, message: AttestedMessage, received_at: datetime) -> Attested:
        return cls(attestation=message.attestation, signed=message.signed(), received_at=received_at)


class OpenOrderInput(ActivityModel):
    order_id: Id
    resource_id: Id
    source_account_id: Id
    destination_account_id: Id
    agreement_version: str
    attested: Attested
    created_at: datetime
    expires_at: datetime


class OpenOrderResult(ActivityModel):
    product: Product


class OperatorCancelInput(ActivityModel):
    order_id: Id
    at: datetime


class OperatorCancelResult(ActivityModel):
    """The order's status after an operator's cancel (None: no order was opened); transferring means
    ownership had moved and the hand-off is to be finished."""

    status: OrderStatus | None
    product: Product | None = None
    completed_at: datetime | None = None
    failure: Refusal | None = None


class AcceptConfirmationInput(ActivityModel):
    order_id: Id
    attested: Attested  # its signed part carries the receiving configuration
    at: datetime
    # names the refused-attempt event, so a retried activity records it once
    event_id: str


class DecideInput(ActivityModel):
    """A decision that ends a pending order: a cancel or reject (`action` and its attested `request`), or
    the expiry (neither)."""

    order_id: Id
    status: OrderStatus
    at: datetime
    action: Action | None = None
    attested: Attested | None = None
    reason: str | None = None  # a reject's


class RecordRefusalInput(ActivityModel):
    """A message the workflow refused; recorded with its claimed actor only when its attestation holds."""

    event_id: str
    order_id: Id
    action: Action
    attested: Attested
    code: ErrorCode
    at: datetime


class OrderStepInput(ActivityModel):
    order_id: Id
    at: datetime


class FinishOrderInput(ActivityModel):
    order_id: Id
    status: OrderStatus
    at: datetime
    failure: Refusal | None = None
