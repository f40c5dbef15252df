"""The ResourceTransfer workflow's public messages: its input and result, signals, updates and query.

Clients (the starter's library, CLI and HTTP API) build these; the workflow reads them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from domain.attestation import Attestation
from domain.models import Id, OrderStatus, Principal, Product, ReceivingConfig, Refusal

WORKFLOW_TYPE = "ResourceTransfer"
DEFAULT_TASK_QUEUE = "resource-transfer"
DEFAULT_CONFIRM_WINDOW = timedelta(hours=24)


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AttestedMessage(Message):
    """A message that acts for a principal: it carries the service's attestation (domain.attestation),
    which names the principal; the workflow acts on it only once a worker has checked it."""

    attestation: Attestation | None = None

    @property
    def principal(self) -> Principal | None:
        """Who the message claims to act for (trusted only once the attestation is checked)."""
        return self.attestation.principal if self.attestation is not None else None

    def signed(self) -> dict[str, Any]:
        """The part of the message its attestation's request digest covers: everything but itself."""
        return self.model_dump(mode="json", exclude={"attestation"})


class TransferInput(AttestedMessage):
    order_id: Id
    resource_id: Id
    source_account_id: Id
    destination_account_id: Id
    agreement_version: str
    confirm_window: timedelta = DEFAULT_CONFIRM_WINDOW


class ConfirmRequest(AttestedMessage):
    agreement_accepted: bool
    receiving_config: ReceivingConfig | None = None


class CancelRequest(AttestedMessage):
    pass


class RejectRequest(AttestedMessage):
    reason: str | None = Field(default=None, max_length=512)


class OrderState(Message):
    """What the workflow knows of its order; `status` is None while the order is being opened.

    `refusal` is set when the order was never opened (a rule failed at initiate).
    """

    order_id: str
    resource_id: str
    source_account_id: str
    destination_account_id: str
    product: Product | None = None
    status: OrderStatus | None = None
    created_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None = None
    completed_at: datetime | None = None
    failure: Refusal | None = None
    refusal: Refusal | None = None
    # Who decided the order (an account id, OPERATOR or EXPIRY) and why (a reject's reason).
    decided_by: str | None = None
    reason: str | None = None
    # Refusals of one actor and action past the first 10 are counted here, not recorded one by one.
    unrecorded_refusals: int = 0


# decided_by of an operator's cancel and of the expiry
OPERATOR = "operator"
EXPIRY = "expiry"


class TransferResult(Message):
    order_id: str
    status: OrderStatus | None
    failure: Refusal | None = None
    refusal: Refusal | None = None
