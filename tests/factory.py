"""Builds accounts, resources, TOTP codes and the attestation-keyed client and activities of the tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar
from uuid import uuid4

from temporalio import activity
from temporalio.client import Client

from activities.models import OrderStepInput
from activities.transfer_activities import TransferActivities
from domain.attestation import derive_key
from domain.models import (
    Account,
    AccountKind,
    Action,
    Billing,
    InstanceStatus,
    Network,
    Principal,
    PrincipalKind,
    Product,
    Resource,
)
from domain.verification import code_at, new_secret
from starter.client import TransferClient, sign
from store.secret_box import SecretBox
from tests.stores import Stores
from workflows.messages import AttestedMessage

_Message = TypeVar("_Message", bound=AttestedMessage)


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
        return await self.store.provisioning.create_account(Account(**values), created_at=datetime.now(UTC))

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
        return await self.store.provisioning.create_resource(Resource(**values), at=now)


def root(account: Account) -> Principal:
    return Principal(kind=PrincipalKind.ROOT, account_id=account.id)


def code(account: Account, *, steps_ahead: int = 0) -> str:
    """The account's TOTP code now; `steps_ahead` takes the code of a later step inside the ±1 window,
    for a second request of one account within the same 30 s (codes are single-use per step)."""
    return code_at(account.mfa_secret, datetime.now(UTC) + timedelta(seconds=30 * steps_ahead))


def wrong_code(account: Account) -> str:
    return f"{(int(code(account)) + 1) % 1_000_000:06d}"


# The tests' TRANSFER_SECRET_KEY, and the attestation key derived from it.
SECRET_KEY = "tests-secret-key"
ATTESTATION_KEY = derive_key(SECRET_KEY, "attestation")
SECRET_BOX = SecretBox(SECRET_KEY)


def transfer_client(client: Client, task_queue: str, **options: Any) -> TransferClient:
    return TransferClient(client, attestation_key=ATTESTATION_KEY, task_queue=task_queue, **options)


def signed(
    message: _Message, principal: Principal, action: Action, order_id: str, *, at: datetime | None = None
) -> _Message:
    """`message` with the attestation the service would give it (at `at`, default now)."""
    return sign(ATTESTATION_KEY, message, principal, action, order_id, at=at or datetime.now(UTC))


def transfer_activities(store: Stores) -> TransferActivities:
    return TransferActivities(store.orders, ATTESTATION_KEY)


def freezing_destination_activities(store: Stores) -> list[Callable[..., Any]]:
    """The real activities, except that ownership reassignment also freezes the destination account,
    so that the billing hand-off after it is refused: a failure after ownership moved."""
    real = transfer_activities(store)

    @activity.defn(name="reassign_ownership")
    async def reassign_then_freeze(input: OrderStepInput) -> None:
        await real.reassign_ownership(input)
        order = await store.orders.get_order(input.order_id)
        assert order is not None
        await store.provisioning.update_account(order.destination_account_id, frozen=True)

    others = [a for a in real.all() if getattr(a, "__name__", "") != "reassign_ownership"]
    return [*others, reassign_then_freeze]
