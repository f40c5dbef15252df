"""Routes: admin provisioning (SPEC §5): accounts, RAM users, organizations.

Every route here needs the admin token (TRANSFER_ADMIN_TOKEN); any other token is UNAUTHENTICATED.
POST /v1/admin/resources and auto-renew live with the resource routes (starter/routes/resources.py).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response, status

from domain.models import ID_PATTERN, Account
from starter.deps import ServiceDep, require_admin
from starter.schemas import (
    ERROR_RESPONSES,
    AccountIn,
    AccountOut,
    AccountPatch,
    OrganizationIn,
    OrganizationOut,
    ProvisionedAccountOut,
    RamUserIn,
    RamUserOut,
)

router = APIRouter(
    prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)], responses=ERROR_RESPONSES
)

AccountId = Annotated[str, Path(pattern=ID_PATTERN, description="The account id")]


def account_out(account: Account) -> AccountOut:
    return AccountOut.model_validate(account, from_attributes=True)


@router.post(
    "/accounts",
    response_model=ProvisionedAccountOut,
    status_code=status.HTTP_201_CREATED,
    summary="Register an account: answers its root token and, at creation only, its MFA secret",
    responses={200: {"model": ProvisionedAccountOut, "description": "The account existed with these fields"}},
)
async def create_account(body: AccountIn, service: ServiceDep, response: Response) -> ProvisionedAccountOut:
    provisioned = await service.create_account(
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
async def update_account(account_id: AccountId, body: AccountPatch, service: ServiceDep) -> AccountOut:
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
async def create_ram_user(account_id: AccountId, body: RamUserIn, service: ServiceDep) -> RamUserOut:
    user = await service.add_ram_user(account_id, name=body.name)
    return RamUserOut(id=user.id, account_id=user.account_id, name=user.name, api_token=user.api_token)


@router.post(
    "/organizations",
    response_model=OrganizationOut,
    status_code=status.HTTP_201_CREATED,
    summary="Create an organization: a management account and its members (idempotent on the id)",
)
async def create_organization(body: OrganizationIn, service: ServiceDep) -> OrganizationOut:
    await service.create_organization(
        body.id, management_account_id=body.management_account_id, member_account_ids=body.member_account_ids
    )
    return OrganizationOut(
        id=body.id,
        management_account_id=body.management_account_id,
        member_account_ids=sorted(set(body.member_account_ids)),
    )
