"""The request and response bodies of the HTTP API (SPEC §5).

Requests forbid unknown fields (VALIDATION_ERROR) and are at least as strict as the domain models they
become, so that bad input is refused here, as a 422, and never reaches the service half-checked.
Responses are plain shapes built from domain models; datetimes serialize as ISO 8601 UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StringConstraints,
    model_validator,
)

from domain.models import (
    AccountKind,
    Action,
    Id,
    OrderStatus,
    Outcome,
    Product,
    StepName,
    StepStatus,
)


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it for every backend alike.
    if "\x00" in value:
        raise ValueError("NUL characters are not allowed")
    return value


NoNul = AfterValidator(_no_nul)

Code = Annotated[str, StringConstraints(min_length=1, max_length=16), NoNul]
Name = Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]
EntityId = Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]
EntityName = Annotated[str, StringConstraints(min_length=1, max_length=256), NoNul]
ResourceGroup = Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]
TagKey = Annotated[str, StringConstraints(min_length=1, max_length=128), NoNul]
TagValue = Annotated[str, StringConstraints(max_length=256), NoNul]
Reason = Annotated[str, StringConstraints(max_length=512), NoNul]


MAX_BATCH = 100
MAX_TAGS = 20
MAX_MEMBERS = 1000

Ids = Annotated[list[Id], Field(min_length=1, max_length=MAX_BATCH)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Body(BaseModel):
    """A response body."""


# --- errors -------------------------------------------------------------------------------------------


class ErrorDetail(Body):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorEnvelope(Body):
    """Every error: a stable SPEC code, a human message and structured details."""

    error: ErrorDetail


class ItemErrorOut(Body):
    """The error of one item of a batch: its code and message only."""

    code: str
    message: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": description}
    for status, description in (
        (401, "UNAUTHENTICATED"),
        (403, "Refused for the caller (RAM user, verification, party, read-only access)"),
        (404, "Not found (or not visible to the caller)"),
        (409, "Conflict with the order's or resource's state"),
        (422, "VALIDATION_ERROR or a rule of SPEC §3"),
    )
}


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
    error: ItemErrorOut


class InitiateOut(Body):
    results: list[Opened | NotOpened]


class ResourceBlockers(Body):
    resource_id: str
    blockers: list[ItemErrorOut]


class ValidateOut(Body):
    results: list[ResourceBlockers]


class Decided(Body):
    order_id: str
    status: OrderStatus


class NotDecided(Body):
    order_id: str
    error: ItemErrorOut


class BatchOut(Body):
    results: list[Decided | NotDecided]


class FailureOut(Body):
    code: str
    message: str


class StepOut(Body):
    name: StepName
    status: StepStatus
    started_at: datetime
    finished_at: datetime | None
    attempts: int
    error: FailureOut | None


class EventOut(Body):
    at: datetime
    actor_account_id: str | None
    action: Action
    outcome: Outcome
    code: str | None


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
    failure: FailureOut | None
    agreement_version: str
    steps: list[StepOut]
    events: list[EventOut]


class OrderList(Body):
    items: list[OrderOut]
    next_cursor: str | None


Role = Literal["source", "destination"]


# --- admin --------------------------------------------------------------------------------------------


class AccountIn(Request):
    id: Id
    name: Name
    kind: AccountKind
    verified: StrictBool = False
    entity_id: EntityId | None = None
    entity_name: EntityName | None = None
    frozen: StrictBool = False

    @model_validator(mode="after")
    def _identity(self) -> AccountIn:
        if self.verified and not (self.entity_id and self.entity_name):
            raise ValueError("a verified account needs entity_id and entity_name")
        return self


class AccountPatch(Request):
    verified: StrictBool | None = None
    frozen: StrictBool | None = None
    entity_name: EntityName | None = None


class AccountOut(Body):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    kind: AccountKind
    verified: bool
    entity_id: str | None
    entity_name: str | None
    frozen: bool


class ProvisionedAccountOut(AccountOut):
    """The account with its root token; the MFA secret is shown at creation only (null on a repeat)."""

    api_token: str
    mfa_secret: str | None


class RamUserIn(Request):
    name: Name


class RamUserOut(Body):
    id: str
    account_id: str
    name: str
    api_token: str


class OrganizationIn(Request):
    id: Id
    management_account_id: Id
    member_account_ids: Annotated[list[Id], Field(max_length=MAX_MEMBERS)]


class OrganizationOut(Body):
    id: str
    management_account_id: str
    member_account_ids: list[str]
