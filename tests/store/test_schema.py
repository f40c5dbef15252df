"""The migrations build exactly tables.py's schema, and the column types round-trip on both backends."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, exc, inspect, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.models import ChargeKind
from store.db import OUTAGE_ERRORS, alembic_config, create_engine, migrate, sqlite_url
from store.secret_box import SecretBox
from store.tables import AccountRow, Base, ResourceRow
from tests.factory import SECRET_BOX
from tests.store.builders import NOW, SECRET, account, add_accounts, add_resources, resource
from tests.stores import Stores


def _schema_differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def test_migrations_build_the_tables_of_the_metadata(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        assert await connection.run_sync(_schema_differences) == []


async def test_the_open_order_index_is_unique_and_partial(engine: AsyncEngine) -> None:
    def indexes(connection: Connection) -> list[dict[str, Any]]:
        return [dict(index) for index in inspect(connection).get_indexes("orders")]

    async with engine.connect() as connection:
        found = {index["name"]: index for index in await connection.run_sync(indexes)}
    index = found["uq_orders_open_resource_id"]
    assert index["unique"] and index["column_names"] == ["resource_id"]
    where = index["dialect_options"].get(f"{engine.dialect.name}_where")
    assert where is not None and "pending" in str(where) and "transferring" in str(where)


async def test_migrate_is_repeatable_and_independent_of_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = sqlite_url(tmp_path / "nested" / "dir" / "transfer.db")  # parent created on demand
    await migrate(url)
    await migrate(url)
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_schema_differences) == []
            journal = (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar()
            foreign_keys = (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        assert (journal, foreign_keys) == ("wal", 1)
    finally:
        await engine.dispose()
    assert os.listdir(tmp_path) == ["nested"]


async def test_datetimes_come_back_aware_utc_and_money_as_cents(store: Stores) -> None:
    shanghai = timezone(timedelta(hours=8))
    created = datetime(2026, 10, 1, 20, 30, 15, 123456, tzinfo=shanghai)
    await add_accounts(store, account("src"))
    await add_resources(
        store,
        resource(
            "r-1",
            "src",
            created_at=created,
            expires_at=created + timedelta(days=90),
            monthly_price=Decimal("1234567890.10"),
        ),
    )
    stored = await store.get_resource("r-1")
    assert stored is not None
    assert stored.created_at == created and stored.created_at.tzinfo is UTC
    assert stored.created_at.hour == 12  # 20:30 in Shanghai
    assert stored.monthly_price == Decimal("1234567890.10")
    assert str(stored.monthly_price) == "1234567890.10"

    (original,) = await store.list_charges("r-1")
    assert original.amount == Decimal("3703703670.30") and str(original.amount) == "3703703670.30"
    assert original.period_start.tzinfo is UTC and original.created_at == NOW

    refund = await store.add_charge(
        resource_id="r-1",
        payer_account_id="src",
        kind=ChargeKind.REFUND,
        amount=Decimal("-0.01"),
        period_start=NOW,
        period_end=NOW + timedelta(days=1),
        created_at=NOW,
        refunds_charge_id=original.id,
    )
    assert str(refund.amount) == "-0.01" and refund.refunds_charge_id == original.id
    assert [str(c.amount) for c in await store.list_charges("r-1")] == ["3703703670.30", "-0.01"]


async def test_naive_datetimes_are_refused(store: Stores) -> None:
    with pytest.raises(Exception, match="timezone-aware"):
        await store.provisioning.create_account(account("a"), created_at=datetime(2026, 1, 1))


async def test_datetimes_order_in_sql_as_in_time(store: Stores, engine: AsyncEngine) -> None:
    """SQLite compares the stored text: every value must have one format, offsets included."""
    await add_accounts(store, account("src"))
    plus_two = timezone(timedelta(hours=2))
    earlier = resource("r-early", "src", created_at=datetime(2026, 10, 1, 11, 0, tzinfo=plus_two))  # 09:00Z
    later = resource("r-late", "src", created_at=datetime(2026, 10, 1, 10, 0, tzinfo=UTC))
    await add_resources(store, later, earlier)
    async with engine.connect() as connection:
        ordered = await connection.scalars(select(ResourceRow.id).order_by(ResourceRow.created_at))
        assert list(ordered) == ["r-early", "r-late"]
        boundary = datetime(2026, 10, 1, 9, 30, tzinfo=UTC)
        after = await connection.scalars(select(ResourceRow.id).where(ResourceRow.created_at > boundary))
        assert list(after) == ["r-late"]


async def test_reads_do_not_wait_for_a_writer(store: Stores, engine: AsyncEngine) -> None:
    """Writers take SQLite's write lock at BEGIN; reads run on a WAL snapshot beside them."""
    await add_accounts(store, account("alice"))
    async with engine.begin() as writer:
        await writer.execute(update(AccountRow).where(AccountRow.id == "alice").values(name="Alice Zhang"))
        seen = await asyncio.wait_for(store.get_account("alice"), timeout=5)
        assert seen is not None and seen.name == "Account alice"  # the committed state
        blocked = asyncio.create_task(store.provisioning.update_account("alice", frozen=True))
        await asyncio.sleep(0.2)
        assert not blocked.done()  # a second writer waits for the first
    assert (await blocked).frozen and (await store.get_account("alice")).name == "Alice Zhang"  # type: ignore[union-attr]


