"""The ORM tables. Enums are non-native (VARCHAR holding the enum's value), read back as the enum.

Ids are strings of up to 64 characters (SPEC §2). order_steps, order_events and verifications carry
an order_id without a foreign key: the source's verification and the open_order step happen before
the order row exists, and the event log also keeps refused attempts.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from domain.codes import ErrorCode
from domain.models import (
    AccountKind,
    Action,
    Billing,
    ChargeKind,
    InstanceStatus,
    Network,
    OrderStatus,
    Outcome,
    PrincipalKind,
    Product,
    StepStatus,
)
from domain.verification import SecurityEventKind
from store.types import Money, UTCDateTime, enum_of

ID = 64

# Deterministic constraint names on both backends, so migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# The statuses that hold the resource lock (OrderStatus.is_open), as SQL for the partial index.
OPEN_ORDER_SQL = "status IN ('pending', 'transferring')"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class AccountRow(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[AccountKind] = mapped_column(enum_of(AccountKind, 16))
    verified: Mapped[bool] = mapped_column(Boolean)
    entity_id: Mapped[str | None] = mapped_column(String(128), index=True)
    entity_name: Mapped[str | None] = mapped_column(String(256))
    frozen: Mapped[bool] = mapped_column(Boolean)
    mfa_secret: Mapped[str] = mapped_column(String(256))  # sealed (store.secret_box)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CredentialRow(Base):
    """An API token: an account's root credential or a RAM user (the admin token is a setting)."""

    __tablename__ = "credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[PrincipalKind] = mapped_column(enum_of(PrincipalKind, 16))
    ram_user_id: Mapped[str | None] = mapped_column(String(ID), unique=True)
    name: Mapped[str | None] = mapped_column(String(128))
    # Only the SHA-256 of a token is kept: a leaked table grants no access.
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)


class OrganizationRow(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    management_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), unique=True)


class OrganizationMemberRow(Base):
    __tablename__ = "organization_members"

    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), primary_key=True)
    # unique: an account belongs to at most one organization.
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True, unique=True)


class ResourceRow(Base):
    __tablename__ = "resources"

    id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    product: Mapped[Product] = mapped_column(enum_of(Product, 16))
    billing: Mapped[Billing] = mapped_column(enum_of(Billing, 16))
    owner_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    region: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    auto_renew: Mapped[bool] = mapped_column(Boolean)
    monthly_price: Mapped[Decimal] = mapped_column(Money)
    network: Mapped[Network | None] = mapped_column(enum_of(Network, 16))
    status: Mapped[InstanceStatus | None] = mapped_column(enum_of(InstanceStatus, 16))
    # Indexed: every read of an ECS instance looks up the EIPs attached to it.
    attached_to: Mapped[str | None] = mapped_column(String(ID), index=True)
    bandwidth_mbps: Mapped[int | None] = mapped_column(Integer)
    resource_group: Mapped[str | None] = mapped_column(String(128))
    tags: Mapped[dict[str, Any]] = mapped_column(JSON)
    released: Mapped[bool] = mapped_column(Boolean)
    # THE LOCK: the open order holding this resource. No foreign key, to keep the
    # resources <-> orders cycle out of the schema; open_order and the terminal transitions keep it right.
    # Indexed: an order's terminal transition releases its lock by the order's id.
    locked_by_order_id: Mapped[str | None] = mapped_column(String(ID), index=True)


