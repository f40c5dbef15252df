"""The time by which the request being served must be answered (SPEC §5: never a hang, at most 10 s).

The API sets it for each request; the Temporal calls made for it take what is left (less a reserve for
what the request still has to do after them: release an unused code, keep its answer), so that a
Temporal server that is down or slow is answered 503 in time, whatever the SDK's own retries."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

ANSWER_WITHIN_S = 8.0  # within SPEC's 10 s, with room for a busy server's queue
_answer_by: ContextVar[float | None] = ContextVar("answer_by", default=None)


@contextmanager
def answering_within(seconds: float) -> Iterator[None]:
    token = _answer_by.set(asyncio.get_running_loop().time() + seconds)
    try:
        yield
    finally:
        _answer_by.reset(token)


def time_left(reserve_s: float) -> float | None:
    """Seconds left to the request's deadline less `reserve_s` (at least 0); None outside a request."""
    answer_by = _answer_by.get()
    if answer_by is None:
        return None
    return max(0.0, answer_by - asyncio.get_running_loop().time() - reserve_s)
