"""`transfer dev` as a user runs it: a real process with its Temporal dev server, stopped and restarted.

One order is opened, the stack is stopped with it pending (SIGTERM: exit 0, Temporal gone), the stack is
restarted on the same data folder (no new demo data: the same tokens) and the order is confirmed and
completes (the restarted worker resumed it; one `complete`). A second order, opened with a 5 s window,
expires and releases its resource.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.verification import STEP_SECONDS, code_at
from starter.devstack.binaries import find_binary

ADMIN_TOKEN = "e2e-admin-token"
START_TIMEOUT = 90.0
STOP_TIMEOUT = 40.0
REPO = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def transfer_command() -> list[str]:
    """The venv's `transfer` script; the module when the project is not installed as a package."""
    try:
        return [find_binary("transfer")]
    except FileNotFoundError:
        return [sys.executable, "-m", "starter.cli"]


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
    return state in ("Z", "X")


@dataclass
class Stack:
    data_dir: Path
    api_port: int
    temporal_port: int
    ui_port: int
    logs: Path
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0
    used_steps: dict[str, set[int]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, *extra: str) -> None:
        self.runs += 1
        out = (self.logs / f"dev-{self.runs}.out").open("wb")
        env = {**os.environ, "TRANSFER_ADMIN_TOKEN": ADMIN_TOKEN, "TRANSFER_LOG_LEVEL": "INFO"}
        for name in ("TRANSFER_DATABASE_URL", "TRANSFER_TEMPORAL_ADDRESS", "TRANSFER_CONFIRM_WINDOW"):
            env.pop(name, None)
        self.process = subprocess.Popen(
            [
                *transfer_command(),
                "dev",
                "--data-dir",
                str(self.data_dir),
                "--api-port",
                str(self.api_port),
                "--temporal-port",
                str(self.temporal_port),
                "--ui-port",
                str(self.ui_port),
                *extra,
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"transfer dev exited early:\n{self.output()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"transfer dev did not answer /healthz in {START_TIMEOUT} s:\n{self.output()}")

    def stop(self) -> int:
        """SIGTERM, as Ctrl-C or a service manager would; the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"transfer dev did not stop within {STOP_TIMEOUT} s:\n{self.output()}"
            ) from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()  # its Temporal server gets SIGTERM from the kernel (PDEATHSIG)
                self.process.wait()

    def output(self) -> str:
        texts = [p.read_text(errors="replace")[-20000:] for p in sorted(self.logs.glob("dev-*.out"))]
        return "\n".join(texts)

    def demo(self) -> dict[str, Any]:
        demo: dict[str, Any] = json.loads((self.data_dir / "demo.json").read_text())
        return demo

    def code(self, account: dict[str, Any]) -> str:
        """A code of the account's authenticator that no earlier request has used (single-use steps)."""
        used = self.used_steps.setdefault(account["id"], set())
        current = int(datetime.now(UTC).timestamp()) // STEP_SECONDS
        step = next(s for s in (current, current + 1, current - 1) if s not in used)
        used.add(step)
        return code_at(account["mfa_secret"], datetime.fromtimestamp(step * STEP_SECONDS, UTC))

    def call(self, method: str, path: str, token: str, body: Any = None) -> httpx.Response:
        return httpx.request(
            method, f"{self.url}{path}", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def until(self, order_id: str, token: str, status: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        order: dict[str, Any] = {}
        while time.monotonic() < deadline:
            response = self.call("GET", f"/v1/transfers/{order_id}", token)
            assert response.status_code == 200, response.text
            order = response.json()
            if order["status"] == status:
                return order
            time.sleep(0.25)
        raise AssertionError(f"order {order_id} is {order.get('status')}, never {status}: {order}")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    logs = tmp_path / "logs"
    logs.mkdir()
    api_port, temporal_port, ui_port = free_ports(3)
    stack = Stack(tmp_path / "data", api_port, temporal_port, ui_port, logs)
    try:
        yield stack
    finally:
        stack.kill()


def test_the_dev_stack_stops_cleanly_and_resumes_open_orders(stack: Stack) -> None:
    started = time.monotonic()
    stack.start()
    demo = stack.demo()
    accounts = {a["id"]: a for a in demo["accounts"]}
    alice, bob = accounts["alice"], accounts["bob"]
    assert demo["admin_token"] is None  # TRANSFER_ADMIN_TOKEN is set: nothing generated, nothing stored
    # the admin token of the environment is the API's
    carol = {"id": "carol", "name": "Carol", "kind": "individual", "verified": False}
    assert stack.call("POST", "/v1/admin/accounts", "wrong", carol).status_code == 401
    created = stack.call("POST", "/v1/admin/accounts", ADMIN_TOKEN, carol)
    assert created.status_code in (200, 201), created.text
    temporal_pid = int((stack.data_dir / "temporal.pid").read_text())

    # an order opened before the stop
    opened = stack.call(
        "POST",
        "/v1/transfers",
        alice["token"],
        {
            "destination_account_id": "bob",
            "resource_ids": ["i-alice-batch"],
            "agreement_accepted": True,
            "verification": {"code": stack.code(alice)},
        },
    )
    assert opened.status_code == 200, opened.text
    [result] = opened.json()["results"]
    assert result["status"] == "pending", result
    order_id = result["order_id"]

    # SIGTERM with the order pending: a clean exit, the Temporal server stopped and waited for
    assert stack.stop() == 0, stack.output()
    assert process_gone(temporal_pid), f"the Temporal dev server (pid {temporal_pid}) outlived transfer dev"
    assert not (stack.data_dir / "temporal.pid").exists()
    output = stack.output()
    assert "Traceback" not in output, output
    assert f"http://127.0.0.1:{stack.api_port}" in output
    assert f"http://127.0.0.1:{stack.ui_port}" in output
    assert f"http://127.0.0.1:{stack.api_port}/console/" in output
    assert alice["token"] in output and alice["mfa_secret"] in output

    # restart on the same folder, with a short window for orders opened from now on
    stack.start("--confirm-window", "5")
    assert stack.demo() == demo  # not seeded again: the same tokens and secrets
    pending = stack.until(order_id, alice["token"], "pending")
    assert [e["action"] for e in pending["events"]] == ["initiate"]

    short = stack.call(
        "POST",
        "/v1/transfers",
        alice["token"],
        {
            "destination_account_id": "bob",
            "resource_ids": ["eip-alice-1"],
            "agreement_accepted": True,
            "verification": {"code": stack.code(alice)},
        },
    )
    assert short.status_code == 200, short.text
    [short_result] = short.json()["results"]
    assert short_result["status"] == "pending", short_result
    short_id = short_result["order_id"]

    # its Temporal server dies: the API answers 503 meanwhile, and transfer dev starts it again
    first_pid = int((stack.data_dir / "temporal.pid").read_text())
    os.kill(first_pid, signal.SIGKILL)
    restarted = None
    saw_503 = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready = httpx.get(f"{stack.url}/readyz", timeout=12)
        if ready.status_code == 503:
            saw_503 = ready.json()["error"]["details"]["failing"] == ["temporal"]
        pid = int((stack.data_dir / "temporal.pid").read_text())
        if ready.status_code == 200 and pid != first_pid:
            restarted = pid
            break
        time.sleep(0.3)
    assert restarted is not None, stack.output()
    assert saw_503, "the API never answered 503 while Temporal was down"
    # the data folder is its owner's only
    assert stack.data_dir.stat().st_mode & 0o777 == 0o700
    for private in ("secret.key", "transfer.db", "demo.json"):
        assert (stack.data_dir / private).stat().st_mode & 0o777 == 0o600, private

    confirmed = stack.call(
        "POST",
        f"/v1/transfers/{order_id}/confirm",
        bob["token"],
        {"agreement_accepted": True, "verification": {"code": stack.code(bob)}},
    )
    assert confirmed.status_code == 200, confirmed.text
    completed = stack.until(order_id, bob["token"], "completed")
    actions = [e["action"] for e in completed["events"]]
    assert actions.count("complete") == 1, completed["events"]
    assert actions.count("confirm") == 1, completed["events"]
    assert {s["name"] for s in completed["steps"]} >= {"ownership_reassignment", "billing_handoff"}
    moved = stack.call("GET", "/v1/resources/i-alice-batch", bob["token"])
    assert moved.status_code == 200, moved.text
    assert moved.json()["owner_account_id"] == "bob"

    # the 5 s order, left alone, expires and releases its resource
    expired = stack.until(short_id, alice["token"], "expired", timeout=30)
    assert [e["action"] for e in expired["events"]][-1] == "expire"
    transferable = stack.call("GET", "/v1/resources?transferable=true", alice["token"])
    assert transferable.status_code == 200, transferable.text
    assert "eip-alice-1" in {r["id"] for r in transferable.json()["items"]}

    assert stack.stop() == 0, stack.output()
    assert "Traceback" not in stack.output()
    assert time.monotonic() - started < 150
