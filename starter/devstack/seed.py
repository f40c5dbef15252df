"""Demo data for `transfer dev`: accounts, an organization and resources that show every kind of case.

The plan (ids, root tokens, TOTP secrets, the admin token) is written to `<data>/demo.json` before
anything reaches the database, so a restart prints the same tokens and an interrupted seed is
completed with the same data (every store write is idempotent).
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from domain.models import (
    Account,
    AccountKind,
    Billing,
    InstanceStatus,
    Network,
    PrincipalKind,
    Product,
    Resource,
)
from domain.verification import new_secret
from starter.services.provisioning import ProvisioningService

DEMO_FILE = "demo.json"
REGION = "cn-hangzhou"
AGE = timedelta(days=30)
TERM = timedelta(days=360)  # subscriptions: a 12-month term (a month is 30 days), 330 days left


class DemoAccount(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    name: str
    kind: AccountKind
    entity_id: str
    entity_name: str
    token: str
    mfa_secret: str
    note: str = ""


class DemoResource(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    owner_account_id: str
    product: Product
    billing: Billing
    monthly_price: str
    network: Network | None = None
    status: InstanceStatus | None = None
    attached_to: str | None = None
    bandwidth_mbps: int | None = None
    age_days: int = 30
    note: str = ""


class DemoOrganization(BaseModel):
    id: str
    management_account_id: str
    member_account_ids: list[str]


class Demo(BaseModel):
    """The content of `<data>/demo.json`."""

    model_config = ConfigDict(extra="ignore")

    # Generated once when TRANSFER_ADMIN_TOKEN is not set; None when it always was.
    admin_token: str | None = None
    seeded: bool = False
    accounts: list[DemoAccount] = Field(default_factory=list)
    organization: DemoOrganization | None = None
    resources: list[DemoResource] = Field(default_factory=list)


def _token(account_id: str) -> str:
    return f"tok-{account_id}-{secrets.token_urlsafe(18)}"


def _account(
    account_id: str, name: str, kind: AccountKind, entity_id: str, entity_name: str, note: str
) -> DemoAccount:
    return DemoAccount(
        id=account_id,
        name=name,
        kind=kind,
        entity_id=entity_id,
        entity_name=entity_name,
        token=_token(account_id),
        mfa_secret=new_secret(),
        note=note,
    )


def plan() -> Demo:
    """A fresh demo: new tokens and TOTP secrets, fixed ids."""
    ent, acme = AccountKind.ENTERPRISE, "Acme Cloud Ltd."
    accounts = [
        _account("alice", "Alice Wang", AccountKind.INDIVIDUAL, "ent-alice", "Alice Wang", ""),
        _account("bob", "Bob Chen", AccountKind.INDIVIDUAL, "ent-bob", "Bob Chen", ""),
        _account("acme-prod", "Acme production", ent, "ent-acme", acme, ""),
        _account("acme-dev", "Acme development", ent, "ent-acme", acme, ""),
        _account("acme-holding", "Acme holding", ent, "ent-acme", acme, "management account of org-acme"),
    ]
    ecs, eip, rds = Product.ECS, Product.EIP, Product.RDS
    sub, payg = Billing.SUBSCRIPTION, Billing.PAY_AS_YOU_GO
    vpc, classic = Network.VPC, Network.CLASSIC
    running, stopped = InstanceStatus.RUNNING, InstanceStatus.STOPPED
    resources = [
        DemoResource(
            id="i-alice-web", owner_account_id="alice", product=ecs, billing=sub, monthly_price="120.00",
            network=vpc, status=running, note="running VPC instance: stop it before the confirm",
        ),
        DemoResource(
            id="i-alice-batch", owner_account_id="alice", product=ecs, billing=payg, monthly_price="45.00",
            network=vpc, status=stopped, note="transferable",
        ),
        DemoResource(
            id="i-alice-legacy", owner_account_id="alice", product=ecs, billing=sub, monthly_price="80.00",
            network=classic, status=running, note="blocked: EIP_ATTACHED (eip-alice-bound is attached to it)",
        ),
        DemoResource(
            id="eip-alice-1", owner_account_id="alice", product=eip, billing=payg, monthly_price="12.00",
            bandwidth_mbps=5, note="transferable",
        ),
        DemoResource(
            id="eip-alice-bound", owner_account_id="alice", product=eip, billing=payg, monthly_price="12.00",
            bandwidth_mbps=5, attached_to="i-alice-legacy", note="blocked: EIP_ATTACHED",
        ),
        DemoResource(
            id="eip-alice-sub", owner_account_id="alice", product=eip, billing=sub, monthly_price="20.00",
            bandwidth_mbps=10, note="blocked: PRODUCT_NOT_SUPPORTED (convert to pay-as-you-go first)",
        ),
        DemoResource(
            id="rds-alice-db", owner_account_id="alice", product=rds, billing=payg, monthly_price="300.00",
            note="blocked: PRODUCT_NOT_SUPPORTED (never transferable)",
        ),
        DemoResource(
            id="i-bob-app", owner_account_id="bob", product=ecs, billing=payg, monthly_price="60.00",
            network=vpc, status=stopped, note="transferable",
        ),
        DemoResource(
            id="i-bob-new", owner_account_id="bob", product=ecs, billing=payg, monthly_price="60.00",
            network=vpc, status=stopped, age_days=2, note="blocked: RESOURCE_TOO_NEW (2 days old)",
        ),
        DemoResource(
            id="eip-bob-1", owner_account_id="bob", product=eip, billing=payg, monthly_price="12.00",
            bandwidth_mbps=5, note="transferable",
        ),
        DemoResource(
            id="i-acme-prod-api", owner_account_id="acme-prod", product=ecs, billing=sub,
            monthly_price="500.00", network=vpc, status=stopped, note="transferable (to acme-dev)",
        ),
        DemoResource(
            id="eip-acme-prod-1", owner_account_id="acme-prod", product=eip, billing=payg,
            monthly_price="25.00", bandwidth_mbps=20, note="transferable (to acme-dev)",
        ),
        DemoResource(
            id="i-acme-dev-ci", owner_account_id="acme-dev", product=ecs, billing=payg,
            monthly_price="90.00", network=vpc, status=running, note="running VPC instance",
        ),
    ]  # fmt: skip
    organization = DemoOrganization(
        id="org-acme", management_account_id="acme-holding", member_account_ids=["acme-prod", "acme-dev"]
    )
    return Demo(accounts=accounts, organization=organization, resources=resources)


def demo_path(data_dir: Path) -> Path:
    return data_dir / DEMO_FILE


def load(data_dir: Path) -> Demo | None:
    path = demo_path(data_dir)
    if not path.exists():
        return None
    return Demo.model_validate_json(path.read_text(encoding="utf-8"))


def save(data_dir: Path, demo: Demo) -> None:
    """Writes demo.json atomically, readable by its owner only (it holds tokens and TOTP secrets)."""
    path = demo_path(data_dir)
    temporary = path.with_suffix(".json.tmp")
    payload: dict[str, Any] = demo.model_dump(mode="json")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(payload, file, indent=2)
        file.write("\n")
    os.replace(temporary, path)


async def apply(store: ProvisioningService, demo: Demo, *, now: datetime | None = None) -> None:
    """Writes the demo into the database. Idempotent: repeating it with the same plan changes nothing."""
    now = now or datetime.now(UTC)
    for entry in demo.accounts:
        account = Account(
            id=entry.id,
            name=entry.name,
            kind=entry.kind,
            verified=True,
            entity_id=entry.entity_id,
            entity_name=entry.entity_name,
            mfa_secret=entry.mfa_secret,
        )
        await store.create_account(account, created_at=now - AGE)
        await store.add_credential(account_id=entry.id, token=entry.token, kind=PrincipalKind.ROOT)
    if demo.organization is not None:
        await store.create_organization(
            demo.organization.id,
            demo.organization.management_account_id,
            demo.organization.member_account_ids,
        )
    for item in demo.resources:
        created_at = now - timedelta(days=item.age_days)
        resource = Resource(
            id=item.id,
            product=item.product,
            billing=item.billing,
            owner_account_id=item.owner_account_id,
            region=REGION,
            created_at=created_at,
            expires_at=created_at + TERM if item.billing is Billing.SUBSCRIPTION else None,
            monthly_price=Decimal(item.monthly_price),
            network=item.network,
            status=item.status,
            attached_to=item.attached_to,
            bandwidth_mbps=item.bandwidth_mbps,
        )
        await store.create_resource(resource, at=now)


def new_admin_token() -> str:
    return f"adm-{secrets.token_urlsafe(24)}"
