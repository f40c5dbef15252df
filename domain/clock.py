"""The service's one wall clock. Domain functions never read it: they take `now` as a parameter."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)
