"""VerificationService: RFC 6238 at the time the code was received, single use per account and time step,
and the attempt limit of SPEC §3 with its security events."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.codes import ErrorCode
from domain.refusals import TransferError
from domain.verification import SecurityEventKind, code_at
from tests.store.builders import NOW, SECRET, account, add_accounts, snapshot
from tests.stores import Stores, root_of

MINUTE = timedelta(minutes=1)


async def verify(store: Stores, code: str, **fields: object) -> None:
    await store.verify_code(
        account_id=str(fields.get("account_id", "alice")),
        code=code,
        received_at=fields.get("received_at", NOW),  # type: ignore[arg-type]
    )


async def refusal(store: Stores, code: str, **fields: object) -> TransferError:
    with pytest.raises(TransferError) as refused:
        await verify(store, code, **fields)
    return refused.value


async def refused_code(store: Stores, code: str, **fields: object) -> ErrorCode:
    return (await refusal(store, code, **fields)).code


def wrong() -> str:
    return f"{(int(code_at(SECRET, NOW)) + 1) % 1_000_000:06d}"


async def kinds(store: Stores, account_id: str = "alice") -> list[SecurityEventKind]:
    events, _ = await store.verification.security_events(root_of(account_id), limit=100, cursor=None)
    return [e.kind for e in events]


async def test_a_code_is_used_up_by_its_first_verification(store: Stores) -> None:
    await add_accounts(store, account("alice"), account("bob"))
    code = code_at(SECRET, NOW)
    await verify(store, code)
    assert await refused_code(store, code) is ErrorCode.VERIFICATION_FAILED
    # the step is used up, even received a step later (still inside ±1)
    assert await refused_code(store, code, received_at=NOW + timedelta(seconds=30)) is (
        ErrorCode.VERIFICATION_FAILED
    )
    # single use is per account: bob's authenticator shows the same code (same secret here)
    await verify(store, code, account_id="bob")
    # the next step's code is another code
    await verify(store, code_at(SECRET, NOW + timedelta(seconds=30)))


async def test_the_code_is_checked_at_its_receipt_not_at_its_processing(store: Stores) -> None:
    await add_accounts(store, account("alice"))
    received = NOW - timedelta(days=1)
    await verify(store, code_at(SECRET, received), received_at=received)
    assert await refused_code(store, code_at(SECRET, received)) is ErrorCode.VERIFICATION_FAILED


async def test_wrong_codes_fail_use_nothing_up_and_are_recorded(store: Stores) -> None:
    await add_accounts(store, account("alice"))
    right = code_at(SECRET, NOW)
    for bad in ("", "abcdef", wrong(), code_at(SECRET, NOW - timedelta(seconds=90))):
        assert await refused_code(store, bad) is ErrorCode.VERIFICATION_FAILED
    await verify(store, right)
    assert await kinds(store) == [SecurityEventKind.VERIFICATION_FAILED] * 4


async def test_unknown_and_frozen_accounts(store: Stores) -> None:
    await add_accounts(store, account("alice", frozen=True))
    code = code_at(SECRET, NOW)
    assert await refused_code(store, code, account_id="ghost") is ErrorCode.VERIFICATION_FAILED
    # A frozen account's code is checked and used up; the account rules refuse what it asked for.
    await verify(store, code)
    assert await refused_code(store, code) is ErrorCode.VERIFICATION_FAILED


async def test_the_fifth_failure_within_15_minutes_locks_for_15_minutes(
    store: Stores, engine: AsyncEngine
) -> None:
    await add_accounts(store, account("alice"))
    for minute in range(5):
        assert (
            await refused_code(store, wrong(), received_at=NOW + minute * MINUTE)
            is ErrorCode.VERIFICATION_FAILED
        )
    fifth = NOW + 4 * MINUTE
    assert (
        await kinds(store)
        == [SecurityEventKind.VERIFICATION_LOCKED] + [SecurityEventKind.VERIFICATION_FAILED] * 5
    )

    before = await snapshot(engine)
    right_then = fifth + 14 * MINUTE
    locked = await refusal(store, code_at(SECRET, right_then), received_at=right_then)
    assert locked.code is ErrorCode.TOO_MANY_ATTEMPTS
    assert locked.details == {"retry_after_s": 60}
    assert await snapshot(engine) == before  # refused while locked: nothing used up, nothing recorded

    free = fifth + 15 * MINUTE
    await verify(store, code_at(SECRET, free), received_at=free)


async def test_failures_spread_over_more_than_15_minutes_do_not_lock(store: Stores) -> None:
    await add_accounts(store, account("alice"))
    for minute in (0, 1, 2, 3, 16, 17, 18):  # never 5 within 15 minutes
        assert (
            await refused_code(store, wrong(), received_at=NOW + minute * MINUTE)
            is ErrorCode.VERIFICATION_FAILED
        )
    at = NOW + 18 * MINUTE
    await verify(store, code_at(SECRET, at), received_at=at)
    assert SecurityEventKind.VERIFICATION_LOCKED not in await kinds(store)


async def test_the_lockout_is_per_account(store: Stores) -> None:
    await add_accounts(store, account("alice"), account("bob"))
    for _ in range(5):
        await refusal(store, wrong())
    assert await refused_code(store, code_at(SECRET, NOW)) is ErrorCode.TOO_MANY_ATTEMPTS
    await verify(store, code_at(SECRET, NOW), account_id="bob")
    assert await kinds(store, "bob") == []


async def test_concurrent_verifications_of_one_code_let_exactly_one_pass(store: Stores) -> None:
    await add_accounts(store, account("alice"))
    code = code_at(SECRET, NOW)
    # Four losers at most: their failures stay under the lockout whatever the order.
    results = await asyncio.gather(*(verify(store, code) for _ in range(5)), return_exceptions=True)
    assert results.count(None) == 1
    assert {r.code for r in results if isinstance(r, TransferError)} == {ErrorCode.VERIFICATION_FAILED}


async def test_concurrent_wrong_guesses_lock_after_exactly_five(store: Stores) -> None:
    await add_accounts(store, account("alice"))
    results = await asyncio.gather(*(verify(store, wrong()) for _ in range(8)), return_exceptions=True)
    codes = sorted(r.code for r in results if isinstance(r, TransferError))
    assert codes == sorted([ErrorCode.VERIFICATION_FAILED] * 5 + [ErrorCode.TOO_MANY_ATTEMPTS] * 3)
    assert (await kinds(store)).count(SecurityEventKind.VERIFICATION_LOCKED) == 1
