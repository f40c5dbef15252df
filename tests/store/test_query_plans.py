"""Every statement of a transfer, and of a cancelled one, finds its rows through an index: none scans
a table, so a transfer costs the same with 100 or 100,000 resources and orders in the database (a scan
of resources made an opening 55 % dearer with 10,000 pending orders; README "Performance")."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import event

from domain.models import OrderStatus, ReceivingConfig
from store.db import Database, migrate, sqlite_url
from tests.factory import SECRET_BOX
from tests.store.builders import NOW, account, add_accounts, add_resources, open_args, resource
from tests.stores import Stores


async def test_no_statement_of_a_transfer_scans_a_table(tmp_path: Path) -> None:
    path = tmp_path / "transfer.db"
    await migrate(sqlite_url(path), SECRET_BOX)
    db = Database.at(sqlite_url(path), SECRET_BOX)
    store = Stores(db)
    statements: list[tuple[str, Any]] = []
    try:
        await add_accounts(store, account("src"), account("dst"))
        await add_resources(store, resource("i-1", "src"), resource("i-2", "src"))

        @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
        def _record(_c: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            if not statement.startswith(("BEGIN", "PRAGMA")):
                statements.append((statement, parameters))

        orders = store.orders
        await orders.open_order(**open_args("o-1", "i-1", "src", "dst"))
        await orders.decide(
            "o-1",
            status=OrderStatus.TRANSFERRING,
            at=NOW,
            actor_account_id="dst",
            receiving_config=ReceivingConfig(resource_group="rg", tags={"team": "a"}),
        )
        await orders.reassign_ownership("o-1", at=NOW)
        await orders.hand_off_billing("o-1")
        await orders.apply_receiving_config("o-1")
        await orders.finish("o-1", status=OrderStatus.COMPLETED, at=NOW)
        await orders.open_order(**open_args("o-2", "i-2", "src", "dst"))
        await orders.decide("o-2", status=OrderStatus.CANCELLED, at=NOW, actor_account_id="src")
    finally:
        await db.dispose()

    plans = sqlite3.connect(path)
    try:
        scans = {
            statement: [row[3] for row in plans.execute(f"EXPLAIN QUERY PLAN {statement}", parameters)]
            for statement, parameters in statements
        }
    finally:
        plans.close()
    assert len(scans) >= 10, "the transfer ran its statements"
    scanning = {s: plan for s, plan in scans.items() if any(step.startswith("SCAN") for step in plan)}
    assert scanning == {}
