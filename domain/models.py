"""Domain models of SPEC §2 and §4. Timestamps are timezone-aware UTC; money is Decimal with 2 places."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from domain.codes import ErrorCode

# Ids of accounts, resources, orders, RAM users and organizations share one pattern (SPEC §2).
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]

# The legal transfer agreement a confirm or initiate accepts; recorded with the order.
AGREEMENT_VERSION = "2026-11"


CENT = Decimal("0.01")
# The ledger keeps 12 digits before the point (NUMERIC(14, 2)).
MAX_MONEY = Decimal("999999999999.99")


def _to_cents(value: Decimal) -> Decimal:
    if not value.is_finite() or value != value.quantize(CENT):
        raise ValueError("money has at most two decimal places")
    if abs(value) > MAX_MONEY:
        raise ValueError(f"money is at most {MAX_MONEY} in absolute value")
    return value.quantize(CENT)


Money = Annotated[Decimal, AfterValidator(_to_cents)]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AccountKind(StrEnum):
    INDIVIDUAL = "individual"
    ENTERPRISE = "enterprise"


class Product(StrEnum):
    ECS = "ecs"
    EIP = "eip"
    RDS = "rds"  # registrable, never transferable


class Billing(StrEnum):
    SUBSCRIPTION = "subscription"
    PAY_AS_YOU_GO = "pay_as_you_go"


class Network(StrEnum):
    VPC = "vpc"
    CLASSIC = "classic"


class InstanceStatus(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class Role(StrEnum):
    """The caller's part in an order: lists filter by it."""

    SOURCE = "source"
    DESTINATION = "destination"


class PrincipalKind(StrEnum):
    ROOT = "root"
    RAM_USER = "ram_user"


class OrderStatus(StrEnum):
    PENDING = "pending"
    TRANSFERRING = "transferring"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        """Open orders hold the resource lock."""
        return self in (OrderStatus.PENDING, OrderStatus.TRANSFERRING)

    @property
    def counts_for_destination_limits(self) -> bool:
        return self in (OrderStatus.PENDING, OrderStatus.TRANSFERRING, OrderStatus.COMPLETED)

    @property
    def is_terminal(self) -> bool:
        return not self.is_open


class ChargeKind(StrEnum):
    ORIGINAL = "original"
    RENEWAL = "renewal"
    AUTO_RENEWAL = "auto_renewal"
    UPGRADE = "upgrade"
    REFUND = "refund"


class StepStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Action(StrEnum):
    INITIATE = "initiate"
    CONFIRM = "confirm"
    CANCEL = "cancel"
    REJECT = "reject"
    EXPIRE = "expire"
    COMPLETE = "complete"
    FAIL = "fail"
    # an operator cancelled the run from Temporal (SPEC §4 "Operators")
    OPERATOR_CANCEL = "operator_cancel"


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    REFUSED = "refused"


class Account(Frozen):
    id: Id
    name: str = Field(min_length=1, max_length=128)
    kind: AccountKind
    verified: bool
    entity_id: str | None = Field(default=None, max_length=128)
    entity_name: str | None = Field(default=None, max_length=256)
    frozen: bool = False
    mfa_secret: str


class Principal(Frozen):
    """Who calls: an account's root credential or one of its RAM users.

    The management account of an organization acts through its own root principal; its read-only
    view of member accounts is decided by organization membership, not by the principal.
    """

    kind: PrincipalKind
    account_id: Id
    ram_user_id: Id | None = None


class Resource(Frozen):
    id: Id
    product: Product
    billing: Billing
    owner_account_id: Id
    region: str
    created_at: datetime
    expires_at: datetime | None = None
    auto_renew: bool = False
    monthly_price: Money
    network: Network | None = None
    status: InstanceStatus | None = None
    attached_to: Id | None = None
    bandwidth_mbps: int | None = None
    resource_group: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    released: bool = False
    locked_by_order_id: Id | None = None
    # ECS: the EIPs attached to the instance (a fact read with it, not a column of its own).
    attached_eip_ids: list[Id] = Field(default_factory=list)


class Refusal(Frozen):
    """Why something was refused: a stable SPEC code, a message in words and structured details.

    The one shape of a refusal from the domain to the HTTP envelope: an order's failure, a step's error,
    a batch item's error, a dry run's blocker. Raised as domain.refusals.TransferError.
    """

    code: ErrorCode
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class Step(Frozen):
    name: str  # activities.order_transactions.StepName
    status: StepStatus
    started_at: datetime
    finished_at: datetime | None = None
    attempts: int = 1
    error: Refusal | None = None


class Event(Frozen):
    at: datetime
    actor_account_id: str | None  # None for the system (expiry, hand-off)
    action: Action
    outcome: Outcome
    code: ErrorCode | None = None
    reason: str | None = None  # a reject's reason


class ReceivingConfig(Frozen):
    resource_group: str | None = Field(default=None, max_length=128)
    tags: dict[str, str] = Field(default_factory=dict)


class Order(Frozen):
    order_id: Id
    resource_id: Id
    product: Product
    source_account_id: Id
    destination_account_id: Id
    status: OrderStatus
    created_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None = None
    completed_at: datetime | None = None
    failure: Refusal | None = None
    agreement_version: str
    receiving_config: ReceivingConfig | None = None  # the confirm's, applied after the hand-off
    steps: list[Step] = Field(default_factory=list)
    events: list[Event] = Field(default_factory=list)


class Charge(Frozen):
    id: int
    resource_id: Id
    payer_account_id: Id
    kind: ChargeKind
    amount: Money
    period_start: datetime
    period_end: datetime
    created_at: datetime
    refunds_charge_id: int | None = None


class PriorDestination(Frozen):
    """A destination of one of the source's orders that counts for the destination limits."""

    account_id: str
    kind: AccountKind
    entity_id: str | None


class AccountPair(Frozen):
    """The facts the request-level account rules of an initiate (and of a confirm) read."""

    source: Account
    destination: Account | None
    # destinations of the source's other pending, transferring and completed orders
    prior_destinations: list[PriorDestination]


class ResourceAction(StrEnum):
    """What an owner does to a resource (SPEC §5). Auto-renewal is the provider's, never locked."""

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
