"""What the database says once a scenario's dust settles: for each transfer, whether it ended as it
should (else it is lost) and whether anything of it happened twice (else it is duplicated)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.run import Pair
from store.db import create_engine

TERMINAL = frozenset({"completed", "failed", "cancelled", "rejected", "expired"})
DECISIONS = ("confirm", "cancel", "reject", "expire", "operator_cancel")


@dataclass(frozen=True)
class Transfer:
    """One resource a scenario asked to move: the statuses it may end in (a race has several)."""

    pair: Pair
    may_end: frozenset[str]
    renewed: bool = False  # an auto-renewal ran after it ended: the owner of that moment pays

    @property
    def resource_id(self) -> str:
        return self.pair.resource_ids[0]


@dataclass
class Finding:
    resource_id: str
    status: str | None = None
    lost: str | None = None  # why it did not end as it should
    duplicated: str | None = None  # what happened twice


def _rows(query: str) -> TextClause:
    return text(query).bindparams(bindparam("ids", expanding=True))


RESOURCES = _rows(
    "SELECT id, owner_account_id, locked_by_order_id, resource_group FROM resources WHERE id IN :ids"
)
ORDERS = _rows("SELECT resource_id, order_id, status FROM orders WHERE resource_id IN :ids")
CHARGES = _rows(
    "SELECT resource_id, kind, payer_account_id FROM charges WHERE resource_id IN :ids ORDER BY id"
)
HANDOFFS = _rows("SELECT resource_id, order_id FROM billing_handoffs WHERE resource_id IN :ids")
EVENTS = _rows(
    "SELECT o.resource_id, e.action FROM order_events e JOIN orders o ON o.order_id = e.order_id"
    " WHERE o.resource_id IN :ids AND e.outcome = 'accepted'"
)
STEPS = _rows(
    "SELECT o.resource_id, s.name, s.attempts FROM order_steps s JOIN orders o ON o.order_id = s.order_id"
    " WHERE o.resource_id IN :ids"
)


async def _fetch(engine: AsyncEngine, query: TextClause, ids: Sequence[str]) -> list[tuple[str, ...]]:
    async with engine.connect() as connection:
        return [tuple(row) for row in (await connection.execute(query, {"ids": list(ids)})).all()]


async def orders_of(database_url: str, resource_ids: Collection[str]) -> dict[str, tuple[str, str]]:
    """resource id → (order id, status) of its order, for those that have one."""
    engine = create_engine(database_url)
    try:
        return {r: (o, s) for r, o, s in await _fetch(engine, ORDERS, list(resource_ids))}
    finally:
        await engine.dispose()


async def settled(database_url: str, resource_ids: Collection[str], within_s: float) -> None:
    """Waits until every resource's order is in a terminal status (bounded)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            orders = await orders_of(database_url, resource_ids)
        except OSError:  # the database is being restarted
            orders = {}
        if len(orders) == len(resource_ids) and all(s in TERMINAL for _, s in orders.values()):
            return
        await asyncio.sleep(1)


async def audit(database_url: str, transfers: Sequence[Transfer]) -> list[Finding]:
    ids = [t.resource_id for t in transfers]
    engine = create_engine(database_url)
    try:
        resources, orders, charges, handoffs, events = [
            await _fetch(engine, q, ids) for q in (RESOURCES, ORDERS, CHARGES, HANDOFFS, EVENTS)
        ]
    finally:
        await engine.dispose()
    by_resource = {row[0]: row for row in resources}
    grouped: dict[str, dict[str, list[tuple[str, ...]]]] = defaultdict(lambda: defaultdict(list))
    for name, rows in (("orders", orders), ("charges", charges), ("handoffs", handoffs), ("events", events)):
        for row in rows:
            grouped[row[0]][name].append(row[1:])
    return [_judge(t, by_resource.get(t.resource_id), grouped[t.resource_id]) for t in transfers]


def _judge(
    transfer: Transfer, resource: tuple[str, ...] | None, facts: dict[str, list[tuple[str, ...]]]
) -> Finding:
    finding = Finding(transfer.resource_id)
    orders, charges, handoffs = facts["orders"], facts["charges"], facts["handoffs"]
    actions = [action for (action,) in facts["events"]]
    twice = [a for a in set(actions) if actions.count(a) > 1]
    decisions = [a for a in actions if a in DECISIONS]
    if len(orders) > 1:
        finding.duplicated = f"{len(orders)} orders for one resource"
    elif len(decisions) > 1 or twice:
        finding.duplicated = f"decided or recorded twice: {sorted(actions)}"
    elif len(handoffs) > 1:
        finding.duplicated = f"{len(handoffs)} billing hand-offs"
    if resource is None or not orders:
        finding.lost = "no order" if resource is not None else "no resource"
        return finding
    (_, status), *_ = orders
    finding.status = status
    _, owner, lock, group = resource
    source, destination = transfer.pair.source.id, transfer.pair.destination.id
    moved = status == "completed"
    payers = [payer for _, payer in charges]
    expected_payers = [source, destination if moved else source] if transfer.renewed else [source]
    if status not in transfer.may_end:
        finding.lost = f"ended {status}, expected {' or '.join(sorted(transfer.may_end))}"
    elif lock is not None:
        finding.lost = f"lock still held by {lock}"
    elif owner != (destination if moved else source):
        finding.lost = f"owned by {owner} after {status}"
    elif moved and (len(handoffs) != 1 or group != "rg-chaos"):
        finding.lost = f"completed with {len(handoffs)} hand-offs, resource group {group}"
    elif payers != expected_payers:
        kind = "duplicated" if len(payers) > len(expected_payers) else "lost"
        setattr(finding, kind, f"charges paid by {payers}, expected {expected_payers}")
    return finding


async def step_attempts(database_url: str, resource_ids: Sequence[str]) -> dict[tuple[str, str], int]:
    """(resource, step name) → attempts recorded."""
    engine = create_engine(database_url)
    try:
        return {(r, name): int(n) for r, name, n in await _fetch(engine, STEPS, resource_ids)}
    finally:
        await engine.dispose()
