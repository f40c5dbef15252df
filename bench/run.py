"""`make bench`: one run on one Temporal dev server, one table (also written as JSON).

1. the floor: an empty workflow's rate on this machine;
2. the shape twin (bench.twin): no-op activities in exactly the product's history shape, driven in the
   product's batches, its rates;
3. the product through the HTTP API of `transfer dev`: initiate, confirm → completed, end to end, and
   the ratios product ÷ twin; for both, the CPU per transfer of each process (worker, Temporal server,
   API). The twin and the product take turns, batch by batch, so that both meet the same machine (and
   the table says how much CPU time the host stole meanwhile);
4. the latency of one confirm → completed, on an idle stack and under load (p50, p99);
5. scale: initiate rate with N pending orders parked (N from BENCH_PARKED), rate(max N) ÷ rate(min N),
   and the RSS of the process that runs the worker with the most parked;
6. history events of each terminal path;
7. one transfer's transactions alone, without Temporal (bench.transactions): CPU and statements.

Sizes come from the environment (`BENCH_N=200 BENCH_PARKED=100,500 make bench` for a quick run); every
wait is bounded and the stack is stopped whatever happens. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pyotp
from temporalio.client import Client, WithStartWorkflowOperation
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from bench import transactions
from bench.twin import EmptyWorkflow, ShapeTwin, noop
from bench.twin_messages import TwinConfirm, TwinInput, TwinState
from starter.devstack.stack import TEMPORAL_PID
from tests.histories.record import CURRENT_VERSION
from worker import MAX_CACHED_RUNS, compile_workflow_modules
from workflows import search_attributes

T = TypeVar("T")
HERE = Path(__file__).parent
ROOT = HERE.parent
ADMIN_TOKEN = "bench-admin-" + uuid.uuid4().hex
TWIN_QUEUE = "bench-twin"
READY_WITHIN = 90.0


def _int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Sizes:
    transfers: int = _int("BENCH_N", 1000)  # the rate comparison (floor, twin, product)
    batch: int = _int("BENCH_BATCH", 100)  # resources per initiate / orders per confirm
    in_flight: int = _int("BENCH_IN_FLIGHT", 1)  # batches at once (a batch of 100 answers well within 8 s)
    latency_samples: int = _int("BENCH_LATENCY_SAMPLES", 20)
    parked: tuple[int, ...] = tuple(
        int(n) for n in os.environ.get("BENCH_PARKED", "100,1000,4000").split(",") if n
    )
    probe: int = _int("BENCH_PROBE", 200)  # orders initiated to measure the rate at each parked level
    # py-spy's profile of the product's processes during its rate phase (speedscope, or `raw` stacks).
    profile: Path | None = Path(os.environ["BENCH_PROFILE"]) if os.environ.get("BENCH_PROFILE") else None
    profile_format: str = os.environ.get("BENCH_PROFILE_FORMAT", "speedscope")
    out: Path = Path(os.environ.get("BENCH_OUT", str(ROOT / "build" / "bench.json")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def stolen_and_total_jiffies() -> tuple[int, int]:
    """CPU time of the whole machine so far (/proc/stat, all CPUs): what the host of this virtual machine
    stole from it, and the total. Stolen time slows every process without showing in its own CPU time."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return values[7], sum(values)


