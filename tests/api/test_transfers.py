"""The transfer endpoints over the real stack: initiate, dry run, confirm / cancel / reject, lists."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment

from domain.models import Billing, InstanceStatus, Network, Product
from tests.api.conftest import Api, running_api
from tests.api.transfer_helpers import (
    assert_error,
    code,
    confirm_body,
    get_order,
    initiate_body,
    open_order,
    refused_events,
    snapshot,
    wait_for_status,
    wrong_code,
)
from tests.factory import freezing_destination_activities, fresh_id
from tests.stores import Stores

UTC_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$")

ORDER_FIELDS = {
    "order_id",
    "resource_id",
    "product",
    "source_account_id",
    "destination_account_id",
    "status",
    "created_at",
    "expires_at",
    "confirmed_at",
    "completed_at",
    "failure",
    "steps",
    "events",
}

PAY_AS_YOU_GO: dict[str, Any] = {"billing": Billing.PAY_AS_YOU_GO, "expires_at": None}
KINDS: dict[str, dict[str, Any]] = {
    "ecs-subscription": {},
    "ecs-pay-as-you-go": PAY_AS_YOU_GO,
    "eip-pay-as-you-go": {**PAY_AS_YOU_GO, "product": Product.EIP, "network": None, "status": None},
}


async def parties(api: Api) -> tuple[Any, Any, str, str]:
    source, destination = await api.factory.account(), await api.factory.account()
    return source, destination, await api.token(source), await api.token(destination)


# --- the whole journey ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_a_transfer_goes_through_the_api_to_completion(api: Api, kind: str) -> None:
    source, destination, source_token, destination_token = await parties(api)
    resource = await api.factory.resource(source, **KINDS[kind])

    order_id = await open_order(api, source, destination, resource.id, source_token)
    pending = await get_order(api, source_token, order_id)
    assert set(pending) >= ORDER_FIELDS
    assert pending["status"] == "pending"
    assert pending["resource_id"] == resource.id and pending["product"] == resource.product.value
    assert (pending["source_account_id"], pending["destination_account_id"]) == (source.id, destination.id)
    assert pending["confirmed_at"] is None and pending["completed_at"] is None and pending["failure"] is None
    assert [(s["name"], s["status"]) for s in pending["steps"]] == [
        ("source_verification", "succeeded"),
        ("open_order", "succeeded"),
    ]
    assert [(e["action"], e["outcome"], e["actor_account_id"]) for e in pending["events"]] == [
        ("initiate", "accepted", source.id)
    ]
    # The destination sees the same order.
    assert (await get_order(api, destination_token, order_id))["order_id"] == order_id

    config = {"resource_group": "rg-web", "tags": {"team": "a"}}
    response = await api.call(
        "POST",
        f"/v1/transfers/{order_id}/confirm",
        destination_token,
        json=confirm_body(destination, receiving_config=config),
    )
    assert response.status_code == 200, response.text
    confirmed = response.json()
    assert set(confirmed) >= ORDER_FIELDS
    assert confirmed["status"] in {"transferring", "completed"}
    assert confirmed["confirmed_at"] is not None

    done = await wait_for_status(api, source_token, order_id, {"completed", "failed"})
    assert done["status"] == "completed", done
    assert done["failure"] is None
    for field in ("created_at", "expires_at", "confirmed_at", "completed_at"):
        assert UTC_ISO.match(done[field]), (field, done[field])
    assert [s["name"] for s in done["steps"]] == [
        "source_verification",
        "open_order",
        "destination_verification",
        "confirmation_check",
        "ownership_reassignment",
        "billing_handoff",
        "receiving_config",
    ]
    for step in done["steps"]:
        assert set(step) == {"name", "status", "started_at", "finished_at", "attempts", "error"}
        assert step["status"] == "succeeded" and step["error"] is None and step["attempts"] >= 1
        assert UTC_ISO.match(step["started_at"]) and UTC_ISO.match(step["finished_at"])
    assert [(e["action"], e["outcome"], e["actor_account_id"], e["code"]) for e in done["events"]] == [
        ("initiate", "accepted", source.id, None),
        ("confirm", "accepted", destination.id, None),
        ("complete", "accepted", None, None),
    ]
    for event in done["events"]:
        assert set(event) == {"at", "actor_account_id", "action", "outcome", "code", "reason"}

    moved = await api.store.get_resource(resource.id)
    assert moved is not None
    assert moved.owner_account_id == destination.id and moved.locked_by_order_id is None
    assert moved.resource_group == "rg-web" and moved.tags == {"team": "a"}
    assert moved.expires_at == resource.expires_at  # only ownership changes


async def test_cancel_by_the_source_ends_the_order(api: Api) -> None:
    source, destination, source_token, destination_token = await parties(api)
    resource = await api.factory.resource(source)
    order_id = await open_order(api, source, destination, resource.id, source_token)

    response = await api.call("POST", f"/v1/transfers/{order_id}/cancel", source_token)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    order = await get_order(api, destination_token, order_id)
    assert order["status"] == "cancelled"
    assert [(e["action"], e["outcome"]) for e in order["events"]][-1] == ("cancel", "accepted")
    unlocked = await api.store.get_resource(resource.id)
    assert unlocked is not None and unlocked.locked_by_order_id is None
    assert unlocked.owner_account_id == source.id


async def test_cancel_takes_an_empty_object_and_refuses_unknown_fields(api: Api) -> None:
    source, destination, source_token, _ = await parties(api)
    resource = await api.factory.resource(source)
    order_id = await open_order(api, source, destination, resource.id, source_token)

    refused = await api.call("POST", f"/v1/transfers/{order_id}/cancel", source_token, json={"why": "x"})
    assert_error(refused, 422, "VALIDATION_ERROR")
    assert (await get_order(api, source_token, order_id))["status"] == "pending"

    response = await api.call("POST", f"/v1/transfers/{order_id}/cancel", source_token, json={})
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"


async def test_reject_by_the_destination_ends_the_order(api: Api) -> None:
    source, destination, source_token, destination_token = await parties(api)
    resource = await api.factory.resource(source)
    order_id = await open_order(api, source, destination, resource.id, source_token)

    response = await api.call(
        "POST", f"/v1/transfers/{order_id}/reject", destination_token, json={"reason": "not ours"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "rejected" and body["order_id"] == order_id
    assert [(e["action"], e["actor_account_id"]) for e in body["events"]][-1] == ("reject", destination.id)
    assert body["events"][-1]["reason"] == "not ours"  # recorded with the reject event
    unlocked = await api.store.get_resource(resource.id)
    assert unlocked is not None and unlocked.locked_by_order_id is None


# --- initiate: per-item results and the lock --------------------------------------------------------


async def test_batch_initiate_answers_each_resource_in_request_order(api: Api) -> None:
    source, destination, source_token, _ = await parties(api)
    ok = await api.factory.resource(source)
    too_new = await api.factory.resource(source, created_at=datetime.now(UTC) - timedelta(days=1))
    unknown = fresh_id("i")

    body = initiate_body(destination, [too_new.id, ok.id, unknown], code(source))
    response = await api.call("POST", "/v1/transfers", source_token, json=body)
    assert response.status_code == 200, response.text
    first, second, third = response.json()["results"]
    assert first["resource_id"] == too_new.id and set(first) == {"resource_id", "error"}
    assert set(first["error"]) == {"code", "message"} and first["error"]["code"] == "RESOURCE_TOO_NEW"
    assert set(second) == {"resource_id", "order_id", "status"}
    assert second["resource_id"] == ok.id and second["status"] == "pending"
    assert third == {
        "resource_id": unknown,
        "error": {"code": "RESOURCE_NOT_FOUND", "message": third["error"]["message"]},
    }

    listed = await api.call("GET", "/v1/transfers", source_token)
    assert [o["order_id"] for o in listed.json()["items"]] == [second["order_id"]]


async def test_a_per_resource_failure_is_an_item_error_even_for_one_resource(api: Api) -> None:
    source, destination, source_token, _ = await parties(api)
    eip = await api.factory.resource(source, product=Product.EIP, network=None, status=None)  # subscription
    response = await api.call(
        "POST", "/v1/transfers", source_token, json=initiate_body(destination, [eip.id], code(source))
    )
    assert response.status_code == 200, response.text
    (result,) = response.json()["results"]
    assert result["error"]["code"] == "PRODUCT_NOT_SUPPORTED"
    assert "pay-as-you-go" in result["error"]["message"]


async def test_the_lock_refuses_a_second_order_for_the_resource(api: Api) -> None:
    source, destination, source_token, _ = await parties(api)
    other = await api.factory.account()
    resource = await api.factory.resource(source)
    order_id = await open_order(api, source, destination, resource.id, source_token)

    # Neither to the same destination nor to another one (of another entity: no destination limit).
    for target in (destination, other):
        response = await api.call(
            "POST", "/v1/transfers", source_token, json=initiate_body(target, [resource.id], code(source))
        )
        assert response.status_code == 200, response.text
        (item,) = response.json()["results"]
        assert item["error"]["code"] == "RESOURCE_IN_TRANSFER", item
    dry_run = await api.call(
        "POST",
        "/v1/transfers/validate",
        source_token,
        json={"destination_account_id": other.id, "resource_ids": [resource.id]},
    )
    assert [b["code"] for b in dry_run.json()["results"][0]["blockers"]] == ["RESOURCE_IN_TRANSFER"]
    listed = (await api.call("GET", "/v1/transfers", source_token)).json()["items"]
    assert [o["order_id"] for o in listed] == [order_id]
    assert listed[0]["status"] == "pending"


async def test_one_batch_with_the_same_resource_twice_opens_one_order(api: Api) -> None:
    source, destination, source_token, _ = await parties(api)
    resource = await api.factory.resource(source)
    response = await api.call(
        "POST",
        "/v1/transfers",
        source_token,
        json=initiate_body(destination, [resource.id, resource.id], code(source)),
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert sorted("order_id" in r for r in results) == [False, True]
    assert [r["error"]["code"] for r in results if "error" in r] == ["RESOURCE_IN_TRANSFER"]


# --- the dry run ------------------------------------------------------------------------------------


async def test_the_dry_run_lists_every_blocker(api: Api) -> None:
    source, destination, source_token, _ = await parties(api)
    stranger = await api.factory.account()
    now = datetime.now(UTC)
    ok = await api.factory.resource(source)
    young_and_expiring = await api.factory.resource(
        source, created_at=now - timedelta(days=1), expires_at=now + timedelta(days=2)
    )
    running_host = await api.factory.resource(source, status=InstanceStatus.RUNNING)
    attached_subscription_eip = await api.factory.resource(
        source, product=Product.EIP, network=None, status=None, attached_to=running_host.id
    )
    not_mine = await api.factory.resource(stranger, status=InstanceStatus.RUNNING)
    rds = await api.factory.resource(source, product=Product.RDS, network=None, status=None)
    ids = [
        ok.id,
        young_and_expiring.id,
        running_host.id,
        attached_subscription_eip.id,
        not_mine.id,
        rds.id,
        "nope",
    ]

    # No agreement, no verification: the dry run needs neither.
    response = await api.call(
        "POST",
        "/v1/transfers/validate",
        source_token,
        json={"destination_account_id": destination.id, "resource_ids": ids},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["resource_id"] for r in results] == ids
    assert [[b["code"] for b in r["blockers"]] for r in results] == [
        [],
        ["RESOURCE_TOO_NEW", "RESOURCE_EXPIRING_SOON"],
        ["EIP_ATTACHED"],  # an EIP is attached to it: detach first (the message names it)
        ["PRODUCT_NOT_SUPPORTED", "EIP_ATTACHED"],
        ["RESOURCE_NOT_FOUND"],
        ["PRODUCT_NOT_SUPPORTED"],
        ["RESOURCE_NOT_FOUND"],
    ]
    assert attached_subscription_eip.id in results[2]["blockers"][0]["message"]
    assert "pay-as-you-go" in results[3]["blockers"][0]["message"]
    # A running VPC instance is no blocker, but a warning: the confirm will refuse it until it stops.
    assert [[w["code"] for w in r["warnings"]] for r in results] == [
        [],
        [],
        ["INSTANCE_NOT_STOPPED"],
        [],
        [],  # another account's running instance would say nothing either
        [],
        [],
    ]
    assert all(set(b) == {"code", "message"} for r in results for b in r["blockers"] + r["warnings"])

    # The full initiate body is accepted too (and its code is not used).
    full = await api.call(
        "POST", "/v1/transfers/validate", source_token, json=initiate_body(destination, [ok.id], "000000")
    )
    assert full.status_code == 200, full.text
    # Nothing was opened.
    assert (await api.call("GET", "/v1/transfers", source_token)).json()["items"] == []


async def test_the_dry_run_answers_request_level_failures_as_errors(api: Api) -> None:
    source, _, source_token, _ = await parties(api)
    resource = await api.factory.resource(source)
    same = await api.call(
        "POST",
        "/v1/transfers/validate",
        source_token,
        json={"destination_account_id": source.id, "resource_ids": [resource.id]},
    )
    assert_error(same, 422, "SAME_ACCOUNT")
    unknown = await api.call(
        "POST",
        "/v1/transfers/validate",
        source_token,
        json={"destination_account_id": fresh_id("acc"), "resource_ids": [resource.id]},
    )
    assert_error(unknown, 404, "DESTINATION_NOT_FOUND")


# --- request-level failures change nothing -----------------------------------------------------------


async def test_request_level_failures_open_nothing_and_keep_the_code(api: Api) -> None:
    source, destination, source_token, _ = await parties(api)
    unverified = await api.factory.account(verified=False, entity_id=None, entity_name=None)
    resource = await api.factory.resource(source)
    the_code = code(source)

    wrong = await api.call(
        "POST",
        "/v1/transfers",
        source_token,
        json=initiate_body(destination, [resource.id], wrong_code(source)),
    )
    assert_error(wrong, 403, "VERIFICATION_FAILED")
    no_agreement = await api.call(
        "POST",
        "/v1/transfers",
        source_token,
        json=initiate_body(destination, [resource.id], the_code, agreement_accepted=False),
    )
    assert_error(no_agreement, 422, "AGREEMENT_NOT_ACCEPTED")
    unknown = await api.call(
        "POST", "/v1/transfers", source_token, json=initiate_body(fresh_id("acc"), [resource.id], the_code)
    )
    assert_error(unknown, 404, "DESTINATION_NOT_FOUND")
    same = await api.call(
        "POST", "/v1/transfers", source_token, json=initiate_body(source, [resource.id], the_code)
    )
    assert_error(same, 422, "SAME_ACCOUNT")
    not_verified = await api.call(
        "POST", "/v1/transfers", source_token, json=initiate_body(unverified, [resource.id], the_code)
    )
    assert_error(not_verified, 403, "ACCOUNT_NOT_VERIFIED")
    # An account rule comes before the agreement and the code (SPEC §3's order).
    first_rule = await api.call(
        "POST",
        "/v1/transfers",
        source_token,
        json=initiate_body(source, [resource.id], wrong_code(source), agreement_accepted=False),
    )
    assert_error(first_rule, 422, "SAME_ACCOUNT")
    missing = await api.call(
        "POST",
        "/v1/transfers",
        source_token,
        json={"destination_account_id": destination.id, "resource_ids": [resource.id]},
    )
    assert_error(missing, 422, "VALIDATION_ERROR")

    # Nothing was opened or locked...
    assert (await api.call("GET", "/v1/transfers", source_token)).json()["items"] == []
    untouched = await api.store.get_resource(resource.id)
    assert untouched is not None and untouched.locked_by_order_id is None
    # ...and no refusal used the code up: it opens the order now, once.
    opened = await api.call(
        "POST", "/v1/transfers", source_token, json=initiate_body(destination, [resource.id], the_code)
    )
    assert opened.status_code == 200, opened.text
    assert opened.json()["results"][0]["status"] == "pending"
    other = await api.factory.resource(source)
    reused = await api.call(
        "POST", "/v1/transfers", source_token, json=initiate_body(destination, [other.id], the_code)
    )
    assert_error(reused, 403, "VERIFICATION_FAILED")


async def test_a_successful_verification_is_used_up_even_when_every_item_is_refused(api: Api) -> None:
    source, destination, source_token, _ = await parties(api)
    resource = await api.factory.resource(source)
    the_code = code(source)
    response = await api.call(
        "POST", "/v1/transfers", source_token, json=initiate_body(destination, [fresh_id("i")], the_code)
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["error"]["code"] == "RESOURCE_NOT_FOUND"
    again = await api.call(
        "POST", "/v1/transfers", source_token, json=initiate_body(destination, [resource.id], the_code)
    )
    assert_error(again, 403, "VERIFICATION_FAILED")


# --- confirm refusals, late actions -----------------------------------------------------------------


async def test_a_refused_confirmation_leaves_the_order_pending(api: Api) -> None:
    source, destination, source_token, destination_token = await parties(api)
    running = await api.factory.resource(source, network=Network.VPC, status=InstanceStatus.RUNNING)
    order_id = await open_order(api, source, destination, running.id, source_token)
    before = await get_order(api, source_token, order_id)

    wrong = await api.call(
        "POST",
        f"/v1/transfers/{order_id}/confirm",
        destination_token,
        json={"agreement_accepted": True, "verification": {"code": wrong_code(destination)}},
    )
    assert_error(wrong, 403, "VERIFICATION_FAILED")
    no_agreement = await api.call(
        "POST",
        f"/v1/transfers/{order_id}/confirm",
        destination_token,
        json=confirm_body(destination, agreement_accepted=False),
    )
    assert_error(no_agreement, 422, "AGREEMENT_NOT_ACCEPTED")
    after = await get_order(api, source_token, order_id)
    assert snapshot(after) == snapshot(before) and after["events"] == before["events"]

    not_stopped = await api.call(
        "POST", f"/v1/transfers/{order_id}/confirm", destination_token, json=confirm_body(destination)
    )
    assert_error(not_stopped, 409, "INSTANCE_NOT_STOPPED")
    after = await get_order(api, source_token, order_id)
    assert after["status"] == "pending" and after["confirmed_at"] is None
    assert refused_events(after) == [(destination.id, "confirm", "INSTANCE_NOT_STOPPED")]

    # The source stops it; the confirmation goes through.
    await api.store.set_instance_status(running.id, InstanceStatus.STOPPED)
    ok = await api.call(
        "POST", f"/v1/transfers/{order_id}/confirm", destination_token, json=confirm_body(destination)
    )
    assert ok.status_code == 200, ok.text
    assert (await wait_for_status(api, source_token, order_id, {"completed", "failed"}))[
        "status"
    ] == "completed"


async def test_a_late_cancel_is_order_not_pending_with_the_status(api: Api) -> None:
    source, destination, source_token, destination_token = await parties(api)
    resource = await api.factory.resource(source)
    order_id = await open_order(api, source, destination, resource.id, source_token)
    confirmed = await api.call(
        "POST", f"/v1/transfers/{order_id}/confirm", destination_token, json=confirm_body(destination)
    )
    assert confirmed.status_code == 200, confirmed.text
    done = await wait_for_status(api, source_token, order_id, {"completed", "failed"})
    assert done["status"] == "completed"

    late = await api.call("POST", f"/v1/transfers/{order_id}/cancel", source_token)
    assert assert_error(late, 409, "ORDER_NOT_PENDING") == {"status": "completed"}
    late_reject = await api.call("POST", f"/v1/transfers/{order_id}/reject", destination_token)
    assert assert_error(late_reject, 409, "ORDER_NOT_PENDING") == {"status": "completed"}
    # In a batch the same refusal is an item error, code and message only.
    batch = await api.call("POST", "/v1/transfers/batch/cancel", source_token, json={"order_ids": [order_id]})
    assert batch.status_code == 200, batch.text
    (item,) = batch.json()["results"]
    assert item["order_id"] == order_id and set(item["error"]) == {"code", "message"}
    assert item["error"]["code"] == "ORDER_NOT_PENDING"

    after = await get_order(api, source_token, order_id)
    assert snapshot(after) == snapshot(done)
    assert refused_events(after) == [
        (source.id, "cancel", "ORDER_NOT_PENDING"),
        (destination.id, "reject", "ORDER_NOT_PENDING"),
        (source.id, "cancel", "ORDER_NOT_PENDING"),
    ]


async def test_a_second_cancel_is_order_not_pending(api: Api) -> None:
    source, destination, source_token, _ = await parties(api)
    resource = await api.factory.resource(source)
    order_id = await open_order(api, source, destination, resource.id, source_token)
    assert (await api.call("POST", f"/v1/transfers/{order_id}/cancel", source_token)).status_code == 200
    again = await api.call("POST", f"/v1/transfers/{order_id}/cancel", source_token)
    assert assert_error(again, 409, "ORDER_NOT_PENDING") == {"status": "cancelled"}


async def test_unknown_orders_are_not_found(api: Api) -> None:
    source, _, source_token, _ = await parties(api)
    missing = fresh_id("to")
    assert_error(await api.call("GET", f"/v1/transfers/{missing}", source_token), 404, "ORDER_NOT_FOUND")
    assert_error(
        await api.call("POST", f"/v1/transfers/{missing}/cancel", source_token), 404, "ORDER_NOT_FOUND"
    )
    assert_error(
        await api.call("POST", f"/v1/transfers/{missing}/reject", source_token), 404, "ORDER_NOT_FOUND"
    )
    confirm = await api.call(
        "POST", f"/v1/transfers/{missing}/confirm", source_token, json=confirm_body(source)
    )
    assert_error(confirm, 404, "ORDER_NOT_FOUND")
    bad = await api.call("GET", "/v1/transfers/not%20an%20id", source_token)
    assert_error(bad, 422, "VALIDATION_ERROR")


# --- batches ----------------------------------------------------------------------------------------


async def test_batch_confirm_cancel_and_reject_answer_per_order(api: Api) -> None:
    source, destination, source_token, destination_token = await parties(api)
    resources = [await api.factory.resource(source) for _ in range(4)]
    response = await api.call(
        "POST",
        "/v1/transfers",
        source_token,
        json=initiate_body(destination, [r.id for r in resources], code(source)),
    )
    assert response.status_code == 200, response.text
    a, b, c, d = (r["order_id"] for r in response.json()["results"])
    unknown = fresh_id("to")

    cancelled = await api.call(
        "POST", "/v1/transfers/batch/cancel", source_token, json={"order_ids": [a, unknown]}
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["results"] == [
        {"order_id": a, "status": "cancelled"},
        {
            "order_id": unknown,
            "error": {
                "code": "ORDER_NOT_FOUND",
                "message": cancelled.json()["results"][1]["error"]["message"],
            },
        },
    ]

    rejected = await api.call(
        "POST", "/v1/transfers/batch/reject", destination_token, json={"order_ids": [b, a], "reason": "no"}
    )
    assert rejected.status_code == 200, rejected.text
    first, second = rejected.json()["results"]
    assert first == {"order_id": b, "status": "rejected"}
    assert second["order_id"] == a and second["error"]["code"] == "ORDER_NOT_PENDING"

    # Agreement and verification are request-level for a batch confirm.
    wrong = await api.call(
        "POST",
        "/v1/transfers/batch/confirm",
        destination_token,
        json={
            "order_ids": [c, d],
            "agreement_accepted": True,
            "verification": {"code": wrong_code(destination)},
        },
    )
    assert_error(wrong, 403, "VERIFICATION_FAILED")
    confirmed = await api.call(
        "POST",
        "/v1/transfers/batch/confirm",
        destination_token,
        json={"order_ids": [c, d, a], **confirm_body(destination)},
    )
    assert confirmed.status_code == 200, confirmed.text
    results = confirmed.json()["results"]
    assert [r["order_id"] for r in results] == [c, d, a]
    assert results[0]["status"] in {"transferring", "completed"} and results[1]["status"] in {
        "transferring",
        "completed",
    }
    assert results[2]["error"]["code"] == "ORDER_NOT_PENDING"
    for order_id in (c, d):
        assert (await wait_for_status(api, source_token, order_id, {"completed", "failed"}))[
            "status"
        ] == "completed"

    # The source cannot confirm: an item error, not a request error.
    e = await api.factory.resource(source)
    f_order = await open_order(api, source, destination, e.id, source_token)
    by_source = await api.call(
        "POST",
        "/v1/transfers/batch/confirm",
        source_token,
        json={"order_ids": [f_order], **confirm_body(source)},
    )
    assert by_source.status_code == 200, by_source.text
    assert by_source.json()["results"][0]["error"]["code"] == "NOT_DESTINATION"


@pytest.mark.parametrize(
    "body",
    [
        {"order_ids": []},
        {"order_ids": ["x"] * 101},
        {"order_ids": ["not an id"]},
        {"order_ids": "x"},
        {},
        {"order_ids": ["x"], "extra": 1},
    ],
)
async def test_batch_bodies_are_validated(api: Api, body: dict[str, Any]) -> None:
    _, _, source_token, _ = await parties(api)
    response = await api.call("POST", "/v1/transfers/batch/cancel", source_token, json=body)
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_initiate_bodies_are_validated(api: Api) -> None:
    source, destination, source_token, _ = await parties(api)
    resource = await api.factory.resource(source)
    for body in (
        initiate_body(destination, [], "123456"),
        initiate_body(destination, [resource.id] * 101, "123456"),
        initiate_body(destination, ["bad id"], "123456"),
        initiate_body("bad id", [resource.id], "123456"),
        initiate_body(destination, [resource.id], "123456", agreement_accepted="yes"),
        initiate_body(destination, [resource.id], "123456", surprise=True),
        {**initiate_body(destination, [resource.id], "123456"), "verification": {"code": "1", "x": 2}},
    ):
        assert_error(
            await api.call("POST", "/v1/transfers", source_token, json=body), 422, "VALIDATION_ERROR"
        )
    not_json = await api.http.post(
        "/v1/transfers", content=b"{", headers={**api.auth(source_token), "Content-Type": "application/json"}
    )
    assert_error(not_json, 422, "VALIDATION_ERROR")


# --- lists ------------------------------------------------------------------------------------------


async def test_lists_filter_by_role_and_status_and_page_with_a_cursor(api: Api) -> None:
    source, destination, source_token, destination_token = await parties(api)
    resources = [await api.factory.resource(source) for _ in range(3)]
    response = await api.call(
        "POST",
        "/v1/transfers",
        source_token,
        json=initiate_body(destination, [r.id for r in resources], code(source)),
    )
    order_ids = [r["order_id"] for r in response.json()["results"]]
    await api.call("POST", f"/v1/transfers/{order_ids[0]}/cancel", source_token)

    first = await api.call("GET", "/v1/transfers", source_token, params={"role": "source", "limit": 2})
    assert first.status_code == 200, first.text
    page1 = first.json()
    assert set(page1) == {"items", "next_cursor"}
    assert len(page1["items"]) == 2 and isinstance(page1["next_cursor"], str)
    second = await api.call(
        "GET",
        "/v1/transfers",
        source_token,
        params={"role": "source", "limit": 2, "cursor": page1["next_cursor"]},
    )
    page2 = second.json()
    assert len(page2["items"]) == 1 and page2["next_cursor"] is None
    listed = page1["items"] + page2["items"]
    assert sorted(o["order_id"] for o in listed) == sorted(order_ids)
    keys = [(o["created_at"], o["order_id"]) for o in listed]
    assert keys == sorted(keys, reverse=True)  # newest first
    assert all(set(o) >= ORDER_FIELDS and o["steps"] and o["events"] for o in listed)

    everything = (await api.call("GET", "/v1/transfers", source_token)).json()
    assert len(everything["items"]) == 3 and everything["next_cursor"] is None
    as_destination = (
        await api.call("GET", "/v1/transfers", source_token, params={"role": "destination"})
    ).json()
    assert as_destination["items"] == []
    incoming = (
        await api.call("GET", "/v1/transfers", destination_token, params={"role": "destination"})
    ).json()
    assert len(incoming["items"]) == 3
    cancelled = (
        await api.call("GET", "/v1/transfers", destination_token, params={"status": "cancelled"})
    ).json()
    assert [o["order_id"] for o in cancelled["items"]] == [order_ids[0]]
    pending = (
        await api.call("GET", "/v1/transfers", source_token, params={"status": "pending", "role": "source"})
    ).json()
    assert sorted(o["order_id"] for o in pending["items"]) == sorted(order_ids[1:])


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"role": "owner"},
        {"status": "done"},
        {"cursor": "not-a-cursor"},
        {"cursor": "W10"},  # base64 of "[]"
    ],
)
async def test_bad_list_parameters_are_validation_errors(api: Api, params: dict[str, Any]) -> None:
    account = await api.factory.account()
    response = await api.call("GET", "/v1/transfers", await api.token(account), params=params)
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_a_failure_after_ownership_moved_is_failed_and_compensated(
    dev_env: WorkflowEnvironment, store: Stores
) -> None:
    """The destination is frozen between the ownership reassignment and the billing hand-off: the
    order ends `failed` with the refusal, ownership and billing back with the source, the lock gone."""
    async with running_api(dev_env, store, freezing_destination_activities(store)) as api:
        source, destination = await api.factory.account(), await api.factory.account()
        resource = await api.factory.resource(source)
        source_token, destination_token = await api.token(source), await api.token(destination)
        order_id = await open_order(api, source, destination, resource.id, source_token)
        response = await api.call(
            "POST", f"/v1/transfers/{order_id}/confirm", destination_token, json=confirm_body(destination)
        )
        assert response.status_code == 200, response.text
        done = await wait_for_status(api, source_token, order_id, {"completed", "failed"})
        assert done["status"] == "failed"
        assert done["failure"]["code"] == "ACCOUNT_FROZEN"
        steps = {step["name"]: step["status"] for step in done["steps"]}
        assert steps["billing_handoff"] == "failed"
        assert steps["billing_restore"] == steps["ownership_restore"] == "succeeded"
        back = await api.call("GET", f"/v1/resources/{resource.id}", source_token)
        assert back.status_code == 200, back.text
        assert back.json()["owner_account_id"] == source.id and back.json()["locked"] is False
