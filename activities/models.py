"""One input (and where there is one, result) model per activity."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from domain.codes import ErrorCode
from domain.models import Action, Id, OrderStatus, Principal, Product, ReceivingConfig, Refusal
from workflows.messages import Verification


class ActivityModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OpenOrderInput(ActivityModel):
    order_id: Id
    resource_id: Id
    initiator: Principal
    destination_account_id: Id
    agreement_version: str
    verification: Verification
    created_at: datetime
    expires_at: datetime


class OpenOrderResult(ActivityModel):
    product: Product


class AcceptConfirmationInput(ActivityModel):
    order_id: Id
    principal: Principal
    verification: Verification
    receiving_config: ReceivingConfig | None
    at: datetime
    # names the refused-attempt event, so a retried activity records it once
    event_id: str


class DecideInput(ActivityModel):
    order_id: Id
    status: OrderStatus
    actor_account_id: str | None
    at: datetime
    reason: str | None = None  # a reject's


class RecordRefusalInput(ActivityModel):
    event_id: str
    order_id: Id
    action: Action
    actor_account_id: str
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
