"""`make bench` in miniature, so that the benchmark cannot rot: every phase runs against a real
`transfer dev` and writes every figure of the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from temporalio import workflow

from bench.twin import ShapeTwin
from workflows.resource_transfer import ResourceTransfer

ROOT = Path(__file__).parent.parent
FIGURES = {
    "floor_rate",
    "stolen_pct",
    "twin_initiate_rate",
    "twin_confirm_rate",
    "twin_end_to_end_rate",
    "product_initiate_rate",
    "product_confirm_rate",
    "product_end_to_end_rate",
    "ratio_initiate",
    "ratio_confirm",
    "ratio_end_to_end",
    "twin_worker_cpu_ms",
    "twin_server_cpu_ms",
    "product_worker_cpu_ms",
    "product_server_cpu_ms",
    "product_api_cpu_ms",
    "idle_confirm_p50_ms",
    "idle_confirm_p99_ms",
    "load_confirm_p50_ms",
    "load_confirm_p99_ms",
    "events_completed",
    "events_cancelled",
    "events_rejected",
    "events_expired",
    "initiate_rate_parked_10",
    "initiate_rate_parked_30",
    "scale_ratio",
    "worker_rss_mb",
    "parking_answered_503",
    "rate_answered_503",
    "transactions_cpu_ms",
    "transactions_statements",
}


def test_a_tiny_benchmark_runs_every_phase_and_writes_its_table(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    sizes = {
        "BENCH_N": "20",
        "BENCH_BATCH": "10",
        "BENCH_IN_FLIGHT": "2",
        "BENCH_LATENCY_SAMPLES": "2",
        "BENCH_PARKED": "10,30",
        "BENCH_PROBE": "10",
        "BENCH_OUT": str(out),
    }
    run = subprocess.run(
        [sys.executable, "-m", "bench.run"],
        cwd=ROOT,
        env={**os.environ, **sizes},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    document = json.loads(out.read_text())
    assert set(document["results"]) == FIGURES
    rates = {k: v for k, v in document["results"].items() if not k.endswith(("_answered_503", "stolen_pct"))}
    assert all(value > 0 for value in rates.values()), document["results"]
    assert document["results"]["events_completed"] == 35  # the product's completed path, measured
    table = [line for line in run.stdout.splitlines() if line.startswith("| ")]
    assert any(line.startswith("| product ÷ twin: end to end ") for line in table), run.stdout


def _handlers(cls: type) -> dict[str, object]:
    definition = workflow._Definition.must_from_class(cls)
    return {
        "signals": sorted(str(name) for name in definition.signals),
        "queries": sorted(str(name) for name in definition.queries),
        "updates": sorted(
            (str(name), update.validator is not None) for name, update in definition.updates.items()
        ),
    }


def test_the_twin_has_the_products_handlers() -> None:
    """The sandbox builds every run's handlers: a twin with fewer would pay less of the product's shape."""
    assert _handlers(ShapeTwin) == _handlers(ResourceTransfer)
