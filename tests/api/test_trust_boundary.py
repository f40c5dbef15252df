"""SPEC §3 "Verification attempts", the frozen destination at confirm, §5's HTTP answers (404, 405, 413, a
forged cursor) and what a workflow's history may hold (no code, token or secret)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from domain.models import InstanceStatus
from settings import Settings
from starter import deadline
from starter.api.app import build_services, create_app
from store.db import Database
from store.tables import IdempotencyKeyRow
from tests.api.conftest import Api
from tests.api.transfer_helpers import (
    assert_error,
    code,
    confirm_body,
    get_order,
    initiate_body,
    open_order,
    wait_for_status,
    wrong_code,
)
from tests.factory import SECRET_BOX, SECRET_KEY, fresh_id, transfer_client
from tests.store.builders import open_args
from tests.stores import Stores

MiB = 1024 * 1024


# --- verification attempts ------------------------------------------------------------------------------


async def test_the_fifth_failure_locks_verification_and_a_right_code_is_then_refused(api: Api) -> None:
    source, destination = await api.factory.account(), await api.factory.account()
    resource = await api.factory.resource(source)
    token = await api.token(source)
    for _ in range(5):
        response = await api.call(
            "POST", "/v1/transfers", token, json=initiate_body(destination, [resource.id], wrong_code(source))
        )
        assert_error(response, 403, "VERIFICATION_FAILED")

    locked = await api.call(
        "POST", "/v1/transfers", token, json=initiate_body(destination, [resource.id], code(source))
    )
    details = assert_error(locked, 429, "TOO_MANY_ATTEMPTS")
    assert 0 < details["retry_after_s"] <= 15 * 60
    assert locked.headers["Retry-After"] == str(details["retry_after_s"])
    # Nothing was opened, and the lockout holds at confirm too (same account, any action).
    after = await api.store.get_resource(resource.id)
    assert after is not None and after.locked_by_order_id is None

    events = await api.call("GET", "/v1/security-events", token)
    assert events.status_code == 200, events.text
    kinds = [e["kind"] for e in events.json()["items"]]
    assert kinds == ["verification_locked"] + ["verification_failed"] * 5
    newest = events.json()["items"][0]
    assert newest["principal"] == {"kind": "root", "account_id": source.id, "ram_user_id": None}
    assert newest["details"]["failures"] == 5


async def test_four_failures_do_not_lock(api: Api) -> None:
    source, destination = await api.factory.account(), await api.factory.account()
    resource = await api.factory.resource(source)
    token = await api.token(source)
    for _ in range(4):
        response = await api.call(
            "POST", "/v1/transfers", token, json=initiate_body(destination, [resource.id], wrong_code(source))
        )
        assert_error(response, 403, "VERIFICATION_FAILED")
    opened = await api.call(
        "POST", "/v1/transfers", token, json=initiate_body(destination, [resource.id], code(source))
    )
    assert opened.status_code == 200, opened.text
    assert opened.json()["results"][0]["status"] == "pending"


async def test_security_events_are_the_account_roots_own(api: Api) -> None:
    alice, bob = await api.factory.account(), await api.factory.account()
    resource = await api.factory.resource(alice)
    alice_token = await api.token(alice)
    await api.call(
        "POST", "/v1/transfers", alice_token, json=initiate_body(bob, [resource.id], wrong_code(alice))
    )
    bobs = await api.call("GET", "/v1/security-events", await api.token(bob))
    assert bobs.status_code == 200 and bobs.json() == {"items": [], "next_cursor": None}
    ram = await api.call("GET", "/v1/security-events", await api.ram_token(alice))
    assert_error(ram, 403, "RAM_USER_NOT_ALLOWED")
    assert_error(await api.call("GET", "/v1/security-events", None), 401, "UNAUTHENTICATED")
    page = await api.call("GET", "/v1/security-events?limit=1", alice_token)
    assert [e["kind"] for e in page.json()["items"]] == ["verification_failed"]
    assert page.json()["next_cursor"] is None


# --- confirm: account rules per order, after the code ---------------------------------------------------


async def test_a_frozen_destination_s_code_is_used_up_and_each_order_refused(api: Api) -> None:
    source, destination = await api.factory.account(), await api.factory.account()
    first, second = await api.factory.resource(source), await api.factory.resource(source)
    source_token, destination_token = await api.token(source), await api.token(destination)
    orders = [await open_order(api, source, destination, r.id, source_token) for r in (first, second)]
    await api.store.provisioning.update_account(destination.id, frozen=True)

    wrong = await api.call(
        "POST",
        "/v1/transfers/batch/confirm",
        destination_token,
        json={
            "order_ids": orders,
            "agreement_accepted": True,
            "verification": {"code": wrong_code(destination)},
        },
    )
    assert_error(wrong, 403, "VERIFICATION_FAILED")

    right = code(destination)
    batch = await api.call(
        "POST",
        "/v1/transfers/batch/confirm",
        destination_token,
        json={"order_ids": orders, "agreement_accepted": True, "verification": {"code": right}},
    )
    assert batch.status_code == 200, batch.text
    assert [r["error"]["code"] for r in batch.json()["results"]] == ["ACCOUNT_FROZEN"] * 2
    again = await api.call(
        "POST",
        f"/v1/transfers/{orders[0]}/confirm",
        destination_token,
        json=confirm_body(destination) | {"verification": {"code": right}},
    )
    assert_error(again, 403, "VERIFICATION_FAILED")  # the right code was used up
    single = await api.call(
        "POST", f"/v1/transfers/{orders[0]}/confirm", destination_token, json=confirm_body(destination)
    )
    assert_error(single, 403, "ACCOUNT_FROZEN")
    for order_id in orders:
        assert (await get_order(api, source_token, order_id))["status"] == "pending"


# --- HTTP answers ---------------------------------------------------------------------------------------


async def test_unknown_paths_and_methods_answer_in_the_envelope(api: Api) -> None:
    token = await api.token(await api.factory.account())
    assert_error(await api.call("GET", "/v1/nothing-here", token), 404, "NOT_FOUND")
    assert_error(await api.call("GET", "/nothing", None), 404, "NOT_FOUND")
    assert_error(await api.call("DELETE", "/v1/transfers", token), 405, "METHOD_NOT_ALLOWED")
    assert_error(await api.call("PUT", "/healthz", None), 405, "METHOD_NOT_ALLOWED")


async def test_a_body_that_is_not_utf_8_is_a_validation_error(api: Api) -> None:
    token = await api.token(await api.factory.account())
    headers = {"Content-Type": "application/json"}
    answer = await api.call("POST", "/v1/transfers", token, content=b"\xfc\x1e@7O", headers=headers)
    assert_error(answer, 422, "VALIDATION_ERROR")


async def test_a_body_over_1_mib_is_refused_before_it_is_read(api: Api) -> None:
    source, destination = await api.factory.account(), await api.factory.account()
    resource = await api.factory.resource(source)
    token = await api.token(source)
    body = json.dumps(initiate_body(destination, [resource.id], code(source), padding="x" * (2 * MiB)))
    declared = await api.call(
        "POST", "/v1/transfers", token, content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(declared, 413, "PAYLOAD_TOO_LARGE")

    async def chunks() -> Any:
        for start in range(0, len(body), 64 * 1024):
            yield body[start : start + 64 * 1024].encode()

    chunked = await api.http.post(
        "/v1/transfers", content=chunks(), headers={**api.auth(token), "Content-Type": "application/json"}
    )
    assert_error(chunked, 413, "PAYLOAD_TOO_LARGE")
    after = await api.store.get_resource(resource.id)
    assert after is not None and after.locked_by_order_id is None
    # Just under the limit is read (and refused for what it says, not for its size).
    small = json.dumps({"destination_account_id": "x" * (MiB - 100)})
    response = await api.call(
        "POST", "/v1/transfers", token, content=small, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "cursor",
    [
        "WyIwMDAxLTAxLTAxVDAwOjAwOjAwKzA1OjAwIiwgIngiXQ",  # year 1 east of UTC: out of range in UTC
        "not-a-cursor",
        "WyIyMDI2LTAxLTAxVDAwOjAwOjAwIiwgIngiXQ",  # a naive time
    ],
)
async def test_a_forged_cursor_is_a_validation_error(api: Api, cursor: str) -> None:
    token = await api.token(await api.factory.account())
    for path in ("/v1/transfers", "/v1/resources", "/v1/security-events"):
        assert_error(await api.call("GET", f"{path}?cursor={cursor}", token), 422, "VALIDATION_ERROR")


# --- what a history holds -------------------------------------------------------------------------------


async def test_no_code_token_or_secret_reaches_a_workflow_history(
    api: Api, dev_env: WorkflowEnvironment
) -> None:
    source, destination = await api.factory.account(), await api.factory.account()
    resource = await api.factory.resource(source, status=InstanceStatus.STOPPED)
    source_token, destination_token = await api.token(source), await api.token(destination)
    source_code, destination_code = code(source), code(destination)
    response = await api.call(
        "POST", "/v1/transfers", source_token, json=initiate_body(destination, [resource.id], source_code)
    )
    order_id = response.json()["results"][0]["order_id"]
    confirmed = await api.call(
        "POST",
        f"/v1/transfers/{order_id}/confirm",
        destination_token,
        json={"agreement_accepted": True, "verification": {"code": destination_code}},
    )
    assert confirmed.status_code == 200, confirmed.text
    await wait_for_status(api, source_token, order_id, {"completed"})

    handle = dev_env.client.get_workflow_handle(order_id)
    history = readable((await handle.fetch_history()).to_json())
    assert '"source_account_id":"' + source.id in history  # precondition: the payloads are decoded
    for secret in (
        source_code,
        destination_code,
        source_token,
        destination_token,
        source.mfa_secret,
        destination.mfa_secret,
        SECRET_KEY,
        '"verification"',
        "verification_id",
    ):
        assert secret not in history, secret


def readable(history_json: str) -> str:
    """The history with every payload decoded (payloads are base64 in the JSON form)."""
    parts = [history_json]

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if key == "data" and isinstance(item, str):
                    parts.append(base64.b64decode(item).decode(errors="replace"))
                else:
                    walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(json.loads(history_json))
    return "\n".join(parts)


# --- outages: 503 SERVICE_UNAVAILABLE, nothing used up, never a hang ----------------------------------


@asynccontextmanager
async def app_without_temporal(store: Stores) -> AsyncIterator[httpx.AsyncClient]:
    """The API over the real database, its Temporal client pointed at a port nothing listens on."""
    dead = await Client.connect("127.0.0.1:1", lazy=True, data_converter=pydantic_data_converter)
    settings = Settings(secret_key=SecretStr(SECRET_KEY))
    app = create_app(settings, build_services(transfer_client(dead, fresh_id("tq")), store.db))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
        yield http


async def test_with_temporal_down_writes_answer_503_and_use_no_code(api: Api) -> None:
    source, destination = await api.factory.account(), await api.factory.account()
    first, second = await api.factory.resource(source), await api.factory.resource(source)
    source_token, destination_token = await api.token(source), await api.token(destination)
    pending = await open_order(api, source, destination, first.id, source_token)
    source_code = code(source)
    async with app_without_temporal(api.store) as down:
        auth = {"Authorization": f"Bearer {source_token}"}
        started = asyncio.get_running_loop().time()
        refused = await down.post(
            "/v1/transfers", json=initiate_body(destination, [second.id], source_code), headers=auth
        )
        assert asyncio.get_running_loop().time() - started < 10
        details = assert_error(refused, 503, "SERVICE_UNAVAILABLE")
        assert details["failing"] == ["temporal"] and refused.headers["Retry-After"] == str(
            details["retry_after_s"]
        )
        cancel = await down.post(f"/v1/transfers/{pending}/cancel", headers=auth)
        assert_error(cancel, 503, "SERVICE_UNAVAILABLE")
        confirm = await down.post(
            f"/v1/transfers/{pending}/confirm",
            json=confirm_body(destination),
            headers={"Authorization": f"Bearer {destination_token}"},
        )
        assert_error(confirm, 503, "SERVICE_UNAVAILABLE")
        ready = await down.get("/readyz")
        assert assert_error(ready, 503, "SERVICE_UNAVAILABLE")["failing"] == ["temporal"]
        # Reads need only the database.
        assert (await down.get(f"/v1/transfers/{pending}", headers=auth)).status_code == 200
    # Nothing changed, and the code that met the outage still works.
    assert (await get_order(api, source_token, pending))["status"] == "pending"
    again = await api.call(
        "POST", "/v1/transfers", source_token, json=initiate_body(destination, [second.id], source_code)
    )
    assert again.status_code == 200, again.text
    assert again.json()["results"][0]["status"] == "pending"
    assert (await api.call("GET", "/readyz", None)).json() == {"status": "ready"}


async def test_a_temporal_that_does_not_answer_is_503_by_the_deadline_and_uses_no_code(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However the SDK retries, a Temporal call takes what the request's deadline leaves it (less
    what the request still does after it)."""
    source, destination = await api.factory.account(), await api.factory.account()
    resource = await api.factory.resource(source)
    source_token, destination_token = await api.token(source), await api.token(destination)
    pending = await open_order(api, source, destination, resource.id, source_token)

    async def hangs(*_: object, **__: object) -> None:
        await asyncio.sleep(60)

    monkeypatch.setattr(deadline, "ANSWER_WITHIN_S", 3.0)
    monkeypatch.setattr(WorkflowHandle, "execute_update", hangs)
    body = confirm_body(destination)
    auth = {"Authorization": f"Bearer {destination_token}"}
    started = asyncio.get_running_loop().time()
    late = await api.http.post(f"/v1/transfers/{pending}/confirm", json=body, headers=auth)
    assert asyncio.get_running_loop().time() - started < 3.0
    assert_error(late, 503, "SERVICE_UNAVAILABLE")
    monkeypatch.undo()
    # Nothing was done and the code is not used up: the same code confirms.
    again = await api.http.post(f"/v1/transfers/{pending}/confirm", json=body, headers=auth)
    assert again.status_code == 200, again.text


