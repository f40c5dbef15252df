"""Bodies of the resource routes (SPEC §5): resources, charges, refund quotes, actions."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from domain.billing import RefundQuote, format_money
from domain.models import (
    Billing,
    Charge,
    Id,
    InstanceStatus,
    Network,
    Product,
    Resource,
    ResourceAction,
)
from starter.api.schemas.common import (
    MAX_TAGS,
    Body,
    ItemRefusal,
    NoNul,
    TagKey,
    TagValue,
)

# --- resources ---------------------------------------------------------------------------------------

# Money in requests: a decimal string with exactly two decimals (SPEC, Fine points).
MoneyText = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,9}\.[0-9]{2}$")]
MAX_MONTHS = 120


class ResourceOut(Body):
    id: str
    product: Product
    billing: Billing
    owner: str
    owner_account_id: str
    region: str
    created_at: datetime
    expires_at: datetime | None
    auto_renew: bool
    monthly_price: str = Field(examples=["12.50"])
    network: Network | None
    status: InstanceStatus | None
    attached_to: str | None
    attached_eip_ids: list[str] = Field(description="ECS: the EIPs attached to the instance")
    bandwidth_mbps: int | None
    resource_group: str | None
    tags: dict[str, str]
    released: bool
    locked: bool = Field(description="An open transfer order holds the resource")
    locked_by_order_id: str | None

    @classmethod
    def of(cls, resource: Resource, **extra: Any) -> Self:
        return cls(
            id=resource.id,
            product=resource.product,
            billing=resource.billing,
            owner=resource.owner_account_id,
            owner_account_id=resource.owner_account_id,
            region=resource.region,
            created_at=resource.created_at,
            expires_at=resource.expires_at,
            auto_renew=resource.auto_renew,
            monthly_price=format_money(resource.monthly_price),
            network=resource.network,
            status=resource.status,
            attached_to=resource.attached_to,
            attached_eip_ids=resource.attached_eip_ids,
            bandwidth_mbps=resource.bandwidth_mbps,
            resource_group=resource.resource_group,
            tags=resource.tags,
            released=resource.released,
            locked=resource.locked_by_order_id is not None,
            locked_by_order_id=resource.locked_by_order_id,
            **extra,
        )


class ListedResource(ResourceOut):
    blockers: list[ItemRefusal]
    warnings: list[ItemRefusal]


class ResourcePage(Body):
    items: list[ListedResource]
    next_cursor: str | None


class ChargeOut(Body):
    charge_id: int
    resource_id: str
    kind: str
    payer_account_id: str
    amount: str = Field(examples=["-12.50"])
    period_start: datetime
    period_end: datetime
    created_at: datetime
    refunds_charge_id: int | None

    @classmethod
    def of(cls, charge: Charge) -> ChargeOut:
        return cls(
            charge_id=charge.id,
            resource_id=charge.resource_id,
            kind=charge.kind.value,
            payer_account_id=charge.payer_account_id,
            amount=format_money(charge.amount),
            period_start=charge.period_start,
            period_end=charge.period_end,
            created_at=charge.created_at,
            refunds_charge_id=charge.refunds_charge_id,
        )


class ActionOut(ResourceOut):
    """The resource after the action, and the charges (refunds included) the action recorded."""

    action: str
    charges: list[ChargeOut]


class RefundItemOut(Body):
    charge_id: int
    kind: str
    payer_account_id: str
    amount: str
    period_start: datetime
    period_end: datetime
    refundable: str = Field(examples=["0.00"])
    refunds_charge_id: int | None


class RefundQuoteOut(Body):
    resource_id: str
    items: list[RefundItemOut]
    total_refundable: str

    @classmethod
    def of(cls, resource_id: str, quote: RefundQuote) -> RefundQuoteOut:
        return cls(
            resource_id=resource_id,
            items=[
                RefundItemOut(
                    charge_id=line.charge.id,
                    kind=line.charge.kind.value,
                    payer_account_id=line.charge.payer_account_id,
                    amount=format_money(line.charge.amount),
                    period_start=line.charge.period_start,
                    period_end=line.charge.period_end,
                    refundable=format_money(line.refundable),
                    refunds_charge_id=line.charge.refunds_charge_id,
                )
                for line in quote.items
            ],
            total_refundable=format_money(quote.total_refundable),
        )


# -- request bodies -------------------------------------------------------------------------------


class ActionBody(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoArguments(ActionBody):
    pass


class AttachBody(ActionBody):
    instance_id: Id


class RenewBody(ActionBody):
    months: int = Field(strict=True, ge=1, le=MAX_MONTHS)


class PriceBody(ActionBody):
    monthly_price: MoneyText


class ChangeOsBody(ActionBody):
    image_id: str | None = Field(default=None, min_length=1, max_length=128)


class BandwidthBody(ActionBody):
    bandwidth_mbps: int = Field(strict=True, ge=1, le=1000)


class ConvertBillingBody(ActionBody):
    billing: Billing | None = Field(default=None, description="The target method; default: the other one")
    months: int | None = Field(
        default=None, strict=True, ge=1, le=MAX_MONTHS, description="Term when converting to subscription"
    )


BODIES: dict[ResourceAction, type[ActionBody]] = {
    ResourceAction.STOP: NoArguments,
    ResourceAction.START: NoArguments,
    ResourceAction.ATTACH: AttachBody,
    ResourceAction.DETACH: NoArguments,
    ResourceAction.RENEW: RenewBody,
    ResourceAction.UPGRADE: PriceBody,
    ResourceAction.DOWNGRADE: PriceBody,
    ResourceAction.RELEASE: NoArguments,
    ResourceAction.CHANGE_OS: ChangeOsBody,
    ResourceAction.CHANGE_BANDWIDTH: BandwidthBody,
    ResourceAction.CONVERT_BILLING: ConvertBillingBody,
}


class NewResource(BaseModel):
    """Any attributes of SPEC §2. The owner is `owner_account_id` (or `owner`, SPEC §2's name)."""

    model_config = ConfigDict(extra="forbid")

    id: Id
    product: Product
    billing: Billing
    owner_account_id: Id | None = None
    owner: Id | None = None
    region: Annotated[str, NoNul] = Field(default="cn-hangzhou", min_length=1, max_length=64)
    created_at: AwareDatetime | None = Field(default=None, description="Default: now")
    expires_at: AwareDatetime | None = Field(default=None, description="Subscription only, required there")
    auto_renew: bool = False
    monthly_price: MoneyText
    network: Network | None = Field(default=None, description="ECS only; default vpc")
    status: InstanceStatus | None = Field(default=None, description="ECS only; default running")
    attached_to: Id | None = Field(default=None, description="EIP only")
    bandwidth_mbps: int | None = Field(default=None, strict=True, ge=1, le=1000, description="EIP only")
    resource_group: Annotated[str, NoNul] | None = Field(default=None, min_length=1, max_length=128)
    tags: Annotated[dict[TagKey, TagValue], Field(max_length=MAX_TAGS)] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> NewResource:
        if self.owner_account_id is None and self.owner is None:
            raise ValueError("owner_account_id is required")
        if None not in (self.owner, self.owner_account_id) and self.owner != self.owner_account_id:
            raise ValueError("owner and owner_account_id name different accounts")
        if self.product is not Product.ECS and (self.network is not None or self.status is not None):
            raise ValueError("network and status are ECS attributes")
        if self.product is not Product.EIP and (
            self.attached_to is not None or self.bandwidth_mbps is not None
        ):
            raise ValueError("attached_to and bandwidth_mbps are EIP attributes")
        if self.billing is Billing.SUBSCRIPTION and self.expires_at is None:
            raise ValueError("a subscription needs expires_at")
        if self.billing is Billing.PAY_AS_YOU_GO and self.expires_at is not None:
            raise ValueError("a pay-as-you-go resource has no expires_at")
        return self

    def resource(self, at: datetime) -> Resource:
        ecs = self.product is Product.ECS
        return Resource(
            id=self.id,
            product=self.product,
            billing=self.billing,
            owner_account_id=self.owner_account_id or self.owner or "",
            region=self.region,
            created_at=self.created_at or at,
            expires_at=self.expires_at,
            auto_renew=self.auto_renew,
            monthly_price=Decimal(self.monthly_price),
            network=self.network or (Network.VPC if ecs else None),
            status=self.status or (InstanceStatus.RUNNING if ecs else None),
            attached_to=self.attached_to,
            bandwidth_mbps=self.bandwidth_mbps,
            resource_group=self.resource_group,
            tags=self.tags,
        )
