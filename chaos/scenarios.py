"""The scenarios of `make chaos` that break the stack (rows 1-5 of the issue's table); chaos.probes has
the ones that attack it (fuzz, authorization, abuse). Each drives transfers through the HTTP API as a
backend service would (chaos.traffic) and judges them from the database (chaos.audit)."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from bench.run import Pair, Product, bounded
from chaos.audit import Finding, Transfer, audit, orders_of, settled, step_attempts
from chaos.report import Row
from chaos.stack import TRANSFER_ACTIVITIES, Stack
from chaos.traffic import Tally, Traffic

SETTLE_WITHIN_S = 300.0
COMPLETED = frozenset({"completed"})
# The step each killed activity records (finish_order records none: its order's end shows it).
STEP_OF = {
    "open_order": "open_order",
    "accept_confirmation": "confirmation_check",
    "reassign_ownership": "ownership_reassignment",
    "hand_off_billing": "billing_handoff",
    "apply_receiving_config": "receiving_config",
    "finish_order": None,
}


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Sizes:
    per_activity: int = _int("CHAOS_PER_ACTIVITY", 100)  # orders killed inside each activity
    handoffs: int = _int("CHAOS_HANDOFFS", 200)  # hand-offs under whole-stack kills and the outages
    open_orders: int = _int("CHAOS_OPEN_ORDERS", 200)  # orders open while Temporal restarts
    races: int = _int("CHAOS_RACES", 200)  # orders per race
    outage_s: float = float(os.environ.get("CHAOS_OUTAGE_S", 30))  # PostgreSQL down this long
    temporal_down_s: float = float(os.environ.get("CHAOS_TEMPORAL_DOWN_S", 15))
    fuzz: int = _int("CHAOS_FUZZ", 10_000)  # generated requests
    in_flight: int = _int("CHAOS_IN_FLIGHT", 50)  # transfers driven at once
    out: Path = Path(os.environ.get("CHAOS_OUT", "build/chaos.json"))


@dataclass
class Run:
    """A scenario's stack and what drives it."""

    stack: Stack
    product: Product
    traffic: Traffic
    sizes: Sizes


def _row(
    scenario: str, findings: Sequence[Finding], expected: str, observed: str, *, passed: bool = True
) -> Row:
    lost = [f for f in findings if f.lost]
    duplicated = [f for f in findings if f.duplicated]
    ends = Counter(f.status for f in findings)
    observed = f"{', '.join(f'{n} {s}' for s, n in sorted(ends.items(), key=str))}; {observed}"
    if lost:
        observed += f"; lost e.g. {lost[0].resource_id}: {lost[0].lost}"
    if duplicated:
        observed += f"; duplicated e.g. {duplicated[0].resource_id}: {duplicated[0].duplicated}"
    return Row(scenario, len(findings), expected, observed, len(lost), len(duplicated), passed)


async def _transfer(run: Run, pair: Pair) -> None:
    order_id = await run.traffic.open(pair)
    await run.traffic.decide(pair, order_id, "confirm")


async def _settle_and_audit(run: Run, transfers: Sequence[Transfer]) -> list[Finding]:
    """Once every order has ended: one auto-renewal of each resource whose transfer says so (charged to
    its owner of that moment, the destination once moved), then the audit."""
    await settled(run.stack.database_url, [t.resource_id for t in transfers], SETTLE_WITHIN_S)
    renewed = [t for t in transfers if t.renewed]
    await bounded(renewed, 8, lambda t: run.product.auto_renew(t.resource_id))
    return await audit(run.stack.database_url, transfers)


def _renewed(pairs: Sequence[Pair]) -> list[Transfer]:
    return [Transfer(pair, COMPLETED, renewed=True) for pair in pairs]


async def _when_completed(run: Run, resource_ids: Sequence[str], fraction: float) -> None:
    """Returns once `fraction` of the resources' orders have completed (bounded)."""
    deadline = time.monotonic() + SETTLE_WITHIN_S
    while time.monotonic() < deadline:
        orders = await orders_of(run.stack.database_url, resource_ids)
        if sum(s == "completed" for _, s in orders.values()) >= fraction * len(resource_ids):
            return
        await asyncio.sleep(0.3)


# --- 1. the worker killed inside each activity ------------------------------------------------------------


