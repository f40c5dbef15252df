"""Routes: resources (SPEC §5): the caller's resources with their blockers, actions, refund quotes, the
organization view of the management account, and the provisioning of resources by the admin."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Self
from weakref import WeakKeyDictionary

from fastapi import APIRouter, Body, Depends, Header, Path, Query, Response
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

from domain.billing import RefundQuote, format_money
from domain.codes import ErrorCode, TransferError
from domain.models import (
    ID_PATTERN,
    Billing,
    Charge,
    Id,
    InstanceStatus,
    Network,
    Principal,
    Product,
    Resource,
)
from domain.rules import resource_blockers, views_managed_accounts
from starter.deps import PrincipalDep, ServiceDep, require_admin
from starter.schemas import ERROR_RESPONSES, NoNul
from starter.service import blocker
from store.cursor import decode_cursor, encode_cursor
from store.repository import TransferStore
from store.resource_actions import ActionResult, ResourceActions

router = APIRouter(tags=["resources"], responses=ERROR_RESPONSES)

# Money in requests: a decimal string with exactly two decimals (SPEC, Fine points).
MoneyText = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,9}\.[0-9]{2}$")]
MAX_MONTHS = 120
ResourceIdPath = Annotated[str, Path(pattern=ID_PATTERN, description="A resource id")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x21-\x7e]{1,100}$",
        description="Optional: a repeat with the same key answers the first request's charges "
        "(renew, upgrade, convert_billing, auto-renew).",
    ),
]


def now() -> datetime:
    return datetime.now(UTC)


_actions: WeakKeyDictionary[TransferStore, ResourceActions] = WeakKeyDictionary()


def get_actions(service: ServiceDep) -> ResourceActions:
    """ResourceActions on the engine of the service's store, one per store."""
    actions = _actions.get(service.store)
    if actions is None:
        actions = _actions[service.store] = ResourceActions(service.store.engine)
    return actions


ActionsDep = Annotated[ResourceActions, Depends(get_actions)]


# -- response shapes ----------------------------------------------------------------------------


class Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class BlockerOut(Out):
    code: str
    message: str


class ResourceOut(Out):
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
            bandwidth_mbps=resource.bandwidth_mbps,
            resource_group=resource.resource_group,
            tags=resource.tags,
            released=resource.released,
            locked=resource.locked_by_order_id is not None,
            locked_by_order_id=resource.locked_by_order_id,
            **extra,
        )


class ListedResource(ResourceOut):
    blockers: list[BlockerOut]


class ResourcePage(Out):
    items: list[ListedResource]
    next_cursor: str | None


class ChargeOut(Out):
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


class RefundItemOut(Out):
    charge_id: int
    kind: str
    payer_account_id: str
    amount: str
    period_start: datetime
    period_end: datetime
    refundable: str = Field(examples=["0.00"])
    refunds_charge_id: int | None


class RefundQuoteOut(Out):
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


class ResourceAction(StrEnum):
    STOP = "stop"
    START = "start"
    ATTACH = "attach"
    DETACH = "detach"
    RENEW = "renew"
    UPGRADE = "upgrade"
    DOWNGRADE = "downgrade"
    RELEASE = "release"
    CHANGE_OS = "change_os"
    CHANGE_BANDWIDTH = "change_bandwidth"
    CONVERT_BILLING = "convert_billing"


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


def _arguments(action: ResourceAction, body: dict[str, Any] | None) -> Any:
    try:
        return BODIES[action].model_validate(body or {})
    except ValidationError as error:
        problems = [
            {"loc": ["body", *(str(part) for part in e["loc"])], "msg": e["msg"]} for e in error.errors()
        ]
        raise TransferError(
            ErrorCode.VALIDATION_ERROR, f"invalid body for {action.value}", {"errors": problems}
        ) from None


# -- the caller's resources -----------------------------------------------------------------------