def cpu_ms(pid: int) -> float:
    """The CPU time (user and system) a process has used so far, in milliseconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuMeter:
    """CPU per transfer of named processes over the turns they were measured in: where a rate's time
    goes (py-spy says what inside a process)."""

    pids: dict[str, int]
    spent: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def measuring(self) -> Iterator[None]:
        started = {name: cpu_ms(pid) for name, pid in self.pids.items()}
        yield
        for name, pid in self.pids.items():
            self.spent[name] = self.spent.get(name, 0.0) + cpu_ms(pid) - started[name]

    def report(self, report: Report, prefix: str, label: str, transfers: int) -> None:
        for name, spent in self.spent.items():
            key = f"{prefix}_{name.split(' ')[0]}_cpu_ms"
            report.add(key, f"{label}: CPU per transfer, {name}", spent / max(transfers, 1), "ms", 1)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def bounded(items: Sequence[T], limit: int, work: Callable[[T], Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with gate:
            return await work(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# --- the stack -------------------------------------------------------------------------------------------


@dataclass
class Stack:
    """`transfer dev` on a fresh data folder and free ports, its output in the folder's bench.log."""

    data_dir: Path
    api_port: int = field(default_factory=free_port)
    temporal_port: int = field(default_factory=free_port)
    ui_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def temporal(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    def start(self) -> None:
        transfer = shutil.which("transfer", path=str(Path(sys.executable).parent)) or "transfer"
        command = [
            transfer,
            "dev",
            "--no-seed",
            f"--data-dir={self.data_dir}",
            f"--api-port={self.api_port}",
            f"--temporal-port={self.temporal_port}",
            f"--ui-port={self.ui_port}",
        ]
        env = {**os.environ, "TRANSFER_ADMIN_TOKEN": ADMIN_TOKEN}
        log = (self.data_dir / "bench.log").open("wb")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)

    async def wait_ready(self, http: httpx.AsyncClient) -> None:
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                # The folder goes with the run: its log's end is the error's.
                tail = (self.data_dir / "bench.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"transfer dev exited with {self.process.returncode}:\n{tail}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{self.api}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.5)
        raise TimeoutError("transfer dev did not become ready")

    def temporal_pid(self) -> int:
        return int((self.data_dir / TEMPORAL_PID).read_text())

    def api_pid(self) -> int:
        """`transfer dev`'s own process, which serves the API."""
        assert self.process is not None
        return self.process.pid

    def worker_pid(self) -> int:
        """The worker's process: `transfer dev` runs it as a child (`python -m starter.cli worker`)."""
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        for child in children.read_text().split() if children.exists() else []:
            if b"worker" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                return int(child)
        return self.process.pid  # a stack that runs the worker in its own process

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


# --- the product through its HTTP API ---------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    id: str
    token: str
    secret: str

    def code(self) -> str:
        return pyotp.TOTP(self.secret).now()

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass(frozen=True)
class Pair:
    source: Account
    destination: Account
    resource_ids: tuple[str, ...]


