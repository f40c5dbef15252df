"""Provisioning through the admin API: accounts, their tokens and MFA secrets, RAM users, organizations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from domain.verification import code_at
from tests.api.conftest import ADMIN_TOKEN, Api
from tests.api.transfer_helpers import assert_error, code, initiate_body
from tests.factory import fresh_id

ACCOUNT_FIELDS = {"id", "name", "kind", "verified", "entity_id", "entity_name", "frozen"}


def account_body(**fields: Any) -> dict[str, Any]:
    account_id = fields.pop("id") if "id" in fields else fresh_id("acc")
    return {
        "id": account_id,
        "name": f"Account {account_id}",
        "kind": "individual",
        "verified": True,
        "entity_id": f"ent-{account_id}",
        "entity_name": f"Entity of {account_id}",
        "frozen": False,
        **fields,
    }


async def admin(api: Api, method: str, path: str, body: Any = None) -> Any:
    return await api.call(method, path, ADMIN_TOKEN, json=body)


async def provision(api: Api, **fields: Any) -> dict[str, Any]:
    response = await admin(api, "POST", "/v1/admin/accounts", account_body(**fields))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_a_provisioned_account_can_transfer_with_its_token_and_mfa_secret(api: Api) -> None:
    body = account_body()
    response = await admin(api, "POST", "/v1/admin/accounts", body)
    assert response.status_code == 201, response.text
    created = response.json()
    assert set(created) == ACCOUNT_FIELDS | {"api_token", "mfa_secret"}
    assert {k: created[k] for k in ACCOUNT_FIELDS} == body
    assert created["api_token"] and created["mfa_secret"]

    token, secret = created["api_token"], created["mfa_secret"]
    listed = await api.call("GET", "/v1/transfers", token)
    assert listed.status_code == 200 and listed.json() == {"items": [], "next_cursor": None}

    destination = await provision(api)
    account = await api.store.get_account(created["id"])
    assert account is not None and account.mfa_secret == secret
    resource = await api.factory.resource(account)
    the_code = code_at(secret, datetime.now(UTC))
    opened = await api.call(
        "POST", "/v1/transfers", token, json=initiate_body(destination["id"], [resource.id], the_code)
    )
    assert opened.status_code == 200, opened.text
    assert opened.json()["results"][0]["status"] == "pending"


async def test_registering_an_account_again_answers_it_without_its_secret(api: Api) -> None:
    body = account_body()
    first = await admin(api, "POST", "/v1/admin/accounts", body)
    assert first.status_code == 201, first.text
    again = await admin(api, "POST", "/v1/admin/accounts", body)
    assert again.status_code == 200, again.text
    repeated = again.json()
    assert {k: repeated[k] for k in ACCOUNT_FIELDS} == body
    assert repeated["mfa_secret"] is None
    assert repeated["api_token"] != first.json()["api_token"]
    for token in (first.json()["api_token"], repeated["api_token"]):
        assert (await api.call("GET", "/v1/transfers", token)).status_code == 200
    other = await admin(api, "POST", "/v1/admin/accounts", {**body, "name": "Someone else"})
    assert_error(other, 422, "VALIDATION_ERROR")


async def test_an_enterprise_entity_verifies_ten_accounts_at_most(api: Api) -> None:
    entity = fresh_id("ent")
    common = {"kind": "enterprise", "entity_id": entity, "entity_name": "ACME Ltd"}
    for _ in range(10):
        await provision(api, **common)
    eleventh = await admin(api, "POST", "/v1/admin/accounts", account_body(**common))
    assert_error(eleventh, 409, "ENTITY_ACCOUNT_LIMIT")
    # Unverified it registers; verifying it then hits the same limit.
    unverified = await provision(api, **common, verified=False)
    patch = await admin(api, "PATCH", f"/v1/admin/accounts/{unverified['id']}", {"verified": True})
    assert_error(patch, 409, "ENTITY_ACCOUNT_LIMIT")
    account = await api.store.get_account(unverified["id"])
    assert account is not None and not account.verified


async def test_a_frozen_account_cannot_initiate(api: Api) -> None:
    source, destination = await provision(api), await provision(api)
    frozen = await admin(api, "PATCH", f"/v1/admin/accounts/{source['id']}", {"frozen": True})
    assert frozen.status_code == 200, frozen.text
    assert frozen.json() == {**{k: source[k] for k in ACCOUNT_FIELDS}, "frozen": True}
    assert "mfa_secret" not in frozen.json()

    account = await api.store.get_account(source["id"])
    assert account is not None
    resource = await api.factory.resource(account)
    refused = await api.call(
        "POST",
        "/v1/transfers",
        source["api_token"],
        json=initiate_body(destination["id"], [resource.id], code(account)),
    )
    assert_error(refused, 403, "ACCOUNT_FROZEN")

    thawed = await admin(api, "PATCH", f"/v1/admin/accounts/{source['id']}", {"frozen": False})
    assert thawed.status_code == 200 and thawed.json()["frozen"] is False
    opened = await api.call(
        "POST",
        "/v1/transfers",
        source["api_token"],
        json=initiate_body(destination["id"], [resource.id], code(account)),
    )
    assert opened.status_code == 200, opened.text
    assert opened.json()["results"][0]["status"] == "pending"


async def test_patch_changes_only_the_fields_given(api: Api) -> None:
    created = await provision(api, verified=False, entity_id=None, entity_name=None)
    assert_error(
        await admin(api, "PATCH", f"/v1/admin/accounts/{created['id']}", {"verified": True}),
        422,
        "VALIDATION_ERROR",
    )
    named = await admin(api, "PATCH", f"/v1/admin/accounts/{created['id']}", {"entity_name": "New Name"})
    assert named.status_code == 200, named.text
    assert named.json()["entity_name"] == "New Name" and named.json()["verified"] is False
    unchanged = await admin(api, "PATCH", f"/v1/admin/accounts/{created['id']}", {})
    assert unchanged.json() == named.json()
    missing = await admin(api, "PATCH", f"/v1/admin/accounts/{fresh_id('acc')}", {"frozen": True})
    assert_error(missing, 422, "VALIDATION_ERROR")


async def test_ram_users_get_a_token_that_reads_but_cannot_act(api: Api) -> None:
    owner, destination = await provision(api), await provision(api)
    response = await admin(api, "POST", f"/v1/admin/accounts/{owner['id']}/ram-users", {"name": "ops"})
    assert response.status_code == 201, response.text
    user = response.json()
    assert {"id", "api_token"} <= set(user) and "mfa_secret" not in user
    assert user["id"] and user["api_token"] not in (owner["api_token"],)

    assert (await api.call("GET", "/v1/transfers", user["api_token"])).status_code == 200
    account = await api.store.get_account(owner["id"])
    assert account is not None
    resource = await api.factory.resource(account)
    refused = await api.call(
        "POST",
        "/v1/transfers",
        user["api_token"],
        json=initiate_body(destination["id"], [resource.id], code(account)),
    )
    assert_error(refused, 403, "RAM_USER_NOT_ALLOWED")

    unknown = await admin(api, "POST", f"/v1/admin/accounts/{fresh_id('acc')}/ram-users", {"name": "ops"})
    assert_error(unknown, 422, "VALIDATION_ERROR")


async def test_an_organization_gives_its_management_account_a_view_of_its_members(api: Api) -> None:
    management, member, destination = await provision(api), await provision(api), await provision(api)
    org_id = fresh_id("org")
    body = {"id": org_id, "management_account_id": management["id"], "member_account_ids": [member["id"]]}
    response = await admin(api, "POST", "/v1/admin/organizations", body)
    assert response.status_code == 201, response.text
    assert response.json() == body
    assert (await admin(api, "POST", "/v1/admin/organizations", body)).status_code == 201  # idempotent
    conflicting = await admin(api, "POST", "/v1/admin/organizations", {**body, "member_account_ids": []})
    assert_error(conflicting, 422, "VALIDATION_ERROR")
    taken = await admin(
        api,
        "POST",
        "/v1/admin/organizations",
        {
            "id": fresh_id("org"),
            "management_account_id": destination["id"],
            "member_account_ids": [member["id"]],
        },
    )
    assert_error(taken, 422, "VALIDATION_ERROR")
    unknown = await admin(
        api,
        "POST",
        "/v1/admin/organizations",
        {"id": fresh_id("org"), "management_account_id": destination["id"], "member_account_ids": ["nobody"]},
    )
    assert_error(unknown, 422, "VALIDATION_ERROR")

    account = await api.store.get_account(member["id"])
    assert account is not None
    resource = await api.factory.resource(account)
    opened = await api.call(
        "POST",
        "/v1/transfers",
        member["api_token"],
        json=initiate_body(destination["id"], [resource.id], code(account)),
    )
    order_id = opened.json()["results"][0]["order_id"]
    view = await api.call("GET", "/v1/organization/transfers", management["api_token"])
    assert [o["order_id"] for o in view.json()["items"]] == [order_id]
    read = await api.call("GET", f"/v1/transfers/{order_id}", management["api_token"])
    assert read.status_code == 200, read.text


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/admin/accounts", account_body(surprise=1)),
        ("POST", "/v1/admin/accounts", account_body(mfa_secret="JBSWY3DPEHPK3PXP")),
        ("PATCH", "/v1/admin/accounts/acc-x", {"name": "renamed"}),
        ("POST", "/v1/admin/accounts/acc-x/ram-users", {"name": "ops", "admin": True}),
        (
            "POST",
            "/v1/admin/organizations",
            {"id": "org-x", "management_account_id": "a", "member_account_ids": [], "owner": "b"},
        ),
    ],
)
async def test_unknown_fields_are_refused(api: Api, method: str, path: str, body: dict[str, Any]) -> None:
    assert_error(await admin(api, method, path, body), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/admin/accounts", account_body(id="has space")),
        ("POST", "/v1/admin/accounts", account_body(id="x" * 65)),
        ("POST", "/v1/admin/accounts", account_body(id="")),
        ("POST", "/v1/admin/accounts", account_body(id="ünïcode")),
        ("PATCH", "/v1/admin/accounts/bad!id", {"frozen": True}),
        ("PATCH", f"/v1/admin/accounts/{'x' * 65}", {"frozen": True}),
        ("POST", "/v1/admin/accounts/bad.id/ram-users", {"name": "ops"}),
        (
            "POST",
            "/v1/admin/organizations",
            {"id": "o k", "management_account_id": "a", "member_account_ids": []},
        ),
        (
            "POST",
            "/v1/admin/organizations",
            {"id": "ok", "management_account_id": "a!", "member_account_ids": []},
        ),
        (
            "POST",
            "/v1/admin/organizations",
            {"id": "ok", "management_account_id": "a", "member_account_ids": ["b c"]},
        ),
    ],
)
async def test_ids_outside_the_pattern_are_refused(
    api: Api, method: str, path: str, body: dict[str, Any]
) -> None:
    assert_error(await admin(api, method, path, body), 422, "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "fields",
    [
        {"verified": True, "entity_id": None},
        {"verified": True, "entity_name": None},
        {"kind": "company"},
        {"verified": "yes"},
        {"name": ""},
        {"name": "x" * 129},
        {"entity_name": "x" * 257},
        {"name": "nul\x00byte"},
    ],
)
async def test_account_fields_are_validated(api: Api, fields: dict[str, Any]) -> None:
    response = await admin(api, "POST", "/v1/admin/accounts", account_body(**fields))
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_missing_fields_are_refused(api: Api) -> None:
    body: Any
    for body in (
        {"name": "n", "kind": "individual"},
        {"id": fresh_id("acc"), "kind": "individual"},
        None,
        [],
    ):
        assert_error(await admin(api, "POST", "/v1/admin/accounts", body), 422, "VALIDATION_ERROR")
    assert_error(
        await admin(api, "POST", f"/v1/admin/accounts/{fresh_id('acc')}/ram-users", {}),
        422,
        "VALIDATION_ERROR",
    )
