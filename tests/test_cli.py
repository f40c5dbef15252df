"""The `transfer` CLI: its commands and options, clean refusals, and the operator commands over the real
engine (Temporal dev server, worker, SQLite store)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from secrets import token_urlsafe
from typing import Any

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner, Result

from domain.models import Account, InstanceStatus, OrderStatus, PrincipalKind, Role
from domain.verification import STEP_SECONDS, code_at
from starter.cli import app
from starter.cli.commands import PARTIAL, parse_window
from store.db import Database, create_engine, migrate, sqlite_url
from tests.factory import ATTESTATION_KEY, SECRET_BOX, SECRET_KEY, Factory, fresh_id
from tests.stores import Stores
from worker import build_worker

COMMANDS = (
    "dev",
    "worker",
    "api",
    "migrate",
    "code",
    "initiate",
    "confirm",
    "cancel",
    "reject",
    "show",
    "list",
)
DEV_OPTIONS = (
    "--api-port",
    "--temporal-port",
    "--ui-port",
    "--data-dir",
    "--confirm-window",
    "--seed",
    "--no-seed",
)
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env={**WIDE, **(env or {})})


def assert_clean(result: Result) -> None:
    """Exited through typer/click, never with a Python traceback."""
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


# --- help and options ----------------------------------------------------------------------------


def test_help_lists_every_command() -> None:
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert command in result.output


def test_dev_help_shows_every_spec_option_and_its_environment_variable() -> None:
    result = invoke("dev", "--help")
    assert result.exit_code == 0, result.output
    for option in DEV_OPTIONS:
        assert option in result.output
    for variable in ("TRANSFER_API_PORT", "TRANSFER_TEMPORAL_PORT", "TRANSFER_UI_PORT", "TRANSFER_DATA_DIR"):
        assert variable in result.output
    assert "TRANSFER_CONFIRM_WINDOW" in result.output
    assert "PT24H" in result.output


@pytest.mark.parametrize("window", ["soon", "0", "-5", "PT0S", "1e999"])
def test_a_bad_confirm_window_is_a_usage_error_without_traceback(window: str, tmp_path: Path) -> None:
    result = invoke("dev", "--confirm-window", window, "--data-dir", str(tmp_path / "data"))
    assert result.exit_code == 2, result.output
    assert "--confirm-window" in result.output
    assert_clean(result)
    assert not (tmp_path / "data").exists()  # nothing started


def test_a_bad_confirm_window_from_the_environment_is_refused_too(tmp_path: Path) -> None:
    result = invoke("dev", "--data-dir", str(tmp_path), env={"TRANSFER_CONFIRM_WINDOW": "tomorrow"})
    assert result.exit_code == 2, result.output
    assert_clean(result)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("300", timedelta(seconds=300)), ("5", timedelta(seconds=5)), ("PT24H", timedelta(hours=24))],
)
def test_confirm_window_takes_seconds_or_iso_8601(text: str, expected: timedelta) -> None:
    assert parse_window(text) == expected


# --- refusals without a running stack ---------------------------------------------------------------


@pytest.fixture
def database(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A migrated SQLite database, as TRANSFER_* variables for the CLI."""
    url = sqlite_url(tmp_path / "transfer.db")
    result = invoke("migrate", env={"TRANSFER_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    # Temporal would be at a port nobody listens on: these refusals must come before it is needed.
    yield {
        "TRANSFER_DATABASE_URL": url,
        "TRANSFER_TEMPORAL_ADDRESS": "127.0.0.1:1",
        "TRANSFER_SECRET_KEY": SECRET_KEY,
    }


def test_initiate_with_an_unknown_token_is_unauthenticated(database: dict[str, str]) -> None:
    result = invoke(
        "initiate", "--to", "bob", "i-1", "--code", "123456", "--agree", "--token", "nope", env=database
    )
    assert result.exit_code == 1, result.output
    assert "UNAUTHENTICATED" in result.output
    assert_clean(result)


@pytest.mark.parametrize(
    "args",
    [
        ["initiate", "--to", "bob", "i-1", "--code", "123456", "--agree"],
        ["confirm", "to-1", "--code", "123456", "--agree"],
        ["cancel", "to-1"],
        ["reject", "to-1", "--reason", "no"],
        ["show", "to-1"],
        ["list"],
    ],
)
def test_every_operator_command_needs_a_known_token(database: dict[str, str], args: list[str]) -> None:
    no_token = invoke(*args, env=database)
    unknown = invoke(*args, env={**database, "TRANSFER_TOKEN": "unknown"})
    for result in (no_token, unknown):
        assert result.exit_code == 1, result.output
        assert "UNAUTHENTICATED" in result.output
        assert_clean(result)


def test_an_unmigrated_database_is_a_clean_error(tmp_path: Path) -> None:
    env = {
        "TRANSFER_DATABASE_URL": sqlite_url(tmp_path / "empty.db"),
        "TRANSFER_TOKEN": "x",
        "TRANSFER_SECRET_KEY": SECRET_KEY,
    }
    result = invoke("list", env=env)
    assert result.exit_code == 1, result.output
    assert "transfer migrate" in result.output
    assert_clean(result)


def test_a_bad_setting_is_a_clean_error() -> None:
    result = invoke("migrate", env={"TRANSFER_API_PORT": "not-a-port"})
    assert result.exit_code == 2, result.output
    assert "TRANSFER_API_PORT" in result.output
    assert_clean(result)


def test_code_prints_the_current_code_and_skips_a_used_step(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "transfer.db")

    async def setup() -> Account:
        await migrate(url)
        engine = create_engine(url)
        try:
            return await Factory(Stores(Database(engine, SECRET_BOX))).account(id="carol")
        finally:
            await engine.dispose()

    carol = asyncio.run(setup())
    env = {"TRANSFER_DATABASE_URL": url, "TRANSFER_SECRET_KEY": SECRET_KEY}
    before = datetime.now(UTC)
    first = invoke("code", "carol", env=env)
    assert first.exit_code == 0, first.output
    code = first.output.strip()
    steps = (int(before.timestamp()) // STEP_SECONDS + i for i in (0, 1, 2))
    assert code in {code_at(carol.mfa_secret, datetime.fromtimestamp(s * STEP_SECONDS, UTC)) for s in steps}

    async def use(code: str) -> None:
        engine = create_engine(url)
        try:
            await Stores(Database(engine, SECRET_BOX)).verify_code(
                account_id="carol", code=code, received_at=datetime.now(UTC)
            )
        finally:
            await engine.dispose()

    asyncio.run(use(code))
    second = invoke("code", "carol", env=env)
    assert second.exit_code == 0, second.output
    assert second.output.strip() != code  # the used step is skipped: the next code still verifies
    asyncio.run(use(second.output.strip()))

    unknown = invoke("code", "nobody", env=env)
    assert unknown.exit_code == 1
    assert "unknown account" in unknown.output
    assert_clean(unknown)


# --- the operator commands over the real engine --------------------------------------------------------


@dataclass
class Operator:
    env: dict[str, str]
    store: Stores
    factory: Factory

    async def token(self, account: Account) -> str:
        token = token_urlsafe(24)
        await self.store.provisioning.add_credential(
            account_id=account.id, token=token, kind=PrincipalKind.ROOT
        )
        return token

    async def run(self, *args: str, token: str) -> Result:
        """The CLI in a thread: its own event loop, while this loop runs the worker."""
        return await asyncio.to_thread(invoke, *args, "--token", token, env=self.env)

    async def until(self, order_id: str, status: OrderStatus) -> None:
        for _ in range(200):
            order = await self.store.orders.get_order(order_id)
            if order is not None and order.status is status:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{order_id} never became {status}: {order}")


@pytest.fixture
async def operator(dev_env: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[Operator]:
    url = sqlite_url(tmp_path / "transfer.db")
    await migrate(url)
    engine = create_engine(url)
    store = Stores(Database(engine, SECRET_BOX))
    task_queue = fresh_id("tq")
    env = {
        "TRANSFER_DATABASE_URL": url,
        "TRANSFER_TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TRANSFER_TASK_QUEUE": task_queue,
        "TRANSFER_SECRET_KEY": SECRET_KEY,
    }
    try:
        async with build_worker(dev_env.client, store.db, task_queue, ATTESTATION_KEY):
            yield Operator(env=env, store=store, factory=Factory(store))
    finally:
        await engine.dispose()


def code_now(account: Account, steps_ahead: int = 0) -> str:
    return code_at(account.mfa_secret, datetime.now(UTC) + timedelta(seconds=STEP_SECONDS * steps_ahead))


async def test_initiate_confirm_show_list_through_the_cli(operator: Operator) -> None:
    alice, bob = await operator.factory.account(), await operator.factory.account()
    alice_token, bob_token = await operator.token(alice), await operator.token(bob)
    ecs = await operator.factory.resource(alice)
    young = await operator.factory.resource(alice, created_at=datetime.now(UTC) - timedelta(days=1))

    # a batch with one refused item: the order of the other opens, exit 2, the refusal on its row
    opened = await operator.run(
        "initiate", "--to", bob.id, ecs.id, young.id, "--code", code_now(alice), "--agree", token=alice_token
    )
    assert opened.exit_code == 2, opened.output
    assert "RESOURCE_TOO_NEW" in opened.output
    assert "pending" in opened.output
    assert_clean(opened)
    orders, _ = await operator.store.list_orders(
        account_ids={alice.id}, role=Role.SOURCE, statuses=None, limit=10, cursor=None
    )
    assert [o.resource_id for o in orders] == [ecs.id]
    order_id = orders[0].order_id

    # request-level refusals: exit 1 with the SPEC code
    no_agreement = await operator.run("confirm", order_id, "--code", code_now(bob), token=bob_token)
    assert no_agreement.exit_code == 1, no_agreement.output
    assert "AGREEMENT_NOT_ACCEPTED" in no_agreement.output
    wrong = f"{(int(code_now(bob)) + 1) % 1_000_000:06d}"
    refused = await operator.run("confirm", order_id, "--code", wrong, "--agree", token=bob_token)
    assert refused.exit_code == 1, refused.output
    assert "VERIFICATION_FAILED" in refused.output
    bad_id = await operator.run("cancel", "not an id [/red]", token=alice_token)  # no markup either
    assert bad_id.exit_code == 1, bad_id.output
    assert "VALIDATION_ERROR" in bad_id.output
    assert "[/red]" in bad_id.output
    assert_clean(bad_id)

    # an item refusal: bob is not the source
    not_source = await operator.run("cancel", order_id, token=bob_token)
    assert not_source.exit_code == 2, not_source.output
    assert "NOT_SOURCE" in not_source.output

    confirmed = await operator.run(
        "confirm", order_id, "--code", code_now(bob), "--agree", "--tag", "team=web", token=bob_token
    )
    assert confirmed.exit_code == 0, confirmed.output
    await operator.until(order_id, OrderStatus.COMPLETED)

    shown = await operator.run("show", order_id, token=alice_token)
    assert shown.exit_code == 0, shown.output
    for text in ("completed", "ownership_reassignment", "billing_handoff", "confirm", "complete", "refused"):
        assert text in shown.output
    as_json = await operator.run("show", order_id, "--json", token=bob_token)
    assert json.loads(as_json.output)["status"] == "completed"

    listed = await operator.run("list", "--role", "destination", "--json", token=bob_token)
    assert listed.exit_code == 0, listed.output
    page: dict[str, Any] = json.loads(listed.output)
    assert [o["order_id"] for o in page["items"]] == [order_id]
    assert page["next_cursor"] is None
    table = await operator.run("list", "--status", "completed", token=alice_token)
    assert table.exit_code == 0 and order_id[:12] in table.output

    stranger = await operator.factory.account()
    hidden = await operator.run("show", order_id, token=await operator.token(stranger))
    assert hidden.exit_code == 1
    assert "ORDER_NOT_FOUND" in hidden.output


async def test_reject_and_cancel_batches(operator: Operator) -> None:
    alice, bob = await operator.factory.account(), await operator.factory.account()
    alice_token, bob_token = await operator.token(alice), await operator.token(bob)
    resources = [await operator.factory.resource(alice) for _ in range(3)]
    opened = await operator.run(
        "initiate",
        "--to",
        bob.id,
        *(r.id for r in resources),
        "--code",
        code_now(alice),
        "--agree",
        token=alice_token,
    )
    assert opened.exit_code == 0, opened.output
    orders, _ = await operator.store.list_orders(
        account_ids={alice.id}, role=Role.SOURCE, statuses=None, limit=10, cursor=None
    )
    ids = sorted(o.order_id for o in orders)
    assert len(ids) == 3

    rejected = await operator.run("reject", ids[0], ids[1], "--reason", "not needed", token=bob_token)
    assert rejected.exit_code == 0, rejected.output
    cancelled = await operator.run("cancel", ids[1], ids[2], token=alice_token)
    assert cancelled.exit_code == 2, cancelled.output  # ids[1] is rejected already
    assert "ORDER_NOT_PENDING" in cancelled.output
    for order_id, status in zip(ids, ("rejected", "rejected", "cancelled"), strict=True):
        order = await operator.store.orders.get_order(order_id)
        assert order is not None and order.status.value == status


@pytest.mark.parametrize("command", ["worker", "api"])
def test_the_worker_and_the_api_refuse_to_start_without_a_secret_key(command: str, tmp_path: Path) -> None:
    result = invoke(command, env={"TRANSFER_DATA_DIR": str(tmp_path), "TRANSFER_SECRET_KEY": ""})
    assert result.exit_code == 2, result.output
    assert "TRANSFER_SECRET_KEY" in result.output
    assert_clean(result)


def test_a_missing_token_says_how_to_pass_one(database: dict[str, str]) -> None:
    result = invoke("list", env=database)
    assert result.exit_code == 1, result.output
    assert (
        "UNAUTHENTICATED" in result.output
        and "--token" in result.output
        and "TRANSFER_TOKEN" in result.output
    )
    assert_clean(result)


async def test_validate_and_resources_show_blockers_and_warnings(operator: Operator) -> None:
    alice, bob = await operator.factory.account(), await operator.factory.account()
    token = await operator.token(alice)
    running = await operator.factory.resource(alice, status=InstanceStatus.RUNNING)
    young = await operator.factory.resource(alice, created_at=datetime.now(UTC) - timedelta(days=1))
    dry = await operator.run("validate", running.id, young.id, "--to", bob.id, token=token)
    assert dry.exit_code == PARTIAL, dry.output  # one of them is blocked
    assert "INSTANCE_NOT_STOPPED" in dry.output and "RESOURCE_TOO_NEW" in dry.output
    listed = await operator.run("resources", token=token)
    assert listed.exit_code == 0, listed.output
    assert running.id in listed.output and "RESOURCE_TOO_NEW" in listed.output
    empty = await operator.run("list", token=token)
    assert "No transfer orders." in empty.output


def test_repair_needs_an_order_id_or_all(database: dict[str, str]) -> None:
    result = invoke("repair", env=database)
    assert result.exit_code == 1, result.output
    assert "VALIDATION_ERROR" in result.output and "--all" in result.output
    assert_clean(result)


async def test_repair_all_prints_what_it_changed(operator: Operator) -> None:
    alice, bob = await operator.factory.account(), await operator.factory.account()
    resource = await operator.factory.resource(alice)
    # An open order whose run never existed (a lost start): repair cancels it and releases the lock.
    await operator.store.orders.open_order(
        order_id="to-lost",
        resource_id=resource.id,
        source_account_id=alice.id,
        destination_account_id=bob.id,
        agreement_version="2026-11",
        created_at=datetime.now(UTC),
        expires_at=datetime.now(UTC) + timedelta(days=1),
        actor_account_id=alice.id,
    )
    result = await asyncio.to_thread(invoke, "repair", "--all", env=operator.env)
    assert result.exit_code == 0, result.output
    assert "to-lost" in result.output and "cancelled" in result.output
    assert "1 of 1 order(s) changed" in result.output
    again = await asyncio.to_thread(invoke, "repair", "to-lost", env=operator.env)
    assert "0 of 1 order(s) changed" in again.output
    released = await operator.store.get_resource(resource.id)
    assert released is not None and released.locked_by_order_id is None
