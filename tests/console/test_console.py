"""The console (SPEC §6) in a real browser: Debian's Chromium driven by Playwright, against the API
served by uvicorn on a real port, a worker and the Temporal dev server of the session."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Browser, Page, async_playwright, expect
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from domain.models import Account, InstanceStatus, PrincipalKind
from settings import Settings
from starter.api.app import build_services, create_app
from starter.client import TransferClient
from tests.factory import (
    ATTESTATION_KEY,
    SECRET_KEY,
    Factory,
    code,
    fresh_id,
    root,
    transfer_client,
    wrong_code,
)
from tests.stores import Stores
from worker import build_worker

CHROMIUM = Path("/usr/bin/chromium")
# `make screenshots` writes them to docs/ (committed, shown in the README); a plain test run elsewhere.
SHOTS = Path(os.environ.get("TRANSFER_SCREENSHOTS", tempfile.mkdtemp(prefix="console-shots-")))
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed")


@dataclass
class Console:
    url: str
    factory: Factory
    store: Stores
    transfers: TransferClient
    browser: Browser

    async def token(self, account: Account) -> str:
        token = fresh_id("tok")
        await self.store.provisioning.add_credential(
            account_id=account.id, token=token, kind=PrincipalKind.ROOT
        )
        return token

    async def page(self, width: int = 1280, height: int = 800) -> Page:
        context = await self.browser.new_context(viewport={"width": width, "height": height})
        return await context.new_page()

    async def sign_in(self, token: str, page: Page | None = None) -> Page:
        page = page or await self.page()
        await page.goto(f"{self.url}/console/login", wait_until="load")
        await page.get_by_label("API token").fill(token)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("tab", name="Transferable Resources")).to_be_visible()
        return page


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
async def console(dev_env: WorkflowEnvironment, store: Stores) -> AsyncIterator[Console]:
    task_queue = fresh_id("tq")
    settings = Settings(secret_key=SecretStr(SECRET_KEY), task_queue=task_queue)
    transfers = transfer_client(dev_env.client, task_queue)
    app = create_app(settings, build_services(transfers, store.db))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    async with (
        build_worker(dev_env.client, store.db, task_queue, ATTESTATION_KEY),
        async_playwright() as playwright,
    ):
        while not server.started:  # noqa: ASYNC110 - uvicorn has no event for "listening"
            await asyncio.sleep(0.05)
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            yield Console(f"http://127.0.0.1:{port}", Factory(store), store, transfers, browser)
        finally:
            await browser.close()
            server.should_exit = True
            await serving


async def test_sign_in_shows_the_tabs_and_sign_out_ends_the_session(console: Console) -> None:
    alice = await console.factory.account()
    resource = await console.factory.resource(alice)
    page = await console.sign_in(await console.token(alice))
    tabs = page.get_by_role("tablist")
    for name in (
        "Transferable Resources",
        "My Resource Transfer Requests",
        "Transfers to Confirm",
        "My Confirmed Resource Transfers",
    ):
        await expect(tabs.get_by_role("tab", name=name)).to_be_visible()
    await expect(page.locator(f'tr[data-resource="{resource.id}"]')).to_contain_text("Transferable")
    running = await console.factory.resource(alice, status=InstanceStatus.RUNNING)
    for width, height in ((1280, 800), (390, 844)):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(f"{console.url}/console/resources", wait_until="load")
        await expect(page.locator(f'tr[data-resource="{running.id}"]')).to_contain_text(
            "INSTANCE_NOT_STOPPED"
        )
        await page.screenshot(path=str(SHOTS / f"console-resources-{width}x{height}.png"), full_page=True)
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API token")).to_be_visible()
    await page.goto(f"{console.url}/console/resources", wait_until="load")
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()  # the session is gone


async def test_a_wrong_token_is_refused_in_words_with_its_code(console: Console) -> None:
    page = await console.page()
    await page.goto(f"{console.url}/console/login", wait_until="load")
    await page.get_by_label("API token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("UNAUTHENTICATED")


async def test_each_tab_lists_its_orders_and_the_details_update_themselves(console: Console) -> None:
    source, destination = await console.factory.account(), await console.factory.account()
    resource = await console.factory.resource(source, status=InstanceStatus.STOPPED)
    state = await console.transfers.initiate(
        initiator=root(source), destination_account_id=destination.id, resource_id=resource.id
    )
    source_page = await console.sign_in(await console.token(source))
    await source_page.get_by_role("tab", name="My Resource Transfer Requests").click()
    await expect(source_page.locator(f'tr[data-order="{state.order_id}"]')).to_contain_text("pending")

    page = await console.sign_in(await console.token(destination))
    await page.get_by_role("tab", name="Transfers to Confirm").click()
    row = page.locator(f'tr[data-order="{state.order_id}"]')
    await expect(row).to_contain_text("left")
    await row.get_by_role("link", name=f"View Details of {state.order_id}").click()
    await expect(page.get_by_test_id("order-status")).to_have_text("pending")
    await console.transfers.confirm(state.order_id, root(destination))
    # No reload: the pending order's details poll until the order is done.
    await expect(page.get_by_test_id("order-status")).to_have_text("completed", timeout=15_000)
    await expect(page.get_by_role("list", name="Steps")).to_contain_text("ownership_reassignment")
    await page.goto(f"{console.url}/console/confirmed", wait_until="load")
    await expect(page.locator(f'tr[data-order="{state.order_id}"]')).to_contain_text("completed")
    for width, height in ((1280, 800), (390, 844)):
        await page.set_viewport_size({"width": width, "height": height})
        await page.goto(f"{console.url}/console/transfers/{state.order_id}", wait_until="load")
        await page.screenshot(path=str(SHOTS / f"console-order-{width}x{height}.png"), full_page=True)


async def test_the_organization_view_shows_members_and_no_control_that_changes_anything(
    console: Console,
) -> None:
    holding, member = await console.factory.account(), await console.factory.account()
    await console.store.provisioning.create_organization(fresh_id("org"), holding.id, [member.id])
    owned = await console.factory.resource(member)
    page = await console.sign_in(await console.token(holding))
    await page.get_by_role("link", name="Organization").click()
    await expect(page.get_by_role("heading", name="Organization")).to_be_visible()
    await expect(page.get_by_role("main")).to_contain_text(owned.id)
    main = page.get_by_role("main")
    assert await main.get_by_role("button").count() == 0
    assert await main.locator("form, input, select, textarea").count() == 0


async def test_a_cross_site_form_post_is_refused(console: Console) -> None:
    alice = await console.factory.account()
    token = await console.token(alice)
    async with httpx.AsyncClient(base_url=console.url) as http:
        # Another site's form: no CSRF cookie and header pair.
        forged = await http.post(
            "/console/session", data={"token": token}, headers={"Origin": "https://evil.example"}
        )
        assert forged.status_code == 403
        assert "transfer_console" not in forged.cookies
        signed = await http.post("/console/session/end")
        assert signed.status_code == 403


# --- decisions ------------------------------------------------------------------------------------------


async def pending_orders(
    console: Console, count: int = 1, **fields: object
) -> tuple[Account, Account, list[str]]:
    source, destination = await console.factory.account(), await console.factory.account()
    order_ids = []
    for _ in range(count):
        resource = await console.factory.resource(source, **fields)
        state = await console.transfers.initiate(
            initiator=root(source), destination_account_id=destination.id, resource_id=resource.id
        )
        order_ids.append(state.order_id)
    return source, destination, order_ids


async def test_a_refused_confirm_then_an_accepted_one_with_a_receiving_configuration(
    console: Console,
) -> None:
    _, destination, (order_id,) = await pending_orders(console, status=InstanceStatus.RUNNING)
    page = await console.sign_in(await console.token(destination))
    await page.get_by_role("tab", name="Transfers to Confirm").click()
    await page.get_by_role("button", name=f"Confirm Transfer Receipt {order_id}").click()
    dialog = page.get_by_role("dialog", name="Confirm Transfer Receipt")
    await dialog.get_by_label("Resource group").fill("rg-web")
    await dialog.get_by_label("Tags").fill("team=web, env=prod")
    await dialog.get_by_label("I have read and agree to the Resource Transfer Agreement").check()
    # A wrong code: the refusal in words, and the form keeps what was typed.
    await dialog.get_by_role("button", name="Confirm Receipt").click()
    await page.get_by_label("Verification code").fill(wrong_code(destination))
    await page.get_by_role("button", name="Verify").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("VERIFICATION_FAILED")
    await expect(dialog.get_by_label("Resource group")).to_have_value("rg-web")
    # The right code, but the source has not stopped the instance: refused per order.
    await dialog.get_by_role("button", name="Confirm Receipt").click()
    await page.get_by_label("Verification code").fill(code(destination))
    await page.get_by_role("button", name="Verify").click()
    await expect(dialog.locator(f'[data-result="{order_id}"]')).to_contain_text("INSTANCE_NOT_STOPPED")
    order = await console.store.orders.get_order(order_id)
    assert order is not None
    await console.store.set_instance_status(order.resource_id, InstanceStatus.STOPPED)
    await dialog.get_by_role("button", name="Confirm Receipt").click()
    await page.get_by_label("Verification code").fill(code(destination, steps_ahead=1))
    await page.get_by_role("button", name="Verify").click()
    await expect(dialog.locator(f'[data-result="{order_id}"]')).to_contain_text("transferring")
    await page.goto(f"{console.url}/console/transfers/{order_id}", wait_until="load")
    await expect(page.get_by_test_id("order-status")).to_have_text("completed", timeout=15_000)
    moved = await console.store.get_resource(order.resource_id)
    assert (
        moved is not None
        and moved.resource_group == "rg-web"
        and moved.tags == {"team": "web", "env": "prod"}
    )


async def test_reject_with_a_reason_that_the_details_then_show(console: Console) -> None:
    _, destination, (order_id,) = await pending_orders(console)
    page = await console.sign_in(await console.token(destination))
    await page.get_by_role("tab", name="Transfers to Confirm").click()
    await page.get_by_role("button", name=f"Reject Transfer {order_id}").click()
    dialog = page.get_by_role("dialog", name="Reject Transfer")
    await dialog.get_by_label("Reason").fill("not the instance we ordered")
    await dialog.get_by_role("button", name="Reject", exact=True).click()
    await expect(dialog.locator(f'[data-result="{order_id}"]')).to_contain_text("rejected")
    await page.goto(f"{console.url}/console/transfers/{order_id}", wait_until="load")
    await expect(page.get_by_role("main")).to_contain_text("not the instance we ordered")


async def test_cancel_one_and_a_batch_with_mixed_results(console: Console) -> None:
    source, destination, order_ids = await pending_orders(console, count=3)
    page = await console.sign_in(await console.token(source))
    await page.get_by_role("tab", name="My Resource Transfer Requests").click()
    await page.get_by_role("button", name=f"Cancel Transfer {order_ids[0]}").click()
    await expect(page.locator(f'#results [data-result="{order_ids[0]}"]')).to_contain_text("cancelled")
    # A batch: one still pending, one the destination rejects meanwhile.
    await console.transfers.reject(order_ids[2], root(destination))
    for order_id in order_ids[1:]:
        await page.get_by_label(f"Select {order_id}").check()
    await page.get_by_role("button", name="Batch Cancel Transfer").click()
    await expect(page.locator(f'#results [data-result="{order_ids[1]}"]')).to_contain_text("cancelled")
    await expect(page.locator(f'#results [data-result="{order_ids[2]}"]')).to_contain_text(
        "ORDER_NOT_PENDING"
    )


async def test_a_ram_user_sees_the_pages_but_every_action_is_refused(console: Console) -> None:
    source, _, (order_id,) = await pending_orders(console)
    token = fresh_id("tok")
    await console.store.provisioning.add_credential(
        account_id=source.id,
        token=token,
        kind=PrincipalKind.RAM_USER,
        name="ops",
        ram_user_id=fresh_id("ram"),
    )
    page = await console.sign_in(token)
    await page.get_by_role("tab", name="My Resource Transfer Requests").click()
    await page.get_by_role("button", name=f"Cancel Transfer {order_id}").click()
    await expect(page.locator("#results")).to_contain_text("RAM_USER_NOT_ALLOWED")
    order = await console.store.orders.get_order(order_id)
    assert order is not None and order.status.value == "pending"


# --- initiate -------------------------------------------------------------------------------------------


async def test_initiate_one_and_a_batch_through_the_dry_run_and_the_verification_dialog(
    console: Console,
) -> None:
    source, destination = await console.factory.account(), await console.factory.account()
    single = await console.factory.resource(source)
    running = await console.factory.resource(source, status=InstanceStatus.RUNNING)
    other = await console.factory.resource(source)
    page = await console.sign_in(await console.token(source))

    await page.get_by_role("button", name=f"Initiate Transfer {single.id}").click()
    dialog = page.get_by_role("dialog", name="Initiate Transfer")
    await dialog.get_by_label("Transfer Recipient").fill(destination.id)
    await expect(dialog.locator(f'[data-dry-run="{single.id}"]')).to_contain_text("ready")
    await dialog.get_by_label("I have read and agree to the Resource Transfer Agreement").check()
    # A wrong code: refused in words; the recipient typed stays.
    await dialog.get_by_role("button", name="Submit").click()
    await page.get_by_label("Verification code").fill(wrong_code(source))
    await page.get_by_role("button", name="Verify").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("VERIFICATION_FAILED")
    await expect(dialog.get_by_label("Transfer Recipient")).to_have_value(destination.id)
    await dialog.get_by_role("button", name="Submit").click()
    await page.get_by_label("Verification code").fill(code(source))
    await page.get_by_role("button", name="Verify").click()
    await expect(dialog.locator(f'[data-result="{single.id}"]')).to_contain_text("pending")
    await dialog.get_by_role("button", name="Close").click()

    # A batch: the dry run warns of the running VPC instance before anything is submitted.
    await page.reload(wait_until="load")
    for resource in (running, other):
        await page.get_by_label(f"Select {resource.id}").check()
    await page.get_by_role("button", name="Batch Initiate Transfer").click()
    dialog = page.get_by_role("dialog", name="Initiate Transfer")
    await dialog.get_by_label("Transfer Recipient").fill(destination.id)
    await expect(dialog.locator(f'[data-dry-run="{running.id}"]')).to_contain_text("INSTANCE_NOT_STOPPED")
    await dialog.get_by_label("I have read and agree to the Resource Transfer Agreement").check()
    await dialog.get_by_role("button", name="Submit").click()
    await page.get_by_label("Verification code").fill(code(source, steps_ahead=1))
    await page.get_by_role("button", name="Verify").click()
    for resource in (running, other):
        await expect(dialog.locator(f'[data-result="{resource.id}"]')).to_contain_text("pending")
    opened = await console.store.get_resource(other.id)
    assert opened is not None and opened.locked_by_order_id is not None


# --- accessibility --------------------------------------------------------------------------------------


async def test_no_serious_accessibility_violations_on_any_page(console: Console) -> None:
    source, _, (order_id,) = await pending_orders(console)
    await console.factory.resource(source, status=InstanceStatus.RUNNING)
    axe = Axe()
    page = await console.page()
    await page.goto(f"{console.url}/console/login", wait_until="load")
    pages = {"login": await axe.run(page)}
    page = await console.sign_in(await console.token(source))
    for path in ("resources", "requests", "to-confirm", "confirmed", "organization", f"transfers/{order_id}"):
        await page.goto(f"{console.url}/console/{path}", wait_until="load")
        pages[path] = await axe.run(page)
    serious = {
        path: [
            (v["id"], v["impact"])
            for v in result.response["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        for path, result in pages.items()
    }
    assert serious == {path: [] for path in pages}, {p: r.generate_report() for p, r in pages.items()}
