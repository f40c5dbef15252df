"""Rows (of store.tables' columns) to domain models where the shapes differ: the only place that knows
both."""

from __future__ import annotations

from typing import Any

from domain.codes import ErrorCode
from domain.models import Event, Order, Refusal, Step


def refusal(code: ErrorCode | None, message: str | None) -> Refusal | None:
    return None if code is None else Refusal(code=code, message=message or "")


def step(row: Any) -> Step:
    return Step(
        name=row.name,
        status=row.status,
        started_at=row.started_at,
        finished_at=row.finished_at,
        attempts=row.attempts,
        error=refusal(row.error_code, row.error_message),
    )


def order(row: Any, steps: list[Step], events: list[Event]) -> Order:
    return Order(
        order_id=row.order_id,
        resource_id=row.resource_id,
        product=row.product,
        source_account_id=row.source_account_id,
        destination_account_id=row.destination_account_id,
        status=row.status,
        created_at=row.created_at,
        expires_at=row.expires_at,
        confirmed_at=row.confirmed_at,
        completed_at=row.completed_at,
        failure=refusal(row.failure_code, row.failure_message),
        agreement_version=row.agreement_version,
        receiving_config=row.receiving_config,
        steps=steps,
        events=events,
    )
