"""Helpers of the transfer API tests: verification codes, opening orders, polling, the error envelope."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from domain.models import Account
from domain.verification import STEP_SECONDS, code_at
from tests.api.conftest import Api

# Time steps each account has used (or may have used): a TOTP code is single-use per account and step.
_used: dict[str, set[int]] = {}


def code(account: Account) -> str:
    """A code of `account` that no earlier call handed out: the current step's, else the next one's,
    else the previous one's (all inside the ±1 window)."""
    now = datetime.now(UTC)
    current = int(now.timestamp()) // STEP_SECONDS
    used = _used.setdefault(account.id, set())
    for step in (current, current + 1, current - 1):
        if step not in used:
            used.add(step)
            return code_at(account.mfa_secret, datetime.fromtimestamp(step * STEP_SECONDS, UTC))
    raise AssertionError(f"more than 3 codes of {account.id} within one step: wait or use another account")


def wrong_code(account: Account) -> str:
    right = code_at(account.mfa_secret, datetime.now(UTC))
    # A code that is none of the three inside the window.
    window = {
        code_at(account.mfa_secret, datetime.now(UTC) + timedelta(seconds=STEP_SECONDS * s))
        for s in (-1, 0, 1)
    }
    candidate = int(right)
    while f"{candidate:06d}" in window:
        candidate = (candidate + 1) % 1_000_000
    return f"{candidate:06d}"


def initiate_body(
    destination: Account | str, resource_ids: list[str], code: str, **fields: Any
) -> dict[str, Any]:
    destination_id = destination if isinstance(destination, str) else destination.id
    return {
        "destination_account_id": destination_id,
        "resource_ids": resource_ids,
        "agreement_accepted": True,
        "verification": {"code": code},
        **fields,
    }


def confirm_body(destination: Account, **fields: Any) -> dict[str, Any]:
    return {"agreement_accepted": True, "verification": {"code": code(destination)}, **fields}


async def open_order(api: Api, source: Account, destination: Account, resource_id: str, token: str) -> str:
    """Initiates one transfer through the API and answers the open order's id."""
    response = await api.call(
        "POST", "/v1/transfers", token, json=initiate_body(destination, [resource_id], code(source))
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["status"] == "pending", result
    order_id: str = result["order_id"]
    return order_id


async def get_order(api: Api, token: str, order_id: str) -> dict[str, Any]:
    response = await api.call("GET", f"/v1/transfers/{order_id}", token)
    assert response.status_code == 200, response.text
    order: dict[str, Any] = response.json()
    return order


async def wait_for_status(api: Api, token: str, order_id: str, statuses: set[str]) -> dict[str, Any]:
    """Polls GET /v1/transfers/{id} until the order reaches one of `statuses` (30 s at most)."""
    async with asyncio.timeout(30):
        while True:
            order = await get_order(api, token, order_id)
            if order["status"] in statuses:
                return order
            await asyncio.sleep(0.1)


def assert_error(response: httpx.Response, status: int, error_code: str) -> dict[str, Any]:
    """The response is the error envelope with this status and code; answers its details."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == error_code, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    details: dict[str, Any] = error["details"]
    return details


def snapshot(order: dict[str, Any]) -> tuple[str, list[tuple[str, str, int]]]:
    """What a refused action must not change: the status and the steps."""
    return order["status"], [(s["name"], s["status"], s["attempts"]) for s in order["steps"]]


def refused_events(order: dict[str, Any]) -> list[tuple[str | None, str, str | None]]:
    return [
        (e["actor_account_id"], e["action"], e["code"]) for e in order["events"] if e["outcome"] == "refused"
    ]
