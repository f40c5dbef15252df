"""Routes: admin provisioning (SPEC §5): accounts, RAM users, organizations, resources, auto-renewal.

Every route here needs the admin token (TRANSFER_ADMIN_TOKEN); any other token is UNAUTHENTICATED.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Response, status

from domain.clock import now
from domain.models import ID_PATTERN, Account
from starter.api.deps import IdempotencyKey, ProvisioningDep, ResourcesDep, require_admin
from starter.api.schemas.admin import (
    AccountIn,
    AccountOut,
    AccountPatch,
    OrganizationIn,
    OrganizationOut,
    ProvisionedAccountOut,
    RamUserIn,
    RamUserOut,
)
from starter.api.schemas.common import ERROR_RESPONSES
from starter.api.schemas.resources import ChargeOut, NewResource, ResourceOut

router = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)], responses=ERROR_RESPONSES
)

AccountId = Annotated[str, Path(pattern=ID_PATTERN, description="The account id")]
ResourceId = Annotated[str, Path(pattern=ID_PATTERN, description="A resource id")]


def account_out(account: Account) -> AccountOut:
    return AccountOut.model_validate(account, from_attributes=True)


@router.post(
    "/accounts",
    response_model=ProvisionedAccountOut,
    status_code=status.HTTP_201_CREATED,
    summary="Register an account: answers its root token and, at creation only, its MFA secret",
    responses={200: {"model": ProvisionedAccountOut, "description": "The account existed with these fields"}},
)
async def create_account(
    body: AccountIn, service: ProvisioningDep, response: Response
) -> ProvisionedAccountOut:
    provisioned = await service.register_account(
        account_id=body.id,
        name=body.name,
        kind=body.kind,
        verified=body.verified,
        entity_id=body.entity_id,
        entity_name=body.entity_name,
        frozen=body.frozen,
    )
    if not provisioned.created:
        response.status_code = status.HTTP_200_OK
    return ProvisionedAccountOut(
        **account_out(provisioned.account).model_dump(),
        api_token=provisioned.api_token,
        mfa_secret=provisioned.mfa_secret,
    )


@router.patch(
    "/accounts/{account_id}", response_model=AccountOut, summary="Change verified, frozen, entity_name"
)
async def update_account(account_id: AccountId, body: AccountPatch, service: ProvisioningDep) -> AccountOut:
    account = await service.update_account(
        account_id, verified=body.verified, frozen=body.frozen, entity_name=body.entity_name
    )
    return account_out(account)


@router.post(
    "/accounts/{account_id}/ram-users",
    response_model=RamUserOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create a RAM user of the account: answers its token",
)
async def create_ram_user(account_id: AccountId, body: RamUserIn, service: ProvisioningDep) -> RamUserOut:
    user = await service.add_ram_user(account_id, name=body.name)
    return RamUserOut(id=user.id, account_id=user.account_id, name=user.name, api_token=user.api_token)


@router.post(
    "/organizations",
    response_model=OrganizationOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create an organization: a management account and its members (idempotent on the id)",
)
async def create_organization(body: OrganizationIn, service: ProvisioningDep) -> OrganizationOut:
    await service.create_organization(body.id, body.management_account_id, body.member_account_ids)
    return OrganizationOut(
        id=body.id,
        management_account_id=body.management_account_id,
        member_account_ids=sorted(set(body.member_account_ids)),
    )


@router.post("/resources", response_model=ResourceOut, status_code=status.HTTP_201_CREATED)
async def create_resource(new: NewResource, service: ProvisioningDep, response: Response) -> Any:
    """Provisions a resource (a subscription gets its `original` charge). The same id again answers
    the existing resource as it is (200)."""
    at = now()
    if await service.resource_exists(new.id):
        response.status_code = status.HTTP_200_OK
    return ResourceOut.of(await service.create_resource(new.resource(at), at=at))


@router.post("/resources/{resource_id}/auto-renew", response_model=ChargeOut)
async def auto_renew(
    resource_id: ResourceId, resources: ResourcesDep, idempotency_key: IdempotencyKey = None
) -> Any:
    """Runs one auto-renewal now: one month, charged to the account that owns the resource now."""
    return ChargeOut.of(await resources.auto_renew(resource_id, at=now(), request_key=idempotency_key))
