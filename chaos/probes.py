"""The probes of `make chaos` (issue "Fault and abuse suite"): the live API fuzzed over its own OpenAPI,
the authorization matrix, and abuse (TOTP guessing, forged Temporal messages, oversized bodies).

Each probe drives the running stack of a `chaos.report.Live` from outside, as a client would (HTTP, and
Temporal directly for the forged messages), and answers one `Row`: every broken promise is counted in
`lost` and the first few are described in `observed`. Every wait is bounded.

"Nothing changed" is read from the service's database (PostgreSQL): a fingerprint of every table of the
business state, that is every table but those a refused request legitimately writes (`NOT_BUSINESS`):
refused attempts recorded as order events, failed verifications as security events, codes used up by
a request that was then refused, and the answers kept for an `Idempotency-Key`. The fingerprint sees
every committed write (its rows' count and xmin), so "unchanged" means "nothing written", a rewrite
of the same values included; it is cheap (a scan without formatting rows), so it can be taken around
every batch of the fuzz and every cell of the matrix. The probes compare fingerprints of the whole
database, so they need the stack to themselves while they run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import pickle
import secrets
import sys
import tempfile
import time
import uuid
import warnings
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import pyotp
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError

from bench import run as bench_run
from bench.run import Account
from chaos.report import Live, Row
from domain.models import Action, Principal, PrincipalKind
from starter.client import sign
from workflows.messages import (
    WORKFLOW_TYPE,
    AttestedMessage,
    CancelRequest,
    ConfirmRequest,
    OrderState,
    RejectRequest,
    TransferInput,
)
from workflows.refusals import from_update

# SPEC §3 "HTTP status of each code" (written out here, not read from domain.codes: the probes check the
# app against the SPEC, not against itself). CANCELLED_BY_OPERATOR is never an HTTP error.
SPEC_STATUS: dict[str, int] = {
    "UNAUTHENTICATED": 401,
    **dict.fromkeys(
        (
            "RAM_USER_NOT_ALLOWED",
            "ACCOUNT_NOT_VERIFIED",
            "ACCOUNT_FROZEN",
            "VERIFICATION_FAILED",
            "NOT_DESTINATION",
            "NOT_SOURCE",
            "READ_ONLY_ACCESS",
        ),
        403,
    ),
    **dict.fromkeys(("ORDER_NOT_FOUND", "RESOURCE_NOT_FOUND", "DESTINATION_NOT_FOUND", "NOT_FOUND"), 404),
    "METHOD_NOT_ALLOWED": 405,
    **dict.fromkeys(
        (
            "RESOURCE_IN_TRANSFER",
            "RESOURCE_LOCKED_FOR_TRANSFER",
            "ORDER_NOT_PENDING",
            "ORDER_EXPIRED",
            "INSTANCE_NOT_STOPPED",
            "ENTITY_ACCOUNT_LIMIT",
        ),
        409,
    ),
    "PAYLOAD_TOO_LARGE": 413,
    # 422: VALIDATION_ERROR, IDEMPOTENCY_KEY_REUSED, AGREEMENT_NOT_ACCEPTED "and every other rule code"
    **dict.fromkeys(
        (
            "VALIDATION_ERROR",
            "IDEMPOTENCY_KEY_REUSED",
            "AGREEMENT_NOT_ACCEPTED",
            "SAME_ACCOUNT",
            "ACCOUNT_TYPE_NOT_ALLOWED",
            "ENTERPRISE_ENTITY_MISMATCH",
            "ENTERPRISE_DESTINATION_LIMIT",
            "ENTITY_DESTINATION_LIMIT",
            "PRODUCT_NOT_SUPPORTED",
            "RESOURCE_TOO_NEW",
            "RESOURCE_EXPIRING_SOON",
            "EIP_ATTACHED",
        ),
        422,
    ),
    "TOO_MANY_ATTEMPTS": 429,
    "SERVICE_UNAVAILABLE": 503,
}

# Tables a refused request may write, and why; every other table is business state.
NOT_BUSINESS: dict[str, str] = {
    "order_events": "a refused confirm, cancel or reject is recorded as the order's event (SPEC §4)",
    "security_events": "a failed verification and a lockout are the account's security events (SPEC §3)",
    "verifications": "a right code is used up even when the request is then refused (SPEC §5)",
    "idempotency_keys": "a keyed request's answer is kept, a refusal's too (SPEC §5)",
    "alembic_version": "the schema's version",
}

ANSWER_WITHIN = 15.0  # s: SPEC §5 answers within 10 s (503 at worst); a little more for the client
SETTLE_WITHIN = 10.0  # s: how long the database may take to stop changing before a probe compares
DONE_WITHIN = 30.0  # s: an order's hand-off, a forged run's end, a signal's recorded refusal
SHOWN = 4  # broken promises described in `observed` (all are counted)
STEP_SECONDS = 30  # RFC 6238 default: a code is single-use per account and step, ±1 step accepted
GENERATION_WITHIN = 120.0  # s: one operation's inputs
MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent


# --- what every probe shares ---------------------------------------------------------------------------


@dataclass
class Broken:
    """The promises a probe found broken: every one counted; the first of each kind described (the
    first SHOWN kinds), with how many times that kind was seen."""

    count: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)

    def add(self, what: str, kind: str | None = None) -> None:
        key = kind or what
        self.count += 1
        self.kinds[key] = self.kinds.get(key, 0) + 1
        self.first.setdefault(key, what)

    def check(self, holds: bool, what: str) -> None:
        if not holds:
            self.add(what)

    def described(self) -> str:
        if not self.count:
            return ""
        shown = list(self.first.items())[:SHOWN]
        parts = [what + (f" (x{self.kinds[key]})" if self.kinds[key] > 1 else "") for key, what in shown]
        rest = self.count - sum(self.kinds[key] for key, _ in shown)
        return "; BROKEN: " + "; ".join(parts) + (f" (+{rest} more)" if rest else "")


def admin_auth() -> dict[str, str]:
    """The admin token the API runs with (bench.run's, read at call time)."""
    return bearer(bench_run.ADMIN_TOKEN)


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token is not None else {}


def short(value: Any, limit: int = 160) -> str:
    """`value` for a description: at most `limit` characters."""
    if isinstance(value, str):
        shown = value
    elif isinstance(value, bytes):
        shown = repr(value)
    else:
        shown = json.dumps(value, default=str)
    return shown if len(shown) <= limit else shown[:limit] + "…"


def envelope_problem(response: httpx.Response) -> str | None:
    """What in an answer breaks SPEC §5's contract (None: nothing): every body JSON, every error the
    envelope `{"error": {code, message, details}}` with a SPEC code and that code's status, 429 and 503
    with Retry-After. (A 5xx is counted apart.)"""
    try:
        body = response.json()
    except ValueError:
        return "a body that is not JSON"
    status = response.status_code
    if 200 <= status < 300:
        return None
    if not (400 <= status < 500 or status == 503):
        return f"status {status}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict) or set(body) != {"error"} or set(error) != {"code", "message", "details"}:
        return "not the error envelope"
    code = error["code"]
    if code not in SPEC_STATUS:
        return f"code {code!r} is no SPEC code"
    if SPEC_STATUS[code] != status:
        return f"{code} answered {status}, SPEC says {SPEC_STATUS[code]}"
    if not (isinstance(error["message"], str) and error["message"]) or not isinstance(error["details"], dict):
        return "message or details of the wrong type"
    if status in (429, 503) and "retry-after" not in response.headers:
        return f"{status} without Retry-After"
    return None


def error_code(response: httpx.Response) -> str | None:
    with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
        code = response.json()["error"]["code"]
        return code if isinstance(code, str) else None
    return None


class Codes:
    """TOTP codes of accounts, each step handed out once: a code is single-use per account and step, and
    a code of the step before or after is accepted (SPEC §3)."""

    def __init__(self) -> None:
        self._used: dict[str, set[int]] = {}

    def right(self, account: Account) -> str:
        current = int(time.time()) // STEP_SECONDS
        used = self._used.setdefault(account.id, set())
        for step in (current, current + 1, current - 1):
            if step not in used:
                used.add(step)
                return str(pyotp.TOTP(account.secret).at(step * STEP_SECONDS))
        raise RuntimeError(f"more than 3 codes of {account.id} within one step")

    @staticmethod
    def wrong(account: Account) -> str:
        """A code that is none of the three the window accepts now."""
        totp, now = pyotp.TOTP(account.secret), time.time()
        window = {totp.at(now + s * STEP_SECONDS) for s in (-1, 0, 1)}
        candidate = int(totp.at(now))
        while f"{candidate:06d}" in window:
            candidate = (candidate + 1) % 1_000_000
        return f"{candidate:06d}"


Fingerprint = dict[str, tuple[Any, ...]]


class BusinessState:
    """Fingerprints of the service's business state (every table but NOT_BUSINESS): what was written."""

    def __init__(self, engine: AsyncEngine, tables: Sequence[str]) -> None:
        self._engine = engine
        self.tables = tables
        # Per table: its rows, and the newest and the sum of their xmin (the transaction that wrote each
        # row version): any committed insert, update or delete changes them; a read or a row lock does not.
        self._query = text(
            " UNION ALL ".join(
                f"SELECT '{t}', count(*), coalesce(max(xmin::text::bigint), 0),"
                f' coalesce(sum(xmin::text::bigint), 0) FROM "{t}"'
                for t in tables
            )
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def of(cls, live: Live) -> AsyncIterator[BusinessState]:
        engine = create_async_engine(
            live.database_url,
            pool_size=2,
            max_overflow=2,
            connect_args={"timeout": ANSWER_WITHIN, "command_timeout": ANSWER_WITHIN},
        )
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(
                    text(
                        "SELECT table_name FROM information_schema.tables"
                        " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                    )
                )
                tables = sorted(name for (name,) in rows if name not in NOT_BUSINESS)
            yield cls(engine, tables)
        finally:
            await engine.dispose()

    async def fingerprint(self) -> Fingerprint:
        async with self._engine.connect() as connection:
            rows = await connection.execute(self._query)
            return {name: tuple(versions) for name, *versions in rows}

    async def settled(self) -> Fingerprint:
        """A fingerprint once the database has stopped changing (work in flight: a hand-off)."""
        deadline = time.monotonic() + SETTLE_WITHIN
        last = await self.fingerprint()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            now = await self.fingerprint()
            if now == last:
                return now
            last = now
        raise TimeoutError(f"the database kept changing for {SETTLE_WITHIN:.0f} s")

    async def rows(self, query: str, **params: Any) -> list[tuple[Any, ...]]:
        async with self._engine.connect() as connection:
            return [tuple(r) for r in await connection.execute(text(query), params)]


def changed_tables(before: Fingerprint, after: Fingerprint) -> list[str]:
    return [t for t in sorted(set(before) | set(after)) if before.get(t) != after.get(t)]


# --- provisioning through the admin API ---------------------------------------------------------------


async def ram_user(live: Live, account: Account) -> str:
    made = await live.product.admin(f"/v1/admin/accounts/{account.id}/ram-users", {"name": "chaos-ops"})
    token: str = made["api_token"]
    return token


async def organization(live: Live, management: Account, members: Sequence[Account]) -> str:
    org_id = "org-" + uuid.uuid4().hex[:12]
    body = {
        "id": org_id,
        "management_account_id": management.id,
        "member_account_ids": [m.id for m in members],
    }
    await live.product.admin("/v1/admin/organizations", body)
    return org_id


async def open_orders(
    live: Live, codes: Codes, source: Account, destination: Account, resource_ids: Sequence[str]
) -> list[str]:
    """One initiate of `resource_ids` to `destination`: the pending orders, in request order."""
    body = initiate_body(destination.id, resource_ids, codes.right(source))
    response = await live.api.post(
        "/v1/transfers", json=body, headers=bearer(source.token), timeout=ANSWER_WITHIN
    )
    results = response.json().get("results", []) if response.status_code == 200 else []
    if len(results) != len(resource_ids) or any(r.get("status") != "pending" for r in results):
        raise RuntimeError(f"initiate: {response.status_code} {response.text[:300]}")
    return [r["order_id"] for r in results]


def initiate_body(destination_id: str, resource_ids: Sequence[str], code: str) -> dict[str, Any]:
    return {
        "destination_account_id": destination_id,
        "resource_ids": list(resource_ids),
        "agreement_accepted": True,
        "verification": {"code": code},
    }


async def wait_for_status(live: Live, token: str, order_id: str, statuses: set[str]) -> str:
    """The order's status once it is one of `statuses` (through the API), or the last one seen."""
    status = "unknown"
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DONE_WITHIN):
            while True:
                response = await live.api.get(f"/v1/transfers/{order_id}", headers=bearer(token))
                status = str(response.json().get("status", f"HTTP {response.status_code}"))
                if status in statuses:
                    return status
                await asyncio.sleep(0.1)
    return status


# --- 1. fuzz ---------------------------------------------------------------------------------------------

FUZZ_IN_FLIGHT = 16  # requests at once; the database is fingerprinted between such batches
NEGATIVE_SHARE = 0.75  # 3 in 4 generated inputs are malformed (schemathesis' negative mode)
GENERATION_ROUNDS = 6
VARIANTS = 5  # each generated input is sent 3 times without a valid credential, twice with one


@dataclass(frozen=True)
class Drawn:
    """One generated input of one operation: its request as generated, and with the path's ids replaced
    by ids that exist (so that malformed bodies also meet real orders, resources and accounts)."""

    label: str
    generated: dict[str, Any]
    real_ids: dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One request the fuzz sends: `refusable` ones carry no valid credential for their path."""

    label: str
    kwargs: dict[str, Any]
    auth: str | None
    refusable: bool

    def describe(self) -> str:
        sent = self.kwargs.get("json", self.kwargs.get("content"))
        params = f"?{self.kwargs['params']}" if self.kwargs.get("params") else ""
        who = "a valid token" if not self.refusable else short(self.auth or "no token", 16)
        path = urlsplit(self.kwargs["url"]).path
        return f"{self.kwargs['method']} {path}{params} [{who}] {short(sent, 120)}"


def _draw(operation: Any, mode: Any, examples: int, seed_value: int) -> list[Any]:
    """Up to `examples` cases of `operation` in `mode`, the same ones for the same seed."""
    cases: list[Any] = []
    if examples < 1:
        return cases

    @seed(seed_value)
    @settings(
        max_examples=examples,
        phases=[Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def collect(case: Any) -> None:
        cases.append(case)

    # An operation without inputs has no malformed one (Unsatisfiable), and one example only.
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")
        collect()
    return cases


def _transport(case: Any, base_url: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = case.as_transport_kwargs(base_url=base_url)
    kwargs.pop("cookies", None)
    if "data" in kwargs:  # raw bytes or text: httpx calls that content
        kwargs["content"] = kwargs.pop("data")
    headers = {k: v for k, v in (kwargs.get("headers") or {}).items() if k.lower() != "authorization"}
    kwargs["headers"] = headers
    return kwargs


def generate(
    schema: dict[str, Any], count: int, base_url: str, real_ids: Sequence[str]
) -> Iterator[list[Drawn]]:
    """At least `count` inputs over every operation of `schema` (3 in 4 negative), one operation's at a
    time; the same ones for the same schema."""
    operations = [
        r.ok() for r in schemathesis.openapi.from_dict(schema).get_all_operations() if isinstance(r, Ok)
    ]
    drawn = 0
    for round_ in range(GENERATION_ROUNDS):
        if drawn >= count:
            return
        per_operation = math.ceil((count - drawn) / len(operations))
        for operation in operations:
            label = operation.label
            base_seed = zlib.crc32(label.encode()) + 1000 * round_
            negative = math.ceil(per_operation * NEGATIVE_SHARE)
            cases = _draw(operation, GenerationMode.NEGATIVE, negative, base_seed) + _draw(
                operation, GenerationMode.POSITIVE, per_operation - negative, base_seed + 1
            )
            chunk = []
            for case in cases:
                generated = _transport(case, base_url)
                for i, name in enumerate(case.path_parameters or {}):
                    case.path_parameters[name] = real_ids[(drawn + i) % len(real_ids)]
                chunk.append(Drawn(label, generated, _transport(case, base_url)))
                drawn += 1
            yield chunk


def fuzz_requests(
    drawn: Sequence[Drawn], *, tokens: Sequence[str], admin: str
) -> tuple[list[Request], list[Request]]:
    """Part A (no valid credential: everything on /v1 must be refused 401) and part B (valid tokens)."""
    part_a: list[Request] = []
    part_b: list[Request] = []
    for i, d in enumerate(drawn):
        is_admin = urlsplit(d.generated["url"]).path.startswith("/v1/admin")
        valid = f"Bearer {admin if is_admin else tokens[i % len(tokens)]}"
        invalid = [
            f"Bearer chaos-{secrets.token_urlsafe(12)}",  # an unknown token
            f"Bearer {tokens[0] if is_admin else admin}",  # the wrong kind for the path
            ("Basic " if i % 2 else "") + tokens[0],  # a real token without the bearer scheme
            "Bearer",  # the scheme without a token
        ]
        part_a.append(Request(d.label, d.generated, None, refusable=True))
        part_a.append(Request(d.label, d.generated, invalid[i % 2], refusable=True))
        part_a.append(Request(d.label, d.real_ids, invalid[2 + i % 2], refusable=True))
        part_b.append(Request(d.label, d.generated, valid, refusable=False))
        part_b.append(Request(d.label, d.real_ids, valid, refusable=False))
    return part_a, part_b


@dataclass
class FuzzTally:
    sent: int = 0
    unsendable: int = 0
    server_errors: int = 0
    off_envelope: int = 0
    without_credential: int = 0  # /v1 requests of part A
    unauthenticated: int = 0  # ... answered 401 UNAUTHENTICATED
    part_a_wrote: int = 0  # part A batches after which the business state had changed
    refused_checked: int = 0  # refused answers in batches whose database fingerprint was compared
    refused_unchecked: int = 0  # refused answers in batches that also held a successful write
    writes: int = 0  # 2xx answers to POST / PATCH
    operations: set[str] = field(default_factory=set)


async def _send(live: Live, request: Request) -> httpx.Response | str | None:
    """The answer; a string when none came; None when the client cannot send what was generated."""
    kwargs = dict(request.kwargs)
    kwargs["headers"] = {**kwargs["headers"], **({"Authorization": request.auth} if request.auth else {})}
    try:
        return await live.api.request(**kwargs, timeout=ANSWER_WITHIN)
    except (httpx.LocalProtocolError, httpx.InvalidURL, UnicodeEncodeError, ValueError, TypeError):
        return None
    except httpx.HTTPError as error:
        return f"no answer: {type(error).__name__}"


def _judge(request: Request, answer: httpx.Response | str, tally: FuzzTally, broken: Broken) -> None:
    tally.sent += 1
    if isinstance(answer, str):
        tally.server_errors += 1
        broken.add(f"{request.describe()} -> {answer}", kind=f"{request.label}: {answer}")
        return
    status = answer.status_code
    if status >= 500:
        tally.server_errors += 1
        broken.add(
            f"{request.describe()} -> {status} {short(answer.text)}", kind=f"{request.label}: {status}"
        )
    elif (problem := envelope_problem(answer)) is not None:
        tally.off_envelope += 1
        broken.add(
            f"{request.describe()} -> {status} {problem}: {short(answer.text)}",
            kind=problem,
        )
    if request.refusable and answer.request.url.path.startswith("/v1/"):
        tally.without_credential += 1
        if status == 401 and error_code(answer) == "UNAUTHENTICATED":
            tally.unauthenticated += 1
        else:
            broken.add(
                f"{request.describe()} -> {status} {error_code(answer)} without a valid token (SPEC: 401)",
                kind=f"{request.label}: {status} without a valid token",
            )


async def _fuzz_batches(
    live: Live,
    state: BusinessState,
    requests: Sequence[Request],
    before: Fingerprint,
    tally: FuzzTally,
    broken: Broken,
) -> Fingerprint:
    """`requests`, FUZZ_IN_FLIGHT at a time, the business state fingerprinted around each batch (from
    `before`); answers the last fingerprint."""
    for start in range(0, len(requests), FUZZ_IN_FLIGHT):
        batch = requests[start : start + FUZZ_IN_FLIGHT]
        answers = await asyncio.gather(*(_send(live, r) for r in batch))
        after = await state.fingerprint()
        answered = [(r, a) for r, a in zip(batch, answers, strict=True) if a is not None]
        tally.unsendable += len(batch) - len(answered)
        for request, answer in answered:
            tally.operations.add(request.label)
            _judge(request, answer, tally, broken)
        statuses = [(r, a.status_code) for r, a in answered if isinstance(a, httpx.Response)]
        refused = [r for r, status in statuses if status >= 400]
        wrote = sum(1 for r, status in statuses if status < 300 and r.kwargs["method"].upper() != "GET")
        tally.writes += wrote
        tables = changed_tables(before, after)
        if wrote:
            tally.refused_unchecked += len(refused)
        else:
            tally.refused_checked += len(refused)
            if tables:
                tally.part_a_wrote += batch[0].refusable
                broken.add(
                    f"a batch of refused or read-only requests wrote to {', '.join(tables)}"
                    f" (its first: {batch[0].describe()})",
                    kind=f"refusals wrote to {tables}",
                )
        before = after
    return before


async def fuzz(live: Live, requests: int) -> Row:
    """At least `requests` requests generated by schemathesis over the live API's OpenAPI (3 in 4
    negative), sent over HTTP; each generated input 5 times, in two parts:

    A. three times without a valid credential (no token, an unknown one, the wrong kind — a root token on
       /v1/admin, the admin token elsewhere —, a real token without the bearer scheme): every /v1 request
       must be 401 UNAUTHENTICATED, whatever its body, and write nothing;
    B. twice with a valid token (the admin token on /v1/admin, else a root or RAM user token of accounts
       that hold a pending order and resources), the path's ids as generated, then replaced by real ones:
       successful writes may change the business state.

    Every answer must be under 500 and every body JSON; every 4xx the SPEC envelope with a SPEC code and
    that code's status. The business state (every table but NOT_BUSINESS) is fingerprinted around every
    batch of FUZZ_IN_FLIGHT requests: a batch without a successful write must write nothing, so every
    refused request in such a batch is checked (refusals beside a 2xx write are counted unchecked).
    Inputs are generated in a process of their own, one operation's at a time, while the previous
    operation's are sent.
    """
    started = time.monotonic()
    codes = Codes()
    source, destination = await live.product.account(), await live.product.account()
    held, free = await live.product.resource(source), await live.product.resource(source)
    (order_id,) = await open_orders(live, codes, source, destination, [held])
    ram = await ram_user(live, source)
    schema = (await live.api.get("/openapi.json")).json()
    base_url = str(live.api.base_url).rstrip("/")
    real_ids = [order_id, held, free, source.id, destination.id]
    tokens = [source.token, destination.token, ram]

    tally, broken = FuzzTally(), Broken()
    async with BusinessState.of(live) as state, _generated(schema, requests, base_url, real_ids) as chunks:
        fingerprint = await state.settled()
        async for chunk in chunks:
            part_a, part_b = fuzz_requests(chunk, tokens=tokens, admin=bench_run.ADMIN_TOKEN)
            fingerprint = await _fuzz_batches(live, state, part_a, fingerprint, tally, broken)
            fingerprint = await _fuzz_batches(live, state, part_b, fingerprint, tally, broken)
    took = time.monotonic() - started
    broken.check(tally.sent >= requests, f"only {tally.sent} of {requests} requests could be sent")

    observed = (
        f"{tally.sent:,} answers in {took:.0f} s ({tally.sent / took:.0f}/s) over"
        f" {len(tally.operations)} operations: {tally.server_errors} ≥500 or unanswered,"
        f" {tally.off_envelope} off-envelope;"
        f" {tally.unauthenticated:,} of {tally.without_credential:,} /v1 requests without a valid token"
        f" 401 UNAUTHENTICATED{', nothing written' if not tally.part_a_wrote else ''};"
        f" {tally.refused_checked:,} refused requests checked to write nothing"
        f" ({tally.refused_unchecked:,} beside a 2xx write unchecked; {tally.writes:,} 2xx writes)"
        + (f"; {tally.unsendable} generated requests the client could not send" if tally.unsendable else "")
        + broken.described()
    )
    return Row(
        scenario="6. fuzz (schemathesis)",
        orders=tally.sent,
        expected="no 5xx; every 4xx the SPEC envelope; refused requests write nothing",
        observed=observed,
        lost=broken.count,
    )


@contextlib.asynccontextmanager
async def _generated(
    schema: dict[str, Any], requests: int, base_url: str, real_ids: Sequence[str]
) -> AsyncIterator[AsyncIterator[list[Drawn]]]:
    """The generated inputs, one operation's at a time, from a process of their own (`generation_worker`:
    Hypothesis in a thread here would hold the GIL the sending needs); the process ends with the caller."""
    with tempfile.TemporaryFile() as errors:
        worker = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from chaos.probes import generation_worker; generation_worker()",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=errors,
            cwd=ROOT,
        )
        assert worker.stdin is not None and worker.stdout is not None
        reader = worker.stdout
        worker.stdin.write(pickle.dumps((schema, math.ceil(requests / VARIANTS), base_url, list(real_ids))))
        await worker.stdin.drain()
        worker.stdin.close()

        async def chunks() -> AsyncIterator[list[Drawn]]:
            while True:
                try:
                    async with asyncio.timeout(GENERATION_WITHIN):
                        size = int.from_bytes(await reader.readexactly(8), "big")
                        if not size:
                            return
                        chunk: list[Drawn] = pickle.loads(await reader.readexactly(size))
                except (asyncio.IncompleteReadError, TimeoutError) as error:
                    errors.seek(0)
                    tail = errors.read().decode(errors="replace")[-2000:]
                    raise RuntimeError(f"the generation process failed ({error!r}): {tail}") from None
                yield chunk

        try:
            yield chunks()
        finally:
            if worker.returncode is None:
                worker.kill()
            await worker.wait()


def generation_worker() -> None:
    """The generation process: (schema, count, base_url, real ids) pickled on stdin; each operation's
    inputs pickled on stdout, each behind its length (8 bytes), then a length 0."""
    schema, count, base_url, real_ids = pickle.loads(sys.stdin.buffer.read())
    out = sys.stdout.buffer
    sys.stdout = sys.stderr  # whatever else prints stays out of the stream
    for chunk in generate(schema, count, base_url, real_ids):
        data = pickle.dumps(chunk)
        out.write(len(data).to_bytes(8, "big") + data)
        out.flush()
    out.write((0).to_bytes(8, "big"))
    out.flush()


# --- 2. authorization matrix ------------------------------------------------------------------------------

PRINCIPALS = ("no token", "stranger", "RAM user", "source root", "destination root", "MA root", "admin token")
U = "401 UNAUTHENTICATED"


@dataclass(frozen=True)
class Expect:
    """What SPEC says each principal is answered, as `observed_answer` spells an answer: "STATUS CODE" for an
    error; for a 2xx, "item X" (a batch's first item: its error code or status), "blockers ..." (a dry
    run), "sees"/"blind" (a list that holds the world's order or resource, or not), the status of the
    order or resource answered, "quote", or the bare HTTP status.

    The world of each row: the source (a verified individual) has a pending order to the destination,
    the order's resource `held`, a resource `free` of no order, a RAM user; the MA root manages an
    organization whose member is the source; the stranger is an unrelated account."""

    stranger: str
    ram: str
    source: str
    destination: str
    ma: str
    none: str = U
    admin: str = U

    def of(self, principal: str) -> str:
        return dict(zip(PRINCIPALS, self.cells(), strict=True))[principal]

    def cells(self) -> tuple[str, ...]:
        return (self.none, self.stranger, self.ram, self.source, self.destination, self.ma, self.admin)

    @classmethod
    def everyone(cls, answer: str) -> Expect:
        return cls(answer, answer, answer, answer, answer, answer, answer)

    @classmethod
    def admin_only(cls, answer: str) -> Expect:
        return cls(U, U, U, U, U, admin=answer)


RAM_NO = "403 RAM_USER_NOT_ALLOWED"

# SPEC §3 rules, §5 interfaces and fine points. Where SPEC names no code, the row says whose words it is.
MATRIX: dict[str, Expect] = {
    # Initiate acts for the caller's own account: another's resource is not found (item-level); the
    # destination sending to itself is SAME_ACCOUNT (request-level, before agreement and verification).
    "POST /v1/transfers": Expect(
        stranger="200 item RESOURCE_NOT_FOUND",
        ram=RAM_NO,
        source="200 item pending",
        destination="422 SAME_ACCOUNT",
        ma="200 item RESOURCE_NOT_FOUND",
    ),
    "POST /v1/transfers/validate": Expect(
        stranger="200 blockers RESOURCE_NOT_FOUND",
        ram=RAM_NO,  # RAM users may not initiate: the dry run's request-level rule
        source="200 blockers none",
        destination="422 SAME_ACCOUNT",
        ma="200 blockers RESOURCE_NOT_FOUND",
    ),
    # Lists: the caller's own orders (its RAM users read them); the MA's own list holds no member's.
    "GET /v1/transfers": Expect(
        stranger="200 blind", ram="200 sees", source="200 sees", destination="200 sees", ma="200 blind"
    ),
    "GET /v1/transfers/{order_id}": Expect(
        stranger="404 ORDER_NOT_FOUND",
        ram="200 pending",
        source="200 pending",
        destination="200 pending",
        ma="200 pending",  # the MA root may read a member's orders
    ),
    # Confirm, cancel, reject: RAM users first; then per order ORDER_NOT_FOUND, READ_ONLY_ACCESS,
    # NOT_DESTINATION / NOT_SOURCE. Every caller sends its own right code (the verification precedes).
    "POST /v1/transfers/{order_id}/confirm": Expect(
        stranger="404 ORDER_NOT_FOUND",
        ram=RAM_NO,
        source="403 NOT_DESTINATION",
        destination="200 transferring",
        ma="403 READ_ONLY_ACCESS",
    ),
    "POST /v1/transfers/{order_id}/cancel": Expect(
        stranger="404 ORDER_NOT_FOUND",
        ram=RAM_NO,
        source="200 cancelled",
        destination="403 NOT_SOURCE",
        ma="403 READ_ONLY_ACCESS",
    ),
    "POST /v1/transfers/{order_id}/reject": Expect(
        stranger="404 ORDER_NOT_FOUND",
        ram=RAM_NO,
        source="403 NOT_DESTINATION",
        destination="200 rejected",
        ma="403 READ_ONLY_ACCESS",
    ),
    "POST /v1/transfers/batch/confirm": Expect(
        stranger="200 item ORDER_NOT_FOUND",
        ram=RAM_NO,
        source="200 item NOT_DESTINATION",
        destination="200 item transferring",
        ma="200 item READ_ONLY_ACCESS",
    ),
    "POST /v1/transfers/batch/cancel": Expect(
        stranger="200 item ORDER_NOT_FOUND",
        ram=RAM_NO,
        source="200 item cancelled",
        destination="200 item NOT_SOURCE",
        ma="200 item READ_ONLY_ACCESS",
    ),
    "POST /v1/transfers/batch/reject": Expect(
        stranger="200 item ORDER_NOT_FOUND",
        ram=RAM_NO,
        source="200 item NOT_DESTINATION",
        destination="200 item rejected",
        ma="200 item READ_ONLY_ACCESS",
    ),
    # The organization view is the MA root's; anyone else manages nothing and sees nothing there.
    "GET /v1/organization/transfers": Expect(
        stranger="200 blind", ram="200 blind", source="200 blind", destination="200 blind", ma="200 sees"
    ),
    "GET /v1/organization/resources": Expect(
        stranger="200 blind", ram="200 blind", source="200 blind", destination="200 blind", ma="200 sees"
    ),
    # Resources: the owner's principals read and operate; the MA root reads (READ_ONLY_ACCESS on every
    # action); anyone else, the destination of a pending order included, learns nothing.
    "GET /v1/resources": Expect(
        stranger="200 blind", ram="200 sees", source="200 sees", destination="200 blind", ma="200 blind"
    ),
    "GET /v1/resources/{resource_id}": Expect(
        stranger="404 RESOURCE_NOT_FOUND",
        ram="200 stopped",
        source="200 stopped",
        destination="404 RESOURCE_NOT_FOUND",
        ma="200 stopped",
    ),
    "GET /v1/resources/{resource_id}/refund-quote": Expect(
        stranger="404 RESOURCE_NOT_FOUND",
        ram="200 quote",
        source="200 quote",
        destination="404 RESOURCE_NOT_FOUND",
        ma="200 quote",  # refund quotes included in what the MA root reads
    ),
    # `start` of a stopped instance of no order: RAM users are refused only initiate, confirm, cancel, reject.
    "POST /v1/resources/{resource_id}/actions/{action}": Expect(
        stranger="404 RESOURCE_NOT_FOUND",
        ram="200 running",
        source="200 running",
        destination="404 RESOURCE_NOT_FOUND",
        ma="403 READ_ONLY_ACCESS",
    ),
    # The account root only (SPEC names no code for a RAM user: RAM_USER_NOT_ALLOWED, as
    # tests/api/test_trust_boundary.py asserts); the source failed a verification, nobody else did.
    "GET /v1/security-events": Expect(
        stranger="200 blind", ram=RAM_NO, source="200 sees", destination="200 blind", ma="200 blind"
    ),
    # Provisioning: a token that is not the admin token on /v1/admin/* is UNAUTHENTICATED.
    "POST /v1/admin/accounts": Expect.admin_only("201"),
    "PATCH /v1/admin/accounts/{account_id}": Expect.admin_only("200"),
    "POST /v1/admin/accounts/{account_id}/ram-users": Expect.admin_only("201"),
    "POST /v1/admin/organizations": Expect.admin_only("201"),
    "POST /v1/admin/resources": Expect.admin_only("201 stopped"),
    "POST /v1/admin/resources/{resource_id}/auto-renew": Expect.admin_only("200"),
    "GET /healthz": Expect.everyone("200 ok"),
    "GET /readyz": Expect.everyone("200 ready"),
}


@dataclass
class World:
    """The fixtures of one row of the matrix (fresh accounts: no row sees another's)."""

    live: Live
    codes: Codes
    source: Account
    destination: Account
    stranger: Account
    ma: Account
    ram_token: str
    order: str  # pending, source → destination, holding `held`
    spare_order: str  # pending too: the one an allowed confirm, cancel or reject of the row decides
    held: str
    free: str
    _subscription: str | None = None

    @classmethod
    async def build(cls, live: Live, codes: Codes) -> World:
        product = live.product
        source, destination, stranger, ma = await asyncio.gather(*(product.account() for _ in range(4)))
        held, spare, free = await asyncio.gather(*(product.resource(source) for _ in range(3)))
        ram_token, _, (order, spare_order) = await asyncio.gather(
            ram_user(live, source),
            organization(live, ma, [source]),
            open_orders(live, codes, source, destination, [held, spare]),
        )
        return cls(live, codes, source, destination, stranger, ma, ram_token, order, spare_order, held, free)

    def token(self, principal: str) -> str | None:
        return {
            "stranger": self.stranger.token,
            "RAM user": self.ram_token,
            "source root": self.source.token,
            "destination root": self.destination.token,
            "MA root": self.ma.token,
            "admin token": bench_run.ADMIN_TOKEN,
        }.get(principal)

    def code(self, principal: str) -> str:
        """The caller's own right code; a wrong one for a RAM user (refused before any verification)."""
        account = {
            "stranger": self.stranger,
            "source root": self.source,
            "destination root": self.destination,
            "MA root": self.ma,
        }.get(principal)
        if account is not None:
            return self.codes.right(account)
        return Codes.wrong(self.source)

    async def fresh_resource(self) -> str:
        return await self.live.product.resource(self.source)

    async def subscription(self) -> str:
        if self._subscription is None:
            self._subscription = await self.live.product.resource(self.source, subscription=True)
        return self._subscription


@dataclass(frozen=True)
class Call:
    """One cell's request; `sees` is the id a list answer is searched for ("*": any item)."""

    method: str
    path: str
    body: dict[str, Any] | None = None
    sees: str | None = None
    completes: str | None = None  # an order the call confirms: waited for until completed


Build = Callable[[World, str, bool], Awaitable[Call]]


def _order_call(action: str) -> Build:
    async def build(w: World, principal: str, fresh: bool) -> Call:
        order = w.spare_order if fresh else w.order
        body: dict[str, Any] | None = None
        if action == "confirm":
            body = {"agreement_accepted": True, "verification": {"code": w.code(principal)}}
        elif action == "reject":
            body = {"reason": "chaos"}
        completes = order if fresh and action == "confirm" else None
        return Call("POST", f"/v1/transfers/{order}/{action}", body, completes=completes)

    return build


def _batch_call(action: str) -> Build:
    async def build(w: World, principal: str, fresh: bool) -> Call:
        order = w.spare_order if fresh else w.order
        body: dict[str, Any] = {"order_ids": [order]}
        if action == "confirm":
            body |= {"agreement_accepted": True, "verification": {"code": w.code(principal)}}
        completes = order if fresh and action == "confirm" else None
        return Call("POST", f"/v1/transfers/batch/{action}", body, completes=completes)

    return build


async def _initiate(w: World, principal: str, fresh: bool) -> Call:
    resource = await w.fresh_resource() if fresh else w.free
    return Call("POST", "/v1/transfers", initiate_body(w.destination.id, [resource], w.code(principal)))


async def _validate(w: World, principal: str, fresh: bool) -> Call:
    return Call(
        "POST",
        "/v1/transfers/validate",
        {"destination_account_id": w.destination.id, "resource_ids": [w.free]},
    )


async def _act(w: World, principal: str, fresh: bool) -> Call:
    target = await w.fresh_resource() if fresh else (w.held if principal == "destination root" else w.free)
    return Call("POST", f"/v1/resources/{target}/actions/start")


async def _new_account(w: World, principal: str, fresh: bool) -> Call:
    account_id = "z-" + uuid.uuid4().hex[:16]
    return Call("POST", "/v1/admin/accounts", {"id": account_id, "name": account_id, "kind": "individual"})


async def _new_resource(w: World, principal: str, fresh: bool) -> Call:
    body = {
        "id": "i-z-" + uuid.uuid4().hex[:12],
        "product": "ecs",
        "billing": "pay_as_you_go",
        "owner_account_id": w.stranger.id,
        "monthly_price": "10.00",
        "status": "stopped",
    }
    return Call("POST", "/v1/admin/resources", body)


async def _new_organization(w: World, principal: str, fresh: bool) -> Call:
    body = {
        "id": "org-z-" + uuid.uuid4().hex[:12],
        "management_account_id": w.stranger.id,
        "member_account_ids": [w.destination.id],
    }
    return Call("POST", "/v1/admin/organizations", body)


async def _auto_renew(w: World, principal: str, fresh: bool) -> Call:
    return Call("POST", f"/v1/admin/resources/{await w.subscription()}/auto-renew")


def _get(path: Callable[[World], str], sees: Callable[[World], str | None] = lambda w: None) -> Build:
    async def build(w: World, principal: str, fresh: bool) -> Call:
        return Call("GET", path(w), sees=sees(w))

    return build


def _fixed(method: str, path: Callable[[World], str], body: dict[str, Any] | None = None) -> Build:
    async def build(w: World, principal: str, fresh: bool) -> Call:
        return Call(method, path(w), body)

    return build


# How each row's request is made. `writes`: an allowed cell of the row changes the business state.
CALLS: dict[str, tuple[Build, bool]] = {
    "POST /v1/transfers": (_initiate, True),
    "POST /v1/transfers/validate": (_validate, False),
    "GET /v1/transfers": (_get(lambda w: "/v1/transfers", lambda w: w.order), False),
    "GET /v1/transfers/{order_id}": (_get(lambda w: f"/v1/transfers/{w.order}"), False),
    "POST /v1/transfers/{order_id}/confirm": (_order_call("confirm"), True),
    "POST /v1/transfers/{order_id}/cancel": (_order_call("cancel"), True),
    "POST /v1/transfers/{order_id}/reject": (_order_call("reject"), True),
    "POST /v1/transfers/batch/confirm": (_batch_call("confirm"), True),
    "POST /v1/transfers/batch/cancel": (_batch_call("cancel"), True),
    "POST /v1/transfers/batch/reject": (_batch_call("reject"), True),
    "GET /v1/organization/transfers": (
        _get(lambda w: "/v1/organization/transfers", lambda w: w.order),
        False,
    ),
    "GET /v1/organization/resources": (_get(lambda w: "/v1/organization/resources", lambda w: w.held), False),
    "GET /v1/resources": (_get(lambda w: "/v1/resources", lambda w: w.held), False),
    "GET /v1/resources/{resource_id}": (_get(lambda w: f"/v1/resources/{w.held}"), False),
    "GET /v1/resources/{resource_id}/refund-quote": (
        _get(lambda w: f"/v1/resources/{w.held}/refund-quote"),
        False,
    ),
    "POST /v1/resources/{resource_id}/actions/{action}": (_act, True),
    "GET /v1/security-events": (_get(lambda w: "/v1/security-events", lambda w: "*"), False),
    "POST /v1/admin/accounts": (_new_account, True),
    "PATCH /v1/admin/accounts/{account_id}": (
        _fixed("PATCH", lambda w: f"/v1/admin/accounts/{w.stranger.id}", {"frozen": True}),
        True,
    ),
    "POST /v1/admin/accounts/{account_id}/ram-users": (
        _fixed("POST", lambda w: f"/v1/admin/accounts/{w.stranger.id}/ram-users", {"name": "chaos"}),
        True,
    ),
    "POST /v1/admin/organizations": (_new_organization, True),
    "POST /v1/admin/resources": (_new_resource, True),
    "POST /v1/admin/resources/{resource_id}/auto-renew": (_auto_renew, True),
    "GET /healthz": (_get(lambda w: "/healthz"), False),
    "GET /readyz": (_get(lambda w: "/readyz"), False),
}


def observed_answer(response: httpx.Response, sees: str | None) -> str:
    """An answer in Expect's words."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        return f"{status} (not JSON)"
    if status >= 400:
        return f"{status} {error_code(response) or '(not the envelope)'}"
    if not isinstance(body, dict):
        return str(status)
    if isinstance(results := body.get("results"), list) and results:
        first = results[0]
        if "blockers" in first:
            return f"{status} blockers " + (" ".join(b["code"] for b in first["blockers"]) or "none")
        if "error" in first:
            return f"{status} item {first['error']['code']}"
        return f"{status} item {first.get('status')}"
    if "total_refundable" in body:
        return f"{status} quote"
    if isinstance(items := body.get("items"), list):
        ids = {item.get("order_id") or item.get("id") for item in items if isinstance(item, dict)}
        return f"{status} {'sees' if (sees in ids or (sees == '*' and items)) else 'blind'}"
    if isinstance(body.get("status"), str):
        return f"{status} {body['status']}"
    return str(status)


def changes_allowed(expected: str) -> bool:
    """A 2xx that is not an item's refusal: the cell acts (a dry run and reads act on nothing)."""
    parts = expected.split()
    if not parts[0].startswith("2"):
        return False
    return not (len(parts) == 3 and parts[1] == "item" and parts[2].isupper())


async def _with_a_security_event(live: Live, w: World) -> None:
    """The source fails one verification (its security events then hold it)."""
    body = initiate_body(w.destination.id, [w.free], Codes.wrong(w.source))
    response = await live.api.post("/v1/transfers", json=body, headers=bearer(w.source.token))
    if error_code(response) != "VERIFICATION_FAILED":
        raise RuntimeError(f"a wrong code was answered {response.status_code} {response.text[:200]}")


async def authorization(live: Live) -> Row:
    """Every operation of the live OpenAPI by every kind of principal (no token, a stranger, a RAM user of
    the source, the source root, the destination root, the root of the source's management account, the
    admin token), each cell answered as MATRIX says (written from SPEC, not from the app's answers).

    Each row gets a world of fresh accounts (World); a cell SPEC allows to act gets fixtures of its own
    (a fresh resource, the row's spare order; a confirm is waited for until completed). Every other cell
    (refusals, item refusals, dry runs and reads) must leave the business state as it was: the database
    is fingerprinted (every table but NOT_BUSINESS) once settled before the cell and right after it.
    An operation of the OpenAPI without a row, or a row without an operation, is a broken promise too.
    """
    started = time.monotonic()
    broken, codes, cells = Broken(), Codes(), 0
    schema = (await live.api.get("/openapi.json")).json()
    offered = {f"{m.upper()} {p}" for p, ops in schema["paths"].items() for m in ops if m != "parameters"}
    for missing in sorted(offered - set(MATRIX)):
        broken.add(f"{missing}: an operation of the API that the matrix lacks")
    for gone in sorted(set(MATRIX) - offered):
        broken.add(f"{gone}: in the matrix, not in the API's OpenAPI")

    async with BusinessState.of(live) as state:
        for operation in (op for op in MATRIX if op in offered):
            expect, (build, writes) = MATRIX[operation], CALLS[operation]
            world = await World.build(live, codes)
            if operation == "GET /v1/security-events":
                await _with_a_security_event(live, world)
            for principal in PRINCIPALS:
                expected = expect.of(principal)
                acts = writes and changes_allowed(expected)
                call = await build(world, principal, acts)
                before = await state.settled()
                response = await live.api.request(
                    call.method,
                    call.path,
                    json=call.body,
                    headers=bearer(world.token(principal)),
                    timeout=ANSWER_WITHIN,
                )
                after = await state.fingerprint()
                cells += 1
                seen = observed_answer(response, call.sees)
                where = f"{operation} as {principal}"
                broken.check(seen == expected, f"{where}: {seen}, SPEC says {expected}")
                tables = changed_tables(before, after)
                if not acts and tables:
                    broken.add(f"{where} ({seen}) changed {', '.join(tables)}")
                if acts and seen == expected and not tables:
                    broken.add(f"{where}: answered {seen} but changed nothing in the database")
                if acts and call.completes is not None and seen == expected:
                    final = await wait_for_status(
                        live, world.source.token, call.completes, {"completed", "failed"}
                    )
                    broken.check(final == "completed", f"{where}: the confirmed order ended {final}")
    took = time.monotonic() - started
    observed = (
        f"{cells} cells ({len(MATRIX)} operations by {len(PRINCIPALS)} principals) in {took:.0f} s: "
        f"{cells - broken.count if broken.count <= cells else 0} as SPEC says"
        + ("; refused cells changed nothing" if not broken.count else "")
        + broken.described()
    )
    return Row(
        scenario="7. authorization matrix",
        orders=cells,
        expected="every cell answered as SPEC says; refused cells change nothing",
        observed=observed,
        lost=broken.count,
    )


# --- 3. abuse --------------------------------------------------------------------------------------------


@dataclass
class Attempts:
    made: int = 0


async def _totp_guessing(live: Live, codes: Codes, broken: Broken, attempts: Attempts) -> str:
    """SPEC §3: 5 wrong codes lock the account's verification for 15 minutes; a right code is then
    TOO_MANY_ATTEMPTS (with Retry-After and details.retry_after_s), at initiate and at confirm; the
    failures and the lockout are the account's security events."""
    guesser, destination, other = await asyncio.gather(*(live.product.account() for _ in range(3)))
    resource, others = await asyncio.gather(live.product.resource(guesser), live.product.resource(other))
    # An order to the guesser, opened before the lockout: its confirm needs the guesser's verification.
    (incoming,) = await open_orders(live, codes, other, guesser, [others])

    async def initiate(code: str) -> httpx.Response:
        attempts.made += 1
        body = initiate_body(destination.id, [resource], code)
        return await live.api.post(
            "/v1/transfers", json=body, headers=bearer(guesser.token), timeout=ANSWER_WITHIN
        )

    for n in range(1, 6):
        answer = await initiate(Codes.wrong(guesser))
        broken.check(
            (answer.status_code, error_code(answer)) == (403, "VERIFICATION_FAILED"),
            f"wrong code #{n}: {answer.status_code} {short(answer.text)} (SPEC: 403 VERIFICATION_FAILED)",
        )
    locked = await initiate(codes.right(guesser))
    broken.check(
        (locked.status_code, error_code(locked)) == (429, "TOO_MANY_ATTEMPTS"),
        f"a right code after 5 wrong ones: {locked.status_code} {short(locked.text)}"
        " (SPEC: 429 TOO_MANY_ATTEMPTS)",
    )
    retry_after = (
        locked.json().get("error", {}).get("details", {}).get("retry_after_s")
        if locked.status_code == 429
        else None
    )
    broken.check(
        isinstance(retry_after, int) and 0 < retry_after <= 15 * 60,
        f"details.retry_after_s is {retry_after!r} (SPEC: the seconds left of 15 minutes)",
    )
    broken.check(
        locked.headers.get("retry-after") == str(retry_after),
        f"Retry-After {locked.headers.get('retry-after')!r}, details.retry_after_s {retry_after!r}",
    )
    attempts.made += 1
    confirm = await live.api.post(
        f"/v1/transfers/{incoming}/confirm",
        json={"agreement_accepted": True, "verification": {"code": codes.right(guesser)}},
        headers=bearer(guesser.token),
        timeout=ANSWER_WITHIN,
    )
    broken.check(
        (confirm.status_code, error_code(confirm)) == (429, "TOO_MANY_ATTEMPTS"),
        f"the locked account's confirm with a right code: {confirm.status_code} {short(confirm.text)}",
    )
    events = (
        (await live.api.get("/v1/security-events", headers=bearer(guesser.token))).json().get("items", [])
    )
    kinds = [e.get("kind") for e in events]
    broken.check(
        kinds == ["verification_locked"] + ["verification_failed"] * 5,
        f"security events {kinds} (SPEC: 5 verification_failed, then verification_locked)",
    )
    broken.check(
        all({"at", "kind", "principal", "details"} <= set(e) for e in events)
        and all(e.get("principal", {}).get("account_id") == guesser.id for e in events),
        f"security events not {{at, kind, principal, details}} of the guesser: {short(events)}",
    )
    mine = (
        (await live.api.get("/v1/transfers?role=source", headers=bearer(guesser.token))).json().get("items")
    )
    broken.check(mine == [], f"the refused initiates opened orders: {short(mine)}")
    status = await wait_for_status(live, other.token, incoming, {"pending"})
    broken.check(status == "pending", f"the order the locked account could not confirm is {status}")
    return (
        f"TOTP: 5 wrong codes, then {locked.status_code} {error_code(locked)} (Retry-After {retry_after});"
        f" {len(kinds)} security events"
    )


def _forged_principal(account: Account) -> Principal:
    return Principal(kind=PrincipalKind.ROOT, account_id=account.id)


_M = TypeVar("_M", bound=AttestedMessage)


def _with_attestation_of(message: _M, genuine: AttestedMessage) -> _M:
    """`message` carrying the service's real attestation of another message (replayed)."""
    return message.model_copy(update={"attestation": genuine.attestation})


async def _history_inputs(live: Live, order_id: str) -> tuple[TransferInput, ConfirmRequest | None]:
    """The run's start input and its accepted confirm update's request, as the service signed them."""
    history = await live.temporal.get_workflow_handle(order_id).fetch_history(
        rpc_timeout=timedelta(seconds=8)
    )
    converter = live.temporal.data_converter
    started = history.events[0].workflow_execution_started_event_attributes
    (start,) = await converter.decode(started.input.payloads, [TransferInput])
    confirm: ConfirmRequest | None = None
    for event in history.events:
        if event.HasField("workflow_execution_update_accepted_event_attributes"):
            request = event.workflow_execution_update_accepted_event_attributes.accepted_request.input
            if request.name == "confirm":
                (confirm,) = await converter.decode(request.args.payloads, [ConfirmRequest])
    return start, confirm


async def _forged_start(live: Live, workflow_id: str, transfer: TransferInput) -> OrderState | str:
    """Starts a ResourceTransfer run directly; its state once it opened or refused (or why not)."""
    try:
        handle: WorkflowHandle[Any, Any] = await live.temporal.start_workflow(
            WORKFLOW_TYPE,
            transfer,
            id=workflow_id,
            task_queue=live.task_queue,
            rpc_timeout=timedelta(seconds=8),
        )
        async with asyncio.timeout(DONE_WITHIN):
            while True:
                state: OrderState = await handle.query(
                    "status", result_type=OrderState, rpc_timeout=timedelta(seconds=8)
                )
                if state.status is not None or state.refusal is not None:
                    return state
                await asyncio.sleep(0.1)
    except (RPCError, TimeoutError) as error:
        return f"{type(error).__name__}: {error}"


async def _forged_update(live: Live, order_id: str, name: str, request: AttestedMessage) -> str:
    """The code a forged update is refused with, or what happened instead."""
    handle = live.temporal.get_workflow_handle(order_id)
    try:
        async with asyncio.timeout(ANSWER_WITHIN):
            state = await handle.execute_update(
                name, request, result_type=OrderState, rpc_timeout=timedelta(seconds=8)
            )
    except WorkflowUpdateFailedError as error:
        return from_update(error).code.value
    except (RPCError, TimeoutError) as error:
        return f"no answer ({type(error).__name__})"
    return f"accepted: {state.status}"


async def _forged_messages(
    live: Live, state: BusinessState, codes: Codes, broken: Broken, attempts: Attempts
) -> str:
    """SPEC §5 trust boundary: a client that reaches Temporal directly acts on nothing. Forged starts,
    signals and updates: without an attestation, with one signed by another key, and with the service's
    real attestation of another message (read from another order's history) replayed."""
    source, destination = await live.product.account(), await live.product.account()
    target_resource, other_resource, spare = await asyncio.gather(
        *(live.product.resource(source) for _ in range(3))
    )
    target, other = await open_orders(live, codes, source, destination, [target_resource, other_resource])
    real_start, _ = await _history_inputs(live, other)
    wrong_key = secrets.token_bytes(32)
    now = datetime.now(UTC)

    # Forged starts: no order opened, the resource not locked, the run refused UNAUTHENTICATED.
    def fresh_input(order_id: str) -> TransferInput:
        return TransferInput(
            order_id=order_id,
            resource_id=spare,
            source_account_id=source.id,
            destination_account_id=destination.id,
            agreement_version=real_start.agreement_version,
        )

    starts: dict[str, TransferInput] = {}
    for how in ("without an attestation", "signed with another key", "with another order's real attestation"):
        order_id = "to-" + uuid.uuid4().hex
        bare = fresh_input(order_id)
        starts[how] = {
            "without an attestation": bare,
            "signed with another key": sign(
                wrong_key, bare, _forged_principal(source), Action.INITIATE, order_id, at=now
            ),
            "with another order's real attestation": _with_attestation_of(bare, real_start),
        }[how]
    for how, transfer in starts.items():
        attempts.made += 1
        answer = await _forged_start(live, transfer.order_id, transfer)
        refused = answer.refusal.code.value if isinstance(answer, OrderState) and answer.refusal else None
        broken.check(
            refused == "UNAUTHENTICATED" and isinstance(answer, OrderState) and answer.status is None,
            f"a start {how}: {short(answer if isinstance(answer, str) else answer.model_dump(mode='json'))}",
        )
        opened = await state.rows("SELECT status FROM orders WHERE order_id = :id", id=transfer.order_id)
        broken.check(not opened, f"a start {how} opened order {transfer.order_id}: {opened}")
    lock = await state.rows("SELECT locked_by_order_id FROM resources WHERE id = :id", id=spare)
    broken.check(lock == [(None,)], f"forged starts locked {spare}: {lock}")

    # The service's own start of `other`, replayed verbatim under another workflow id: no second run.
    replay_id = "to-" + uuid.uuid4().hex
    attempts.made += 1
    other_rows = await _order_rows(state, other, other_resource)
    replayed = await _forged_start(live, replay_id, real_start)
    if not (isinstance(replayed, OrderState) and replayed.refusal is not None):
        shown = replayed if isinstance(replayed, str) else f"{replayed.status} order {replayed.order_id}"
        broken.add(
            f"the real start of {other} replayed as workflow {replay_id}: a second run took it ({shown})"
        )
    rewritten = sorted(set(await _order_rows(state, other, other_resource)) - set(other_rows))
    broken.check(not rewritten, f"and it wrote to order {other}: {short(rewritten, 200)}")
    with contextlib.suppress(RPCError):
        await live.temporal.get_workflow_handle(replay_id).terminate(
            "chaos: a forged run", rpc_timeout=timedelta(seconds=8)
        )

    # A real confirm attestation of the destination, for `other`: the destination confirms it.
    confirmed = await live.api.post(
        f"/v1/transfers/{other}/confirm",
        json={"agreement_accepted": True, "verification": {"code": codes.right(destination)}},
        headers=bearer(destination.token),
    )
    if confirmed.status_code != 200:
        raise RuntimeError(f"confirm of {other}: {confirmed.status_code} {confirmed.text[:200]}")
    _, real_confirm = await _history_inputs(live, other)
    if real_confirm is None:
        raise RuntimeError(f"no confirm update in the history of {other}")

    def forged(action: str, how: str) -> AttestedMessage:
        bare: AttestedMessage = {
            "confirm": ConfirmRequest(agreement_accepted=True),
            "cancel": CancelRequest(),
            "reject": RejectRequest(reason="forged"),
        }[action]
        claimed = source if action == "cancel" else destination
        if how == "without an attestation":
            return bare
        if how == "signed with another key":
            return sign(
                wrong_key, bare, _forged_principal(claimed), Action(action), target, at=datetime.now(UTC)
            )
        # The real attestation of another order (and, for cancel and reject, of another action).
        return _with_attestation_of(bare, real_start if action == "cancel" else real_confirm)

    hows = ("without an attestation", "signed with another key", "with another order's real attestation")
    before_rows = await _order_rows(state, target, target_resource)

    # Forged signals: each recorded as a refused event with no actor, UNAUTHENTICATED; nothing else.
    handle = live.temporal.get_workflow_handle(target)
    signals = [(action, how) for action in ("confirm", "cancel", "reject") for how in hows]
    for action, how in signals:
        attempts.made += 1
        await handle.signal(action, forged(action, how), rpc_timeout=timedelta(seconds=8))
    events = await _events_once(state, target, count=1 + len(signals))
    recorded = sorted((a, actor, code) for a, outcome, actor, code in events if outcome == "refused")
    expected = sorted((action, None, "UNAUTHENTICATED") for action, _ in signals)
    broken.check(
        recorded == expected, f"forged signals recorded as {recorded} (SPEC: refused, no actor, each)"
    )

    # Forged updates: each refused UNAUTHENTICATED.
    for action, how in signals:
        attempts.made += 1
        answer = await _forged_update(live, target, action, forged(action, how))
        broken.check(answer == "UNAUTHENTICATED", f"a {action} update {how}: {answer}")

    after_rows = await _order_rows(state, target, target_resource)
    broken.check(
        after_rows == before_rows, f"forged messages changed order {target}: {before_rows} -> {after_rows}"
    )
    events = await state.rows(
        "SELECT action, outcome, actor_account_id, code FROM order_events WHERE order_id = :id", id=target
    )
    acted = [e for e in events if e[1] != "refused" and e[0] != "initiate"]
    broken.check(not acted, f"forged messages acted on {target}: {acted}")
    broken.check(
        all(actor is None for _, outcome, actor, _ in events if outcome == "refused"),
        f"a forged message recorded with an actor: {events}",
    )
    status = await wait_for_status(live, source.token, target, {"pending"})
    broken.check(status == "pending", f"order {target} is {status} after forged messages (SPEC: pending)")
    # The parties still decide: the source cancels.
    cancelled = await live.api.post(f"/v1/transfers/{target}/cancel", headers=bearer(source.token))
    broken.check(
        cancelled.status_code == 200 and cancelled.json().get("status") == "cancelled",
        f"the source's own cancel after forged messages: {cancelled.status_code} {short(cancelled.text)}",
    )
    return f"Temporal: {len(starts) + 1} forged starts, {len(signals)} signals, {len(signals)} updates"


async def _order_rows(state: BusinessState, order_id: str, resource_id: str) -> list[str]:
    """The order, its steps, its hand-off and its resource, as the database has them."""
    rows = [
        *await state.rows("SELECT 'order ' || o::text FROM orders o WHERE order_id = :id", id=order_id),
        *await state.rows(
            "SELECT 'step ' || name || ': ' || status || ', attempts ' || attempts FROM order_steps"
            " WHERE order_id = :id ORDER BY name",
            id=order_id,
        ),
        *await state.rows(
            "SELECT 'handoff ' || b::text FROM billing_handoffs b WHERE order_id = :id", id=order_id
        ),
        *await state.rows("SELECT 'resource ' || r::text FROM resources r WHERE id = :id", id=resource_id),
    ]
    return [str(row) for (row,) in rows]


async def _events_once(state: BusinessState, order_id: str, *, count: int) -> list[tuple[Any, ...]]:
    """The order's events once it has `count` (signals are not answered: their effect is polled)."""
    query = (
        "SELECT action, outcome, actor_account_id, code FROM order_events WHERE order_id = :id ORDER BY id"
    )
    events: list[tuple[Any, ...]] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(DONE_WITHIN):
            while True:
                events = await state.rows(query, id=order_id)
                if len(events) >= count:
                    break
                await asyncio.sleep(0.1)
    return events


async def _oversized_bodies(live: Live, codes: Codes, broken: Broken, attempts: Attempts) -> str:
    """SPEC §5: a body over 1 MiB is 413 PAYLOAD_TOO_LARGE, refused before it is read whole. The body is
    a valid initiate padded with JSON whitespace to 2 MB: read, it would open an order and use up its
    code; so after both refusals the same code must still open the order."""
    source, destination = await live.product.account(), await live.product.account()
    resource = await live.product.resource(source)
    code = codes.right(source)
    body = json.dumps(initiate_body(destination.id, [resource], code)).encode()
    padded = body[:-1] + b" " * (2 * MiB) + b"}"
    headers = {**bearer(source.token), "Content-Type": "application/json"}

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(padded), 64 * 1024):
            yield padded[start : start + 64 * 1024]

    answers: list[str] = []
    for how, content in (("declared", padded), ("chunked", None)):
        attempts.made += 1
        try:
            answer = await live.api.post(
                "/v1/transfers",
                content=content if content is not None else chunks(),
                headers=headers,
                timeout=ANSWER_WITHIN,
            )
            seen = f"{answer.status_code} {error_code(answer)}"
        except httpx.HTTPError as error:
            seen = f"no answer ({type(error).__name__})"
        answers.append(f"{how} {seen}")
        broken.check(
            seen == "413 PAYLOAD_TOO_LARGE",
            f"a 2 MB body ({how} length): {seen} (SPEC: 413 PAYLOAD_TOO_LARGE)",
        )
    opened = await live.api.post("/v1/transfers", content=body, headers=headers, timeout=ANSWER_WITHIN)
    results = opened.json().get("results", [{}]) if opened.status_code == 200 else [{}]
    broken.check(
        results[0].get("status") == "pending",
        f"after the 413s, the same code and body: {opened.status_code} {short(opened.text)}"
        " (were the refused bodies read?)",
    )
    return "2 MB bodies: " + ", ".join(answers)


async def abuse(live: Live) -> Row:
    """(a) TOTP guessing locks the account's verification (SPEC §3); (b) forged workflow starts, signals
    and updates sent through Temporal directly act on nothing (SPEC §5 trust boundary): no order opened,
    the target order pending with its resource, each forged signal a refused event with no actor; (c) a
    2 MB body is 413 PAYLOAD_TOO_LARGE, with a declared length and chunked, and is not read."""
    started = time.monotonic()
    broken, codes, attempts = Broken(), Codes(), Attempts()
    async with BusinessState.of(live) as state:
        parts = [
            await _totp_guessing(live, codes, broken, attempts),
            await _forged_messages(live, state, codes, broken, attempts),
            await _oversized_bodies(live, codes, broken, attempts),
        ]
    took = time.monotonic() - started
    return Row(
        scenario="8. abuse",
        orders=attempts.made,
        expected="lockout after 5 wrong codes; forged Temporal messages act on nothing; 2 MB bodies 413",
        observed=f"{attempts.made} attempts in {took:.0f} s; " + "; ".join(parts) + broken.described(),
        lost=broken.count,
    )