def _listed(resources: list[Resource], at: datetime) -> list[ListedResource]:
    """Each resource with its blockers, its owner as the source."""
    listed = []
    for resource in resources:
        codes = resource_blockers(resource, source_account_id=resource.owner_account_id, now=at)
        blockers = [
            BlockerOut(code=b.code.value, message=b.message) for b in (blocker(c, resource) for c in codes)
        ]
        listed.append(ListedResource.of(resource, blockers=blockers))
    return listed


def _page(
    resources: list[Resource], *, transferable: bool | None, limit: int, cursor: str | None
) -> ResourcePage:
    """Oldest first, by (created_at, id); `transferable` keeps those without (or, false, with) blockers."""
    after = decode_cursor(cursor) if cursor is not None else None
    items = _listed(sorted(resources, key=lambda r: (r.created_at, r.id)), now())
    if transferable is not None:
        items = [item for item in items if (not item.blockers) is transferable]
    if after is not None:
        items = [item for item in items if (item.created_at, item.id) > after]
    page = items[:limit]
    more = len(items) > limit
    return ResourcePage(
        items=page, next_cursor=encode_cursor(page[-1].created_at, page[-1].id) if more else None
    )


Transferable = Annotated[
    bool | None,
    Query(description="true: only resources without blockers; false: only those with blockers"),
]
Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=512)]