async def worker_killed_in_each_activity(run: Run) -> list[Row]:
    """Every order's worker is SIGKILLed after each activity's write (worker.KillAfterWrite), once per
    activity and order; a supervisor starts it again each time."""
    n = run.sizes.per_activity
    pairs = await run.product.pairs(n, 1, subscription=True)
    resource_ids = [p.resource_ids[0] for p in pairs]
    supervisor = asyncio.create_task(run.stack.supervise_worker())
    try:
        # All at once: a kill then catches every order in the same activity (a few kills in all).
        await bounded(pairs, n, lambda pair: _transfer(run, pair))
        await settled(run.stack.database_url, resource_ids, SETTLE_WITHIN_S)
    finally:
        supervisor.cancel()
    findings = await _settle_and_audit(run, _renewed(pairs))
    attempts = await step_attempts(run.stack.database_url, resource_ids)
    resource_of = {o: r for r, (o, _) in (await orders_of(run.stack.database_url, resource_ids)).items()}
    rows = []
    for activity in TRANSFER_ACTIVITIES:
        killed = {resource_of.get(m.name.split(".", 1)[1]) for m in run.stack.marks.glob(f"{activity}.*")}
        step = STEP_OF[activity]
        judged = [
            replace(f, lost=f"its {step} step shows one attempt")
            if f.lost is None and step is not None and attempts.get((f.resource_id, step), 0) < 2
            else f
            for f in findings
        ]
        rows.append(
            _row(
                f"1. worker SIGKILLed after {activity}'s write",
                judged,
                "completed; owner, hand-off, charges once; lock released; the extra attempt shown",
                f"{len(killed & set(resource_ids))} of {n} killed there; {run.stack.worker_kills} kills",
                passed=killed >= set(resource_ids),
            )
        )
    return rows


# --- 2. the whole stack SIGKILLed -------------------------------------------------------------------------


async def restart(run: Run) -> None:
    run.stack.temporal.start()
    await run.stack.temporal.wait_ready()
    run.stack.start_worker()
    run.stack.start_api()
    await run.stack.api_ready()


async def whole_stack_killed(run: Run) -> list[Row]:
    """Three SIGKILLs of every process at random moments of the hand-offs, each followed by a restart on
    the same data (Temporal's SQLite file, the PostgreSQL database)."""
    n = run.sizes.handoffs
    pairs = await run.product.pairs(n, 1, subscription=True)
    resource_ids = [p.resource_ids[0] for p in pairs]
    order_ids = await bounded(pairs, run.sizes.in_flight, run.traffic.open)
    moments = sorted(random.uniform(0.05, 0.9) for _ in range(3))

    async def kills() -> None:
        for moment in moments:
            await _when_completed(run, resource_ids, moment)
            run.stack.kill_all()
            await asyncio.sleep(1)
            await restart(run)

    confirms = bounded(
        list(zip(pairs, order_ids, strict=True)),
        run.sizes.in_flight,
        lambda po: run.traffic.decide(po[0], po[1], "confirm"),
    )
    async with asyncio.TaskGroup() as group:  # a failure of one stops the other
        group.create_task(kills())
        group.create_task(confirms)
    findings = await _settle_and_audit(run, _renewed(pairs))
    at = ", ".join(f"{m:.0%}" for m in moments)
    return [
        _row(
            "2. whole stack SIGKILLed 3 times during the hand-offs",
            findings,
            "completed; owner, hand-off, charges once; lock released",
            f"killed at {at} of the hand-offs done",
        )
    ]


# --- 3. Temporal restarted, 4. PostgreSQL down --------------------------------------------------------------


