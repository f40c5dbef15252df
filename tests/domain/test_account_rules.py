"""SPEC §3, request-level account rules: principal_failure, account_failure, entity_account_limit_failure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from domain.codes import ErrorCode
from domain.models import Account, AccountKind, Principal, PrincipalKind, PriorDestination
from domain.rules import (
    MAX_ACCOUNTS_PER_ENTITY,
    account_failure,
    entity_account_limit_failure,
    principal_failure,
)

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
ACME = "Acme Cloud Co., Ltd."

_INDIVIDUAL = Account(
    id="alice",
    name="Alice",
    kind=AccountKind.INDIVIDUAL,
    verified=True,
    entity_id="person-alice",
    entity_name="Alice Zhang",
    mfa_secret=SECRET,
)
_ENTERPRISE = Account(
    id="acme-1",
    name="Acme 1",
    kind=AccountKind.ENTERPRISE,
    verified=True,
    entity_id="ent-acme",
    entity_name=ACME,
    mfa_secret=SECRET,
)


def individual(account_id: str, entity_id: str | None = None, **update: Any) -> Account:
    """A verified individual; its own person unless `entity_id` names another account's person."""
    return _INDIVIDUAL.model_copy(
        update={
            "id": account_id,
            "name": account_id,
            "entity_id": entity_id or f"person-{account_id}",
            **update,
        }
    )


def enterprise(
    account_id: str, entity_id: str = "ent-acme", entity_name: str = ACME, **update: Any
) -> Account:
    return _ENTERPRISE.model_copy(
        update={
            "id": account_id,
            "name": account_id,
            "entity_id": entity_id,
            "entity_name": entity_name,
            **update,
        }
    )


def prior(account: Account) -> PriorDestination:
    return PriorDestination(account_id=account.id, kind=account.kind, entity_id=account.entity_id)


def check(source: Account, destination: Account | None, *priors: Account) -> ErrorCode | None:
    return account_failure(source, destination, [prior(p) for p in priors])


ALICE = individual("alice")
BOB = individual("bob")
CAROL = individual("carol")


# --- RAM_USER_NOT_ALLOWED -------------------------------------------------------------------------


def test_ram_user_is_refused() -> None:
    ram = Principal(kind=PrincipalKind.RAM_USER, account_id="alice", ram_user_id="ops")
    assert principal_failure(ram) is ErrorCode.RAM_USER_NOT_ALLOWED


def test_root_principal_is_allowed() -> None:
    assert principal_failure(Principal(kind=PrincipalKind.ROOT, account_id="alice")) is None


# --- baseline: every allowed pair -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        pytest.param(ALICE, BOB, id="individual->individual"),
        pytest.param(ALICE, enterprise("acme-1"), id="individual->enterprise"),
        pytest.param(enterprise("acme-1"), enterprise("acme-2"), id="enterprise->enterprise same entity"),
        pytest.param(ALICE, individual("alice-2", "person-alice"), id="individual->own other account"),
    ],
)
def test_allowed_pairs_pass(source: Account, destination: Account) -> None:
    assert check(source, destination) is None


# --- DESTINATION_NOT_FOUND --------------------------------------------------------------------------


def test_missing_destination_is_refused() -> None:
    assert check(ALICE, None) is ErrorCode.DESTINATION_NOT_FOUND


def test_missing_destination_comes_before_the_source_rules() -> None:
    source = ALICE.model_copy(update={"verified": False, "frozen": True})
    assert check(source, None) is ErrorCode.DESTINATION_NOT_FOUND


# --- ACCOUNT_NOT_VERIFIED ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_verified", "destination_verified", "expected"),
    [
        (False, True, ErrorCode.ACCOUNT_NOT_VERIFIED),
        (True, False, ErrorCode.ACCOUNT_NOT_VERIFIED),
        (False, False, ErrorCode.ACCOUNT_NOT_VERIFIED),
        (True, True, None),
    ],
)
def test_both_accounts_must_be_verified(
    source_verified: bool, destination_verified: bool, expected: ErrorCode | None
) -> None:
    source = ALICE.model_copy(update={"verified": source_verified})
    destination = BOB.model_copy(update={"verified": destination_verified})
    assert check(source, destination) is expected


# --- ACCOUNT_FROZEN -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source_frozen", "destination_frozen", "expected"),
    [
        (True, False, ErrorCode.ACCOUNT_FROZEN),
        (False, True, ErrorCode.ACCOUNT_FROZEN),
        (True, True, ErrorCode.ACCOUNT_FROZEN),
        (False, False, None),
    ],
)
def test_neither_account_may_be_frozen(
    source_frozen: bool, destination_frozen: bool, expected: ErrorCode | None
) -> None:
    source = ALICE.model_copy(update={"frozen": source_frozen})
    destination = BOB.model_copy(update={"frozen": destination_frozen})
    assert check(source, destination) is expected


