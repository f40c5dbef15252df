"""The API in process over the real stack: Temporal dev server, worker, SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from secrets import token_urlsafe
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from domain.models import Account, PrincipalKind
from settings import Settings
from starter.api.app import build_services, create_app
from tests.factory import ATTESTATION_KEY, SECRET_KEY, Factory, fresh_id, transfer_client
from tests.stores import Stores
from worker import build_worker
from workflows.resource_transfer import ResourceTransfer

ADMIN_TOKEN = "admin-" + token_urlsafe(16)


@dataclass
class Api:
    http: httpx.AsyncClient
    factory: Factory
    store: Stores

    async def token(self, account: Account) -> str:
        """A root token for `account`."""
        token = token_urlsafe(24)
        await self.store.provisioning.add_credential(
            account_id=account.id, token=token, kind=PrincipalKind.ROOT
        )
        return token

    async def ram_token(self, account: Account) -> str:
        token = token_urlsafe(24)
        await self.store.provisioning.add_credential(
            account_id=account.id,
            token=token,
            kind=PrincipalKind.RAM_USER,
            name="ops",
            ram_user_id=fresh_id("ram"),
        )
        return token

    @staticmethod
    def auth(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async def call(self, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
        headers = {**(self.auth(token) if token else {}), **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)


@asynccontextmanager
async def running_api(
    env: WorkflowEnvironment, store: Stores, activities: Sequence[Callable[..., Any]] | None = None
) -> AsyncIterator[Api]:
    """The app in process with its own task queue and a worker: the real activities, or `activities`."""
    task_queue = fresh_id("tq")
    settings = Settings(
        admin_token=SecretStr(ADMIN_TOKEN), secret_key=SecretStr(SECRET_KEY), task_queue=task_queue
    )
    app = create_app(settings, build_services(transfer_client(env.client, task_queue), store.db))
    worker = (
        build_worker(env.client, store.db, task_queue, ATTESTATION_KEY)
        if activities is None
        else Worker(env.client, task_queue=task_queue, workflows=[ResourceTransfer], activities=activities)
    )
    async with worker:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            yield Api(http=http, factory=Factory(store), store=store)


@pytest.fixture
async def api(dev_env: WorkflowEnvironment, store: Stores) -> AsyncIterator[Api]:
    async with running_api(dev_env, store) as running:
        yield running