async def test_with_the_database_down_the_api_answers_503(dev_env: WorkflowEnvironment) -> None:
    db = Database.at("postgresql+asyncpg://nobody@127.0.0.1:1/nothing", SECRET_BOX)
    settings = Settings(secret_key=SecretStr(SECRET_KEY))
    app = create_app(settings, build_services(transfer_client(dev_env.client, fresh_id("tq")), db))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
            listed = await http.get("/v1/transfers", headers={"Authorization": "Bearer some-token"})
            assert assert_error(listed, 503, "SERVICE_UNAVAILABLE")["failing"] == ["database"]
            ready = await http.get("/readyz")
            assert assert_error(ready, 503, "SERVICE_UNAVAILABLE")["failing"] == ["database"]
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await db.dispose()


# --- Idempotency-Key ------------------------------------------------------------------------------------


def keyed(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def test_a_keyed_repeat_answers_the_first_answer_without_acting_again(api: Api) -> None:
    source, destination = await api.factory.account(), await api.factory.account()
    resource = await api.factory.resource(source)
    token = await api.token(source)
    body = initiate_body(destination, [resource.id], code(source))
    first = await api.call("POST", "/v1/transfers", token, json=body, headers=keyed("k-1"))
    assert first.status_code == 200, first.text
    # The same request again (its code is used up by now): the first answer, nothing done twice.
    again = await api.call("POST", "/v1/transfers", token, json=body, headers=keyed("k-1"))
    assert (again.status_code, again.content) == (first.status_code, first.content)
    concurrent = await asyncio.gather(
        *(api.call("POST", "/v1/transfers", token, json=body, headers=keyed("k-1")) for _ in range(3))
    )
    assert {(r.status_code, r.content) for r in concurrent} == {(first.status_code, first.content)}
    listed = (await api.call("GET", "/v1/transfers?role=source", token)).json()["items"]
    assert [o["order_id"] for o in listed] == [first.json()["results"][0]["order_id"]]
    # Kept sealed: a copy of the database does not hold the answers (an account's token, say).
    async with api.store.engine.connect() as connection:
        stored = (
            await connection.execute(select(IdempotencyKeyRow.body).where(IdempotencyKeyRow.key == "k-1"))
        ).all()
    assert stored and all(first.json()["results"][0]["order_id"].encode() not in row.body for row in stored)
    # Kept in the database: a new API process over it answers the same.
    async with app_without_temporal(api.store) as restarted:
        replay = await restarted.post(
            "/v1/transfers", json=body, headers={**keyed("k-1"), "Authorization": f"Bearer {token}"}
        )
    assert (replay.status_code, replay.content) == (first.status_code, first.content)


async def test_a_key_reused_for_another_request_is_refused_and_keys_are_per_principal(api: Api) -> None:
    source, destination = await api.factory.account(), await api.factory.account()
    first_resource, second_resource = await api.factory.resource(source), await api.factory.resource(source)
    token = await api.token(source)
    first = await api.call(
        "POST",
        "/v1/transfers",
        token,
        json=initiate_body(destination, [first_resource.id], code(source)),
        headers=keyed("shared"),
    )
    assert first.status_code == 200, first.text
    other_body = initiate_body(destination, [second_resource.id], code(source))
    reused = await api.call("POST", "/v1/transfers", token, json=other_body, headers=keyed("shared"))
    assert_error(reused, 422, "IDEMPOTENCY_KEY_REUSED")
    other_path = await api.call(
        "POST", "/v1/transfers/validate", token, json=other_body, headers=keyed("shared")
    )
    assert_error(other_path, 422, "IDEMPOTENCY_KEY_REUSED")
    after = await api.store.get_resource(second_resource.id)
    assert after is not None and after.locked_by_order_id is None  # refused: nothing done
    # Another principal's "shared" is its own key.
    other = await api.factory.account()
    mine = await api.factory.resource(other)
    own = await api.call(
        "POST",
        "/v1/transfers",
        await api.token(other),
        json=initiate_body(destination, [mine.id], code(other)),
        headers=keyed("shared"),
    )
    assert own.status_code == 200 and own.json()["results"][0]["status"] == "pending"
    assert_error(
        await api.call("POST", "/v1/transfers", token, json=other_body, headers=keyed("x" * 201)),
        422,
        "VALIDATION_ERROR",
    )


async def test_an_answer_that_did_nothing_is_not_kept_for_the_key(api: Api) -> None:
    source, destination = await api.factory.account(), await api.factory.account()
    resource = await api.factory.resource(source)
    token = await api.token(source)
    body = initiate_body(destination, [resource.id], code(source))
    async with app_without_temporal(api.store) as down:
        refused = await down.post("/v1/transfers", json=body, headers={**keyed("k-503"), **api.auth(token)})
    assert_error(refused, 503, "SERVICE_UNAVAILABLE")
    retried = await api.call("POST", "/v1/transfers", token, json=body, headers=keyed("k-503"))
    assert retried.status_code == 200, retried.text
    assert retried.json()["results"][0]["status"] == "pending"


async def test_an_order_the_database_has_but_its_run_not_yet_answers_not_now(api: Api) -> None:
    # After a restart a run may still be opening the order its database row already shows.
    source, destination = await api.factory.account(), await api.factory.account()
    resource = await api.factory.resource(source)
    order_id = fresh_id("to")
    await api.store.orders.open_order(
        **open_args(order_id, resource.id, source.id, destination.id, at=datetime.now(UTC))
    )
    cancel = await api.call("POST", f"/v1/transfers/{order_id}/cancel", await api.token(source))
    details = assert_error(cancel, 503, "SERVICE_UNAVAILABLE")
    assert details["failing"] == ["temporal"]


async def test_the_api_docs_load_nothing_from_the_internet(api: Api) -> None:
    page = await api.call("GET", "/docs", None)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert assets and all(asset.startswith("/") for asset in assets), assets  # no https://cdn...
    for asset in assets:
        assert (await api.call("GET", asset, None)).status_code == 200, asset
    assert "/openapi.json" in page.text
