"""IdempotencyService's keys on both backends: a claim, its answer, and a claim its process left behind."""

from __future__ import annotations

import asyncio

import pytest

from domain.codes import ErrorCode
from domain.refusals import TransferError
from starter.services import idempotency
from starter.services.idempotency import ABANDONED_AFTER, FirstAnswer, IdempotencyService
from tests.store.builders import NOW
from tests.stores import Stores


@pytest.fixture
def keys(store: Stores, monkeypatch: pytest.MonkeyPatch) -> IdempotencyService:
    monkeypatch.setattr(idempotency, "WAIT_FOR_FIRST", ABANDONED_AFTER / 300)  # a repeat's wait: 0.1 s
    return IdempotencyService(store.db)


async def test_a_repeat_gets_the_first_answer_and_another_body_is_refused(keys: IdempotencyService) -> None:
    assert await keys.begin("acct:a", "k-1", "body-1", at=NOW) is None
    await keys.finish("acct:a", "k-1", status=200, body=b"{}", content_type="application/json")
    later = NOW + ABANDONED_AFTER * 2
    assert await keys.begin("acct:a", "k-1", "body-1", at=later) == FirstAnswer(
        200, b"{}", "application/json"
    )
    with pytest.raises(TransferError) as refused:
        await keys.begin("acct:a", "k-1", "body-2", at=later)
    assert refused.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED


async def test_a_claim_its_process_left_unanswered_is_taken_over_by_one_retry(
    keys: IdempotencyService,
) -> None:
    assert await keys.begin("acct:a", "k-2", "body", at=NOW) is None  # then the process dies
    with pytest.raises(TransferError) as waiting:  # still young: the first may yet answer
        await keys.begin("acct:a", "k-2", "body", at=NOW + ABANDONED_AFTER / 2)
    assert waiting.value.code is ErrorCode.SERVICE_UNAVAILABLE

    later = NOW + ABANDONED_AFTER
    retries = await asyncio.gather(
        *(keys.begin("acct:a", "k-2", "body", at=later) for _ in range(3)), return_exceptions=True
    )
    taken = [r for r in retries if r is None]
    assert len(taken) == 1, retries  # exactly one retry acts; the others wait for its answer
    assert all(isinstance(r, TransferError) and r.code is ErrorCode.SERVICE_UNAVAILABLE for r in retries if r)
    with pytest.raises(TransferError) as other:  # another body never takes a key over
        await keys.begin("acct:a", "k-2", "other", at=later + ABANDONED_AFTER)
    assert other.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
