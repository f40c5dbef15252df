"""`transfer`: the dev stack, the processes of the production stack, and commands for operators.

Operator commands act as the principal of `--token` (or TRANSFER_TOKEN) through TransferService, the
library behind the HTTP API, connected to Temporal and the database of the TRANSFER_* settings.
Exit codes: 0 every item succeeded; 1 the request was refused (its SPEC code and message are printed)
or the environment is not ready; 2 some items were refused (one row each), or a bad option.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from temporalio.service import RPCError

from domain.codes import ErrorCode
from domain.models import ID_PATTERN, Order, OrderStatus, Principal, ReceivingConfig, Refusal, Role
from domain.refusals import TransferError
from domain.verification import STEP_SECONDS, code_at
from logs import configure_logging
from settings import ConfirmWindow, MissingSecretKey, Settings, connect_temporal
from starter.client import TransferClient
from starter.services.provisioning import ProvisioningService
from starter.services.repair import RepairService
from starter.services.resources import ResourceService
from starter.services.transfers import InitiateItem, OnItemAnswered, OrderItem, TransferService
from store.accounts import AccountStore
from store.db import Database, migrate
from store.verifications import VerificationStore

app = typer.Typer(
    name="transfer",
    help="Resource transfer: move ECS instances and EIPs between accounts, on Temporal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals hold tokens and codes
    rich_markup_mode="rich",
)

MAX_BATCH = 100
WIDTH_WHEN_PIPED = 160
_ID = re.compile(ID_PATTERN)
_DEFAULTS = Settings.model_fields
_T = TypeVar("_T")

# Exit codes
OK, REFUSED, PARTIAL = 0, 1, 2


def console(*, stderr: bool = False) -> Console:
    """A console on the current stdout or stderr; 160 columns when not a terminal (pipes, logs)."""
    made = Console(stderr=stderr, highlight=False)
    if not made.is_terminal and "COLUMNS" not in os.environ:
        made.width = WIDTH_WHEN_PIPED
    return made


def out() -> Console:
    return console()


def err() -> Console:
    return console(stderr=True)


class CliFailure(Exception):
    """The environment is not ready (no Temporal, no database): a message, exit code 1."""


def _fail(code: ErrorCode, message: str | None = None, details: dict[str, Any] | None = None) -> NoReturn:
    raise TransferError(code, message, details)


def _settings(**overrides: Any) -> Settings:
    """Settings from TRANSFER_* and the options given; a bad value is a clean usage error."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        problems = "; ".join(
            f"TRANSFER_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in error.errors()
        )
        err().print(f"[red]error:[/red] invalid configuration: {escape(problems)}", soft_wrap=True)
        raise typer.Exit(2) from None


def _require_secret_key(settings: Settings) -> None:
    """The worker and the API refuse to start without TRANSFER_SECRET_KEY (SPEC §5 Configuration)."""
    try:
        settings.attestation_key()
    except MissingSecretKey as error:
        err().print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(2) from None


def _run(work: Callable[[], Awaitable[int]]) -> None:
    """Runs an async command; refusals and environment problems end with a message, never a traceback."""
    try:
        code = asyncio.run(_guarded(work))
    except KeyboardInterrupt:
        err().print("interrupted")
        raise typer.Exit(130) from None
    raise typer.Exit(code)


async def _guarded(work: Callable[[], Awaitable[int]]) -> int:
    try:
        return await work()
    except TransferError as error:
        print_refusal(error)
        return REFUSED
    except CliFailure as error:
        err().print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
        return REFUSED
    except RPCError as error:
        message = f"Temporal answered {error.status.name}: {error.message}"
        err().print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
        return REFUSED


def print_refusal(error: TransferError) -> None:
    err().print(f"[bold red]{error.code.value}[/bold red]: {escape(error.message)}", soft_wrap=True)
    if error.details:
        err().print(f"  details: {escape(str(error.details))}", soft_wrap=True)


# --- options ------------------------------------------------------------------------------------


def parse_window(value: str | None) -> timedelta | None:
    """Seconds ("300") or ISO 8601 ("PT24H"), more than zero."""
    if value is None:
        return None
    try:
        window: timedelta = TypeAdapter(ConfirmWindow).validate_python(value)
    except (ValidationError, OverflowError):
        raise typer.BadParameter(
            f"{value!r} is not a window longer than zero, in seconds or ISO 8601 (PT24H)"
        ) from None
    return window


def _window_default() -> str:
    window: timedelta = _DEFAULTS["confirm_window"].default
    return f"PT{int(window.total_seconds() // 3600)}H"


TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="TRANSFER_TOKEN",
        help="API token of the acting principal (root or RAM user).",
        show_default=False,
    ),
]
CodeOption = Annotated[
    str,
    typer.Option("--code", help="Current TOTP code of the acting account (risk-control verification)."),
]
AgreeOption = Annotated[
    bool, typer.Option("--agree", help="Accept the resource transfer agreement (required).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


# --- the dev stack --------------------------------------------------------------------------------


@app.command()
def dev(
    api_port: Annotated[
        int,
        typer.Option(envvar="TRANSFER_API_PORT", min=1, max=65535, help="Port of the HTTP API."),
    ] = _DEFAULTS["api_port"].default,
    temporal_port: Annotated[
        int,
        typer.Option(
            envvar="TRANSFER_TEMPORAL_PORT", min=1, max=65535, help="gRPC port of the Temporal dev server."
        ),
    ] = _DEFAULTS["temporal_port"].default,
    ui_port: Annotated[
        int,
        typer.Option(envvar="TRANSFER_UI_PORT", min=1, max=65535, help="Port of the Temporal UI."),
    ] = _DEFAULTS["ui_port"].default,
    data_dir: Annotated[
        Path,
        typer.Option(
            envvar="TRANSFER_DATA_DIR",
            file_okay=False,
            help="Folder of all state: temporal.db, transfer.db, demo.json, temporal.log.",
        ),
    ] = _DEFAULTS["data_dir"].default,
    confirm_window: Annotated[
        str,
        typer.Option(
            envvar="TRANSFER_CONFIRM_WINDOW",
            help="How long the destination has to confirm: seconds or ISO 8601.",
        ),
    ] = _window_default(),
    seed: Annotated[
        bool,
        typer.Option(
            "--seed/--no-seed",
            envvar="TRANSFER_SEED",
            help="Create demo accounts and resources in a new data folder (tokens printed).",
        ),
    ] = True,
) -> None:
    """Run the whole stack: Temporal dev server (SQLite, UI), worker and API, data in one folder."""
    from starter.devstack import stack as devstack

    try:
        window = parse_window(confirm_window)
    except typer.BadParameter as error:
        raise typer.BadParameter(error.message, param_hint="'--confirm-window'") from None
    settings = _settings(
        api_port=api_port,
        temporal_port=temporal_port,
        ui_port=ui_port,
        data_dir=data_dir,
        confirm_window=window,
    )
    configure_logging(settings.log_level)
    try:
        code = asyncio.run(devstack.run(settings, seed_demo=seed, console=out()))
    except devstack.DevStackError as error:
        err().print(f"[red]error:[/red] {escape(str(error))}", soft_wrap=True)
        code = REFUSED
    raise typer.Exit(code)


# --- the processes of the production stack ------------------------------------------------------


@app.command("worker")
def worker_command() -> None:
    """Run the Temporal worker until SIGTERM or SIGINT (graceful: tasks in hand finish)."""
    import worker

    _require_secret_key(_settings())  # a clean message for a bad TRANSFER_* value or a missing key
    worker.main()


@app.command()
def api() -> None:
    """Serve the HTTP API on TRANSFER_API_HOST:TRANSFER_API_PORT until SIGTERM or SIGINT."""
    from starter.devstack.stack import api_server

    settings = _settings()
    _require_secret_key(settings)
    configure_logging(settings.log_level)

    async def serve() -> None:
        server = api_server(settings)
        loop = asyncio.get_running_loop()

        def stop() -> None:
            server.should_exit = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        await server.serve()
        if not server.started:
            raise typer.Exit(1)

    asyncio.run(serve())


@app.command("migrate")
def migrate_command() -> None:
    """Upgrade the database (TRANSFER_DATABASE_URL, default <data>/transfer.db) to the latest schema."""
    settings = _settings()
    url = settings.effective_database_url

    async def work() -> int:
        try:
            # The key is needed only to seal secrets an older schema kept in plain text.
            box = settings.secret_box() if settings.secret_key or settings.secret_key_file.is_file() else None
            await migrate(url, box)
        except (SQLAlchemyError, OSError) as error:
            raise CliFailure(f"cannot migrate {_safe_url(url)}: {error}") from None
        out().print(f"database migrated: {_safe_url(url)}", soft_wrap=True)
        return OK

    _run(work)


@app.command()
def code(
    account_id: Annotated[str, typer.Argument(help="The account whose code to print.")],
    data_dir: Annotated[
        Path | None,
        typer.Option(envvar="TRANSFER_DATA_DIR", file_okay=False, help="Data folder of `transfer dev`."),
    ] = None,
) -> None:
    """Print a current TOTP code of an account (dev convenience: reads its secret from the database).

    Skips a time step the account has already used, so two commands in a row both work.
    """
    settings = _settings(data_dir=data_dir)

    async def work() -> int:
        _check_ids([account_id], "account id")
        current = int(datetime.now(UTC).timestamp()) // STEP_SECONDS
        async with _database(settings) as db, db.read() as session:
            account = await AccountStore(session).get(account_id)
            if account is None:
                raise CliFailure(f"unknown account {account_id!r}")
            used = await VerificationStore(session).used_steps(account_id, {current, current + 1})
        step = next((s for s in (current, current + 1) if s not in used), None)
        if step is None:
            raise CliFailure("the codes of this and the next 30 s are used: try again in a few seconds")
        out().print(code_at(account.mfa_secret, datetime.fromtimestamp(step * STEP_SECONDS, UTC)))
        return OK

    _run(work)


# --- operator commands ----------------------------------------------------------------------------


def _safe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _check_ids(ids: Sequence[str], what: str) -> None:
    if not 1 <= len(ids) <= MAX_BATCH:
        _fail(ErrorCode.VALIDATION_ERROR, f"give 1 to {MAX_BATCH} {what}s")
    bad = [i for i in ids if not _ID.match(i)]
    if bad:
        _fail(ErrorCode.VALIDATION_ERROR, f"invalid {what}: {bad[0]!r} (1-64 of A-Z a-z 0-9 _ -)")
    if len(set(ids)) != len(ids):
        _fail(ErrorCode.VALIDATION_ERROR, f"a {what} is given twice")


@asynccontextmanager
async def _database(settings: Settings) -> AsyncIterator[Database]:
    url = settings.effective_database_url
    try:
        db = Database.at(url, settings.secret_box())
    except MissingSecretKey as error:
        raise CliFailure(str(error)) from None
    try:
        yield db
    except SQLAlchemyError as error:
        raise CliFailure(
            f"database {_safe_url(url)} is not ready ({type(error).__name__}): "
            "run `transfer migrate` or start `transfer dev`"
        ) from None
    finally:
        await db.dispose()


@asynccontextmanager
async def _operator(
    token: str | None, *, temporal: bool = True, check: Callable[[], object] | None = None
) -> AsyncIterator[tuple[TransferService, Principal]]:
    """The service and the caller's principal, checked in SPEC order: UNAUTHENTICATED, then `check`
    (VALIDATION_ERROR of the arguments), both before anything reaches Temporal."""
    settings = _settings()
    async with _signed_in(settings, token) as (db, principal):
        if check is not None:
            check()
        yield TransferService(await _transfer_client(settings, temporal=temporal), db), principal


@asynccontextmanager
async def _signed_in(settings: Settings, token: str | None) -> AsyncIterator[tuple[Database, Principal]]:
    """The database and the principal of `token` (UNAUTHENTICATED, saying how to pass one, if none)."""
    if not token:
        _fail(ErrorCode.UNAUTHENTICATED, "No API token: pass --token TOKEN or set TRANSFER_TOKEN")
    async with _database(settings) as db:
        principal = await ProvisioningService(db).principal_for_token(token)
        if principal is None:
            _fail(ErrorCode.UNAUTHENTICATED)
        yield db, principal


async def _transfer_client(settings: Settings, *, temporal: bool = True) -> TransferClient:
    try:
        # Reads come from the database only: they connect lazily, so Temporal may be down.
        client = await connect_temporal(settings, lazy=not temporal)
    except RuntimeError as error:
        raise CliFailure(
            f"cannot reach Temporal at {settings.temporal_address} ({error}): is `transfer dev` "
            "running, or TRANSFER_TEMPORAL_ADDRESS set?"
        ) from None
    try:
        return TransferClient.of(client, settings)
    except MissingSecretKey as error:
        raise CliFailure(str(error)) from None


async def _with_progress(total: int, description: str, work: Callable[[OnItemAnswered], Awaitable[_T]]) -> _T:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err(), transient=True) as progress:
        task = progress.add_task(description, total=total)
        result = await work(lambda: progress.advance(task))
        progress.update(task, completed=total)
    return result


def _results_table(title: str, key: str, items: Sequence[InitiateItem | OrderItem]) -> tuple[Table, int]:
    table = Table(title=title, title_justify="left")
    table.add_column(key, no_wrap=True)
    if key == "resource":
        width = max((len(i.order_id or "") for i in items if isinstance(i, InitiateItem)), default=5)
        table.add_column("order", no_wrap=True, min_width=width)
    table.add_column("result")
    failures = 0
    for item in items:
        row = [item.resource_id if isinstance(item, InitiateItem) else item.order_id]
        if isinstance(item, InitiateItem):
            row.append(item.order_id or "-")
        if item.error is not None:
            failures += 1
            row.append(f"[red]{item.error.code.value}[/red]: {escape(item.error.message)}")
        else:
            row.append(f"[green]{item.status.value if item.status else 'ok'}[/green]")
        table.add_row(*row)
    return table, failures


def _report(title: str, key: str, items: Sequence[InitiateItem | OrderItem]) -> int:
    table, failures = _results_table(title, key, items)
    out().print(table)
    if failures:
        err().print(f"{failures} of {len(items)} refused", soft_wrap=True)
    return PARTIAL if failures else OK


_Answered = InitiateItem | OrderItem


def _run_batch(
    token: str | None,
    *,
    check: Callable[[], object],
    count: int,
    description: str,
    title: str,
    key: str,
    call: Callable[
        [TransferService, Principal, OnItemAnswered], Awaitable[Sequence[InitiateItem | OrderItem]]
    ],
) -> None:
    """One batch command: authenticate, check the arguments, call the service with a progress bar and
    print one result per item."""

    async def work() -> int:
        async with _operator(token, check=check) as (service, principal):
            items = await _with_progress(
                count, description, lambda advance: call(service, principal, advance)
            )
        return _report(title, key, items)

    _run(work)


@app.command()
def initiate(
    resource_ids: Annotated[list[str], typer.Argument(help="Resources to transfer (1 to 100).")],
    to: Annotated[str, typer.Option("--to", help="Destination account id.")],
    code: CodeOption,
    agree: AgreeOption = False,
    token: TokenOption = None,
) -> None:
    """Open one transfer order per resource, from the caller's account to --to."""

    def check() -> None:
        _check_ids(resource_ids, "resource id")
        _check_ids([to], "destination account id")

    _run_batch(
        token,
        check=check,
        count=len(resource_ids),
        description=f"initiating {len(resource_ids)} transfer(s) to {to}",
        title=f"Transfers to {to}",
        key="resource",
        call=lambda service, principal, advance: service.initiate(
            principal,
            destination_account_id=to,
            resource_ids=resource_ids,
            agreement_accepted=agree,
            code=code,
            progress=advance,
        ),
    )


def _parse_tags(tags: Sequence[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for tag in tags:
        key, sep, value = tag.partition("=")
        if not sep or not key:
            _fail(ErrorCode.VALIDATION_ERROR, f"a tag is key=value, not {tag!r}")
        parsed[key] = value
    return parsed


@app.command()
def confirm(
    order_ids: Annotated[list[str], typer.Argument(help="Orders to confirm (1 to 100).")],
    code: CodeOption,
    agree: AgreeOption = False,
    resource_group: Annotated[
        str | None, typer.Option(help="Resource group the resources join after the hand-off.")
    ] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Tag key=value applied after the hand-off (repeatable).")
    ] = None,
    token: TokenOption = None,
) -> None:
    """Confirm orders as their destination: risk check, ownership and billing hand-off."""
    receiving: ReceivingConfig | None = None

    def check() -> None:
        nonlocal receiving
        _check_ids(order_ids, "order id")
        tags = _parse_tags(tag or [])
        if resource_group or tags:
            try:
                receiving = ReceivingConfig(resource_group=resource_group, tags=tags)
            except ValidationError as error:
                _fail(ErrorCode.VALIDATION_ERROR, str(error.errors()[0]["msg"]))

    _run_batch(
        token,
        check=check,
        count=len(order_ids),
        description=f"confirming {len(order_ids)} order(s)",
        title="Confirm",
        key="order",
        call=lambda service, principal, advance: service.confirm(
            principal,
            order_ids=order_ids,
            agreement_accepted=agree,
            code=code,
            receiving_config=receiving,
            progress=advance,
        ),
    )


@app.command()
def cancel(
    order_ids: Annotated[list[str], typer.Argument(help="Orders to cancel (1 to 100).")],
    token: TokenOption = None,
) -> None:
    """Cancel pending orders as their source."""
    _run_batch(
        token,
        check=partial(_check_ids, order_ids, "order id"),
        count=len(order_ids),
        description=f"cancelling {len(order_ids)} order(s)",
        title="Cancel",
        key="order",
        call=lambda service, principal, advance: service.cancel(
            principal, order_ids=order_ids, progress=advance
        ),
    )


@app.command()
def reject(
    order_ids: Annotated[list[str], typer.Argument(help="Orders to reject (1 to 100).")],
    reason: Annotated[str | None, typer.Option(help="Why (recorded with the order).")] = None,
    token: TokenOption = None,
) -> None:
    """Reject pending orders as their destination."""
    _run_batch(
        token,
        check=partial(_check_ids, order_ids, "order id"),
        count=len(order_ids),
        description=f"rejecting {len(order_ids)} order(s)",
        title="Reject",
        key="order",
        call=lambda service, principal, advance: service.reject(
            principal, order_ids=order_ids, reason=reason, progress=advance
        ),
    )


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"


def _short(value: datetime | None) -> str:
    """Table cells: month-day and time, UTC."""
    return value.astimezone(UTC).strftime("%m-%d %H:%M:%S") if value else ""


def print_order(order: Order) -> None:
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("order", order.order_id)
    summary.add_row("status", order.status.value)
    summary.add_row("resource", f"{order.resource_id} ({order.product.value})")
    summary.add_row("source", order.source_account_id)
    summary.add_row("destination", order.destination_account_id)
    summary.add_row("created", _when(order.created_at))
    summary.add_row("expires", _when(order.expires_at))
    summary.add_row("confirmed", _when(order.confirmed_at))
    summary.add_row("completed", _when(order.completed_at))
    summary.add_row("agreement", order.agreement_version)
    if order.failure is not None:
        summary.add_row("failure", f"[red]{order.failure.code.value}[/red]: {escape(order.failure.message)}")
    out().print(summary)

    steps = Table(title="Steps", title_justify="left")
    for column in ("step", "status", "started (UTC)", "finished (UTC)", "attempts", "error"):
        steps.add_column(column, no_wrap=column != "error")
    for step in order.steps:
        steps.add_row(
            step.name,
            step.status.value,
            _short(step.started_at),
            _short(step.finished_at),
            str(step.attempts),
            escape(f"{step.error.code.value}: {step.error.message}") if step.error else "",
        )
    out().print(steps)

    events = Table(title="Events", title_justify="left")
    for column in ("at (UTC)", "actor", "action", "outcome", "code"):
        events.add_column(column, no_wrap=True)
    for event in order.events:
        events.add_row(
            _short(event.at),
            event.actor_account_id or "(system)",
            event.action.value,
            event.outcome.value,
            event.code or "",
        )
    out().print(events)


@app.command()
def show(
    order_id: Annotated[str, typer.Argument(help="The order.")],
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show an order with its steps and events (the detailed procedure)."""

    async def work() -> int:
        check = partial(_check_ids, [order_id], "order id")
        async with _operator(token, temporal=False, check=check) as (service, principal):
            order = await service.get(principal, order_id)
        if as_json:
            out().print_json(order.model_dump_json())
        else:
            print_order(order)
        return OK

    _run(work)


@app.command("list")
def list_orders(
    role: Annotated[Role | None, typer.Option(help="Only orders where the caller is this party.")] = None,
    status: Annotated[OrderStatus | None, typer.Option(help="Only orders in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_BATCH, help="Page size.")] = 20,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the previous page.")] = None,
    token: TokenOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the caller's orders, newest first."""

    async def work() -> int:
        async with _operator(token, temporal=False) as (service, principal):
            orders, next_cursor = await service.list(
                principal,
                role=role,
                statuses=None if status is None else {status},
                limit=limit,
                cursor=cursor,
            )
        if as_json:
            page = {"items": [o.model_dump(mode="json") for o in orders], "next_cursor": next_cursor}
            out().print_json(data=page)
            return OK
        table = Table(title=f"Orders of {principal.account_id}", title_justify="left")
        # Order ids stay whole (they are copied into other commands); the other columns wrap.
        width = max((len(o.order_id) for o in orders), default=5)
        table.add_column("order", no_wrap=True, min_width=width)
        for column in ("status", "resource", "source → destination", "created (UTC)", "expires (UTC)"):
            table.add_column(column)
        for order in orders:
            table.add_row(
                order.order_id,
                order.status.value,
                f"{order.resource_id} ({order.product.value})",
                f"{order.source_account_id} → {order.destination_account_id}",
                _short(order.created_at),
                _short(order.expires_at),
            )
        if not orders:
            out().print("No transfer orders.")
            return OK
        out().print(table)
        if next_cursor:
            out().print(f"next page: --cursor {next_cursor}", soft_wrap=True)
        return OK

    _run(work)


def _refusals(refusals: Sequence[Refusal], style: str) -> str:
    return "\n".join(f"[{style}]{r.code.value}[/{style}]: {escape(r.message)}" for r in refusals)


@app.command()
def validate(
    resource_ids: Annotated[list[str], typer.Argument(help="Resources to check (1 to 100).")],
    to: Annotated[str, typer.Option("--to", help="Destination account id.")],
    token: TokenOption = None,
) -> None:
    """The dry run: every blocker and warning a transfer of each resource to --to would meet now."""

    async def work() -> int:
        def check() -> None:
            _check_ids(resource_ids, "resource id")
            _check_ids([to], "destination account id")

        async with _operator(token, temporal=False, check=check) as (service, principal):
            results = await service.validate(principal, destination_account_id=to, resource_ids=resource_ids)
        table = Table(title=f"Dry run: transfers to {to}", title_justify="left")
        for column in ("resource", "blockers", "warnings"):
            table.add_column(column, no_wrap=column == "resource")
        for result in results:
            blockers = _refusals(result.blockers, "red") or "[green]none[/green]"
            table.add_row(result.resource_id, blockers, _refusals(result.warnings, "yellow"))
        out().print(table)
        return PARTIAL if any(r.blockers for r in results) else OK

    _run(work)


@app.command()
def resources(
    transferable: Annotated[
        bool | None, typer.Option("--transferable/--blocked", help="Only those without (with) blockers.")
    ] = None,
    token: TokenOption = None,
) -> None:
    """The caller's resources, each with its blockers and warnings."""

    async def work() -> int:
        settings = _settings()
        async with _signed_in(settings, token) as (db, principal):
            items, _ = await ResourceService(db).list(principal, transferable=transferable, limit=MAX_BATCH)
        if not items:
            out().print("No resources.")
            return OK
        table = Table(title=f"Resources of {principal.account_id}", title_justify="left")
        for column in ("resource", "product", "billing", "state", "blockers", "warnings"):
            table.add_column(column, no_wrap=column == "resource")
        for item in items:
            r = item.resource
            state = r.status.value if r.status else (f"attached to {r.attached_to}" if r.attached_to else "-")
            table.add_row(
                r.id,
                r.product.value,
                r.billing.value,
                state + (" (locked)" if r.locked_by_order_id else ""),
                _refusals(item.blockers, "red") or "[green]none[/green]",
                _refusals(item.warnings, "yellow"),
            )
        out().print(table)
        return OK

    _run(work)


@app.command()
def repair(
    order_id: Annotated[str | None, typer.Argument(help="The order to repair.")] = None,
    all_orders: Annotated[
        bool, typer.Option("--all", help="Every order the database holds as pending or transferring.")
    ] = False,
) -> None:
    """Operators: bring orders whose run has closed to the run's final state (SPEC §4), releasing the
    lock and compensating a half-done hand-off. Idempotent; prints what it changed."""

    async def work() -> int:
        if (order_id is None) is not all_orders:
            _fail(ErrorCode.VALIDATION_ERROR, "give an ORDER_ID or --all (not both)")
        if order_id is not None:
            _check_ids([order_id], "order id")
        settings = _settings()
        async with _database(settings) as db:
            service = RepairService(await _transfer_client(settings), db)
            order_ids = [order_id] if order_id is not None else await service.open_order_ids()
            table = Table(title="Repair", title_justify="left")
            for column in ("order", "before", "after", "what"):
                table.add_column(column, no_wrap=column != "what")
            changed = 0
            for one in order_ids:
                try:
                    done = await service.repair(one)
                except (TransferError, RPCError) as error:
                    # One order that cannot be repaired now (Temporal unreachable, no worker to answer
                    # a closed run's query) does not stop the others.
                    table.add_row(one, "?", "?", f"[red]not now[/red]: {escape(str(error))}")
                    continue
                changed += done.changed
                before = done.before.value if done.before else "-"
                after = done.after.value if done.after else "-"
                table.add_row(
                    done.order_id, before, f"[green]{after}[/green]" if done.changed else after, done.note
                )
        out().print(table)
        out().print(f"{changed} of {len(order_ids)} order(s) changed", soft_wrap=True)
        return OK

    _run(work)


def main() -> None:  # pragma: no cover - `python -m starter.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
