"""Configuration from TRANSFER_* environment variables, and the connections built from it."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from workflows.messages import DEFAULT_CONFIRM_WINDOW, DEFAULT_TASK_QUEUE

_SECONDS = re.compile(r"\d+(\.\d+)?")


def _seconds_or_iso(value: object) -> object:
    if isinstance(value, str) and _SECONDS.fullmatch(value.strip()):
        return float(value)
    return value


# The confirmation window: seconds ("300") or ISO 8601 ("PT24H"), longer than zero.
ConfirmWindow = Annotated[timedelta, BeforeValidator(_seconds_or_iso), Field(gt=timedelta(0))]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRANSFER_", extra="ignore")

    temporal_address: str = "127.0.0.1:7233"
    namespace: str = "default"
    task_queue: str = DEFAULT_TASK_QUEUE
    data_dir: Path = Path("data")
    # Unset: a SQLite file in data_dir. PostgreSQL: postgresql+asyncpg://user@host/db
    database_url: str | None = None
    confirm_window: ConfirmWindow = DEFAULT_CONFIRM_WINDOW
    admin_token: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    temporal_port: int = Field(default=7233, ge=1, le=65535)
    ui_port: int = Field(default=8233, ge=1, le=65535)
    log_level: str = "INFO"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'transfer.db').resolve()}"


async def connect_temporal(settings: Settings, *, lazy: bool = False) -> Client:
    """The one way this service talks to Temporal: pydantic payloads everywhere."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.namespace,
        data_converter=pydantic_data_converter,
        lazy=lazy,
    )