class OrderRow(Base):
    __tablename__ = "orders"
    __table_args__ = (
        # Second guard behind the lock: one open order per resource, whatever the code does.
        Index(
            "uq_orders_open_resource_id",
            "resource_id",
            unique=True,
            sqlite_where=text(OPEN_ORDER_SQL),
            postgresql_where=text(OPEN_ORDER_SQL),
        ),
        # list_orders: newest first per party.
        Index("ix_orders_source_account_id_created_at", "source_account_id", "created_at"),
        Index("ix_orders_destination_account_id_created_at", "destination_account_id", "created_at"),
    )

    order_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    resource_id: Mapped[str] = mapped_column(ForeignKey("resources.id"), index=True)
    product: Mapped[Product] = mapped_column(enum_of(Product, 16))
    source_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    destination_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    status: Mapped[OrderStatus] = mapped_column(enum_of(OrderStatus, 16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failure_code: Mapped[ErrorCode | None] = mapped_column(enum_of(ErrorCode, 64))
    failure_message: Mapped[str | None] = mapped_column(String(1024))
    agreement_version: Mapped[str] = mapped_column(String(32))
    receiving_config: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class OrderStepRow(Base):
    __tablename__ = "order_steps"

    order_id: Mapped[str] = mapped_column(String(ID), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    status: Mapped[StepStatus] = mapped_column(enum_of(StepStatus, 16))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer)
    error_code: Mapped[ErrorCode | None] = mapped_column(enum_of(ErrorCode, 64))
    error_message: Mapped[str | None] = mapped_column(String(1024))


class OrderEventRow(Base):
    __tablename__ = "order_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # Chosen by the caller (e.g. "<order_id>:confirm"): a retried write records the event once.
    event_id: Mapped[str] = mapped_column(String(200), unique=True)
    order_id: Mapped[str] = mapped_column(String(ID), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor_account_id: Mapped[str | None] = mapped_column(String(ID))
    action: Mapped[Action] = mapped_column(enum_of(Action, 16))
    outcome: Mapped[Outcome] = mapped_column(enum_of(Outcome, 16))
    code: Mapped[ErrorCode | None] = mapped_column(enum_of(ErrorCode, 64))
    reason: Mapped[str | None] = mapped_column(String(512))


class ChargeRow(Base):
    __tablename__ = "charges"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_id: Mapped[str] = mapped_column(ForeignKey("resources.id"), index=True)
    payer_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[ChargeKind] = mapped_column(enum_of(ChargeKind, 16))
    amount: Mapped[Decimal] = mapped_column(Money)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    refunds_charge_id: Mapped[int | None] = mapped_column(ForeignKey("charges.id"))
    order_id: Mapped[str | None] = mapped_column(ForeignKey("orders.order_id"))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)


class BillingHandoffRow(Base):
    """From cut_over_at on, to_account_id pays; reverted_at marks a compensated hand-off."""

    __tablename__ = "billing_handoffs"

    order_id: Mapped[str] = mapped_column(ForeignKey("orders.order_id"), primary_key=True)
    resource_id: Mapped[str] = mapped_column(ForeignKey("resources.id"), index=True)
    from_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    to_account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    cut_over_at: Mapped[datetime] = mapped_column(UTCDateTime)
    reverted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyKeyRow(Base):
    """The first answer to a POST with an Idempotency-Key, per principal (`scope`) and key (SPEC §5)."""

    __tablename__ = "idempotency_keys"

    scope: Mapped[str] = mapped_column(String(160), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[int | None] = mapped_column(Integer)
    body: Mapped[bytes | None] = mapped_column(LargeBinary)
    content_type: Mapped[str | None] = mapped_column(String(128))


class SecurityEventRow(Base):
    """An account's security event (SPEC §3 "Verification attempts"): failures and lockouts."""

    __tablename__ = "security_events"
    __table_args__ = (Index("ix_security_events_account_at", "account_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(ID))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[SecurityEventKind] = mapped_column(enum_of(SecurityEventKind, 32))
    principal: Mapped[dict[str, Any]] = mapped_column(JSON)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)


class VerificationRow(Base):
    """A used TOTP step: (account_id, time_step) is unique, so a code works once (SPEC §5)."""

    __tablename__ = "verifications"
    __table_args__ = (UniqueConstraint("account_id", "time_step"),)

    verification_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    time_step: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    order_id: Mapped[str | None] = mapped_column(String(ID))
