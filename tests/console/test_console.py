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
from playwright.async_api import Browser, Page, async_playwright, expect
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from domain.models import Account, InstanceStatus, PrincipalKind
from settings import Settings
from starter.api.app import build_services, create_app
from starter.client import TransferClient
from tests.factory import ATTESTATION_KEY, SECRET_KEY, Factory, fresh_id, root, transfer_client
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
        await self.store.add_credential(account_id=account.id, token=token, kind=PrincipalKind.ROOT)
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
    await console.store.create_organization(fresh_id("org"), holding.id, [member.id])
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
