"""One transfer's transactions alone, without Temporal: the CPU they cost and the statements they run.

The worker's share of a transfer that is the product's own database work, measured on a SQLite file the
way the activities write it (open, confirm, reassign, billing hand-off, receiving configuration, finish,
each with its steps). `python -m bench.transactions [TRANSFERS] [--profile]`; README "Performance".
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import event

from activities.order_transactions import OrderTransactions, StepAttempt, StepName
from domain.models import OrderStatus, ReceivingConfig
from starter.services.provisioning import ProvisioningService
from store.db import Database, migrate, sqlite_url
from store.secret_box import SecretBox
from tests.store.builders import NOW, account, open_args, resource

WARM_UP = 20


async def _provision(provisioning: ProvisioningService, index: int) -> None:
    for account_id in (f"s-{index}", f"d-{index}"):
        await provisioning.create_account(account(account_id), created_at=NOW)
    await provisioning.create_resource(resource(f"r-{index}", f"s-{index}"), at=NOW)


async def _transfer(orders: OrderTransactions, index: int) -> None:
    """The transactions of one completed transfer, as the activities run them."""
    order_id, source, destination = f"o-{index}", f"s-{index}", f"d-{index}"

    def step(name: StepName) -> StepAttempt:
        return StepAttempt(name, NOW, 1)

    await orders.open_order(
        **open_args(order_id, f"r-{index}", source, destination),
        steps=[step(StepName.SOURCE_VERIFICATION), step(StepName.OPEN_ORDER)],
    )
    await orders.decide(
        order_id,
        status=OrderStatus.TRANSFERRING,
        at=NOW,
        actor_account_id=destination,
        receiving_config=ReceivingConfig(resource_group="rg", tags={"team": "bench"}),
        steps=[step(StepName.DESTINATION_VERIFICATION), step(StepName.CONFIRMATION_CHECK)],
    )
    await orders.reassign_ownership(order_id, step=step(StepName.OWNERSHIP_REASSIGNMENT))
    await orders.hand_off_billing(order_id, step=step(StepName.BILLING_HANDOFF))
    await orders.apply_receiving_config(order_id, step=step(StepName.RECEIVING_CONFIG))
    await orders.finish(order_id, status=OrderStatus.COMPLETED, at=NOW)


async def measure(transfers: int, *, profile: bool = False) -> tuple[float, float]:
    """CPU milliseconds and statements per transfer."""
    with tempfile.TemporaryDirectory() as folder:
        url = sqlite_url(Path(folder) / "transfer.db")
        box = SecretBox("bench-transactions")
        await migrate(url, box)
        db = Database.at(url, box)
        try:
            provisioning, orders = ProvisioningService(db), OrderTransactions(db)
            for index in range(transfers + WARM_UP):
                await _provision(provisioning, index)
            for index in range(transfers, transfers + WARM_UP):
                await _transfer(orders, index)
            statements = 0

            @event.listens_for(db.engine.sync_engine, "before_cursor_execute")
            def _count(*_: object) -> None:
                nonlocal statements
                statements += 1

            profiler = cProfile.Profile() if profile else None
            started = time.process_time()
            if profiler:
                profiler.enable()
            for index in range(transfers):
                await _transfer(orders, index)
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
            cpu = time.process_time() - started
        finally:
            await db.dispose()
    return cpu / transfers * 1000, statements / transfers


def main() -> None:
    transfers = int(next((a for a in sys.argv[1:] if a.isdigit()), "300"))
    cpu_ms, statements = asyncio.run(measure(transfers, profile="--profile" in sys.argv))
    print(f"one transfer's transactions: {cpu_ms:.2f} ms of CPU, {statements:.0f} statements", end="")
    print(f" (mean of {transfers} transfers)")


if __name__ == "__main__":
    main()