# --- secrets at rest ------------------------------------------------------------------------------------


async def test_totp_secrets_are_sealed_at_rest(store: Stores, engine: AsyncEngine) -> None:
    await add_accounts(store, account("alice"))
    async with engine.connect() as connection:
        stored = (
            await connection.execute(select(AccountRow.mfa_secret).where(AccountRow.id == "alice"))
        ).scalar_one()
    assert stored.startswith("fernet:") and SECRET not in stored
    read = await store.get_account("alice")
    assert read is not None and read.mfa_secret == SECRET
    with pytest.raises(ValueError, match="another TRANSFER_SECRET_KEY"):
        SecretBox("another key").open(stored)


async def test_migration_0004_seals_secrets_an_older_schema_kept_in_plain_text(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "old.db")
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "0003"))
            await connection.execute(
                text(
                    "INSERT INTO accounts (id, name, kind, verified, frozen, mfa_secret, created_at) "
                    "VALUES ('old', 'Old', 'individual', 0, 0, :secret, '2026-01-01 00:00:00.000000')"
                ),
                {"secret": SECRET},
            )
        with pytest.raises(RuntimeError, match="TRANSFER_SECRET_KEY"):
            await migrate(url)  # no key: it cannot seal them, and changes nothing
        await migrate(url, SECRET_BOX)
        async with engine.connect() as connection:
            sealed = (await connection.execute(text("SELECT mfa_secret FROM accounts"))).scalar_one()
        assert SECRET_BOX.open(sealed) == SECRET
    finally:
        await engine.dispose()


def test_the_sqlite_file_is_its_owner_s_only(tmp_path: Path) -> None:
    create_engine(sqlite_url(tmp_path / "private.db"))
    assert (tmp_path / "private.db").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(("sqlstate", "outage"), [("57P03", True), ("08006", True), ("23505", False)])
async def test_a_server_shutting_down_is_an_outage(store: Stores, sqlstate: str, outage: bool) -> None:
    """asyncpg's "the database system is shutting down" (57P03) comes as a plain DBAPIError: an outage,
    which the API answers 503; any other database error stays itself."""

    class Reported(Exception):
        pass

    failure = Reported("the database system is shutting down")
    failure.sqlstate = sqlstate  # type: ignore[attr-defined]
    expected: tuple[type[BaseException], ...] = OUTAGE_ERRORS if outage else (exc.DBAPIError,)
    for transaction in (store.db.read, store.db.write):
        with pytest.raises(expected) as raised:
            async with transaction():
                raise exc.DBAPIError("SELECT 1", {}, failure)
        assert isinstance(raised.value, OUTAGE_ERRORS) is outage
