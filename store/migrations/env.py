"""Alembic environment: migrations run on a connection that store.db.migrate() hands over.

Run from the command line (`alembic -c store/alembic.ini upgrade head`), the database URL comes
from `-x url=...` or TRANSFER_DATABASE_URL and an async engine of store.db runs them.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection

from store.db import create_engine
from store.tables import Base

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_from_url(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("TRANSFER_DATABASE_URL")
    if not url:
        raise SystemExit("give the database URL with -x url=... or TRANSFER_DATABASE_URL")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    asyncio.run(run_migrations_from_url(url))


main()
