"""The initial schema: accounts, credentials, organizations, resources, orders and their history,
charges, billing hand-offs and used verification steps.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OPEN_ORDER_SQL = "status IN ('pending', 'transferring')"


def _time(name: str, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("entity_id", sa.String(128), nullable=True),
        sa.Column("entity_name", sa.String(256), nullable=True),
        sa.Column("frozen", sa.Boolean(), nullable=False),
        sa.Column("mfa_secret", sa.String(64), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_accounts"),
    )
    op.create_index("ix_accounts_entity_id", "accounts", ["entity_id"])

    op.create_table(
        "credentials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ram_user_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(128), nullable=True),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_credentials"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_credentials_account_id_accounts"),
        sa.UniqueConstraint("ram_user_id", name="uq_credentials_ram_user_id"),
        sa.UniqueConstraint("token_sha256", name="uq_credentials_token_sha256"),
    )
    op.create_index("ix_credentials_account_id", "credentials", ["account_id"])

    op.create_table(
        "organizations",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("management_account_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_organizations"),
        sa.ForeignKeyConstraint(
            ["management_account_id"],
            ["accounts.id"],
            name="fk_organizations_management_account_id_accounts",
        ),
        sa.UniqueConstraint("management_account_id", name="uq_organizations_management_account_id"),
    )

    op.create_table(
        "organization_members",
        sa.Column("organization_id", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("organization_id", "account_id", name="pk_organization_members"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_organization_members_organization_id_organizations",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_organization_members_account_id_accounts"
        ),
        sa.UniqueConstraint("account_id", name="uq_organization_members_account_id"),
    )

    op.create_table(
        "resources",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("product", sa.String(16), nullable=False),
        sa.Column("billing", sa.String(16), nullable=False),
        sa.Column("owner_account_id", sa.String(64), nullable=False),
        sa.Column("region", sa.String(64), nullable=False),
        _time("created_at"),
        _time("expires_at", nullable=True),
        sa.Column("auto_renew", sa.Boolean(), nullable=False),
        sa.Column("monthly_price", sa.Numeric(14, 2), nullable=False),
        sa.Column("network", sa.String(16), nullable=True),
        sa.Column("status", sa.String(16), nullable=True),
        sa.Column("attached_to", sa.String(64), nullable=True),
        sa.Column("bandwidth_mbps", sa.Integer(), nullable=True),
        sa.Column("resource_group", sa.String(128), nullable=True),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("released", sa.Boolean(), nullable=False),
        sa.Column("locked_by_order_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_resources"),
        sa.ForeignKeyConstraint(
            ["owner_account_id"], ["accounts.id"], name="fk_resources_owner_account_id_accounts"
        ),
    )
    op.create_index("ix_resources_owner_account_id", "resources", ["owner_account_id"])

    op.create_table(
        "orders",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("product", sa.String(16), nullable=False),
        sa.Column("source_account_id", sa.String(64), nullable=False),
        sa.Column("destination_account_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _time("created_at"),
        _time("expires_at"),
        _time("confirmed_at", nullable=True),
        _time("completed_at", nullable=True),
        sa.Column("failure_code", sa.String(64), nullable=True),
        sa.Column("failure_message", sa.String(1024), nullable=True),
        sa.Column("agreement_version", sa.String(32), nullable=False),
        sa.Column("receiving_config", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("order_id", name="pk_orders"),
        sa.ForeignKeyConstraint(["resource_id"], ["resources.id"], name="fk_orders_resource_id_resources"),
        sa.ForeignKeyConstraint(
            ["source_account_id"], ["accounts.id"], name="fk_orders_source_account_id_accounts"
        ),
        sa.ForeignKeyConstraint(
            ["destination_account_id"], ["accounts.id"], name="fk_orders_destination_account_id_accounts"
        ),
    )
    op.create_index("ix_orders_resource_id", "orders", ["resource_id"])
    op.create_index("ix_orders_source_account_id_created_at", "orders", ["source_account_id", "created_at"])
    op.create_index(
        "ix_orders_destination_account_id_created_at", "orders", ["destination_account_id", "created_at"]
    )
    op.create_index(
        "uq_orders_open_resource_id",
        "orders",
        ["resource_id"],
        unique=True,
        sqlite_where=sa.text(OPEN_ORDER_SQL),
        postgresql_where=sa.text(OPEN_ORDER_SQL),
    )

    op.create_table(
        "order_steps",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        _time("started_at"),
        _time("finished_at", nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.String(1024), nullable=True),
        sa.PrimaryKeyConstraint("order_id", "name", name="pk_order_steps"),
    )

    op.create_table(
        "order_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("order_id", sa.String(64), nullable=False),
        _time("at"),
        sa.Column("actor_account_id", sa.String(64), nullable=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("code", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_order_events"),
        sa.UniqueConstraint("event_id", name="uq_order_events_event_id"),
    )
    op.create_index("ix_order_events_order_id", "order_events", ["order_id"])

    op.create_table(
        "charges",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("payer_account_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.Numeric(14, 2), nullable=False),
        _time("period_start"),
        _time("period_end"),
        _time("created_at"),
        sa.Column("refunds_charge_id", sa.Integer(), nullable=True),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_charges"),
        sa.ForeignKeyConstraint(["resource_id"], ["resources.id"], name="fk_charges_resource_id_resources"),
        sa.ForeignKeyConstraint(
            ["payer_account_id"], ["accounts.id"], name="fk_charges_payer_account_id_accounts"
        ),
        sa.ForeignKeyConstraint(
            ["refunds_charge_id"], ["charges.id"], name="fk_charges_refunds_charge_id_charges"
        ),
        sa.ForeignKeyConstraint(["order_id"], ["orders.order_id"], name="fk_charges_order_id_orders"),
        sa.UniqueConstraint("idempotency_key", name="uq_charges_idempotency_key"),
    )
    op.create_index("ix_charges_resource_id", "charges", ["resource_id"])

    op.create_table(
        "billing_handoffs",
        sa.Column("order_id", sa.String(64), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("from_account_id", sa.String(64), nullable=False),
        sa.Column("to_account_id", sa.String(64), nullable=False),
        _time("cut_over_at"),
        _time("reverted_at", nullable=True),
        sa.PrimaryKeyConstraint("order_id", name="pk_billing_handoffs"),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.order_id"], name="fk_billing_handoffs_order_id_orders"
        ),
        sa.ForeignKeyConstraint(
            ["resource_id"], ["resources.id"], name="fk_billing_handoffs_resource_id_resources"
        ),
        sa.ForeignKeyConstraint(
            ["from_account_id"], ["accounts.id"], name="fk_billing_handoffs_from_account_id_accounts"
        ),
        sa.ForeignKeyConstraint(
            ["to_account_id"], ["accounts.id"], name="fk_billing_handoffs_to_account_id_accounts"
        ),
    )
    op.create_index("ix_billing_handoffs_resource_id", "billing_handoffs", ["resource_id"])

    op.create_table(
        "verifications",
        sa.Column("verification_id", sa.String(200), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("time_step", sa.BigInteger(), nullable=False),
        _time("received_at"),
        sa.Column("order_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("verification_id", name="pk_verifications"),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], name="fk_verifications_account_id_accounts"),
        sa.UniqueConstraint("account_id", "time_step", name="uq_verifications_account_id_time_step"),
    )


def downgrade() -> None:
    for table in (
        "verifications",
        "billing_handoffs",
        "charges",
        "order_events",
        "order_steps",
        "orders",
        "resources",
        "organization_members",
        "organizations",
        "credentials",
        "accounts",
    ):
        op.drop_table(table)
