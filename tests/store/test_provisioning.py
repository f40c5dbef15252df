"""Accounts, credentials, organizations, resources and charges."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest

from domain.codes import ErrorCode
from domain.models import (
    MAX_MONEY,
    Billing,
    ChargeKind,
    InstanceStatus,
    OrderStatus,
    Principal,
    PrincipalKind,
    Product,
)
from domain.refusals import TransferError
from domain.rules import MAX_ACCOUNTS_PER_ENTITY
from starter.services.provisioning import term_months
from tests.store.builders import (
    NOW,
    account,
    add_accounts,
    add_resources,
    enterprise,
    pending_order,
    resource,
)
from tests.stores import Stores


async def test_create_account_is_idempotent_and_refuses_other_data(store: Stores) -> None:
    alice = account("alice")
    assert await store.provisioning.create_account(alice, created_at=NOW) == alice
    assert await store.provisioning.create_account(alice, created_at=NOW + timedelta(hours=1)) == alice
    assert await store.get_account("alice") == alice
    assert await store.get_account("bob") is None
    with pytest.raises(TransferError) as refused:
        await store.provisioning.create_account(alice.model_copy(update={"name": "Mallory"}), created_at=NOW)
    assert refused.value.code is ErrorCode.VALIDATION_ERROR


async def test_a_verified_account_needs_its_entity(store: Stores) -> None:
    with pytest.raises(TransferError) as refused:
        await store.provisioning.create_account(account("a", entity_id=None), created_at=NOW)
    assert refused.value.code is ErrorCode.VALIDATION_ERROR
    unverified = account("b", verified=False, entity_id=None, entity_name=None)
    await store.provisioning.create_account(unverified, created_at=NOW)
    with pytest.raises(TransferError):
        await store.provisioning.update_account("b", verified=True)


async def test_an_entity_verifies_ten_accounts_at_most(store: Stores) -> None:
    for n in range(MAX_ACCOUNTS_PER_ENTITY):
        await store.provisioning.create_account(enterprise(f"acme-{n}"), created_at=NOW)
    # the same account again is no eleventh
    await store.provisioning.create_account(enterprise("acme-0"), created_at=NOW)
    with pytest.raises(TransferError) as refused:
        await store.provisioning.create_account(enterprise("acme-10"), created_at=NOW)
    assert refused.value.code is ErrorCode.ENTITY_ACCOUNT_LIMIT
    # unverified accounts do not count, and verifying one checks the limit again
    await store.provisioning.create_account(enterprise("acme-10", verified=False), created_at=NOW)
    with pytest.raises(TransferError) as refused:
        await store.provisioning.update_account("acme-10", verified=True)
    assert refused.value.code is ErrorCode.ENTITY_ACCOUNT_LIMIT
    assert (await store.get_account("acme-10")).verified is False  # type: ignore[union-attr]
    await store.provisioning.update_account("acme-0", verified=False)
    assert (await store.provisioning.update_account("acme-10", verified=True)).verified


async def test_the_entity_limit_holds_under_concurrent_registrations(store: Stores) -> None:
    for n in range(MAX_ACCOUNTS_PER_ENTITY - 1):
        await store.provisioning.create_account(enterprise(f"acme-{n}"), created_at=NOW)
    results = await asyncio.gather(
        *(store.provisioning.create_account(enterprise(f"new-{n}"), created_at=NOW) for n in range(4)),
        return_exceptions=True,
    )
    refusals = [r for r in results if isinstance(r, TransferError)]
    assert len(refusals) == 3 and {r.code for r in refusals} == {ErrorCode.ENTITY_ACCOUNT_LIMIT}


async def test_update_account(store: Stores) -> None:
    await add_accounts(store, account("alice"))
    frozen = await store.provisioning.update_account("alice", frozen=True, entity_name="Alice Zhang")
    assert frozen.frozen and frozen.entity_name == "Alice Zhang"
    assert await store.get_account("alice") == frozen
    assert await store.provisioning.update_account("alice", frozen=True) == frozen
    assert (await store.provisioning.update_account("alice", frozen=False)).frozen is False
    with pytest.raises(TransferError) as refused:
        await store.provisioning.update_account("nobody", frozen=True)
    assert refused.value.code is ErrorCode.VALIDATION_ERROR


async def test_credentials_keep_a_digest_and_answer_their_principal(store: Stores) -> None:
    await add_accounts(store, account("alice"))
    root = await store.provisioning.add_credential(
        account_id="alice", token="root-token", kind=PrincipalKind.ROOT
    )
    assert root == Principal(kind=PrincipalKind.ROOT, account_id="alice")
    ram = await store.provisioning.add_credential(
        account_id="alice", token="ram-token", kind=PrincipalKind.RAM_USER, name="ops", ram_user_id="ops-1"
    )
    assert ram == Principal(kind=PrincipalKind.RAM_USER, account_id="alice", ram_user_id="ops-1")
    generated = await store.provisioning.add_credential(
        account_id="alice", token="ram-token-2", kind=PrincipalKind.RAM_USER, name="dev"
    )
    assert generated.ram_user_id
    assert await store.provisioning.principal_for_token("root-token") == root
    assert await store.provisioning.principal_for_token("ram-token") == ram
    assert await store.provisioning.principal_for_token("ram-token-2") == generated
    assert await store.provisioning.principal_for_token("nope") is None
    # the token names the credential
    assert (
        await store.provisioning.add_credential(
            account_id="alice", token="ram-token-2", kind=PrincipalKind.RAM_USER, name="dev"
        )
        == generated
    )
    for kwargs in (
        {"token": "root-token", "kind": PrincipalKind.RAM_USER, "name": "x"},  # token of another
        {"token": "other", "kind": PrincipalKind.RAM_USER, "ram_user_id": "ops-1"},  # id taken
        {"token": "other", "kind": PrincipalKind.ROOT, "ram_user_id": "r"},
    ):
        with pytest.raises(TransferError) as refused:
            await store.provisioning.add_credential(account_id="alice", **kwargs)  # type: ignore[arg-type]
        assert refused.value.code is ErrorCode.VALIDATION_ERROR
    with pytest.raises(TransferError):
        await store.provisioning.add_credential(account_id="nobody", token="t", kind=PrincipalKind.ROOT)


async def test_organizations(store: Stores) -> None:
    await add_accounts(store, *(account(a) for a in ("ma", "m1", "m2", "m3", "other-ma")))
    await store.provisioning.create_organization("org", "ma", ["m1", "m2"])
    await store.provisioning.create_organization("org", "ma", ["m2", "m1"])
    assert await store.managed_account_ids("ma") == {"m1", "m2"}
    assert await store.managed_account_ids("m1") == set()
    refusals = [
        ("org", "ma", ["m1"]),  # the same id with other members
        ("org-2", "other-ma", ["m1", "m3"]),  # m1 belongs to org already
        ("org-3", "ma", ["m3"]),  # ma manages org already
        ("org-4", "other-ma", ["ghost"]),
    ]
    for organization_id, management, members in refusals:
        with pytest.raises(TransferError) as refused:
            await store.provisioning.create_organization(organization_id, management, members)
        assert refused.value.code is ErrorCode.VALIDATION_ERROR
    assert await store.managed_account_ids("other-ma") == set()


async def test_a_subscription_gets_its_original_charge(store: Stores) -> None:
    await add_accounts(store, account("src"))
    r = resource("r-1", "src", monthly_price=Decimal("99.90"))  # a 365-day term: 12 months
    assert await store.provisioning.create_resource(r, at=NOW) == r
    assert await store.provisioning.create_resource(r, at=NOW + timedelta(days=1)) == r
    (original,) = await store.list_charges("r-1")
    assert original.kind is ChargeKind.ORIGINAL and original.payer_account_id == "src"
    assert original.amount == Decimal("1198.80")
    assert (original.period_start, original.period_end) == (r.created_at, r.expires_at)

    short = resource("r-2", "src", created_at=NOW - timedelta(days=6), expires_at=NOW + timedelta(days=3))
    await add_resources(store, short)
    assert [c.amount for c in await store.list_charges("r-2")] == [Decimal("100.00")]  # at least one month
    payg = resource("r-3", "src", billing=Billing.PAY_AS_YOU_GO, expires_at=None)
    await add_resources(store, payg)
    assert await store.list_charges("r-3") == []


async def test_create_resource_refuses_what_cannot_exist(store: Stores) -> None:
    await add_accounts(store, account("src"))
    for bad in (
        resource("r-1", "ghost"),
        resource("r-2", "src", expires_at=None),
        resource("r-3", "src", locked_by_order_id="o-1"),
    ):
        with pytest.raises(TransferError) as refused:
            await store.provisioning.create_resource(bad, at=NOW)
        assert refused.value.code is ErrorCode.VALIDATION_ERROR


async def test_list_resources_of_owners_without_released_ones(store: Stores) -> None:
    await add_accounts(store, account("a"), account("b"), account("c"))
    await add_resources(
        store,
        resource("r-b", "b", created_at=NOW - timedelta(days=40)),
        resource("r-a", "a"),
        resource("r-gone", "a", released=True),
        resource("r-c", "c"),
    )
    assert [r.id for r in await store.list_resources({"a", "b"})] == ["r-b", "r-a"]
    assert await store.list_resources(set()) == []


async def test_add_charge_is_idempotent_on_its_key(store: Stores) -> None:
    await add_accounts(store, account("src"))
    await add_resources(store, resource("r-1", "src", billing=Billing.PAY_AS_YOU_GO, expires_at=None))
    arguments = {
        "resource_id": "r-1",
        "payer_account_id": "src",
        "kind": ChargeKind.RENEWAL,
        "amount": Decimal("300"),
        "period_start": NOW,
        "period_end": NOW + timedelta(days=90),
        "created_at": NOW,
    }
    keyed = await store.add_charge(**arguments, idempotency_key="renew-1")  # type: ignore[arg-type]
    assert keyed.amount == Decimal("300.00")
    assert await store.add_charge(**arguments, idempotency_key="renew-1") == keyed  # type: ignore[arg-type]
    concurrent = await asyncio.gather(
        *(store.add_charge(**arguments, idempotency_key="renew-2") for _ in range(5))  # type: ignore[arg-type]
    )
    assert len({c.id for c in concurrent}) == 1
    await store.add_charge(**arguments)  # type: ignore[arg-type]
    assert len(await store.list_charges("r-1")) == 3


async def test_start_is_refused_once_the_order_is_confirmed(store: Stores) -> None:
    order = await pending_order(store)
    running = await store.set_instance_status(order.resource_id, InstanceStatus.RUNNING)
    assert running.status is InstanceStatus.RUNNING  # pending: start is still allowed
    await store.set_instance_status(order.resource_id, InstanceStatus.STOPPED)
    await store.orders.decide(order.order_id, status=OrderStatus.TRANSFERRING, at=NOW, actor_account_id="dst")
    with pytest.raises(TransferError) as refused:
        await store.set_instance_status(order.resource_id, InstanceStatus.RUNNING)
    assert refused.value.code is ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER
    stopped = await store.set_instance_status(order.resource_id, InstanceStatus.STOPPED)
    assert stopped.status is InstanceStatus.STOPPED
    await add_resources(store, resource("eip-1", "src", product=Product.EIP, network=None, status=None))
    with pytest.raises(TransferError):
        await store.set_instance_status("eip-1", InstanceStatus.STOPPED)


@pytest.mark.parametrize(("days", "months"), [(1, 1), (44, 1), (45, 2), (365, 12), (366, 12), (375, 13)])
def test_the_original_term_counts_30_day_months_rounded_half_up(days: int, months: int) -> None:
    assert term_months(NOW, NOW + timedelta(days=days)) == months


async def test_money_is_never_rounded_silently(store: Stores) -> None:
    await add_accounts(store, account("src"))
    await add_resources(store, resource("r-1", "src"))
    with pytest.raises(ValueError, match="two decimal places"):
        await store.add_charge(
            resource_id="r-1",
            payer_account_id="src",
            kind=ChargeKind.REFUND,
            amount=Decimal("-1.005"),
            period_start=NOW,
            period_end=NOW,
            created_at=NOW,
        )


async def test_a_charge_beyond_the_ledger_is_refused_and_writes_nothing(store: Stores) -> None:
    """NUMERIC(14, 2) holds 12 digits before the point: a larger computed charge is bad input."""
    await add_accounts(store, account("src"))
    huge = resource(
        "r-huge", "src", monthly_price=Decimal("999999999.99"), expires_at=NOW + timedelta(days=365 * 200)
    )
    with pytest.raises(TransferError) as refused:
        await store.provisioning.create_resource(huge, at=NOW)
    assert refused.value.code is ErrorCode.VALIDATION_ERROR
    assert await store.get_resource("r-huge") is None
    await add_resources(store, resource("r-1", "src"))
    with pytest.raises(TransferError) as too_much:
        await store.add_charge(
            resource_id="r-1",
            payer_account_id="src",
            kind=ChargeKind.RENEWAL,
            amount=MAX_MONEY + Decimal("0.01"),
            period_start=NOW,
            period_end=NOW + timedelta(days=30),
            created_at=NOW,
        )
    assert too_much.value.code is ErrorCode.VALIDATION_ERROR
