"""What every scenario of `make chaos` answers: one row of the table."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from temporalio.client import Client

from bench.run import Product


@dataclass(frozen=True)
class Row:
    """`orders`: how many orders (or requests, for the probes) the scenario put through; `lost`: those
    that did not end as expected (or answers that broke a promise); `duplicated`: anything done twice."""

    scenario: str
    orders: int
    expected: str
    observed: str
    lost: int = 0
    duplicated: int = 0
    passed: bool = True

    @property
    def ok(self) -> bool:
        return self.passed and self.lost == 0 and self.duplicated == 0


@dataclass
class Live:
    """The running stack a scenario drives: the API process, the Temporal server, the service's
    PostgreSQL database, and provisioning through the admin API (bench.run.Product)."""

    api: httpx.AsyncClient
    temporal: Client
    database_url: str
    task_queue: str
    product: Product
