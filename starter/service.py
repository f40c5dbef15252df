"""The transfer operations a caller may ask for, in SPEC §5's terms: the library behind the API and CLI.

Request-level rules (principal, accounts, agreement, verification) fail the whole request with a
TransferError; everything that depends on one resource or order is an item error. Writes go through
the workflows (TransferClient); reads come from the read model (TransferStore).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field

from domain.codes import ErrorCode, TransferError, default_message
from domain.models import (
    AGREEMENT_VERSION,
    Account,
    AccountKind,
    Action,
    Event,
    Order,
    OrderStatus,
    Outcome,
    Principal,
    PrincipalKind,
    ReceivingConfig,
    Resource,
)
from domain.rules import (
    blocker_message,
    order_failure,
    principal_failure,
    resource_blockers,
    views_managed_accounts,
)
from domain.verification import new_secret
from starter.client import TransferClient
from store.repository import TransferStore
from workflows.messages import ConfirmRequest, OrderState, Verification


class Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class ItemError(Result):
    code: ErrorCode
    message: str
    # Structured details (ORDER_NOT_PENDING: the status): a single form's HTTP error carries them,
    # batch responses show the code and message only.
    details: dict[str, Any] = Field(default_factory=dict)


class InitiateItem(Result):
    """One resource of an initiate: its open order, or why it has none."""

    resource_id: str
    order_id: str | None = None
    status: OrderStatus | None = None
    error: ItemError | None = None


class OrderItem(Result):
    """One order of a confirm, cancel or reject batch: its status after the action, or the refusal."""

    order_id: str
    status: OrderStatus | None = None
    error: ItemError | None = None


class Blockers(Result):
    resource_id: str
    blockers: list[ItemError]


class ProvisionedAccount(Result):
    """A provisioned account with a new root token; `mfa_secret` only when the account was created."""

    account: Account
    api_token: str
    mfa_secret: str | None
    created: bool


class RamUser(Result):
    id: str
    account_id: str
    name: str
    api_token: str


def now() -> datetime:
    return datetime.now(UTC)


# Told once per item of a batch as soon as that item is answered (the CLI's progress bar).
OnItemAnswered = Callable[[], None]
_Item = TypeVar("_Item")


async def _each(
    keys: Sequence[str], answer: Callable[[str], Awaitable[_Item]], progress: OnItemAnswered | None
) -> list[_Item]:
    """Answers every item of a batch concurrently, in request order."""

    async def one(key: str) -> _Item:
        item = await answer(key)
        if progress is not None:
            progress()
        return item

    return list(await asyncio.gather(*(one(key) for key in keys)))


def _item_error(error: TransferError) -> ItemError:
    return ItemError(code=error.code, message=error.message, details=error.details)


def _state_details(code: ErrorCode, order: Order) -> dict[str, Any]:
    """ORDER_NOT_PENDING and ORDER_EXPIRED carry the order's status (an order past its window is expired
    even before the workflow records it)."""
    if code is ErrorCode.ORDER_NOT_PENDING:
        return {"status": order.status.value}
    if code is ErrorCode.ORDER_EXPIRED:
        return {"status": OrderStatus.EXPIRED.value}
    return {}


def new_token() -> str:
    return secrets.token_urlsafe(32)


def blocker(code: ErrorCode, resource: Resource | None) -> ItemError:
    return ItemError(code=code, message=blocker_message(code, resource))


class TransferService:
    def __init__(self, transfers: TransferClient, store: TransferStore) -> None:
        self.transfers = transfers
        self.store = store

    # --- initiate ---------------------------------------------------------------------------------

    async def _request_level(self, principal: Principal, destination_account_id: str) -> None:
        code = principal_failure(principal)
        if code is not None:
            raise TransferError(code)
        refusal = await self.store.account_failure(principal.account_id, destination_account_id)
        if refusal is not None:
            raise TransferError(*refusal)

    async def _verify(self, principal: Principal, code: str, received_at: datetime) -> Verification:
        """Checks the code once for the whole request; the workflows re-check it by its id."""
        verification = Verification(verification_id=uuid4().hex, code=code, received_at=received_at)
        await self.store.verify_code(
            verification_id=verification.verification_id,
            account_id=principal.account_id,
            code=code,
            received_at=received_at,
        )
        return verification

    async def initiate(
        self,
        principal: Principal,
        *,
        destination_account_id: str,
        resource_ids: Sequence[str],
        agreement_accepted: bool,
        code: str,
        received_at: datetime | None = None,
        progress: OnItemAnswered | None = None,
    ) -> list[InitiateItem]:
        """Opens one order per resource; answers once each is open (lock held) or refused."""
        received_at = received_at or now()
        await self._request_level(principal, destination_account_id)
        if not agreement_accepted:
            raise TransferError(ErrorCode.AGREEMENT_NOT_ACCEPTED)
        verification = await self._verify(principal, code, received_at)

        async def open_one(resource_id: str) -> InitiateItem:
            try:
                state = await self.transfers.initiate(
                    initiator=principal,
                    destination_account_id=destination_account_id,
                    resource_id=resource_id,
                    verification=verification,
                    agreement_version=AGREEMENT_VERSION,
                )
            except TransferError as error:
                return InitiateItem(resource_id=resource_id, error=_item_error(error))
            return InitiateItem(resource_id=resource_id, order_id=state.order_id, status=state.status)

        return await _each(resource_ids, open_one, progress)

    async def validate(
        self,
        principal: Principal,
        *,
        destination_account_id: str,
        resource_ids: Sequence[str],
        received_at: datetime | None = None,
    ) -> list[Blockers]:
        """The dry run: request-level rules as errors, every per-resource blocker listed."""
        await self._request_level(principal, destination_account_id)
        at = received_at or now()
        results = []
        for resource_id in resource_ids:
            resource = await self.store.get_resource(resource_id)
            codes = resource_blockers(resource, source_account_id=principal.account_id, now=at)
            results.append(Blockers(resource_id=resource_id, blockers=[blocker(c, resource) for c in codes]))
        return results

    # --- confirm, cancel, reject --------------------------------------------------------------------

    async def confirm(
        self,
        principal: Principal,
        *,
        order_ids: Sequence[str],
        agreement_accepted: bool,
        code: str,
        receiving_config: ReceivingConfig | None = None,
        received_at: datetime | None = None,
        progress: OnItemAnswered | None = None,
    ) -> list[OrderItem]:
        received_at = received_at or now()
        self._refuse_ram_user(principal)
        if not agreement_accepted:
            raise TransferError(ErrorCode.AGREEMENT_NOT_ACCEPTED)
        # A successful verification uses the code up, even when every order is then refused.
        verification = await self._verify(principal, code, received_at)
        request = ConfirmRequest(
            principal=principal,
            agreement_accepted=True,
            agreement_version=AGREEMENT_VERSION,
            verification=verification,
            receiving_config=receiving_config,
        )
        return await self._each_order(
            principal,
            order_ids,
            Action.CONFIRM,
            lambda order_id: self.transfers.confirm(order_id, request),
            progress,
        )

    async def cancel(
        self, principal: Principal, *, order_ids: Sequence[str], progress: OnItemAnswered | None = None
    ) -> list[OrderItem]:
        self._refuse_ram_user(principal)
        return await self._each_order(
            principal,
            order_ids,
            Action.CANCEL,
            lambda order_id: self.transfers.cancel(order_id, principal),
            progress,
        )

    async def reject(
        self,
        principal: Principal,
        *,
        order_ids: Sequence[str],
        reason: str | None = None,
        progress: OnItemAnswered | None = None,
    ) -> list[OrderItem]:
        self._refuse_ram_user(principal)
        return await self._each_order(
            principal,
            order_ids,
            Action.REJECT,
            lambda order_id: self.transfers.reject(order_id, principal, reason),
            progress,
        )

    # A single form is a batch of one whose item error becomes the error of the request; it answers
    # the order as the read model has it after the action.

    async def confirm_order(
        self,
        principal: Principal,
        order_id: str,
        *,
        agreement_accepted: bool,
        code: str,
        receiving_config: ReceivingConfig | None = None,
        received_at: datetime | None = None,
    ) -> Order:
        items = await self.confirm(
            principal,
            order_ids=[order_id],
            agreement_accepted=agreement_accepted,
            code=code,
            receiving_config=receiving_config,
            received_at=received_at,
        )
        return await self._answer(principal, items)

    async def cancel_order(self, principal: Principal, order_id: str) -> Order:
        return await self._answer(principal, await self.cancel(principal, order_ids=[order_id]))

    async def reject_order(self, principal: Principal, order_id: str, *, reason: str | None = None) -> Order:
        return await self._answer(
            principal, await self.reject(principal, order_ids=[order_id], reason=reason)
        )

    async def _answer(self, principal: Principal, items: list[OrderItem]) -> Order:
        (item,) = items
        if item.error is not None:
            raise TransferError(item.error.code, item.error.message, item.error.details)
        return await self.get(principal, item.order_id)

    @staticmethod
    def _refuse_ram_user(principal: Principal) -> None:
        code = principal_failure(principal)
        if code is not None:
            raise TransferError(code)

    async def _each_order(
        self,
        principal: Principal,
        order_ids: Sequence[str],
        action: Action,
        act: Callable[[str], Awaitable[OrderState]],
        progress: OnItemAnswered | None,
    ) -> list[OrderItem]:
        managed = await self._managed(principal)

        async def one(order_id: str) -> OrderItem:
            order = await self.store.get_order(order_id)
            manages_a_party = order is not None and bool(
                {order.source_account_id, order.destination_account_id} & managed
            )
            code = order_failure(
                order, principal, action=action.value, now=now(), manages_a_party=manages_a_party
            )
            if code is not None:
                # Refused here, from the read model: the workflow never saw it, so the event is ours to
                # record (never for a stranger, who must not learn the order exists).
                if order is not None and code is not ErrorCode.ORDER_NOT_FOUND:
                    await self._record_refusal(order, principal, action, code)
                details = _state_details(code, order) if order is not None else {}
                return OrderItem(
                    order_id=order_id,
                    error=ItemError(code=code, message=default_message(code), details=details),
                )
            try:
                state = await act(order_id)
            except TransferError as error:
                return OrderItem(order_id=order_id, error=_item_error(error))
            return OrderItem(order_id=order_id, status=state.status)

        return await _each(order_ids, one, progress)

    async def _record_refusal(
        self, order: Order, principal: Principal, action: Action, code: ErrorCode
    ) -> None:
        await self.store.record_event(
            event_id=uuid4().hex,
            order_id=order.order_id,
            event=Event(
                at=now(),
                actor_account_id=principal.account_id,
                action=action,
                outcome=Outcome.REFUSED,
                code=code,
            ),
        )

    async def _managed(self, principal: Principal) -> set[str]:
        """The member accounts whose orders the caller may read (never act on)."""
        if not views_managed_accounts(principal):
            return set()
        return await self.store.managed_account_ids(principal.account_id)

    # --- reads --------------------------------------------------------------------------------------

    async def get(self, principal: Principal, order_id: str) -> Order:
        """Parties and the management account of a party may read an order; others learn nothing."""
        order = await self.store.get_order(order_id)
        if order is None:
            raise TransferError(ErrorCode.ORDER_NOT_FOUND)
        parties = {order.source_account_id, order.destination_account_id}
        if principal.account_id not in parties and not parties & await self._managed(principal):
            raise TransferError(ErrorCode.ORDER_NOT_FOUND)
        return order

    async def list(
        self,
        principal: Principal,
        *,
        role: Literal["source", "destination"] | None = None,
        status: OrderStatus | None = None,
        limit: int = 20,
        cursor: str | None = None,
        organization: bool = False,
    ) -> tuple[list[Order], str | None]:
        """The caller's orders, or with `organization` its members' (management account only), newest
        first, each with its steps and events, and the cursor of the next page."""
        accounts = await self._managed(principal) if organization else {principal.account_id}
        return await self.store.list_orders(
            account_ids=accounts, role=role, status=status, limit=limit, cursor=cursor
        )

    # --- provisioning (admin) -----------------------------------------------------------------------

    async def create_account(
        self,
        *,
        account_id: str,
        name: str,
        kind: AccountKind,
        verified: bool = False,
        entity_id: str | None = None,
        entity_name: str | None = None,
        frozen: bool = False,
        at: datetime | None = None,
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
        existing = await self.store.get_account(account_id)
        if existing is None:
            account = await self.store.create_account(
                Account(**fields, mfa_secret=new_secret()), created_at=at or now()
            )
            created = True
        elif existing == Account(**fields, mfa_secret=existing.mfa_secret):
            account, created = existing, False
        else:
            raise TransferError(ErrorCode.VALIDATION_ERROR, f"account {account_id} exists with other data")
        token = new_token()
        await self.store.add_credential(account_id=account.id, token=token, kind=PrincipalKind.ROOT)
        return ProvisionedAccount(
            account=account,
            api_token=token,
            mfa_secret=account.mfa_secret if created else None,
            created=created,
        )

    async def update_account(
        self,
        account_id: str,
        *,
        verified: bool | None = None,
        frozen: bool | None = None,
        entity_name: str | None = None,
    ) -> Account:
        return await self.store.update_account(
            account_id, verified=verified, frozen=frozen, entity_name=entity_name
        )

    async def add_ram_user(self, account_id: str, *, name: str) -> RamUser:
        token = new_token()
        principal = await self.store.add_credential(
            account_id=account_id, token=token, kind=PrincipalKind.RAM_USER, name=name
        )
        assert principal.ram_user_id is not None
        return RamUser(id=principal.ram_user_id, account_id=account_id, name=name, api_token=token)

    async def create_organization(
        self, organization_id: str, *, management_account_id: str, member_account_ids: Sequence[str]
    ) -> None:
        await self.store.create_organization(organization_id, management_account_id, list(member_account_ids))
