"""ReadinessService: whether the dependencies answer (`GET /readyz`, SPEC §5)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import text
from temporalio.client import Client

from store.db import OUTAGE_ERRORS, Database

CHECK_TIMEOUT = timedelta(seconds=3)


class ReadinessService:
    def __init__(self, client: Client, db: Database) -> None:
        self._client = client
        self._db = db

    async def failing(self) -> list[str]:
        """The dependencies that do not answer now: `temporal`, `database` (checked concurrently)."""
        temporal, database = await asyncio.gather(self._temporal(), self._database())
        return [name for name, ok in (("temporal", temporal), ("database", database)) if not ok]

    async def _temporal(self) -> bool:
        try:
            return await self._client.service_client.check_health(timeout=CHECK_TIMEOUT)
        except Exception:  # a refused connection, a timeout, an RPC error: not ready, whatever it is
            return False

    async def _database(self) -> bool:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT.total_seconds()):
                async with self._db.read() as session:
                    await session.execute(text("SELECT 1"))
        except OUTAGE_ERRORS:
            return False
        return True
