"""Builds accounts, resources and verification answers with fresh ids, through the real store."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import uuid4

from temporalio import activity

from activities.models import OrderStepInput
from activities.transfer_activities import TransferActivities
from domain.models import (
    Account,
    AccountKind,
    Billing,
    InstanceStatus,
    Network,
    Principal,
    PrincipalKind,
    Product,
    Resource,
)
from domain.verification import code_at, new_secret
from tests.stores import Stores
from workflows.messages import Verification


def fresh_id(prefix: str) -> str:
    return f"{prefix}-{uuid4().hex[:12]}"


@dataclass
class Factory:
    store: Stores

    async def account(self, **fields: Any) -> Account:
        """A verified individual account with its own entity unless told otherwise."""
        account_id = fields.pop("id", None) or fresh_id("acc")
        values: dict[str, Any] = {
            "id": account_id,
            "name": f"Account {account_id}",
            "kind": AccountKind.INDIVIDUAL,
            "verified": True,
            "entity_id": f"ent-{account_id}",
            "entity_name": f"Entity of {account_id}",
            "mfa_secret": new_secret(),
            **fields,
        }
        return await self.store.create_account(Account(**values), created_at=datetime.now(UTC))

    async def resource(self, owner: Account, **fields: Any) -> Resource:
        """A transferable stopped VPC ECS subscription instance, 30 days old, a year left."""
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "id": fields.pop("id", None) or fresh_id("i"),
            "product": Product.ECS,
            "billing": Billing.SUBSCRIPTION,
            "owner_account_id": owner.id,
            "region": "cn-hangzhou",
            "created_at": now - timedelta(days=30),
            "expires_at": now + timedelta(days=335),
            "monthly_price": Decimal("100.00"),
            "network": Network.VPC,
            "status": InstanceStatus.STOPPED,
            **fields,
        }
        return await self.store.create_resource(Resource(**values), at=now)


def root(account: Account) -> Principal:
    return Principal(kind=PrincipalKind.ROOT, account_id=account.id)


def verification(account: Account, *, steps_ahead: int = 0) -> Verification:
    """The account's answer now; `steps_ahead` takes the code of a later step inside the ±1 window,

    for a second request of one account within the same 30 s (codes are single-use per step).
    """
    at = datetime.now(UTC)
    code = code_at(account.mfa_secret, at + timedelta(seconds=30 * steps_ahead))
    return Verification(verification_id=uuid4().hex, code=code, received_at=at)


def wrong_verification(account: Account) -> Verification:
    at = datetime.now(UTC)
    right = code_at(account.mfa_secret, at)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    return Verification(verification_id=uuid4().hex, code=wrong, received_at=at)


def freezing_destination_activities(store: Stores) -> list[Callable[..., Any]]:
    """The real activities, except that ownership reassignment also freezes the destination account,
    so that the billing hand-off after it is refused: a failure after ownership moved."""
    real = TransferActivities(store.orders)

    @activity.defn(name="reassign_ownership")
    async def reassign_then_freeze(input: OrderStepInput) -> None:
        await real.reassign_ownership(input)
        order = await store.get_order(input.order_id)
        assert order is not None
        await store.update_account(order.destination_account_id, frozen=True)

    others = [a for a in real.all() if getattr(a, "__name__", "") != "reassign_ownership"]
    return [*others, reassign_then_freeze]
