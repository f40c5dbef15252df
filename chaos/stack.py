"""The real stack the fault suite breaks: one Temporal dev server (its SQLite file in the folder), worker
and API processes (`python -m starter.cli worker|api`), and a PostgreSQL database as the service's. Every
part can be SIGKILLed and started again on the same data; every wait is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from temporalio.client import Client

from bench.run import ADMIN_TOKEN, free_port
from settings import Settings
from starter.devstack.stack import TemporalServer, transfer_command_line
from tests.factory import SECRET_KEY
from worker import FAULT_KILL_AFTER, FAULT_MARKS

READY_WITHIN_S = 60.0
STOP_WITHIN_S = 30.0
# The activities of a transfer's path, in the order they run: the worker is killed after each one's write.
TRANSFER_ACTIVITIES = (
    "open_order",
    "accept_confirmation",
    "reassign_ownership",
    "hand_off_billing",
    "apply_receiving_config",
    "finish_order",
)


@dataclass
class Stack:
    folder: Path
    database_url: str
    task_queue: str = field(default_factory=lambda: "chaos-" + uuid.uuid4().hex[:8])
    api_port: int = field(default_factory=free_port)
    temporal_port: int = field(default_factory=free_port)
    ui_port: int = field(default_factory=free_port)
    kill_after: tuple[str, ...] = ()  # activities whose write is followed by the worker's SIGKILL
    confirm_window_s: int | None = None  # the API's confirmation window (default: SPEC's 24 hours)
    worker: subprocess.Popen[bytes] | None = None
    api: subprocess.Popen[bytes] | None = None
    worker_kills: int = 0  # worker processes that died of SIGKILL (restarted by `supervise_worker`)
    temporal: TemporalServer = field(init=False)

    def __post_init__(self) -> None:
        address = f"127.0.0.1:{self.temporal_port}"
        settings = Settings(temporal_address=address, temporal_port=self.temporal_port, ui_port=self.ui_port)
        self.temporal = TemporalServer(settings, self.folder)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def marks(self) -> Path:
        """Where the fault hook marks each (activity, order) it killed the worker after."""
        return self.folder / "kill-marks"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "TRANSFER_TEMPORAL_ADDRESS": f"127.0.0.1:{self.temporal_port}",
            "TRANSFER_DATABASE_URL": self.database_url,
            "TRANSFER_SECRET_KEY": SECRET_KEY,
            "TRANSFER_ADMIN_TOKEN": ADMIN_TOKEN,
            "TRANSFER_TASK_QUEUE": self.task_queue,
            "TRANSFER_DATA_DIR": str(self.folder),
            "TRANSFER_API_PORT": str(self.api_port),
            "TRANSFER_LOG_LEVEL": "WARNING",
        } | ({"TRANSFER_CONFIRM_WINDOW": str(self.confirm_window_s)} if self.confirm_window_s else {})

    def _spawn(self, role: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.folder / f"{role}.log").open("ab") as output:
            return subprocess.Popen(
                [*transfer_command_line(), role], env=env, stdout=output, stderr=subprocess.STDOUT
            )

    async def migrate(self) -> None:
        migrating = await asyncio.create_subprocess_exec(*transfer_command_line(), "migrate", env=self.env())
        if await asyncio.wait_for(migrating.wait(), READY_WITHIN_S) != 0:
            raise RuntimeError("transfer migrate failed")

    def start_worker(self) -> None:
        env = self.env()
        if self.kill_after:
            env |= {FAULT_KILL_AFTER: ",".join(self.kill_after), FAULT_MARKS: str(self.marks)}
        self.worker = self._spawn("worker", env)

    def start_api(self) -> None:
        self.api = self._spawn("api", self.env())

    async def start(self) -> Client:
        """Temporal, then the worker and the API; answers once the API is ready."""
        self.temporal.start()
        client = await self.temporal.wait_ready()
        self.start_worker()
        self.start_api()
        await self.api_ready()
        return client

    async def api_ready(self) -> None:
        deadline = time.monotonic() + READY_WITHIN_S
        async with httpx.AsyncClient(base_url=self.api_url, timeout=5) as http:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.3)
        raise TimeoutError(f"the API did not become ready: see {self.folder / 'api.log'}")

    async def supervise_worker(self) -> None:
        """Starts the worker again each time it dies (until cancelled), counting the SIGKILLs."""
        while True:
            if self.worker is not None and (code := self.worker.poll()) is not None:
                self.worker_kills += code == -signal.SIGKILL
                self.start_worker()
            await asyncio.sleep(0.2)

    def kill_all(self) -> None:
        """SIGKILL to every process of the stack at once, as a machine losing power would."""
        processes = [self.temporal.process, self.worker, self.api]
        for process in processes:
            if process is not None and process.poll() is None:
                process.kill()
        for process in processes:
            if process is not None:
                process.wait(timeout=STOP_WITHIN_S)

    async def stop(self) -> None:
        for process in (self.api, self.worker):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    await asyncio.to_thread(process.wait, STOP_WITHIN_S)
                except subprocess.TimeoutExpired:
                    process.kill()
        await self.temporal.stop()


@contextlib.asynccontextmanager
async def running(stack: Stack) -> AsyncIterator[Client]:
    await stack.migrate()
    try:
        yield await stack.start()
    finally:
        await stack.stop()
