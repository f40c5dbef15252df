"""Rows to domain models and back: the only place that knows both shapes."""

from __future__ import annotations

from typing import Any

from domain.codes import ErrorCode
from domain.models import (
    Account,
    Charge,
    ChargeKind,
    Event,
    Failure,
    Order,
    Resource,
    Step,
)
from store.tables import (
    AccountRow,
    ChargeRow,
    OrderEventRow,
    OrderRow,
    OrderStepRow,
    ResourceRow,
)


def account(row: AccountRow) -> Account:
    return Account.model_validate({name: getattr(row, name) for name in Account.model_fields})


def account_values(value: Account) -> dict[str, Any]:
    return value.model_dump()


def resource(row: ResourceRow) -> Resource:
    return Resource.model_validate({name: getattr(row, name) for name in Resource.model_fields})


def resource_values(value: Resource) -> dict[str, Any]:
    # python mode keeps Decimal and datetime; tags are plain str -> str for the JSON column.
    return value.model_dump()


def failure(code: str | None, message: str | None) -> Failure | None:
    if code is None:
        return None
    return Failure(code=ErrorCode(code), message=message or "")


def step(row: OrderStepRow) -> Step:
    return Step.model_validate(
        {
            "name": row.name,
            "status": row.status,
            "started_at": row.started_at,
            "finished_at": row.finished_at,
            "attempts": row.attempts,
            "error": failure(row.error_code, row.error_message),
        }
    )


def event(row: OrderEventRow) -> Event:
    return Event.model_validate(
        {
            "at": row.at,
            "actor_account_id": row.actor_account_id,
            "action": row.action,
            "outcome": row.outcome,
            "code": row.code,
        }
    )


def order(row: OrderRow, steps: list[Step] | None = None, events: list[Event] | None = None) -> Order:
    return Order.model_validate(
        {
            "order_id": row.order_id,
            "resource_id": row.resource_id,
            "product": row.product,
            "source_account_id": row.source_account_id,
            "destination_account_id": row.destination_account_id,
            "status": row.status,
            "created_at": row.created_at,
            "expires_at": row.expires_at,
            "confirmed_at": row.confirmed_at,
            "completed_at": row.completed_at,
            "failure": failure(row.failure_code, row.failure_message),
            "agreement_version": row.agreement_version,
            "steps": steps or [],
            "events": events or [],
        }
    )


def charge(row: ChargeRow) -> Charge:
    return Charge(
        id=row.id,
        resource_id=row.resource_id,
        payer_account_id=row.payer_account_id,
        kind=ChargeKind(row.kind),
        amount=row.amount,
        period_start=row.period_start,
        period_end=row.period_end,
        created_at=row.created_at,
        refunds_charge_id=row.refunds_charge_id,
    )
