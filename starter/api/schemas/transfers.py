"""Bodies of the transfer routes (SPEC §5): initiate, the dry run, confirm / cancel / reject and orders."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
)

from domain.codes import ErrorCode
from domain.models import (
    Action,
    Id,
    OrderStatus,
    Outcome,
    Product,
    StepStatus,
)
from starter.api.schemas.common import (
    MAX_TAGS,
    Body,
    Code,
    Ids,
    ItemRefusal,
    Reason,
    Request,
    ResourceGroup,
    TagKey,
    TagValue,
)

# --- transfers: requests ------------------------------------------------------------------------------


class VerificationIn(Request):
    """The risk-control answer: the TOTP code the acting account's authenticator shows."""

    code: Code


class InitiateIn(Request):
    destination_account_id: Id
    resource_ids: Ids
    agreement_accepted: StrictBool
    verification: VerificationIn


class ValidateIn(Request):
    """The dry run takes the initiate body; agreement and verification are neither required nor checked."""

    destination_account_id: Id
    resource_ids: Ids
    agreement_accepted: StrictBool | None = None
    verification: VerificationIn | None = None


class ReceivingConfigIn(Request):
    """Applied to the resource after the hand-off."""

    resource_group: ResourceGroup | None = None
    tags: Annotated[dict[TagKey, TagValue], Field(max_length=MAX_TAGS)] = Field(default_factory=dict)


class ConfirmIn(Request):
    agreement_accepted: StrictBool
    verification: VerificationIn
    receiving_config: ReceivingConfigIn | None = None


class CancelIn(Request):
    """Cancel takes no field; an empty body or {} is accepted."""


class RejectIn(Request):
    reason: Reason | None = None


class BatchConfirmIn(ConfirmIn):
    order_ids: Ids


class BatchCancelIn(CancelIn):
    order_ids: Ids


class BatchRejectIn(RejectIn):
    order_ids: Ids


# --- transfers: responses -----------------------------------------------------------------------------


class Opened(Body):
    resource_id: str
    order_id: str
    status: OrderStatus


class NotOpened(Body):
    resource_id: str
    error: ItemRefusal


class InitiateOut(Body):
    results: list[Opened | NotOpened]


class ResourceBlockers(Body):
    resource_id: str
    blockers: list[ItemRefusal]
    warnings: list[ItemRefusal]


class ValidateOut(Body):
    results: list[ResourceBlockers]


class Decided(Body):
    order_id: str
    status: OrderStatus


class NotDecided(Body):
    order_id: str
    error: ItemRefusal


class BatchOut(Body):
    results: list[Decided | NotDecided]


class StepOut(Body):
    name: str
    status: StepStatus
    started_at: datetime
    finished_at: datetime | None
    attempts: int
    error: ItemRefusal | None


class EventOut(Body):
    at: datetime
    actor_account_id: str | None
    action: Action
    outcome: Outcome
    code: ErrorCode | None
    reason: str | None


class OrderOut(Body):
    """A transfer order with its detailed procedure: steps and events (refused attempts included)."""

    model_config = ConfigDict(from_attributes=True)

    order_id: str
    resource_id: str
    product: Product
    source_account_id: str
    destination_account_id: str
    status: OrderStatus
    created_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None
    completed_at: datetime | None
    failure: ItemRefusal | None
    agreement_version: str
    steps: list[StepOut]
    events: list[EventOut]


class OrderList(Body):
    items: list[OrderOut]
    next_cursor: str | None
