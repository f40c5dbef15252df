"""TRANSFER_* settings: the confirmation window in seconds or ISO 8601, the default database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from settings import Settings


@pytest.mark.parametrize(
    ("text", "window"),
    [("300", timedelta(seconds=300)), ("2.5", timedelta(seconds=2.5)), ("PT24H", timedelta(hours=24))],
)
def test_the_confirm_window_takes_seconds_or_iso_8601(
    monkeypatch: pytest.MonkeyPatch, text: str, window: timedelta
) -> None:
    monkeypatch.setenv("TRANSFER_CONFIRM_WINDOW", text)
    assert Settings().confirm_window == window


@pytest.mark.parametrize("text", ["0", "PT0S", "-5", "tomorrow"])
def test_a_window_that_is_not_longer_than_zero_is_refused(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv("TRANSFER_CONFIRM_WINDOW", text)
    with pytest.raises(ValidationError):
        Settings()


def test_the_default_database_is_a_sqlite_file_in_the_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRANSFER_DATABASE_URL", raising=False)
    monkeypatch.setenv("TRANSFER_DATA_DIR", "/srv/transfer")
    assert Settings().effective_database_url == "sqlite+aiosqlite:////srv/transfer/transfer.db"