# --- SAME_ACCOUNT -------------------------------------------------------------------------------------


@pytest.mark.parametrize("account", [ALICE, enterprise("acme-1")], ids=["individual", "enterprise"])
def test_transfer_to_the_same_account_is_refused(account: Account) -> None:
    assert check(account, account) is ErrorCode.SAME_ACCOUNT


def test_another_account_of_the_same_entity_is_not_the_same_account() -> None:
    assert check(ALICE, individual("alice-2", "person-alice")) is None


# --- ACCOUNT_TYPE_NOT_ALLOWED -------------------------------------------------------------------------


def test_enterprise_to_individual_is_refused() -> None:
    assert check(enterprise("acme-1"), BOB) is ErrorCode.ACCOUNT_TYPE_NOT_ALLOWED


@pytest.mark.parametrize(
    ("source", "destination"),
    [
        pytest.param(ALICE, BOB, id="individual->individual"),
        pytest.param(ALICE, enterprise("acme-1"), id="individual->enterprise"),
        pytest.param(enterprise("acme-1"), enterprise("acme-2"), id="enterprise->enterprise"),
    ],
)
def test_other_kind_pairs_are_allowed(source: Account, destination: Account) -> None:
    assert check(source, destination) is None


# --- ENTERPRISE_ENTITY_MISMATCH -----------------------------------------------------------------------


def test_enterprise_to_enterprise_of_the_same_entity_and_identical_name_passes() -> None:
    assert check(enterprise("acme-1"), enterprise("acme-2")) is None


def test_enterprise_to_enterprise_of_another_entity_with_the_same_name_is_refused() -> None:
    destination = enterprise("acme-2", entity_id="ent-acme-shenzhen")
    assert check(enterprise("acme-1"), destination) is ErrorCode.ENTERPRISE_ENTITY_MISMATCH


def test_enterprise_to_enterprise_of_another_entity_and_name_is_refused() -> None:
    destination = enterprise("globex-1", entity_id="ent-globex", entity_name="Globex Ltd.")
    assert check(enterprise("acme-1"), destination) is ErrorCode.ENTERPRISE_ENTITY_MISMATCH


@pytest.mark.parametrize(
    "other_name",
    [
        pytest.param("ACME CLOUD CO., LTD.", id="upper case"),
        pytest.param("acme cloud co., ltd.", id="lower case"),
        pytest.param("Acme  Cloud Co., Ltd.", id="double space"),
        pytest.param("Acme Cloud Co.,Ltd.", id="missing space"),
        pytest.param(" Acme Cloud Co., Ltd.", id="leading space"),
        pytest.param("Acme Cloud Co., Ltd. ", id="trailing space"),
    ],
)
def test_entity_names_are_compared_exactly_as_registered(other_name: str) -> None:
    destination = enterprise("acme-2", entity_name=other_name)
    assert check(enterprise("acme-1"), destination) is ErrorCode.ENTERPRISE_ENTITY_MISMATCH


def test_entity_mismatch_is_an_enterprise_to_enterprise_rule_only() -> None:
    # individual -> enterprise of a foreign entity with another name is fine
    assert check(ALICE, enterprise("globex-1", "ent-globex", "Globex Ltd.")) is None


# --- ENTERPRISE_DESTINATION_LIMIT ---------------------------------------------------------------------


def test_individual_with_a_prior_enterprise_destination_cannot_pick_another_enterprise() -> None:
    globex = enterprise("globex-1", "ent-globex", "Globex Ltd.")
    assert check(ALICE, globex, enterprise("acme-1")) is ErrorCode.ENTERPRISE_DESTINATION_LIMIT


def test_another_account_of_the_same_enterprise_entity_is_still_another_enterprise() -> None:
    assert check(ALICE, enterprise("acme-2"), enterprise("acme-1")) is ErrorCode.ENTERPRISE_DESTINATION_LIMIT


def test_the_same_enterprise_account_again_is_allowed() -> None:
    acme = enterprise("acme-1")
    assert check(ALICE, acme, acme) is None
    assert check(ALICE, acme, acme, acme) is None


def test_first_enterprise_destination_is_allowed() -> None:
    assert check(ALICE, enterprise("acme-1")) is None
    assert check(ALICE, enterprise("acme-1"), BOB, CAROL) is None


def test_a_prior_enterprise_does_not_limit_individual_destinations() -> None:
    assert check(ALICE, BOB, enterprise("acme-1")) is None


def test_enterprise_source_is_not_limited_to_one_enterprise_destination() -> None:
    source = enterprise("acme-1")
    assert check(source, enterprise("acme-4"), enterprise("acme-2"), enterprise("acme-3")) is None


