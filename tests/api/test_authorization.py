"""Who may call what: tokens, parties, RAM users, the management account and the admin token.

After every refused action the order is read back by a party: its status and steps are unchanged;
its events gain a refused entry exactly where the service records one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from domain.models import Account
from tests.api.conftest import ADMIN_TOKEN, Api
from tests.api.transfer_helpers import (
    assert_error,
    code,
    confirm_body,
    get_order,
    initiate_body,
    open_order,
    refused_events,
    snapshot,
)
from tests.factory import fresh_id

ANY_ID = "some-id"

# Every endpoint of the transfer, organization and admin routers, with a well-formed body.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    (
        "POST",
        "/v1/transfers",
        initiate_body(ANY_ID, [ANY_ID], "123456"),
    ),
    ("POST", "/v1/transfers/validate", {"destination_account_id": ANY_ID, "resource_ids": [ANY_ID]}),
    ("GET", "/v1/transfers", None),
    ("GET", f"/v1/transfers/{ANY_ID}", None),
    ("POST", f"/v1/transfers/{ANY_ID}/confirm", {"agreement_accepted": True, "verification": {"code": "1"}}),
    ("POST", f"/v1/transfers/{ANY_ID}/cancel", None),
    ("POST", f"/v1/transfers/{ANY_ID}/reject", {"reason": "no"}),
    (
        "POST",
        "/v1/transfers/batch/confirm",
        {"order_ids": [ANY_ID], "agreement_accepted": True, "verification": {"code": "1"}},
    ),
    ("POST", "/v1/transfers/batch/cancel", {"order_ids": [ANY_ID]}),
    ("POST", "/v1/transfers/batch/reject", {"order_ids": [ANY_ID]}),
    ("GET", "/v1/organization/transfers", None),
]
ADMIN_ENDPOINTS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/admin/accounts", {"id": ANY_ID, "name": "n", "kind": "individual"}),
    ("PATCH", f"/v1/admin/accounts/{ANY_ID}", {"frozen": True}),
    ("POST", f"/v1/admin/accounts/{ANY_ID}/ram-users", {"name": "ops"}),
    (
        "POST",
        "/v1/admin/organizations",
        {"id": ANY_ID, "management_account_id": ANY_ID, "member_account_ids": []},
    ),
]


def _id(endpoint: tuple[str, str, Any]) -> str:
    return f"{endpoint[0]} {endpoint[1]}"


@pytest.mark.parametrize("endpoint", ENDPOINTS + ADMIN_ENDPOINTS, ids=_id)
@pytest.mark.parametrize("token", [None, "not-a-token"], ids=["no-token", "unknown-token"])
async def test_without_a_valid_token_every_endpoint_is_unauthenticated(
    api: Api, endpoint: tuple[str, str, dict[str, Any] | None], token: str | None
) -> None:
    method, path, body = endpoint
    response = await api.call(method, path, token, json=body)
    assert_error(response, 401, "UNAUTHENTICATED")


async def test_unauthenticated_comes_before_validation(api: Api) -> None:
    response = await api.call("POST", "/v1/transfers", None, json={"resource_ids": "nope", "surprise": 1})
    assert_error(response, 401, "UNAUTHENTICATED")
    bad_path = await api.call("GET", "/v1/transfers/bad!id", None)
    assert_error(bad_path, 401, "UNAUTHENTICATED")
    not_json = await api.call("POST", "/v1/transfers", None, content=b"{not json")
    assert_error(not_json, 401, "UNAUTHENTICATED")
    admin_not_json = await api.call("POST", "/v1/admin/accounts", "not-the-admin", content=b"[")
    assert_error(admin_not_json, 401, "UNAUTHENTICATED")


@pytest.mark.parametrize("endpoint", ADMIN_ENDPOINTS, ids=_id)
async def test_account_tokens_are_not_admin_tokens(
    api: Api, endpoint: tuple[str, str, dict[str, Any] | None]
) -> None:
    account = await api.factory.account()
    method, path, body = endpoint
    for token in (await api.token(account), await api.ram_token(account), ADMIN_TOKEN + "x"):
        assert_error(await api.call(method, path, token, json=body), 401, "UNAUTHENTICATED")
    # The admin token is no account token either.
    assert_error(await api.call("GET", "/v1/transfers", ADMIN_TOKEN), 401, "UNAUTHENTICATED")


@dataclass
class Pending:
    source: Account
    destination: Account
    source_token: str
    destination_token: str
    order_id: str
    before: dict[str, Any]

    async def unchanged(self, api: Api, *, refused: list[tuple[str | None, str, str | None]]) -> None:
        """Status and steps as before; the refused events are exactly `refused`."""
        after = await get_order(api, self.source_token, self.order_id)
        assert snapshot(after) == snapshot(self.before)
        assert after["confirmed_at"] is None and after["completed_at"] is None
        assert refused_events(after) == refused


@pytest.fixture
async def pending(api: Api) -> Pending:
    source, destination = await api.factory.account(), await api.factory.account()
    source_token, destination_token = await api.token(source), await api.token(destination)
    resource = await api.factory.resource(source)
    order_id = await open_order(api, source, destination, resource.id, source_token)
    before = await get_order(api, source_token, order_id)
    assert before["status"] == "pending"
    return Pending(source, destination, source_token, destination_token, order_id, before)


async def test_a_stranger_learns_nothing_of_an_order(api: Api, pending: Pending) -> None:
    stranger = await api.factory.account()
    token = await api.token(stranger)
    order = pending.order_id
    assert_error(await api.call("GET", f"/v1/transfers/{order}", token), 404, "ORDER_NOT_FOUND")
    assert_error(await api.call("POST", f"/v1/transfers/{order}/cancel", token), 404, "ORDER_NOT_FOUND")
    assert_error(await api.call("POST", f"/v1/transfers/{order}/reject", token), 404, "ORDER_NOT_FOUND")
    confirm = await api.call("POST", f"/v1/transfers/{order}/confirm", token, json=confirm_body(stranger))
    assert_error(confirm, 404, "ORDER_NOT_FOUND")
    batch = await api.call("POST", "/v1/transfers/batch/cancel", token, json={"order_ids": [order]})
    assert batch.json()["results"][0]["error"]["code"] == "ORDER_NOT_FOUND"
    listed = await api.call("GET", "/v1/transfers", token)
    assert listed.json()["items"] == []
    # No trace of the stranger on the order either.
    await pending.unchanged(api, refused=[])


async def test_the_destination_cannot_cancel(api: Api, pending: Pending) -> None:
    response = await api.call("POST", f"/v1/transfers/{pending.order_id}/cancel", pending.destination_token)
    assert_error(response, 403, "NOT_SOURCE")
    await pending.unchanged(api, refused=[(pending.destination.id, "cancel", "NOT_SOURCE")])


async def test_the_source_cannot_confirm_or_reject(api: Api, pending: Pending) -> None:
    order = pending.order_id
    confirm = await api.call(
        "POST", f"/v1/transfers/{order}/confirm", pending.source_token, json=confirm_body(pending.source)
    )
    assert_error(confirm, 403, "NOT_DESTINATION")
    reject = await api.call("POST", f"/v1/transfers/{order}/reject", pending.source_token)
    assert_error(reject, 403, "NOT_DESTINATION")
    await pending.unchanged(
        api,
        refused=[
            (pending.source.id, "confirm", "NOT_DESTINATION"),
            (pending.source.id, "reject", "NOT_DESTINATION"),
        ],
    )


async def test_ram_users_may_read_but_not_act(api: Api, pending: Pending) -> None:
    source_ram = await api.ram_token(pending.source)
    destination_ram = await api.ram_token(pending.destination)
    order = pending.order_id

    resource = await api.factory.resource(pending.source)
    initiate = await api.call(
        "POST",
        "/v1/transfers",
        source_ram,
        json=initiate_body(pending.destination, [resource.id], code(pending.source)),
    )
    assert_error(initiate, 403, "RAM_USER_NOT_ALLOWED")
    assert_error(
        await api.call("POST", f"/v1/transfers/{order}/cancel", source_ram), 403, "RAM_USER_NOT_ALLOWED"
    )
    assert_error(
        await api.call("POST", f"/v1/transfers/{order}/reject", destination_ram), 403, "RAM_USER_NOT_ALLOWED"
    )
    confirm = await api.call(
        "POST", f"/v1/transfers/{order}/confirm", destination_ram, json=confirm_body(pending.destination)
    )
    assert_error(confirm, 403, "RAM_USER_NOT_ALLOWED")
    for path in ("/v1/transfers/batch/cancel", "/v1/transfers/batch/reject"):
        batch = await api.call("POST", path, destination_ram, json={"order_ids": [order]})
        assert_error(batch, 403, "RAM_USER_NOT_ALLOWED")
    # A RAM user is refused before anything else, even a dry run.
    dry_run = await api.call(
        "POST",
        "/v1/transfers/validate",
        source_ram,
        json={"destination_account_id": pending.destination.id, "resource_ids": [resource.id]},
    )
    assert_error(dry_run, 403, "RAM_USER_NOT_ALLOWED")

    # Reading is allowed.
    read = await get_order(api, source_ram, order)
    assert read["order_id"] == order
    listed = await api.call("GET", "/v1/transfers", destination_ram)
    assert [o["order_id"] for o in listed.json()["items"]] == [order]
    # Refused before the order is looked at: no event.
    await pending.unchanged(api, refused=[])
    # The refused initiate opened nothing.
    locked = await api.store.get_resource(resource.id)
    assert locked is not None and locked.locked_by_order_id is None


async def test_the_management_account_may_read_members_orders_and_do_nothing(
    api: Api, pending: Pending
) -> None:
    management = await api.factory.account()
    ma_token = await api.token(management)
    await api.store.provisioning.create_organization(fresh_id("org"), management.id, [pending.source.id])
    order = pending.order_id

    read = await get_order(api, ma_token, order)
    assert read["order_id"] == order and read["events"] == pending.before["events"]
    org_list = await api.call("GET", "/v1/organization/transfers", ma_token)
    assert org_list.status_code == 200, org_list.text
    assert [o["order_id"] for o in org_list.json()["items"]] == [order]
    as_source = await api.call("GET", "/v1/organization/transfers", ma_token, params={"role": "source"})
    assert [o["order_id"] for o in as_source.json()["items"]] == [order]
    as_destination = await api.call(
        "GET", "/v1/organization/transfers", ma_token, params={"role": "destination"}
    )
    assert as_destination.json()["items"] == []
    # Its own list holds none of its members' orders.
    assert (await api.call("GET", "/v1/transfers", ma_token)).json()["items"] == []

    cancel = await api.call("POST", f"/v1/transfers/{order}/cancel", ma_token)
    assert_error(cancel, 403, "READ_ONLY_ACCESS")
    reject = await api.call("POST", f"/v1/transfers/{order}/reject", ma_token)
    assert_error(reject, 403, "READ_ONLY_ACCESS")
    confirm = await api.call(
        "POST", f"/v1/transfers/{order}/confirm", ma_token, json=confirm_body(management)
    )
    assert_error(confirm, 403, "READ_ONLY_ACCESS")
    batch = await api.call("POST", "/v1/transfers/batch/cancel", ma_token, json={"order_ids": [order]})
    assert batch.status_code == 200
    assert batch.json()["results"][0]["error"]["code"] == "READ_ONLY_ACCESS"

    # Initiate acts for the caller's own account: a member's resource is not found.
    member_resource = await api.factory.resource(pending.source)
    initiate = await api.call(
        "POST",
        "/v1/transfers",
        ma_token,
        json=initiate_body(pending.destination, [member_resource.id], code(management)),
    )
    assert initiate.status_code == 200, initiate.text
    assert initiate.json()["results"][0]["error"]["code"] == "RESOURCE_NOT_FOUND"

    # The service records each refused action of the management account on the order.
    await pending.unchanged(
        api,
        refused=[
            (management.id, "cancel", "READ_ONLY_ACCESS"),
            (management.id, "reject", "READ_ONLY_ACCESS"),
            (management.id, "confirm", "READ_ONLY_ACCESS"),
            (management.id, "cancel", "READ_ONLY_ACCESS"),
        ],
    )
    # And the parties can still act: the source cancels.
    cancelled = await api.call("POST", f"/v1/transfers/{order}/cancel", pending.source_token)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


async def test_the_organization_view_of_an_account_that_manages_nothing_is_empty(api: Api) -> None:
    account = await api.factory.account()
    response = await api.call("GET", "/v1/organization/transfers", await api.token(account))
    assert response.status_code == 200, response.text
    assert response.json() == {"items": [], "next_cursor": None}


async def test_a_ram_user_of_the_management_account_has_no_organization_view(
    api: Api, pending: Pending
) -> None:
    """SPEC: the MA *root* may view members' resources and orders; its RAM users are strangers there."""
    management = await api.factory.account()
    await api.store.provisioning.create_organization(fresh_id("org"), management.id, [pending.source.id])
    ram_token = await api.ram_token(management)
    member_resource = await api.factory.resource(pending.source)

    order = pending.order_id
    assert_error(await api.call("GET", f"/v1/transfers/{order}", ram_token), 404, "ORDER_NOT_FOUND")
    org_orders = await api.call("GET", "/v1/organization/transfers", ram_token)
    assert org_orders.status_code == 200 and org_orders.json()["items"] == []
    org_resources = await api.call("GET", "/v1/organization/resources", ram_token)
    assert org_resources.status_code == 200 and org_resources.json()["items"] == []
    resource_path = f"/v1/resources/{member_resource.id}"
    assert_error(await api.call("GET", resource_path, ram_token), 404, "RESOURCE_NOT_FOUND")
    quote = await api.call("GET", f"{resource_path}/refund-quote", ram_token)
    assert_error(quote, 404, "RESOURCE_NOT_FOUND")
    stop = await api.call("POST", f"{resource_path}/actions/stop", ram_token)
    assert_error(stop, 404, "RESOURCE_NOT_FOUND")
    await pending.unchanged(api, refused=[])