class Product:
    """Provisioning through the admin API, then the calls a backend service makes."""

    def __init__(self, http: httpx.AsyncClient, temporal: Client) -> None:
        self.http, self.temporal = http, temporal
        self._admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        self.answered_503 = 0  # items the product answered "not now" (with overload allowed)

    async def _post(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
        response = await self.http.post(path, json=body, headers=headers)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    async def admin(self, path: str, body: dict[str, Any]) -> Any:
        """A provisioning call with the admin token: its answer."""
        return await self._post(path, body, self._admin)

    async def account(self) -> Account:
        account_id = "b-" + uuid.uuid4().hex[:16]
        body = {
            "id": account_id,
            "name": account_id,
            "kind": "individual",
            "verified": True,
            "entity_id": "e-" + account_id,
            "entity_name": "Entity " + account_id,
        }
        made = await self.admin("/v1/admin/accounts", body)
        return Account(id=account_id, token=made["api_token"], secret=made["mfa_secret"])

    async def resource(self, owner: Account, *, subscription: bool = False) -> str:
        """A stopped VPC instance, pay-as-you-go or (with its original charge) a month's subscription."""
        resource_id = "i-" + uuid.uuid4().hex[:16]
        now = datetime.now(UTC)
        body = {
            "id": resource_id,
            "product": "ecs",
            "billing": "pay_as_you_go",
            "owner_account_id": owner.id,
            "created_at": (now - timedelta(days=30)).isoformat(),
            "monthly_price": "10.00",
            "network": "vpc",
            "status": "stopped",
        }
        if subscription:
            body |= {"billing": "subscription", "expires_at": (now + timedelta(days=30)).isoformat()}
        await self.admin("/v1/admin/resources", body)
        return resource_id

    async def pairs(self, transfers: int, batch: int, *, subscription: bool = False) -> list[Pair]:
        """One source and destination per batch: a TOTP code works once per account and 30 s step."""

        async def pair(size: int) -> Pair:
            source, destination = await self.account(), await self.account()
            ids = await bounded([source] * size, 8, partial(self.resource, subscription=subscription))
            return Pair(source, destination, tuple(ids))

        sizes = [min(batch, transfers - i) for i in range(0, transfers, batch)]
        return await bounded(sizes, 2, pair)

    async def auto_renew(self, resource_id: str) -> Any:
        """One auto-renewal now, charged to the resource's owner of this moment: the charge."""
        return await self.admin(f"/v1/admin/resources/{resource_id}/auto-renew", {})

    async def initiate(self, pair: Pair, *, overload: bool = False) -> list[str]:
        """The orders opened; with `overload`, items answered SERVICE_UNAVAILABLE are counted, not fatal
        (their order may still open: they are not counted as opened either)."""
        body = {
            "destination_account_id": pair.destination.id,
            "resource_ids": list(pair.resource_ids),
            "agreement_accepted": True,
            "verification": {"code": pair.source.code()},
        }
        answer = await self._post("/v1/transfers", body, pair.source.auth())
        return self._done("initiate", answer, overload=overload)

    async def confirm(self, pair: Pair, order_ids: Sequence[str], *, overload: bool = False) -> list[str]:
        """The orders confirmed; with `overload`, items answered SERVICE_UNAVAILABLE (in time: they did
        nothing, SPEC §5) are counted, not fatal."""
        body = {
            "order_ids": list(order_ids),
            "agreement_accepted": True,
            "verification": {"code": pair.destination.code()},
        }
        answer = await self._post("/v1/transfers/batch/confirm", body, pair.destination.auth())
        return self._done("confirm", answer, overload=overload)

    def _done(self, what: str, answer: Any, *, overload: bool) -> list[str]:
        refused = [r for r in answer["results"] if "error" in r]
        if overload:
            busy = [r for r in refused if r["error"]["code"] == "SERVICE_UNAVAILABLE"]
            self.answered_503 += len(busy)
            refused = [r for r in refused if r not in busy]
        if refused:
            raise RuntimeError(f"{what} refused {len(refused)} items: {refused[0]}")
        return [r["order_id"] for r in answer["results"] if "error" not in r]

    async def decide(self, pair: Pair, order_id: str, action: str) -> None:
        who = pair.source if action == "cancel" else pair.destination
        await self._post(f"/v1/transfers/{order_id}/{action}", {}, who.auth())

    async def completed(self, order_ids: Sequence[str]) -> None:
        """Every run's end (the order completed), from Temporal: the same wait as the twin's."""
        results = await asyncio.gather(*(self.temporal.get_workflow_handle(o).result() for o in order_ids))
        failed = [r for r in results if r.get("status") != "completed"]
        if failed:
            raise RuntimeError(f"{len(failed)} orders did not complete: {failed[0]}")

    async def history_length(self, order_id: str) -> int:
        return len((await self.temporal.get_workflow_handle(order_id).fetch_history()).events)


# --- phases ------------------------------------------------------------------------------------------------


@dataclass
class Report:
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)

    def add(self, key: str, label: str, value: float, unit: str, digits: int = 1) -> None:
        self.values[key] = round(value, 3)
        self.rows.append((label, f"{value:,.{digits}f}", unit))
        print(f"  {label}: {value:,.{digits}f} {unit}", flush=True)


async def timed(work: Awaitable[Any]) -> float:
    started = time.perf_counter()
    await work
    return time.perf_counter() - started


async def floor_rate(client: Client, sizes: Sizes) -> float:
    ids = [f"empty-{uuid.uuid4().hex}" for _ in range(sizes.transfers)]

    async def run(workflow_id: str) -> None:
        await client.execute_workflow(EmptyWorkflow.run, workflow_id, id=workflow_id, task_queue=TWIN_QUEUE)

    return sizes.transfers / await timed(bounded(ids, sizes.batch * sizes.in_flight, run))


@dataclass
class Side:
    """One of the two compared (the twin, the product): its batches, and what its turns took."""

    open_batch: Callable[[int], Awaitable[int]]  # batch i's opens, answered: how many opened
    confirm_batch: Callable[[int], Awaitable[int]]  # batch i's confirms answered, its runs ended: how many
    cpu: CpuMeter
    done: dict[str, int] = field(default_factory=lambda: {"open": 0, "confirm": 0})
    seconds: dict[str, float] = field(default_factory=lambda: {"open": 0.0, "confirm": 0.0})

    async def turn(self, phase: str, batches: range) -> None:
        work = self.open_batch if phase == "open" else self.confirm_batch
        with self.cpu.measuring():
            started = time.perf_counter()
            done = await asyncio.gather(*(work(i) for i in batches))
            self.seconds[phase] += time.perf_counter() - started
        self.done[phase] += sum(done)

    def rates(self) -> tuple[float, float, float]:
        """initiate, confirm → completed, end to end: of the orders done, over this side's turns."""
        opening, confirming = self.seconds["open"], self.seconds["confirm"]
        completed = self.done["confirm"]
        return self.done["open"] / opening, completed / confirming, completed / (opening + confirming)