# --- ENTITY_DESTINATION_LIMIT -------------------------------------------------------------------------


def test_second_account_of_a_foreign_individual_entity_is_refused() -> None:
    # individuals with the same entity_id are the same entity
    bob_2 = individual("bob-2", "person-bob")
    assert check(ALICE, bob_2, BOB) is ErrorCode.ENTITY_DESTINATION_LIMIT


def test_first_account_of_a_foreign_entity_is_allowed() -> None:
    assert check(ALICE, BOB) is None


def test_the_same_foreign_account_again_is_allowed() -> None:
    assert check(ALICE, BOB, BOB) is None


def test_one_account_per_foreign_entity_for_several_entities() -> None:
    assert check(ALICE, BOB, CAROL, individual("dave")) is None


def test_accounts_of_the_source_own_entity_are_unlimited() -> None:
    own = [individual(f"alice-{n}", "person-alice") for n in range(2, 6)]
    assert check(ALICE, individual("alice-9", "person-alice"), *own) is None


def test_enterprise_accounts_of_the_source_own_entity_are_unlimited() -> None:
    priors = [enterprise(f"acme-{n}") for n in range(2, 8)]
    assert check(enterprise("acme-1"), enterprise("acme-9"), *priors) is None


# --- rule order: the first failing rule in SPEC §3's table order ------------------------------------


@pytest.mark.parametrize(
    ("source", "destination", "priors", "expected"),
    [
        pytest.param(
            ALICE.model_copy(update={"verified": False}),
            BOB.model_copy(update={"frozen": True}),
            [],
            ErrorCode.ACCOUNT_NOT_VERIFIED,
            id="unverified+frozen",
        ),
        pytest.param(
            ALICE.model_copy(update={"verified": False}),
            ALICE.model_copy(update={"verified": False}),
            [],
            ErrorCode.ACCOUNT_NOT_VERIFIED,
            id="unverified+same account",
        ),
        pytest.param(
            ALICE.model_copy(update={"frozen": True}),
            ALICE.model_copy(update={"frozen": True}),
            [],
            ErrorCode.ACCOUNT_FROZEN,
            id="frozen+same account",
        ),
        pytest.param(
            enterprise("acme-1", frozen=True),
            enterprise("globex-1", "ent-globex", "Globex Ltd."),
            [],
            ErrorCode.ACCOUNT_FROZEN,
            id="frozen+entity mismatch",
        ),
        pytest.param(
            enterprise("acme-1"),
            individual("bob"),
            [],
            ErrorCode.ACCOUNT_TYPE_NOT_ALLOWED,
            id="enterprise->individual with entity mismatch",
        ),
        pytest.param(
            ALICE,
            enterprise("acme-2"),
            [enterprise("acme-1")],
            ErrorCode.ENTERPRISE_DESTINATION_LIMIT,
            id="enterprise limit before entity limit",
        ),
        pytest.param(
            ALICE.model_copy(update={"frozen": True}),
            individual("bob-2", "person-bob"),
            [BOB],
            ErrorCode.ACCOUNT_FROZEN,
            id="frozen+entity limit",
        ),
    ],
)
def test_first_failing_rule_wins(
    source: Account, destination: Account, priors: list[Account], expected: ErrorCode
) -> None:
    assert check(source, destination, *priors) is expected


# --- ENTITY_ACCOUNT_LIMIT -----------------------------------------------------------------------------


def test_entity_limit_is_ten() -> None:
    assert MAX_ACCOUNTS_PER_ENTITY == 10


@pytest.mark.parametrize(
    ("already_verified", "expected"),
    [
        pytest.param(0, None, id="1st"),
        pytest.param(9, None, id="10th"),
        pytest.param(10, ErrorCode.ENTITY_ACCOUNT_LIMIT, id="11th"),
        pytest.param(11, ErrorCode.ENTITY_ACCOUNT_LIMIT, id="12th"),
    ],
)
def test_an_enterprise_entity_verifies_at_most_ten_accounts(
    already_verified: int, expected: ErrorCode | None
) -> None:
    assert entity_account_limit_failure(enterprise("acme-x"), already_verified) is expected


def test_individual_entities_are_not_limited() -> None:
    assert entity_account_limit_failure(individual("alice-11", "person-alice"), 10) is None
    assert entity_account_limit_failure(individual("alice-50", "person-alice"), 49) is None


def test_an_unverified_account_is_not_counted_against_the_limit() -> None:
    unverified = enterprise("acme-x", verified=False)
    assert entity_account_limit_failure(unverified, 10) is None
    assert entity_account_limit_failure(unverified, 25) is None
