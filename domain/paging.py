"""Cursor paging: the opaque cursor of a page is the (created_at, id) key of its last item."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from domain.codes import ErrorCode
from domain.refusals import TransferError


def encode_cursor(created_at: datetime, order_id: str) -> str:
    key = json.dumps([created_at.isoformat(), order_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The key a cursor carries; anything we did not issue is a VALIDATION_ERROR."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, order_id = json.loads(raw)
        if not isinstance(created_at, str) or not isinstance(order_id, str):
            raise ValueError("cursor fields are strings")
        at = datetime.fromisoformat(created_at)
        if at.tzinfo is None:
            raise ValueError("cursor times are aware")
        # In range once in UTC (a year-1 time east of UTC is not), as every stored time is.
        at = at.astimezone(UTC)
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise TransferError(ErrorCode.VALIDATION_ERROR, "malformed cursor") from exc
    return at, order_id
