"""verify_code: RFC 6238 at the time the code was received, single use per account and time step."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.codes import ErrorCode
from domain.refusals import TransferError
from domain.verification import code_at
from tests.store.builders import NOW, SECRET, account, add_accounts, snapshot
from tests.stores import Stores


async def verify(store: Stores, verification_id: str, code: str, **fields: object) -> None:
    await store.verify_code(
        verification_id=verification_id,
        account_id=str(fields.get("account_id", "alice")),
        code=code,
        received_at=fields.get("received_at", NOW),  # type: ignore[arg-type]
    )


async def refused_code(store: Stores, verification_id: str, code: str, **fields: object) -> ErrorCode:
    with pytest.raises(TransferError) as refused:
        await verify(store, verification_id, code, **fields)
    return refused.value.code


async def test_a_code_is_used_up_by_its_first_verification(store: Stores) -> None:
    await add_accounts(store, account("alice"), account("bob"))
    code = code_at(SECRET, NOW)
    await verify(store, "v-1", code)
    assert await refused_code(store, "v-2", code) is ErrorCode.VERIFICATION_FAILED
    # the step is used up, even received a step later (still inside ±1)
    assert await refused_code(store, "v-3", code, received_at=NOW + timedelta(seconds=30)) is (
        ErrorCode.VERIFICATION_FAILED
    )
    # single use is per account: bob's authenticator shows the same code (same secret here)
    await verify(store, "v-4", code, account_id="bob")
    # the next step's code is another code
    await verify(store, "v-5", code_at(SECRET, NOW + timedelta(seconds=30)))


async def test_a_retry_of_one_verification_passes_without_checking_again(
    store: Stores, engine: AsyncEngine
) -> None:
    await add_accounts(store, account("alice"))
    code = code_at(SECRET, NOW)
    await verify(store, "v-1", code)
    before = await snapshot(engine)
    await verify(store, "v-1", code)
    await verify(store, "v-1", "000000")  # the retry is recognised by its id
    assert await snapshot(engine) == before
    # the id belongs to alice: another account cannot ride on it
    await add_accounts(store, account("bob"))
    assert await refused_code(store, "v-1", code, account_id="bob") is ErrorCode.VERIFICATION_FAILED


async def test_the_code_is_checked_at_its_receipt_not_at_its_processing(store: Stores) -> None:
    await add_accounts(store, account("alice"))
    received = NOW - timedelta(days=1)  # processed a day later (a retried activity, say)
    await verify(store, "v-1", code_at(SECRET, received), received_at=received)
    assert await refused_code(store, "v-2", code_at(SECRET, received)) is ErrorCode.VERIFICATION_FAILED


async def test_wrong_codes_fail_and_use_nothing_up(store: Stores) -> None:
    await add_accounts(store, account("alice"))
    right = code_at(SECRET, NOW)
    for wrong in ("", "12345", "abcdef", f"{(int(right) + 1) % 1_000_000:06d}"):
        assert await refused_code(store, f"v-{wrong}", wrong) is ErrorCode.VERIFICATION_FAILED
    too_old = code_at(SECRET, NOW - timedelta(seconds=90))
    assert await refused_code(store, "v-old", too_old) is ErrorCode.VERIFICATION_FAILED
    await verify(store, "v-right", right)


async def test_unknown_and_frozen_accounts(store: Stores) -> None:
    await add_accounts(store, account("alice", frozen=True))
    code = code_at(SECRET, NOW)
    assert await refused_code(store, "v-1", code, account_id="ghost") is ErrorCode.VERIFICATION_FAILED
    assert await refused_code(store, "v-2", code) is ErrorCode.ACCOUNT_FROZEN
    await store.update_account("alice", frozen=False)
    await verify(store, "v-2", code)  # the refused attempts used nothing up


async def test_concurrent_verifications_of_one_code_let_exactly_one_pass(store: Stores) -> None:
    await add_accounts(store, account("alice"))
    code = code_at(SECRET, NOW)
    results = await asyncio.gather(*(verify(store, f"v-{n}", code) for n in range(8)), return_exceptions=True)
    assert results.count(None) == 1
    assert {r.code for r in results if isinstance(r, TransferError)} == {ErrorCode.VERIFICATION_FAILED}
    # concurrent retries of one verification all pass
    other = code_at(SECRET, NOW + timedelta(seconds=30))
    retries = await asyncio.gather(
        *(verify(store, "v-retry", other) for _ in range(5)), return_exceptions=True
    )
    assert retries == [None] * 5
