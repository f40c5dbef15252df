"""A reject's reason, recorded with the order's reject event.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("order_events") as table:
        table.add_column(sa.Column("reason", sa.String(512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("order_events") as table:
        table.drop_column("reason")
