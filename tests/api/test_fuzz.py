"""Fuzzing every operation of the app's own OpenAPI: no input makes a 5xx, every 4xx is the envelope.

Schemathesis derives the inputs (mostly malformed: its negative mode) from app.openapi(); Hypothesis
drives them against the real app in process (ASGI, the `api` fixture), authenticated with the admin
token on /v1/admin/* and a valid root token elsewhere, so that the generator reaches past 401. Path ids
are now and then replaced by ids that exist (the caller's order, resource and account), so that
malformed bodies also meet real objects.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from domain.codes import ErrorCode
from settings import Settings
from starter.api.app import create_app
from tests.api.conftest import ADMIN_TOKEN, Api
from tests.api.transfer_helpers import open_order
from tests.factory import SECRET_KEY

SCHEMA = schemathesis.openapi.from_dict(create_app(Settings(secret_key=SecretStr(SECRET_KEY))).openapi())
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations() if isinstance(result, Ok)]
ERROR_CODES = {code.value for code in ErrorCode}

# Small by default; FUZZ_EXAMPLES=500 for a longer hunt.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))

# Mostly malformed input: 3 in 4 examples are negative.
MODES = st.integers(0, 3).map(lambda n: GenerationMode.POSITIVE if n == 3 else GenerationMode.NEGATIVE)


@dataclass
class World:
    """What exists for the fuzzed caller: its token, an account, a resource and a pending order."""

    token: str
    ids: list[str]


@pytest.fixture
async def world(api: Api) -> World:
    source, destination = await api.factory.account(), await api.factory.account()
    token = await api.token(source)
    resource = await api.factory.resource(source)
    spare = await api.factory.resource(source)
    order_id = await open_order(api, source, destination, resource.id, token)
    return World(token=token, ids=[order_id, resource.id, spare.id, source.id, destination.id])


def test_the_schema_lists_every_operation() -> None:
    assert len(OPERATIONS) == len(list(SCHEMA.get_all_operations())), "an operation schemathesis cannot read"
    labels = {operation.label for operation in OPERATIONS}
    assert {
        "POST /v1/transfers",
        "POST /v1/transfers/validate",
        "GET /v1/transfers",
        "GET /v1/transfers/{order_id}",
        "POST /v1/transfers/{order_id}/confirm",
        "POST /v1/transfers/batch/cancel",
        "GET /v1/organization/transfers",
        "POST /v1/admin/accounts",
        "PATCH /v1/admin/accounts/{account_id}",
    } <= labels


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda operation: operation.label)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
async def test_no_input_makes_a_server_error(api: Api, world: World, operation: Any, data: Any) -> None:
    case = data.draw(operation.as_strategy(generation_mode=data.draw(MODES)), label="case")
    for name in list(case.path_parameters or {}):
        if data.draw(st.integers(0, 2), label=f"real {name}") == 0:
            case.path_parameters[name] = data.draw(st.sampled_from(world.ids), label=name)
    token = ADMIN_TOKEN if case.path.startswith("/v1/admin") else world.token
    kwargs = case.as_transport_kwargs(base_url="http://api")
    kwargs.pop("cookies", None)
    if "data" in kwargs:  # raw bytes or text: httpx calls that content
        kwargs["content"] = kwargs.pop("data")
    kwargs["headers"] = {**(kwargs.get("headers") or {}), **api.auth(token)}

    response = await api.http.request(**kwargs)

    sent = kwargs.get("json", kwargs.get("content"))
    where = f"{kwargs['method']} {kwargs['url']} {kwargs.get('params')} {sent!r}"
    assert response.status_code < 500, f"{where} -> {response.status_code} {response.text}"
    body = json.loads(response.content)  # every answer is JSON
    if response.status_code >= 400:
        assert set(body) == {"error"}, f"{where} -> {body}"
        error = body["error"]
        assert set(error) == {"code", "message", "details"}, f"{where} -> {body}"
        assert error["code"] in ERROR_CODES, f"{where} -> {body}"
        assert response.status_code == ErrorCode(error["code"]).http_status, f"{where} -> {body}"
        assert isinstance(error["message"], str), f"{where} -> {body}"
        assert isinstance(error["details"], dict), f"{where} -> {body}"
