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

from domain.attestation import derive_key
from store.secret_box import SecretBox
from workflows.messages import DEFAULT_CONFIRM_WINDOW, DEFAULT_TASK_QUEUE

_SECONDS = re.compile(r"\d+(\.\d+)?")


def _seconds_or_iso(value: object) -> object:
    if isinstance(value, str) and _SECONDS.fullmatch(value.strip()):
        return float(value)
    return value


# The confirmation window: seconds ("300") or ISO 8601 ("PT24H"), longer than zero.
ConfirmWindow = Annotated[timedelta, BeforeValidator(_seconds_or_iso), Field(gt=timedelta(0))]


class MissingSecretKey(RuntimeError):
    pass


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
    # Signs attestations and console sessions (SPEC §5). `transfer dev` keeps one in its data folder.
    secret_key: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    temporal_port: int = Field(default=7233, ge=1, le=65535)
    ui_port: int = Field(default=8233, ge=1, le=65535)
    log_level: str = "INFO"

    @property
    def secret_key_file(self) -> Path:
        return self.data_dir / "secret.key"

    def secret(self) -> str:
        """TRANSFER_SECRET_KEY, else the one `transfer dev` wrote to its data folder; without either the
        worker, the API and the operator commands refuse to start."""
        secret = self.secret_key.get_secret_value() if self.secret_key is not None else None
        if secret is None and self.secret_key_file.is_file():
            secret = self.secret_key_file.read_text().strip()
        if not secret:
            raise MissingSecretKey(
                "TRANSFER_SECRET_KEY is not set (and there is no secret.key in the data folder): "
                "set it to a long random string shared by the worker and the API"
            )
        return secret

    def attestation_key(self) -> bytes:
        return derive_key(self.secret(), "attestation")

    def secret_box(self) -> SecretBox:
        """Seals TOTP secrets at rest (store.secret_box)."""
        return SecretBox(self.secret())

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
