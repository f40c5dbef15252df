"""ProvisioningService: accounts, credentials (root tokens, RAM users), organizations and resources, as
the admin registers them (SPEC §5 provisioning), and the principal a token names.

Every write is one unit of work and idempotent: repeating it with the same arguments changes nothing and
answers the same; the same id with other data is a VALIDATION_ERROR.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from domain import rules
from domain.billing import MONTH
from domain.clock import now
from domain.codes import ErrorCode
from domain.models import CENT, Account, AccountKind, Billing, ChargeKind, Principal, PrincipalKind, Resource
from domain.refusals import TransferError
from domain.verification import new_secret
from store.accounts import AccountStore
from store.db import Database
from store.organizations import OrganizationStore
from store.resources import ResourceStore


class ProvisionedAccount(BaseModel):
    """A provisioned account with a new root token; `mfa_secret` only when the account was created."""

    model_config = ConfigDict(frozen=True)

    account: Account
    api_token: str
    mfa_secret: str | None
    created: bool


class RamUser(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    account_id: str
    name: str
    api_token: str


def new_token() -> str:
    return secrets.token_urlsafe(32)


def term_months(start: datetime, end: datetime) -> int:
    """The term in 30-day months, rounded half up, at least one."""
    term, month = (end - start) // timedelta(microseconds=1), MONTH // timedelta(microseconds=1)
    return max(1, (2 * term + month) // (2 * month))


class ProvisioningService:
    def __init__(self, db: Database) -> None:
        self._db = db

    # -- accounts and credentials -------------------------------------------------------------------

    async def register_account(
        self,
        *,
        account_id: str,
        name: str,
        kind: AccountKind,
        verified: bool = False,
        entity_id: str | None = None,
        entity_name: str | None = None,
        frozen: bool = False,
    ) -> ProvisionedAccount:
        """Registers the account with a new MFA secret and issues a root token.

        The same id again with the same fields answers the account with another root token and without
        its MFA secret (shown once, at creation); other fields are a VALIDATION_ERROR.
        """
        fields: dict[str, Any] = {
            "id": account_id,
            "name": name,
            "kind": kind,
            "verified": verified,
            "entity_id": entity_id,
            "entity_name": entity_name,
            "frozen": frozen,
        }
        async with self._db.read() as session:
            existing = await AccountStore(session).get(account_id)
        if existing is None:
            account = await self.create_account(Account(**fields, mfa_secret=new_secret()), created_at=now())
        else:
            account = _same(existing, Account(**fields, mfa_secret=existing.mfa_secret))
        token = new_token()
        await self.add_credential(account_id=account.id, token=token, kind=PrincipalKind.ROOT)
        created = existing is None
        return ProvisionedAccount(
            account=account,
            api_token=token,
            mfa_secret=account.mfa_secret if created else None,
            created=created,
        )

    async def create_account(self, account: Account, *, created_at: datetime) -> Account:
        """Creates the account; the same id again answers it if the data are identical."""
        _check_identity(account)
        async with self._db.write() as session:
            accounts = AccountStore(session)
            if (stored := await accounts.get(account.id)) is not None:
                return _same(stored, account)
            await _check_entity_limit(accounts, account)
            if not await accounts.add(account, created_at=created_at):
                # a concurrent twin inserted it first
                stored = await accounts.get(account.id)
                assert stored is not None
                return _same(stored, account)
        return account

    async def update_account(
        self,
        account_id: str,
        *,
        verified: bool | None = None,
        frozen: bool | None = None,
        entity_name: str | None = None,
    ) -> Account:
        """Changes the fields given; verifying an account checks the entity limit again."""
        changes = {
            name: value
            for name, value in (("verified", verified), ("frozen", frozen), ("entity_name", entity_name))
            if value is not None
        }
        async with self._db.write() as session:
            accounts = AccountStore(session)
            current = await accounts.get(account_id, lock=True)
            if current is None:
                raise TransferError(ErrorCode.VALIDATION_ERROR, "unknown account")
            updated = Account.model_validate({**current.model_dump(), **changes})
            _check_identity(updated)
            if updated.verified and not current.verified:
                await _check_entity_limit(accounts, updated)
            await accounts.update(account_id, changes)
        return updated

    async def add_credential(
        self,
        *,
        account_id: str,
        token: str,
        kind: PrincipalKind,
        name: str | None = None,
        ram_user_id: str | None = None,
    ) -> Principal:
        """Keeps sha256(token) for the account's root or a RAM user (its id generated when None).

        The token names the credential: adding it again answers the same principal.
        """
        if kind is PrincipalKind.ROOT and ram_user_id is not None:
            raise TransferError(ErrorCode.VALIDATION_ERROR, "a root credential has no RAM user id")
        async with self._db.write() as session:
            accounts = AccountStore(session)
            if (existing := await accounts.credential(token)) is not None:
                return _same_credential(existing, account_id, kind, name, ram_user_id)
            if await accounts.get(account_id) is None:
                raise TransferError(ErrorCode.VALIDATION_ERROR, "unknown account")
            if kind is PrincipalKind.RAM_USER and ram_user_id is None:
                ram_user_id = f"ram-{uuid.uuid4().hex[:20]}"
            principal = Principal(kind=kind, account_id=account_id, ram_user_id=ram_user_id)
            if not await accounts.add_credential(principal, token=token, name=name):
                if (existing := await accounts.credential(token)) is None:
                    raise TransferError(ErrorCode.VALIDATION_ERROR, "RAM user id already taken")
                return _same_credential(existing, account_id, kind, name, ram_user_id)
        return principal

    async def add_ram_user(self, account_id: str, *, name: str) -> RamUser:
        token = new_token()
        principal = await self.add_credential(
            account_id=account_id, token=token, kind=PrincipalKind.RAM_USER, name=name
        )
        assert principal.ram_user_id is not None
        return RamUser(id=principal.ram_user_id, account_id=account_id, name=name, api_token=token)

    async def principal_for_token(self, token: str) -> Principal | None:
        async with self._db.read() as session:
            found = await AccountStore(session).credential(token)
        return found[0] if found else None

    # -- organizations -------------------------------------------------------------------------------

    async def create_organization(
        self, organization_id: str, management_account_id: str, member_account_ids: Sequence[str]
    ) -> None:
        """Creates the organization once; the same id again must name the same MA and members."""
        members = set(member_account_ids)
        async with self._db.write() as session:
            organizations = OrganizationStore(session)
            if await organizations.get(organization_id) is None:
                await _check_organization(session, management_account_id, members)
                if await organizations.add(organization_id, management_account_id):
                    for account_id in sorted(members):
                        if not await organizations.add_member(organization_id, account_id):
                            raise TransferError(
                                ErrorCode.VALIDATION_ERROR, f"account {account_id} is in another organization"
                            )
                    return
            if await organizations.get(organization_id) != (management_account_id, members):
                raise TransferError(
                    ErrorCode.VALIDATION_ERROR, f"organization {organization_id} exists with other data"
                )

    # -- resources -------------------------------------------------------------------------------------

    async def resource_exists(self, resource_id: str) -> bool:
        async with self._db.read() as session:
            return await ResourceStore(session).get(resource_id) is not None

    async def create_resource(self, resource: Resource, *, at: datetime) -> Resource:
        """Provisions the resource; a subscription gets its `original` charge for its current term.

        Idempotent on the id: an existing resource is answered as it is now.
        """
        if resource.locked_by_order_id is not None:
            raise TransferError(ErrorCode.VALIDATION_ERROR, "a new resource holds no transfer lock")
        if resource.billing is Billing.SUBSCRIPTION and (
            resource.expires_at is None or resource.expires_at <= resource.created_at
        ):
            raise TransferError(ErrorCode.VALIDATION_ERROR, "a subscription expires after its creation")
        async with self._db.write() as session:
            resources = ResourceStore(session)
            if (existing := await resources.get(resource.id)) is not None:
                return existing
            if await AccountStore(session).get(resource.owner_account_id) is None:
                raise TransferError(ErrorCode.VALIDATION_ERROR, "unknown owner account")
            if not await resources.add(resource):
                existing = await resources.get(resource.id)
                assert existing is not None
                return existing
            if resource.billing is Billing.SUBSCRIPTION and resource.expires_at is not None:
                months = term_months(resource.created_at, resource.expires_at)
                await resources.add_charge(
                    resource_id=resource.id,
                    payer_account_id=resource.owner_account_id,
                    kind=ChargeKind.ORIGINAL,
                    amount=(resource.monthly_price * months).quantize(CENT),
                    period=(resource.created_at, resource.expires_at),
                    at=at,
                )
        return resource


def _check_identity(account: Account) -> None:
    if message := rules.identity_failure(account):
        raise TransferError(ErrorCode.VALIDATION_ERROR, message)


async def _check_entity_limit(accounts: AccountStore, account: Account) -> None:
    # Only a verified enterprise account of an entity can reach the limit: skip the count otherwise.
    if account.entity_id is None or not rules.entity_account_limit_failure(
        account, rules.MAX_ACCOUNTS_PER_ENTITY
    ):
        return
    verified = await accounts.verified_of_entity(account.entity_id, other_than=account.id)
    if code := rules.entity_account_limit_failure(account, verified):
        raise TransferError(code)


async def _check_organization(session: Any, management_account_id: str, members: set[str]) -> None:
    wanted = members | {management_account_id}
    if missing := wanted - await AccountStore(session).existing_ids(wanted):
        raise TransferError(ErrorCode.VALIDATION_ERROR, f"unknown accounts: {', '.join(sorted(missing))}")
    organizations = OrganizationStore(session)
    if (taken := await organizations.member_of_any(members)) is not None:
        raise TransferError(ErrorCode.VALIDATION_ERROR, f"account {taken} is in another organization")
    if (managed := await organizations.managed_by(management_account_id)) is not None:
        raise TransferError(ErrorCode.VALIDATION_ERROR, f"account {management_account_id} manages {managed}")


def _same(stored: Account, account: Account) -> Account:
    if stored != account:
        raise TransferError(ErrorCode.VALIDATION_ERROR, f"account {account.id} exists with other data")
    return stored


def _same_credential(
    existing: tuple[Principal, str | None],
    account_id: str,
    kind: PrincipalKind,
    name: str | None,
    ram_user_id: str | None,
) -> Principal:
    principal, stored_name = existing
    same = (
        principal.account_id == account_id
        and principal.kind is kind
        and stored_name == name
        and ram_user_id in (None, principal.ram_user_id)
    )
    if not same:
        raise TransferError(ErrorCode.VALIDATION_ERROR, "this token belongs to another credential")
    return principal
