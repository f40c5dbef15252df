"""Shared field types, the request and response bases and the error envelope of the HTTP API."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)

from domain.models import (
    Id,
    Refusal,
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


def _code_and_message(refusal: Refusal) -> dict[str, str]:
    return {"code": refusal.code.value, "message": refusal.message}


# A batch item's error and a blocker show the Refusal's code and message; details are for HTTP errors.
ItemRefusal = Annotated[Refusal, PlainSerializer(_code_and_message, return_type=dict[str, str])]


class ErrorEnvelope(Body):
    """Every error: a stable SPEC code, a human message and structured details (domain.models.Refusal,
    the one refusal type; a batch item's error, a blocker, a step's error and an order's failure show
    its code and message)."""

    error: Refusal


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
