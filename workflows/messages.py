"""The ResourceTransfer workflow's public messages: its input and result, signals, updates and query.

Clients (the starter's library, CLI and HTTP API) build these; the workflow reads them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field

from domain.models import Id, OrderStatus, Principal, Product, ReceivingConfig, Refusal

WORKFLOW_TYPE = "ResourceTransfer"
DEFAULT_TASK_QUEUE = "resource-transfer"
DEFAULT_CONFIRM_WINDOW = timedelta(hours=24)


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Verification(Message):
    """A risk-control answer as the service received it.

    The code is checked against `received_at`, not against the time a worker gets to it, so an outage
    cannot invalidate a code typed in time. One `verification_id` covers every order of one request.
    """

    verification_id: str = Field(min_length=1, max_length=64)
    code: str = Field(max_length=16)
    received_at: datetime


class TransferInput(Message):
    order_id: Id
    resource_id: Id
    initiator: Principal
    destination_account_id: Id
    agreement_version: str
    verification: Verification
    confirm_window: timedelta = DEFAULT_CONFIRM_WINDOW

    @property
    def source_account_id(self) -> str:
        return self.initiator.account_id


class ConfirmRequest(Message):
    # Histories recorded before 2026-12 carry an unused `agreement_version`: ignored, so they replay.
    model_config = ConfigDict(frozen=True, extra="ignore")

    principal: Principal
    agreement_accepted: bool
    verification: Verification
    receiving_config: ReceivingConfig | None = None


class CancelRequest(Message):
    principal: Principal


class RejectRequest(Message):
    principal: Principal
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


class TransferResult(Message):
    order_id: str
    status: OrderStatus | None
    failure: Refusal | None = None
    refusal: Refusal | None = None
