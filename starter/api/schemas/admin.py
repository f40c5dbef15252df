"""Bodies of the provisioning routes (SPEC §5 Provisioning)."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    model_validator,
)

from domain.models import (
    AccountKind,
    Id,
)
from starter.api.schemas.common import (
    MAX_MEMBERS,
    Body,
    EntityId,
    EntityName,
    Name,
    Request,
)

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