async def _outage(
    run: Run,
    scenario: str,
    down: Callable[[], Awaitable[None]],
    up: Callable[[], Awaitable[None]],
    for_s: float,
) -> Row:
    """Orders opened; the first half confirmed, and once a fifth of those completed (the others
    transferring) `down`, for `for_s`, then `up`. Meanwhile the second half's confirms are sent (retried
    on 503 as a client would, so they land once it is over), every order read each second, and /readyz
    asked: the answers of the outage are tallied."""
    n = run.sizes.handoffs
    pairs = await run.product.pairs(n, 1, subscription=True)
    orders = list(zip(pairs, await bounded(pairs, run.sizes.in_flight, run.traffic.open), strict=True))
    first, second = orders[: n // 2], orders[n // 2 :]
    readiness: Counter[str] = Counter()
    during = Tally()

    def confirm(order: tuple[Pair, str]) -> Awaitable[str]:
        return run.traffic.decide(order[0], order[1], "confirm")

    async def outage(group: asyncio.TaskGroup) -> None:
        await _when_completed(run, [p.resource_ids[0] for p, _ in first], 0.2)
        await down()
        run.traffic.tally = during  # the answers of the outage
        try:
            group.create_task(bounded(second, run.sizes.in_flight, confirm))
            ends = time.monotonic() + for_s
            while time.monotonic() < ends:
                ready = await run.traffic.http.get("/readyz")
                failing = ready.json()["error"]["details"]["failing"] if ready.status_code == 503 else []
                readiness[" ".join([str(ready.status_code), *failing])] += 1
                for pair, order_id in random.sample(orders, min(5, n)):
                    await run.traffic.request("GET", f"/v1/transfers/{order_id}", pair.source)
                await asyncio.sleep(1)
        finally:
            run.traffic.tally = Tally()
            await up()

    async with asyncio.TaskGroup() as group:  # a failure of one stops the others
        group.create_task(outage(group))
        group.create_task(bounded(first, run.sizes.in_flight, confirm))
    findings = await _settle_and_audit(run, _renewed(pairs))
    return _row(
        scenario,
        findings,
        "all complete; meanwhile 503 (never 500, never over 10 s)",
        f"meanwhile {during.describe()}; /readyz {dict(readiness)}",
        passed=during.broken == 0 and during.answers[503] > 0,
    )


async def temporal_restarted(run: Run) -> list[Row]:
    async def up() -> None:
        run.stack.temporal.start()
        await run.stack.temporal.wait_ready()

    return [
        await _outage(
            run,
            f"3. Temporal server stopped {run.sizes.temporal_down_s:.0f} s and started again",
            run.stack.temporal.stop,
            up,
            run.sizes.temporal_down_s,
        )
    ]


def postgres(action: str) -> None:
    """Stops (fast: connections cut) or starts the local PostgreSQL server; a start of a running one
    does nothing."""
    (version,) = os.listdir("/etc/postgresql")
    cluster = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main"]
    if (
        action == "start"
        and subprocess.run([*cluster, "status"], capture_output=True, check=False).returncode == 0
    ):
        return
    subprocess.run([*cluster, action, *(["-m", "fast"] if action == "stop" else [])], check=True, timeout=60)


async def postgres_down(run: Run) -> list[Row]:
    stopping: list[asyncio.Task[None]] = []

    async def down() -> None:
        # Shielded: a scenario that fails meanwhile still waits for the stop before it starts the server.
        stopping.append(asyncio.create_task(asyncio.to_thread(postgres, "stop")))
        await asyncio.shield(stopping[0])

    async def up() -> None:
        await asyncio.to_thread(postgres, "start")

    try:
        return [
            await _outage(run, f"4. PostgreSQL down {run.sizes.outage_s:.0f} s", down, up, run.sizes.outage_s)
        ]
    finally:
        await asyncio.gather(*stopping, return_exceptions=True)
        await asyncio.to_thread(postgres, "start")  # whatever happened: the server runs again


# --- 5. duplicates and races ------------------------------------------------------------------------------


async def confirm_sent_twice(run: Run) -> list[Row]:
    """The same confirm (same body, same Idempotency-Key) sent twice at once, for each order."""
    pairs = await run.product.pairs(run.sizes.races, 1, subscription=True)
    order_ids = await bounded(pairs, run.sizes.in_flight, run.traffic.open)
    differing = 0

    async def twice(pair: Pair, order_id: str) -> None:
        nonlocal differing
        key, body = uuid.uuid4().hex, run.traffic.confirm_body(pair.destination)
        path = f"/v1/transfers/{order_id}/confirm"

        async def once() -> tuple[int, bytes] | None:
            # A repeat that waited its time for the first answer is told "not now": asked again, it
            # gets the first answer.
            for _ in range(10):
                answer = await run.traffic.post_once(path, pair.destination, body, key)
                if answer is None or answer.status_code != 503:
                    return None if answer is None else (answer.status_code, answer.content)
                await asyncio.sleep(float(answer.headers.get("Retry-After", 1)))
            return None

        answers = await asyncio.gather(once(), once())
        differing += None in answers or answers[0] != answers[1]

    await bounded(list(zip(pairs, order_ids, strict=True)), run.sizes.in_flight, lambda po: twice(*po))
    findings = await _settle_and_audit(run, [Transfer(p, COMPLETED) for p in pairs])
    return [
        _row(
            "5a. the same confirm sent twice at once",
            findings,
            "one decision, recorded once; both answers the first's",
            f"{differing} pairs of answers differed",
            passed=differing == 0,
        )
    ]


async def confirm_cancel_and_expiry_race(run: Run) -> list[Row]:
    """A confirm and a cancel, each sent at a random moment within a second of the order's expiry: one
    of the three wins; the answers agree with what was recorded."""
    pairs = await run.product.pairs(run.sizes.races, 1, subscription=True)
    disagreeing: list[str] = []

    async def race(pair: Pair) -> Transfer:
        order_id = await run.traffic.open(pair)
        expires_at = datetime.fromisoformat((await run.traffic.order(pair.source, order_id))["expires_at"])

        async def at_random(action: str) -> str:
            await asyncio.sleep(max(0.0, expires_at.timestamp() - time.time() + random.uniform(-1, 1)))
            return await run.traffic.decide(pair, order_id, action)

        confirmed, cancelled = await asyncio.gather(at_random("confirm"), at_random("cancel"))
        won = {"transferring": "completed", "completed": "completed", "cancelled": "cancelled"}
        winners = {won[a] for a in (confirmed, cancelled) if a in won}
        if len(winners) > 1:
            disagreeing.append(f"{order_id}: confirm {confirmed}, cancel {cancelled}")
        return Transfer(pair, frozenset(winners) or frozenset({"expired"}))

    transfers = await bounded(pairs, run.sizes.in_flight, race)
    findings = await _settle_and_audit(run, transfers)
    return [
        _row(
            "5b. confirm racing cancel racing the expiry",
            findings,
            "exactly one wins, recorded once; the answers say which",
            f"{len(disagreeing)} answers disagreed{': ' + disagreeing[0] if disagreeing else ''}",
            passed=not disagreeing,
        )
    ]
