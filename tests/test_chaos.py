"""`make chaos` in miniature, so that the suite cannot rot: every scenario on the real stack (Temporal dev
server, worker and API processes, PostgreSQL, which one scenario stops for a few seconds), with a few
orders each; every row must show nothing lost and nothing duplicated."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from chaos.stack import TRANSFER_ACTIVITIES

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).parent.parent
SCENARIOS = [
    *(f"1. worker SIGKILLed after {activity}'s write" for activity in TRANSFER_ACTIVITIES),
    "2. whole stack SIGKILLed 3 times during the hand-offs",
    "3. Temporal server stopped 10 s and started again",
    "4. PostgreSQL down 5 s",
    "5a. the same confirm sent twice at once",
    "5b. confirm racing cancel racing the expiry",
    "6. fuzz (schemathesis)",
    "7. authorization matrix",
    "8. abuse",
]


def test_a_small_chaos_run_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    sizes = {
        "CHAOS_PER_ACTIVITY": "3",
        "CHAOS_HANDOFFS": "16",
        "CHAOS_RACES": "8",
        "CHAOS_OUTAGE_S": "5",
        "CHAOS_TEMPORAL_DOWN_S": "10",
        "CHAOS_FUZZ": "300",
        "CHAOS_IN_FLIGHT": "8",
        "CHAOS_OUT": str(out),
    }
    run = subprocess.run(
        [sys.executable, "-m", "chaos.run"],
        cwd=ROOT,
        env={**os.environ, **sizes},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    output = run.stdout[-6000:] + run.stderr[-4000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["scenario"] for row in rows] == SCENARIOS, output
    failed = [row for row in rows if not row["ok"] or row["lost"] or row["duplicated"]]
    assert not failed, output
    assert all(row["orders"] > 0 for row in rows), rows
    assert run.returncode == 0, output
    assert any(line.startswith("| 5b. confirm racing cancel") for line in run.stdout.splitlines()), output
