"""The resource endpoints over the real stack: lists with blockers, actions and the transfer lock,
refund quotes after a real transfer, the organization view, and provisioning by the admin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from domain.models import Account
from tests.api.conftest import ADMIN_TOKEN, Api
from tests.api.transfer_helpers import (
    assert_error,
    confirm_body,
    open_order,
    wait_for_status,
)
from tests.factory import fresh_id

RESOURCE_FIELDS = {
    "id",
    "product",
    "billing",
    "owner",
    "owner_account_id",
    "region",
    "created_at",
    "expires_at",
    "auto_renew",
    "monthly_price",
    "network",
    "status",
    "attached_to",
    "bandwidth_mbps",
    "resource_group",
    "tags",
    "locked",
}
QUOTE_ITEM_FIELDS = {
    "charge_id",
    "kind",
    "payer_account_id",
    "amount",
    "period_start",
    "period_end",
    "refundable",
}
PAY_AS_YOU_GO: dict[str, Any] = {"billing": "pay_as_you_go", "expires_at": None}
EIP: dict[str, Any] = {**PAY_AS_YOU_GO, "product": "eip", "network": None, "status": None}


def iso(at: datetime) -> str:
    return at.isoformat()


async def provision(api: Api, owner: Account, **fields: Any) -> dict[str, Any]:
    """A resource through POST /v1/admin/resources: by default a stopped VPC ECS subscription,
    30 days old with 335 days left at CNY 100.00 a month (its original charge: 12 months, 1200.00)."""
    now = datetime.now(UTC)
    body: dict[str, Any] = {
        "id": fresh_id("r"),
        "product": "ecs",
        "billing": "subscription",
        "owner_account_id": owner.id,
        "region": "cn-hangzhou",
        "created_at": iso(now - timedelta(days=30)),
        "expires_at": iso(now + timedelta(days=335)),
        "monthly_price": "100.00",
        "network": "vpc",
        "status": "stopped",
        **fields,
    }
    body = {name: value for name, value in body.items() if value is not None}
    response = await api.call("POST", "/v1/admin/resources", ADMIN_TOKEN, json=body)
    assert response.status_code == 201, response.text
    resource: dict[str, Any] = response.json()
    return resource


async def act(
    api: Api,
    token: str,
    resource_id: str,
    action: str,
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Any:
    return await api.http.post(
        f"/v1/resources/{resource_id}/actions/{action}",
        json=body,
        headers={**api.auth(token), **(headers or {})},
    )


async def ok(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def owner(api: Api) -> tuple[Account, str]:
    account = await api.factory.account()
    return account, await api.token(account)


# --- lists --------------------------------------------------------------------------------------------


async def test_the_list_shows_each_resource_with_its_blockers(api: Api) -> None:
    account, token = await owner(api)
    ready = await provision(api, account)
    new = await provision(
        api, account, created_at=iso(datetime.now(UTC) - timedelta(days=1)), status="running"
    )
    subscription_eip = await provision(api, account, product="eip", network=None, status=None)
    host = await provision(api, account)
    attached = await provision(api, account, **EIP, attached_to=host["id"])
    rds = await provision(api, account, **PAY_AS_YOU_GO, product="rds", network=None, status=None)
    assert set(ready) >= RESOURCE_FIELDS
    assert (ready["monthly_price"], ready["locked"], ready["owner"]) == ("100.00", False, account.id)

    listed = await ok(await api.call("GET", "/v1/resources", token))
    assert listed["next_cursor"] is None
    blockers = {item["id"]: [b["code"] for b in item["blockers"]] for item in listed["items"]}
    assert blockers == {
        ready["id"]: [],
        new["id"]: ["RESOURCE_TOO_NEW"],
        subscription_eip["id"]: ["PRODUCT_NOT_SUPPORTED"],
        # SPEC §3: neither the attached EIP nor the instance it is attached to may move.
        host["id"]: ["EIP_ATTACHED"],
        attached["id"]: ["EIP_ATTACHED"],
        rds["id"]: ["PRODUCT_NOT_SUPPORTED"],
    }
    by_id = {item["id"]: item for item in listed["items"]}
    [product_blocker] = by_id[subscription_eip["id"]]["blockers"]
    assert "pay-as-you-go" in product_blocker["message"]
    [eip_blocker] = by_id[host["id"]]["blockers"]
    assert attached["id"] in eip_blocker["message"] and by_id[host["id"]]["attached_eip_ids"] == [
        attached["id"]
    ]
    assert all(set(item) >= RESOURCE_FIELDS | {"blockers", "warnings"} for item in listed["items"])
    warnings = {item["id"]: [w["code"] for w in item["warnings"]] for item in listed["items"]}
    running = {i for i, item in by_id.items() if item["product"] == "ecs" and item["status"] == "running"}
    assert running == {new["id"]} and warnings[new["id"]] == ["INSTANCE_NOT_STOPPED"]
    assert all(warnings[i] == [] for i in set(by_id) - running)

    transferable = await ok(await api.call("GET", "/v1/resources?transferable=true", token))
    assert [item["id"] for item in transferable["items"]] == [ready["id"]]
    blocked = await ok(await api.call("GET", "/v1/resources?transferable=false", token))
    assert len(blocked["items"]) == 5

    # pages of two, oldest first
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await ok(await api.call("GET", "/v1/resources", token, params=params))
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert seen == [item["id"] for item in listed["items"]] and len(seen) == 6

    for query in ("limit=0", "limit=101", "cursor=not-a-cursor", "transferable=maybe"):
        assert_error(await api.call("GET", f"/v1/resources?{query}", token), 422, "VALIDATION_ERROR")
    # another account sees none of them
    _, stranger = await owner(api)
    assert (await ok(await api.call("GET", "/v1/resources", stranger)))["items"] == []
    assert_error(await api.call("GET", f"/v1/resources/{ready['id']}", stranger), 404, "RESOURCE_NOT_FOUND")


# --- the lock and a real transfer ------------------------------------------------------------------


LOCKED_ECS_ACTIONS: list[tuple[str, dict[str, Any] | None]] = [
    ("renew", {"months": 1}),
    ("upgrade", {"monthly_price": "150.00"}),
    ("downgrade", {"monthly_price": "50.00"}),
    ("release", None),
    ("change_os", None),
    ("convert_billing", None),
]


async def test_a_transfer_locks_the_resource_then_the_new_owner_pays_and_is_refunded(api: Api) -> None:
    source, source_token = await owner(api)
    destination, destination_token = await owner(api)
    resource = await provision(api, source)
    rid = resource["id"]

    order_id = await open_order(api, source, destination, rid, source_token)
    locked = await ok(await api.call("GET", f"/v1/resources/{rid}", source_token))
    assert (locked["locked"], locked["locked_by_order_id"]) == (True, order_id)
    listed = await ok(await api.call("GET", "/v1/resources", source_token))
    [item] = [i for i in listed["items"] if i["id"] == rid]
    assert [b["code"] for b in item["blockers"]] == ["RESOURCE_IN_TRANSFER"]

    for action, body in LOCKED_ECS_ACTIONS:
        response = await act(api, source_token, rid, action, body)
        assert_error(response, 409, "RESOURCE_LOCKED_FOR_TRANSFER")
    # stop stays allowed; start too until the destination confirms
    assert (await ok(await act(api, source_token, rid, "start")))["status"] == "running"
    assert (await ok(await act(api, source_token, rid, "stop")))["status"] == "stopped"
    quote = await ok(await api.call("GET", f"/v1/resources/{rid}/refund-quote", source_token))
    assert [i["kind"] for i in quote["items"]] == ["original"]  # nothing charged by the refusals

    response = await api.call(
        "POST", f"/v1/transfers/{order_id}/confirm", destination_token, json=confirm_body(destination)
    )
    assert response.status_code == 200, response.text
    done = await wait_for_status(api, destination_token, order_id, {"completed", "failed"})
    assert done["status"] == "completed", done

    # the source can no longer see or operate it
    assert_error(await api.call("GET", f"/v1/resources/{rid}", source_token), 404, "RESOURCE_NOT_FOUND")
    assert_error(await act(api, source_token, rid, "stop"), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        await api.call("GET", f"/v1/resources/{rid}/refund-quote", source_token), 404, "RESOURCE_NOT_FOUND"
    )
    assert rid not in {
        i["id"] for i in (await ok(await api.call("GET", "/v1/resources", source_token)))["items"]
    }

    moved = await ok(await api.call("GET", f"/v1/resources/{rid}", destination_token))
    assert (moved["owner"], moved["locked"], moved["status"]) == (destination.id, False, "stopped")
    assert moved["expires_at"] == resource["expires_at"]

    # the new owner renews a month, once per Idempotency-Key
    headers = {"Idempotency-Key": fresh_id("renew")}
    renewed = await ok(await act(api, destination_token, rid, "renew", {"months": 1}, headers=headers))
    [renewal] = renewed["charges"]
    assert (renewal["kind"], renewal["amount"], renewal["payer_account_id"]) == (
        "renewal",
        "100.00",
        destination.id,
    )
    assert (
        renewal["period_start"] == resource["expires_at"] and renewed["expires_at"] == renewal["period_end"]
    )
    again = await ok(await act(api, destination_token, rid, "renew", {"months": 1}, headers=headers))
    assert again["charges"] == renewed["charges"] and again["expires_at"] == renewed["expires_at"]

    quote = await ok(await api.call("GET", f"/v1/resources/{rid}/refund-quote", destination_token))
    assert set(quote) == {"resource_id", "items", "total_refundable"} and quote["resource_id"] == rid
    assert all(set(item) >= QUOTE_ITEM_FIELDS for item in quote["items"])
    assert [(i["kind"], i["payer_account_id"], i["amount"], i["refundable"]) for i in quote["items"]] == [
        ("original", source.id, "1200.00", "0.00"),  # paid before the transfer
        ("renewal", destination.id, "100.00", "100.00"),  # its month has not begun: all of it
    ]
    assert quote["total_refundable"] == "100.00"

    # an auto-renewal charges the owner of the moment
    response = await api.call("POST", f"/v1/admin/resources/{rid}/auto-renew", ADMIN_TOKEN)
    charge = await ok(response)
    assert (charge["kind"], charge["amount"], charge["payer_account_id"]) == (
        "auto_renewal",
        "100.00",
        destination.id,
    )
    assert charge["period_start"] == renewal["period_end"]
    quote = await ok(await api.call("GET", f"/v1/resources/{rid}/refund-quote", destination_token))
    assert quote["total_refundable"] == "200.00"

    # releasing refunds the whole refundable total as refund charges
    released = await ok(await act(api, destination_token, rid, "release"))
    assert released["released"] is True
    assert sorted((c["kind"], c["amount"]) for c in released["charges"]) == [
        ("refund", "-100.00"),
        ("refund", "-100.00"),
    ]
    assert_error(await api.call("GET", f"/v1/resources/{rid}", destination_token), 404, "RESOURCE_NOT_FOUND")


async def test_eip_actions_and_their_lock(api: Api) -> None:
    account, token = await owner(api)
    destination = await api.factory.account()
    instance = await provision(api, account, **PAY_AS_YOU_GO)
    eip = await provision(api, account, **EIP, bandwidth_mbps=5)
    rid = eip["id"]

    order_id = await open_order(api, account, destination, rid, token)
    assert_error(
        await act(api, token, rid, "attach", {"instance_id": instance["id"]}),
        409,
        "RESOURCE_LOCKED_FOR_TRANSFER",
    )
    assert_error(
        await act(api, token, rid, "change_bandwidth", {"bandwidth_mbps": 50}),
        409,
        "RESOURCE_LOCKED_FOR_TRANSFER",
    )
    assert_error(await act(api, token, rid, "convert_billing"), 409, "RESOURCE_LOCKED_FOR_TRANSFER")
    assert (await ok(await act(api, token, rid, "detach")))["attached_to"] is None  # allowed while locked

    response = await api.call("POST", f"/v1/transfers/{order_id}/cancel", token)
    assert response.status_code == 200, response.text
    await wait_for_status(api, token, order_id, {"cancelled"})

    attached = await ok(await act(api, token, rid, "attach", {"instance_id": instance["id"]}))
    assert (attached["attached_to"], attached["locked"], attached["action"]) == (
        instance["id"],
        False,
        "attach",
    )
    changed = await ok(await act(api, token, rid, "change_bandwidth", {"bandwidth_mbps": 50}))
    assert changed["bandwidth_mbps"] == 50
    assert (await ok(await act(api, token, rid, "detach")))["attached_to"] is None
    # an EIP cannot start, an ECS has no bandwidth
    assert_error(await act(api, token, rid, "start"), 422, "VALIDATION_ERROR")
    assert_error(
        await act(api, token, instance["id"], "change_bandwidth", {"bandwidth_mbps": 5}),
        422,
        "VALIDATION_ERROR",
    )


async def test_upgrade_and_downgrade_charge_and_refund_in_money_strings(api: Api) -> None:
    account, token = await owner(api)
    rid = (await provision(api, account))["id"]
    # 60.00 a month more for the 335 days left: 670.00
    upgraded = await ok(await act(api, token, rid, "upgrade", {"monthly_price": "160.00"}))
    assert upgraded["monthly_price"] == "160.00"
    [upgrade] = upgraded["charges"]
    assert (upgrade["kind"], upgrade["amount"]) == ("upgrade", "670.00")
    # moments later, the upgrade refunds its unused part, rounded down to the fen
    downgraded = await ok(await act(api, token, rid, "downgrade", {"monthly_price": "99.90"}))
    assert downgraded["monthly_price"] == "99.90"
    [refund] = downgraded["charges"]
    assert refund["kind"] == "refund" and refund["refunds_charge_id"] == upgrade["charge_id"]
    assert refund["amount"] in {"-670.00", "-669.99"}

    converted = await ok(await act(api, token, rid, "convert_billing", {"billing": "pay_as_you_go"}))
    assert (converted["billing"], converted["expires_at"]) == ("pay_as_you_go", None)
    assert [c["kind"] for c in converted["charges"]] == ["refund"]  # the original term's unused part
    back = await ok(await act(api, token, rid, "convert_billing", {"months": 2}))
    assert back["billing"] == "subscription"
    assert [(c["kind"], c["amount"]) for c in back["charges"]] == [("original", "199.80")]


# --- who may read and act --------------------------------------------------------------------------


async def test_the_management_account_reads_members_resources_but_cannot_act(api: Api) -> None:
    member, member_token = await owner(api)
    management, management_token = await owner(api)
    await api.store.provisioning.create_organization(fresh_id("org"), management.id, [member.id])
    rid = (await provision(api, member))["id"]

    assert (await ok(await api.call("GET", f"/v1/resources/{rid}", management_token)))["owner"] == member.id
    quote = await ok(await api.call("GET", f"/v1/resources/{rid}/refund-quote", management_token))
    assert [i["kind"] for i in quote["items"]] == ["original"]
    organization = await ok(await api.call("GET", "/v1/organization/resources", management_token))
    assert [item["id"] for item in organization["items"]] == [rid]
    assert organization["items"][0]["blockers"] == []
    assert (await ok(await api.call("GET", "/v1/resources", management_token)))["items"] == []
    assert (await ok(await api.call("GET", "/v1/organization/resources", member_token)))["items"] == []

    for action, body in [("stop", None), ("start", None), ("renew", {"months": 1}), ("release", None)]:
        assert_error(await act(api, management_token, rid, action, body), 403, "READ_ONLY_ACCESS")
    resource = await ok(await api.call("GET", f"/v1/resources/{rid}", member_token))
    assert resource["status"] == "stopped" and resource["expires_at"] is not None

    _, stranger = await owner(api)
    assert_error(await api.call("GET", f"/v1/resources/{rid}", stranger), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        await api.call("GET", f"/v1/resources/{rid}/refund-quote", stranger), 404, "RESOURCE_NOT_FOUND"
    )
    assert_error(await act(api, stranger, rid, "stop"), 404, "RESOURCE_NOT_FOUND")


async def test_bad_input_is_a_validation_error(api: Api) -> None:
    account, token = await owner(api)
    rid = (await provision(api, account))["id"]
    bad: list[tuple[str, dict[str, Any] | None]] = [
        ("reboot", None),  # no such action
        ("renew", None),
        ("renew", {"months": 0}),
        ("renew", {"months": "1"}),
        ("renew", {"months": 1, "extra": True}),
        ("upgrade", {"monthly_price": 160}),
        ("upgrade", {"monthly_price": "160.5"}),
        ("upgrade", {"monthly_price": "-1.00"}),
        ("upgrade", {"monthly_price": "90.00"}),  # not a rise
        ("stop", {"force": True}),
        ("change_bandwidth", {"bandwidth_mbps": 5}),  # not an EIP
        ("attach", {"instance_id": "bad id!"}),
    ]
    for action, body in bad:
        assert_error(await act(api, token, rid, action, body), 422, "VALIDATION_ERROR")
    assert_error(await act(api, token, "bad id!", "stop"), 422, "VALIDATION_ERROR")
    assert_error(await api.call("GET", f"/v1/resources/{'x' * 65}", token), 422, "VALIDATION_ERROR")
    response = await api.http.post(
        f"/v1/resources/{rid}/actions/renew",
        content=b"{not json",
        headers={**api.auth(token), "Content-Type": "application/json"},
    )
    assert_error(response, 422, "VALIDATION_ERROR")
    assert_error(await act(api, token, fresh_id("r"), "stop"), 404, "RESOURCE_NOT_FOUND")
    # none of it charged anything
    quote = await ok(await api.call("GET", f"/v1/resources/{rid}/refund-quote", token))
    assert [i["kind"] for i in quote["items"]] == ["original"]


@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["no-token", "unknown-token"])
async def test_resource_endpoints_need_a_token(api: Api, token: str | None) -> None:
    for method, path in [
        ("GET", "/v1/resources"),
        ("GET", "/v1/resources/some-id"),
        ("GET", "/v1/resources/some-id/refund-quote"),
        ("POST", "/v1/resources/some-id/actions/stop"),
        ("GET", "/v1/organization/resources"),
    ]:
        assert_error(await api.call(method, path, token), 401, "UNAUTHENTICATED")


# --- provisioning ---------------------------------------------------------------------------------


async def test_admin_endpoints_need_the_admin_token(api: Api) -> None:
    account, token = await owner(api)
    body = {"id": fresh_id("r"), "product": "ecs", "billing": "pay_as_you_go", "owner_account_id": account.id,
            "monthly_price": "10.00"}  # fmt: skip
    for credential in (None, "not-a-token", token):
        assert_error(
            await api.call("POST", "/v1/admin/resources", credential, json=body), 401, "UNAUTHENTICATED"
        )
        assert_error(
            await api.call("POST", f"/v1/admin/resources/{body['id']}/auto-renew", credential),
            401,
            "UNAUTHENTICATED",
        )
    created = await api.call("POST", "/v1/admin/resources", ADMIN_TOKEN, json=body)
    assert created.status_code == 201, created.text
    resource = created.json()
    assert (resource["network"], resource["status"], resource["expires_at"]) == ("vpc", "running", None)
    again = await api.call("POST", "/v1/admin/resources", ADMIN_TOKEN, json=body)
    assert (again.status_code, again.json()) == (200, resource)


async def test_admin_provisioning_validates_and_auto_renews_subscriptions_only(api: Api) -> None:
    account, token = await owner(api)
    now = datetime.now(UTC)
    base = {"id": fresh_id("r"), "product": "ecs", "billing": "subscription", "owner_account_id": account.id,
            "monthly_price": "10.00", "created_at": iso(now - timedelta(days=10)),
            "expires_at": iso(now + timedelta(days=20))}  # fmt: skip
    invalid: list[dict[str, Any]] = [
        {**base, "expires_at": None},  # a subscription needs its expiry
        {**base, "billing": "pay_as_you_go"},  # pay-as-you-go has none
        {**base, "monthly_price": 10},
        {**base, "monthly_price": "10"},
        {**base, "created_at": "2026-01-01T00:00:00"},  # naive
        {**base, "unknown": 1},
        {**base, "owner_account_id": fresh_id("nobody")},
        {**base, "product": "eip", "network": "vpc"},  # network and status are ECS attributes
        {**base, "attached_to": "i-1"},
        {**base, "id": "bad id!"},
        {**base, "expires_at": iso(now - timedelta(days=11))},  # before its creation
    ]
    for body in invalid:
        response = await api.call("POST", "/v1/admin/resources", ADMIN_TOKEN, json=body)
        assert_error(response, 422, "VALIDATION_ERROR")

    created = await ok_created(await api.call("POST", "/v1/admin/resources", ADMIN_TOKEN, json=base))
    # the original charge covers the 30-day term: 1 month at 10.00
    quote = await ok(await api.call("GET", f"/v1/resources/{created['id']}/refund-quote", token))
    [original] = quote["items"]
    assert (original["kind"], original["amount"], original["payer_account_id"]) == (
        "original",
        "10.00",
        account.id,
    )

    charge = await ok(await api.call("POST", f"/v1/admin/resources/{created['id']}/auto-renew", ADMIN_TOKEN))
    assert (charge["kind"], charge["amount"], charge["payer_account_id"]) == (
        "auto_renewal",
        "10.00",
        account.id,
    )
    renewed = await ok(await api.call("GET", f"/v1/resources/{created['id']}", token))
    assert renewed["expires_at"] == charge["period_end"]

    payg = await provision(api, account, **PAY_AS_YOU_GO)
    assert_error(
        await api.call("POST", f"/v1/admin/resources/{payg['id']}/auto-renew", ADMIN_TOKEN),
        422,
        "VALIDATION_ERROR",
    )
    assert_error(
        await api.call("POST", f"/v1/admin/resources/{fresh_id('r')}/auto-renew", ADMIN_TOKEN),
        404,
        "RESOURCE_NOT_FOUND",
    )
    assert_error(
        await api.call("POST", "/v1/admin/resources/bad%20id/auto-renew", ADMIN_TOKEN),
        422,
        "VALIDATION_ERROR",
    )


async def ok_created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_provisioning_refuses_what_the_ledger_or_the_database_cannot_hold(api: Api) -> None:
    owner = await api.factory.account()
    now = datetime.now(UTC)
    # 999999999.99 a month for 200 years: the original charge is beyond NUMERIC(14, 2).
    huge = {
        "id": fresh_id("r"),
        "product": "ecs",
        "billing": "subscription",
        "owner_account_id": owner.id,
        "created_at": iso(now - timedelta(days=30)),
        "expires_at": iso(now + timedelta(days=365 * 200)),
        "monthly_price": "999999999.99",
    }
    response = await api.call("POST", "/v1/admin/resources", ADMIN_TOKEN, json=huge)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    for field, value in (("region", "cn\u0000x"), ("resource_group", "rg\u0000"), ("tags", {"k\u0000": "v"})):
        body = {**huge, "id": fresh_id("r"), "monthly_price": "10.00", field: value}
        body["expires_at"] = iso(now + timedelta(days=300))
        response = await api.call("POST", "/v1/admin/resources", ADMIN_TOKEN, json=body)
        assert response.status_code == 422, (field, response.text)
        assert response.json()["error"]["code"] == "VALIDATION_ERROR"