async def compared(sides: Sequence[Side], batches: int, in_flight: int) -> None:
    """Every side's opens, then every side's confirms, `in_flight` batches a turn, the sides taking turns
    (which goes first alternates): a machine whose speed drifts within the run (a shared host) slows
    both alike, where one side's whole phase after the other's met another machine."""
    for phase in ("open", "confirm"):
        for turn, first in enumerate(range(0, batches, in_flight)):
            group = range(first, min(first + in_flight, batches))
            for side in sides if turn % 2 == 0 else list(reversed(sides)):
                await side.turn(phase, group)


def twin_side(client: Client, sizes: Sizes, cpu: CpuMeter) -> Side:
    """Driven as the product is: batches of `batch`; a batch's opens all answered, or its confirms all
    answered and then all its runs ended, before the turn ends."""
    batches = chunks([f"twin-{uuid.uuid4().hex}" for _ in range(sizes.transfers)], sizes.batch)

    async def open_(order_id: str) -> None:
        start = WithStartWorkflowOperation(
            ShapeTwin.run,
            TwinInput(
                order_id=order_id,
                source_account_id="twin-src",
                destination_account_id="twin-dst",
                resource_id=order_id,
                confirm_window=timedelta(hours=24),
            ),
            id=order_id,
            task_queue=TWIN_QUEUE,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # What the product's client starts a run with (starter.client), of the same sizes.
            search_attributes=TypedSearchAttributes(
                [
                    SearchAttributePair(search_attributes.SOURCE_ACCOUNT_ID, "twin-src"),
                    SearchAttributePair(search_attributes.DESTINATION_ACCOUNT_ID, "twin-dst"),
                    SearchAttributePair(search_attributes.RESOURCE_ID, order_id),
                ]
            ),
            static_summary=f"Transfer {order_id}: twin-src → twin-dst",
        )
        await client.execute_update_with_start_workflow(
            "opened", start_workflow_operation=start, result_type=TwinState
        )

    async def open_batch(index: int) -> int:
        await asyncio.gather(*(open_(order_id) for order_id in batches[index]))
        return len(batches[index])

    async def confirm_batch(index: int) -> int:
        handles = [client.get_workflow_handle(order_id) for order_id in batches[index]]
        await asyncio.gather(
            *(h.execute_update("confirm", TwinConfirm(), result_type=TwinState) for h in handles)
        )
        await asyncio.gather(*(h.result() for h in handles))
        return len(handles)

    return Side(open_batch, confirm_batch, cpu)


@contextlib.contextmanager
def profiled(stack: Stack, sizes: Sizes) -> Iterator[None]:
    """py-spy records the product's worker process meanwhile (the API's: `py-spy` on `transfer dev`)."""
    if sizes.profile is None:
        yield
        return
    assert stack.process is not None
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    command = [spy, "record", "--pid", str(stack.worker_pid()), "--nonblocking", "--gil"]
    command += ["--format", sizes.profile_format, "--output", str(sizes.profile)]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=60)


async def product_side(product: Product, sizes: Sizes, cpu: CpuMeter) -> tuple[Side, list[str]]:
    """The product's side, and the orders it completed (filled as it goes). A machine too slow for a
    batch's last answers within the API's deadline gets 503 for them, as a client would: those items
    count as not done (the rates are of the orders done) and the table says how many there were."""
    pairs = await product.pairs(sizes.transfers, sizes.batch)
    opened: dict[Pair, list[str]] = {}
    completed: list[str] = []

    async def open_batch(index: int) -> int:
        opened[pairs[index]] = await product.initiate(pairs[index], overload=True)
        return len(opened[pairs[index]])

    async def confirm_batch(index: int) -> int:
        confirmed = await product.confirm(pairs[index], opened[pairs[index]], overload=True)
        await product.completed(confirmed)
        completed.extend(confirmed)
        return len(confirmed)

    return Side(open_batch, confirm_batch, cpu), completed


