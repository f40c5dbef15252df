"""`make chaos`: the fault and abuse suite on the real stack, one table (also written as JSON).

Each group of scenarios gets a stack of its own (Temporal dev server, worker, API, a fresh PostgreSQL
database, see chaos.stack): the worker killed inside each activity; the whole stack killed; Temporal
restarted, PostgreSQL down, duplicates, and the probes (fuzz, authorization matrix, abuse); the race with
the expiry (a short confirmation window). Sizes come from the environment (chaos.scenarios.Sizes:
`CHAOS_PER_ACTIVITY=5 CHAOS_HANDOFFS=20 ... make chaos`), `CHAOS_ONLY=races,probes` runs some groups.
Traffic goes to 127.0.0.1 only; the exit code is 1 when any row lost, duplicated or broke a promise.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.run import Product
from chaos import probes, scenarios
from chaos.report import Live, Row
from chaos.scenarios import Run, Sizes
from chaos.stack import TRANSFER_ACTIVITIES, Stack, running
from chaos.traffic import Traffic
from tests.store.conftest import postgres_database

Scenario = Callable[[Run], Awaitable[list[Row]]]
RACE_WINDOW_S = 6  # the confirmation window of the race with the expiry
WITHIN_S = float(os.environ.get("CHAOS_WITHIN_S", 15 * 60))


def _probes(sizes: Sizes) -> list[Scenario]:
    async def run_probes(run: Run) -> list[Row]:
        async with httpx.AsyncClient(base_url=run.stack.api_url, timeout=30) as http:
            live = Live(http, run.product.temporal, run.stack.database_url, run.stack.task_queue, run.product)
            return [
                await probes.fuzz(live, sizes.fuzz),
                await probes.authorization(live),
                await probes.abuse(live),
            ]

    return [run_probes]


def groups(sizes: Sizes) -> dict[str, tuple[dict[str, object], list[Scenario]]]:
    """name → (the stack's options, its scenarios in order)."""
    return {
        "worker": ({"kill_after": TRANSFER_ACTIVITIES}, [scenarios.worker_killed_in_each_activity]),
        "stack": ({}, [scenarios.whole_stack_killed]),
        "outages": (
            {},
            [scenarios.temporal_restarted, scenarios.postgres_down, scenarios.confirm_sent_twice],
        ),
        "races": ({"confirm_window_s": RACE_WINDOW_S}, [scenarios.confirm_cancel_and_expiry_race]),
        "probes": ({}, _probes(sizes)),
    }


async def run_group(options: dict[str, object], chosen: Sequence[Scenario], sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    folder = tempfile.mkdtemp(prefix="transfer-chaos-")
    try:
        async with postgres_database() as url:
            stack = Stack(Path(folder), url, **options)  # type: ignore[arg-type]
            async with (
                running(stack) as client,
                httpx.AsyncClient(base_url=stack.api_url, timeout=60) as admin,
            ):
                traffic = Traffic(stack.api_url)
                try:
                    run = Run(stack, Product(admin, client), traffic, sizes)
                    for scenario in chosen:
                        started = time.monotonic()
                        found = await scenario(run)
                        for row in found:
                            print(
                                f"  {'ok  ' if row.ok else 'FAIL'} {row.scenario}: {row.observed}", flush=True
                            )
                        print(f"    ({time.monotonic() - started:.0f} s)", flush=True)
                        rows += found
                finally:
                    await traffic.aclose()
    except BaseException:
        print(f"chaos: the stack's logs are kept in {folder}", file=sys.stderr)
        raise
    if all(row.ok for row in rows):
        shutil.rmtree(folder)
    else:
        print(f"chaos: the stack's logs are kept in {folder}", file=sys.stderr)
    return rows


async def main(sizes: Sizes, only: set[str], rows: list[Row]) -> None:
    await asyncio.to_thread(scenarios.postgres, "start")
    for name, (options, chosen) in groups(sizes).items():
        if only and name not in only:
            continue
        print(f"chaos: {name}", flush=True)
        rows += await run_group(options, chosen, sizes)


def write(rows: Sequence[Row], sizes: Sizes, seconds: float) -> None:
    print()
    print("| scenario | orders | expected | observed | lost | duplicated |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        mark = "" if row.ok else " **FAIL**"
        print(
            f"| {row.scenario}{mark} | {row.orders:,} | {row.expected} | {row.observed} "
            f"| {row.lost} | {row.duplicated} |"
        )
    document = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds),
        "sizes": {k: v for k, v in asdict(sizes).items() if k != "out"},
        "rows": [asdict(row) | {"ok": row.ok} for row in rows],
    }
    sizes.out.parent.mkdir(parents=True, exist_ok=True)
    sizes.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\n{len(rows)} rows in {seconds:.0f} s, written to {sizes.out}")


if __name__ == "__main__":
    chosen_sizes = Sizes()
    only = {name for name in os.environ.get("CHAOS_ONLY", "").split(",") if name}
    began = time.monotonic()
    found: list[Row] = []
    try:
        # Bounded: past WITHIN_S every stack is stopped and the rows so far are written.
        asyncio.run(asyncio.wait_for(main(chosen_sizes, only, found), WITHIN_S))
    except TimeoutError:
        print(f"chaos: stopped after {WITHIN_S:.0f} s", file=sys.stderr)
        found.append(Row("the whole suite within 15 minutes", 0, "done", "stopped", passed=False))
    write(found, chosen_sizes, time.monotonic() - began)
    sys.exit(0 if found and all(row.ok for row in found) else 1)