@router.get("/v1/resources", response_model=ResourcePage)
async def list_resources(
    principal: PrincipalDep,
    actions: ActionsDep,
    transferable: Transferable = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> ResourcePage:
    """The caller's resources, each with the blockers a transfer of it would meet now."""
    resources = await actions.list_owned({principal.account_id})
    return _page(resources, transferable=transferable, limit=limit, cursor=cursor)


@router.get("/v1/organization/resources", response_model=ResourcePage, tags=["organization"])
async def list_organization_resources(
    principal: PrincipalDep,
    actions: ActionsDep,
    transferable: Transferable = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> ResourcePage:
    """The management account's view: its members' resources (read-only), blockers for their owners."""
    if not views_managed_accounts(principal):
        return _page([], transferable=transferable, limit=limit, cursor=cursor)
    resources = await actions.list_managed(principal.account_id)
    return _page(resources, transferable=transferable, limit=limit, cursor=cursor)


@router.get("/v1/resources/{resource_id}", response_model=ResourceOut)
async def get_resource(resource_id: ResourceIdPath, principal: PrincipalDep, actions: ActionsDep) -> Any:
    await _owned_unless_root(actions, resource_id, principal)
    return ResourceOut.of(await actions.get(resource_id, actor_account_id=principal.account_id))


async def _owned_unless_root(actions: ResourceActions, resource_id: str, principal: Principal) -> None:
    """A RAM user shares its account's resources, not the management view of its account's root."""
    if not views_managed_accounts(principal):
        resource = await actions.get(resource_id, actor_account_id=principal.account_id)
        if resource.owner_account_id != principal.account_id:
            raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)


@router.get("/v1/resources/{resource_id}/refund-quote", response_model=RefundQuoteOut)
async def refund_quote(resource_id: ResourceIdPath, principal: PrincipalDep, actions: ActionsDep) -> Any:
    """Every charge of the resource with what it would refund its current owner now, and the total."""
    await _owned_unless_root(actions, resource_id, principal)
    quote = await actions.refund_quote(resource_id, actor_account_id=principal.account_id, now=now())
    return RefundQuoteOut.of(resource_id, quote)


@router.post("/v1/resources/{resource_id}/actions/{action}", response_model=ActionOut)
async def act(
    resource_id: ResourceIdPath,
    action: ResourceAction,
    principal: PrincipalDep,
    actions: ActionsDep,
    idempotency_key: IdempotencyKey = None,
    body: Annotated[
        dict[str, Any] | None,
        Body(
            description="Per action: attach {instance_id}, renew {months}, upgrade and downgrade "
            '{monthly_price: "12.50"}, change_bandwidth {bandwidth_mbps}, convert_billing '
            "{billing?, months?}, change_os {image_id?}; the others take none."
        ),
    ] = None,
) -> Any:
    """Operates the resource. Refused with RESOURCE_LOCKED_FOR_TRANSFER while a transfer order holds it
    (start only once the order is confirmed; stop and detach stay allowed)."""
    arguments = _arguments(action, body)
    await _owned_unless_root(actions, resource_id, principal)
    result = await _perform(actions, action, arguments, resource_id, principal.account_id, idempotency_key)
    return ActionOut.of(
        result.resource, action=action.value, charges=[ChargeOut.of(c) for c in result.charges]
    )


async def _perform(
    actions: ResourceActions,
    action: ResourceAction,
    arguments: Any,
    resource_id: str,
    actor: str,
    key: str | None,
) -> ActionResult:
    at = now()
    match action:
        case ResourceAction.STOP:
            return await actions.stop(resource_id, actor_account_id=actor)
        case ResourceAction.START:
            return await actions.start(resource_id, actor_account_id=actor)
        case ResourceAction.ATTACH:
            return await actions.attach(
                resource_id, actor_account_id=actor, instance_id=arguments.instance_id
            )
        case ResourceAction.DETACH:
            return await actions.detach(resource_id, actor_account_id=actor)
        case ResourceAction.RENEW:
            return await actions.renew(
                resource_id, actor_account_id=actor, months=arguments.months, now=at, request_key=key
            )
        case ResourceAction.UPGRADE:
            return await actions.upgrade(
                resource_id,
                actor_account_id=actor,
                monthly_price=Decimal(arguments.monthly_price),
                now=at,
                request_key=key,
            )
        case ResourceAction.DOWNGRADE:
            return await actions.downgrade(
                resource_id, actor_account_id=actor, monthly_price=Decimal(arguments.monthly_price), now=at
            )
        case ResourceAction.RELEASE:
            return await actions.release(resource_id, actor_account_id=actor, now=at)
        case ResourceAction.CHANGE_OS:
            return await actions.change_os(resource_id, actor_account_id=actor)
        case ResourceAction.CHANGE_BANDWIDTH:
            return await actions.change_bandwidth(
                resource_id, actor_account_id=actor, bandwidth_mbps=arguments.bandwidth_mbps
            )
        case ResourceAction.CONVERT_BILLING:
            return await actions.convert_billing(
                resource_id,
                actor_account_id=actor,
                now=at,
                to=arguments.billing,
                months=arguments.months or 1,
                request_key=key,
            )


# -- provisioning (admin) -------------------------------------------------------------------------


TagKey = Annotated[str, Field(max_length=128), NoNul]
TagValue = Annotated[str, Field(max_length=256), NoNul]


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
    tags: dict[TagKey, TagValue] = Field(default_factory=dict, max_length=50)

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


@router.post(
    "/v1/admin/resources",
    response_model=ResourceOut,
    status_code=201,
    dependencies=[Depends(require_admin)],
    tags=["admin"],
)
async def create_resource(new: NewResource, service: ServiceDep, response: Response) -> Any:
    """Provisions a resource (a subscription gets its `original` charge). The same id again answers
    the existing resource as it is (200)."""
    at = now()
    if await service.store.get_resource(new.id) is not None:
        response.status_code = 200
    return ResourceOut.of(await service.store.create_resource(new.resource(at), at=at))


@router.post(
    "/v1/admin/resources/{resource_id}/auto-renew",
    response_model=ChargeOut,
    dependencies=[Depends(require_admin)],
    tags=["admin"],
)
async def auto_renew(
    resource_id: ResourceIdPath, actions: ActionsDep, idempotency_key: IdempotencyKey = None
) -> Any:
    """Runs one auto-renewal now: one month, charged to the account that owns the resource now."""
    return ChargeOut.of(await actions.auto_renew(resource_id, at=now(), request_key=idempotency_key))
