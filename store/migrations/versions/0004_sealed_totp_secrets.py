"""TOTP secrets sealed at rest (store.secret_box): the column widens to hold a Fernet token, and secrets
kept in plain text by 0001-0003 are sealed with the key `transfer migrate` is given.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

from store.secret_box import SECRET_BOX, is_sealed

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

accounts = sa.table("accounts", sa.column("id", sa.String), sa.column("mfa_secret", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("accounts") as table:
        table.alter_column(
            "mfa_secret", type_=sa.String(256), existing_type=sa.String(64), existing_nullable=False
        )
    connection = op.get_bind()
    plain = [
        (row.id, row.mfa_secret)
        for row in connection.execute(sa.select(accounts))
        if not is_sealed(row.mfa_secret)
    ]
    if not plain:
        return
    box = context.config.attributes.get(SECRET_BOX)
    if box is None:
        raise RuntimeError("TOTP secrets in plain text: run `transfer migrate` with TRANSFER_SECRET_KEY set")
    for account_id, secret in plain:
        connection.execute(
            accounts.update().where(accounts.c.id == account_id).values(mfa_secret=box.seal(secret))
        )


def downgrade() -> None:
    raise RuntimeError("sealed secrets are not unsealed by a downgrade")