async def one_confirm_latency(product: Product, pair: Pair) -> float:
    (order_id,) = await product.initiate(pair)
    started = time.perf_counter()
    await product.confirm(pair, [order_id])
    await product.completed([order_id])
    return time.perf_counter() - started


async def latencies(product: Product, sizes: Sizes, report: Report) -> None:
    samples = await product.pairs(2 * sizes.latency_samples, 1)
    idle = [await one_confirm_latency(product, p) for p in samples[: sizes.latency_samples]]
    report.add("idle_confirm_p50_ms", "idle: confirm → completed p50", 1000 * percentile(idle, 0.5), "ms", 0)
    report.add("idle_confirm_p99_ms", "idle: confirm → completed p99", 1000 * percentile(idle, 0.99), "ms", 0)

    load = await product.pairs(sizes.transfers // 4 or 1, sizes.batch)

    async def background(pair: Pair) -> None:
        order_ids = await product.initiate(pair, overload=True)
        await product.completed(await product.confirm(pair, order_ids, overload=True))

    loading = asyncio.create_task(bounded(load, sizes.in_flight, background))
    await asyncio.sleep(0.5)
    busy = [await one_confirm_latency(product, p) for p in samples[sizes.latency_samples :]]
    await loading
    report.add(
        "load_confirm_p50_ms", "under load: confirm → completed p50", 1000 * percentile(busy, 0.5), "ms", 0
    )
    report.add(
        "load_confirm_p99_ms", "under load: confirm → completed p99", 1000 * percentile(busy, 0.99), "ms", 0
    )


async def scale(product: Product, stack: Stack, sizes: Sizes, report: Report) -> None:
    parked = 0
    rates: dict[int, float] = {}
    # Parking thousands takes minutes: an item answered 503 there is counted (a row of the table).
    opens = partial(product.initiate, overload=True)
    busy_before = product.answered_503
    for level in sorted(sizes.parked):
        if level > parked:
            pairs = await product.pairs(level - parked, sizes.batch)
            parked += sum(len(ids) for ids in await bounded(pairs, sizes.in_flight, opens))
        probe = await product.pairs(sizes.probe, sizes.batch)
        started = time.perf_counter()
        opened = sum(len(ids) for ids in await bounded(probe, sizes.in_flight, opens))
        rates[level] = opened / (time.perf_counter() - started)
        parked += opened
        report.add(f"initiate_rate_parked_{level}", f"initiate with {level:,} parked", rates[level], "/s")
    low, high = min(rates), max(rates)
    report.add("scale_ratio", f"rate({high:,}) ÷ rate({low:,})", rates[high] / rates[low], "", 2)
    rss = rss_mb(stack.worker_pid())
    report.add("worker_rss_mb", f"worker RSS with {parked:,} parked", rss, "MB", 0)
    report.add(
        "parking_answered_503",
        "initiate items answered 503 while parking",
        product.answered_503 - busy_before,
        "",
        0,
    )


async def history_lengths(product: Product, completed_id: str, report: Report) -> None:
    report.add(
        "events_completed", "history events: completed", await product.history_length(completed_id), "", 0
    )
    for action, status in (("cancel", "cancelled"), ("reject", "rejected")):
        (pair,) = await product.pairs(1, 1)
        (order_id,) = await product.initiate(pair)
        await product.decide(pair, order_id, action)
        await product.temporal.get_workflow_handle(order_id).result()
        report.add(
            f"events_{status}", f"history events: {status}", await product.history_length(order_id), "", 0
        )
    corpus = ROOT / "tests" / "histories" / CURRENT_VERSION / "expired.json"
    expired = len(json.loads(corpus.read_text())["events"])
    report.add("events_expired", f"history events: expired ({CURRENT_VERSION} replay corpus)", expired, "", 0)


@contextlib.asynccontextmanager
async def twin_worker(client: Client) -> AsyncIterator[None]:
    compile_workflow_modules(HERE)  # bench.twin's bytecode, as the product worker writes its own
    async with Worker(
        client,
        task_queue=TWIN_QUEUE,
        workflows=[EmptyWorkflow, ShapeTwin],
        activities=[noop],
        max_cached_workflows=MAX_CACHED_RUNS,  # the product worker's
    ):
        yield


async def main(sizes: Sizes) -> Report:
    report = Report()
    with tempfile.TemporaryDirectory(prefix="transfer-bench-") as folder:
        stack = Stack(Path(folder))
        stack.start()
        try:
            limits = httpx.Limits(max_connections=64)
            async with httpx.AsyncClient(base_url=stack.api, timeout=60, limits=limits) as http:
                await stack.wait_ready(http)
                client = await Client.connect(stack.temporal, data_converter=pydantic_data_converter)
                product = Product(http, client)
                print(f"bench: {sizes}", flush=True)
                twin_cpu = CpuMeter(
                    {"worker (with the bench's driver)": os.getpid(), "server": stack.temporal_pid()}
                )
                product_cpu = CpuMeter(
                    {
                        "worker": stack.worker_pid(),
                        "server": stack.temporal_pid(),
                        "api (transfer dev)": stack.api_pid(),
                    }
                )
                async with twin_worker(client):
                    floor = await floor_rate(client, sizes)
                    report.add("floor_rate", "empty workflow (floor)", floor, "/s")
                    twin_turns = twin_side(client, sizes, twin_cpu)
                    product_turns, completed = await product_side(product, sizes, product_cpu)
                    stolen_before, total_before = stolen_and_total_jiffies()
                    with profiled(stack, sizes):
                        batches = math.ceil(sizes.transfers / sizes.batch)
                        await compared([twin_turns, product_turns], batches, sizes.in_flight)
                    stolen_after, total_after = stolen_and_total_jiffies()
                stolen = 100 * (stolen_after - stolen_before) / max(total_after - total_before, 1)
                report.add("stolen_pct", "CPU time the host stole while twin and product ran", stolen, "%")
                if not completed:
                    raise SystemExit("bench: no transfer completed (every confirm answered 503): no figures")
                report.add(
                    "rate_answered_503",
                    "product: items answered 503 (past the API's deadline)",
                    product.answered_503,
                    "",
                    0,
                )
                for key, label, value, twin_value in zip(
                    ("initiate", "confirm", "end_to_end"),
                    ("initiate", "confirm → completed", "end to end"),
                    product_turns.rates(),
                    twin_turns.rates(),
                    strict=True,
                ):
                    report.add(f"twin_{key}_rate", f"twin: {label}", twin_value, "/s")
                    report.add(f"product_{key}_rate", f"product: {label}", value, "/s")
                    report.add(f"ratio_{key}", f"product ÷ twin: {label}", value / twin_value, "", 2)
                twin_cpu.report(report, "twin", "twin", sizes.transfers)
                product_cpu.report(report, "product", "product", len(completed))
                await latencies(product, sizes, report)
                await history_lengths(product, completed[0], report)
                await scale(product, stack, sizes, report)
        finally:
            stack.stop()
    # After the stack has stopped: nothing else competes for the CPU it measures.
    cpu_ms, statements = await transactions.measure(sizes.probe)
    report.add("transactions_cpu_ms", "one transfer's transactions alone: CPU", cpu_ms, "ms", 2)
    report.add("transactions_statements", "one transfer's transactions alone: statements", statements, "", 0)
    return report


SIZE_FIELDS = ("transfers", "batch", "in_flight", "latency_samples", "parked", "probe")


def write(report: Report, sizes: Sizes) -> None:
    width = max(len(label) for label, _, _ in report.rows)
    print()
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"|{'-' * (width + 2)}|-------|")
    for label, value, unit in report.rows:
        print(f"| {label.ljust(width)} | {value}{' ' + unit if unit else ''} |")
    sizes.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "sizes": {
            k: list(v) if isinstance(v, tuple) else v for k, v in vars(sizes).items() if k in SIZE_FIELDS
        },
        "cores": os.cpu_count(),
        "results": report.values,
    }
    sizes.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\nwritten to {sizes.out}")


if __name__ == "__main__":
    chosen = Sizes()
    write(asyncio.run(main(chosen)), chosen)
