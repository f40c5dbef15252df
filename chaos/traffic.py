"""What a well-behaved backend service does against a stack that breaks: every POST with an
Idempotency-Key, retried with the same key while the answer is "not now" (503, a dropped connection),
and after a TOTP code that a lost request used up, again with the next code under a new key. Every answer
is tallied: a 5xx other than 503, or an answer slower than SPEC's 10 s, is a broken promise."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pyotp

from bench.run import Account, Pair

ANSWER_WITHIN_S = 10.0  # SPEC §5: never a hang
GIVE_UP_AFTER_S = 300.0
TOTP_STEP_S = 30


class Unexpected(Exception):
    """An answer the scenario did not expect: the row's observed column names it."""


@dataclass
class Tally:
    answers: Counter[int] = field(default_factory=Counter)
    dropped: int = 0  # connections refused or cut (the API process was down)
    slow: int = 0  # answered after more than ANSWER_WITHIN_S
    slowest_s: float = 0.0

    @property
    def broken(self) -> int:
        """Answers that break SPEC §5's promise: a 5xx that is not 503, or a hang."""
        return sum(n for status, n in self.answers.items() if status >= 500 and status != 503) + self.slow

    def describe(self) -> str:
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(self.answers.items()))
        return (
            f"answers: {statuses}; {self.dropped} dropped, {self.slow} over {ANSWER_WITHIN_S:.0f} s"
            f" (slowest {self.slowest_s:.1f} s)"
        )


def _next_step_in() -> float:
    return TOTP_STEP_S - time.time() % TOTP_STEP_S + 0.5


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise Unexpected(f"{response.status_code} {response.text[:300]!r} is not JSON") from None


def _item_code(body: Any) -> str | None:
    results = body.get("results") if isinstance(body, dict) else None
    if results and "error" in results[0]:
        code: str = results[0]["error"]["code"]
        return code
    return None


def _error_code(body: Any) -> str | None:
    error = body.get("error") if isinstance(body, dict) else None
    return error.get("code") if isinstance(error, dict) else None


class Traffic:
    def __init__(self, api_url: str) -> None:
        self.http = httpx.AsyncClient(
            base_url=api_url, timeout=ANSWER_WITHIN_S * 3, limits=httpx.Limits(max_connections=64)
        )
        self.tally = Tally()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, account: Account, **kwargs: Any) -> httpx.Response | None:
        """One request, tallied; None when the connection failed."""
        headers = {**account.auth(), **kwargs.pop("headers", {})}
        started = time.monotonic()
        try:
            response = await self.http.request(method, path, headers=headers, **kwargs)
        except httpx.TimeoutException:  # no answer at all: a hang
            self.tally.slow += 1
            return None
        except httpx.TransportError:
            self.tally.dropped += 1
            return None
        took = time.monotonic() - started
        self.tally.answers[response.status_code] += 1
        self.tally.slow += took > ANSWER_WITHIN_S
        self.tally.slowest_s = max(self.tally.slowest_s, took)
        return response

    async def post_once(
        self, path: str, account: Account, body: dict[str, Any], key: str
    ) -> httpx.Response | None:
        return await self.request("POST", path, account, json=body, headers={"Idempotency-Key": key})

    async def order(self, account: Account, order_id: str) -> Any:
        response = await self.request("GET", f"/v1/transfers/{order_id}", account)
        if response is None or response.status_code != 200:
            raise Unexpected(f"GET order {order_id}: {response.status_code if response else 'dropped'}")
        return _json(response)

    @staticmethod
    def confirm_body(destination: Account) -> dict[str, Any]:
        return {
            "agreement_accepted": True,
            "verification": {"code": pyotp.TOTP(destination.secret).now()},
            "receiving_config": {"resource_group": "rg-chaos", "tags": {"moved-by": "chaos"}},
        }

    async def _post_until_answered(
        self, path: str, account: Account, body: dict[str, Any]
    ) -> tuple[httpx.Response, Any]:
        """POSTs under one key until the answer is not "not now"; a used-up code (the first attempt's
        request died after its verification) takes the next TOTP step and a new key."""
        deadline = time.monotonic() + GIVE_UP_AFTER_S
        key = uuid.uuid4().hex
        while time.monotonic() < deadline:
            if "verification" in body:
                body = {**body, "verification": {"code": pyotp.TOTP(account.secret).now()}}
            response = await self.post_once(path, account, body, key)
            answer = _json(response) if response is not None else None
            if response is None or response.status_code == 503 or _item_code(answer) == "SERVICE_UNAVAILABLE":
                await asyncio.sleep(
                    float(response.headers.get("Retry-After", 1)) if response is not None else 1
                )
                continue
            if _error_code(answer) in ("VERIFICATION_FAILED", "IDEMPOTENCY_KEY_REUSED"):
                await asyncio.sleep(_next_step_in())
                key = uuid.uuid4().hex
                continue
            return response, answer
        raise Unexpected(f"POST {path}: no answer but 'not now' within {GIVE_UP_AFTER_S:.0f} s")

    async def open(self, pair: Pair) -> str:
        """The order of the pair's one resource, opened (or found opened by a lost attempt)."""
        (resource_id,) = pair.resource_ids
        body = {
            "destination_account_id": pair.destination.id,
            "resource_ids": [resource_id],
            "agreement_accepted": True,
            "verification": {"code": ""},
        }
        response, answer = await self._post_until_answered("/v1/transfers", pair.source, body)
        if response.status_code == 200 and "order_id" in answer["results"][0]:
            order_id: str = answer["results"][0]["order_id"]
            return order_id
        if _item_code(answer) == "RESOURCE_IN_TRANSFER":  # a lost attempt opened it
            return await self.order_of(pair)
        raise Unexpected(f"initiate: {response.status_code} {response.text[:200]}")

    async def order_of(self, pair: Pair) -> str:
        deadline = time.monotonic() + GIVE_UP_AFTER_S
        while time.monotonic() < deadline:
            response = await self.request("GET", "/v1/transfers?role=source", pair.source)
            if response is not None and response.status_code == 200:
                items = _json(response)["items"]
                if len(items) != 1:
                    raise Unexpected(f"the source has {len(items)} orders")
                order_id: str = items[0]["order_id"]
                return order_id
            await asyncio.sleep(1)
        raise Unexpected("the source's orders could not be listed")

    async def decide(self, pair: Pair, order_id: str, action: str) -> str:
        """confirm, cancel or reject; answers the order's status after it, or the refusal's code."""
        who = pair.source if action == "cancel" else pair.destination
        body = self.confirm_body(who) if action == "confirm" else {}
        response, answer = await self._post_until_answered(f"/v1/transfers/{order_id}/{action}", who, body)
        if response.status_code == 200:
            status: str = answer["status"]
            return status
        code = _error_code(answer)
        if code is None:
            raise Unexpected(f"{action}: {response.status_code} {response.text[:200]}")
        return code
