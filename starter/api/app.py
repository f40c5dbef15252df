"""The HTTP API (SPEC §5): FastAPI over TransferService, errors in one envelope with SPEC codes."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette_csrf.middleware import CSRFMiddleware

from domain.codes import ErrorCode, default_message
from domain.models import Refusal
from domain.refusals import RETRY_AFTER_S, TransferError, unavailable
from settings import Settings, connect_temporal
from starter import deadline
from starter.api.body_limit import BodyLimit
from starter.api.deps import AppState, Services, authenticate, get_state
from starter.api.idempotency import idempotent
from starter.api.routes import admin, organization, resources, security_events, transfers
from starter.api.schemas.common import ErrorEnvelope
from starter.client import TransferClient
from starter.console import routes as console
from starter.services.idempotency import IdempotencyService
from starter.services.provisioning import ProvisioningService
from starter.services.readiness import ReadinessService
from starter.services.resources import ResourceService
from starter.services.transfers import TransferService
from starter.services.verification import VerificationService
from store.db import OUTAGE_ERRORS, Database

log = structlog.get_logger(__name__)

_HTTP_CODES = {404: ErrorCode.NOT_FOUND, 405: ErrorCode.METHOD_NOT_ALLOWED}


def _database_down() -> JSONResponse:
    refused = unavailable("database")
    return error_response(refused.code.http_status, refused.refusal)


def build_services(transfers: TransferClient, db: Database) -> Services:
    return Services(
        transfers=TransferService(transfers, db),
        resources=ResourceService(db),
        provisioning=ProvisioningService(db),
        verification=VerificationService(db),
        readiness=ReadinessService(transfers.client, db),
        idempotency=IdempotencyService(db),
    )


def error_response(status: int, refusal: Refusal) -> JSONResponse:
    headers = {}
    if (retry_after := refusal.details.get("retry_after_s")) is not None:
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(
        status_code=status, content={"error": refusal.model_dump(mode="json")}, headers=headers
    )


def _envelope(
    status: int, code: ErrorCode, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    return error_response(status, Refusal(code=code, message=message, details=details or {}))


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The app; `services` are injected by tests, else built from `settings` at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if services is not None:
            yield
            return
        db = Database.at(settings.effective_database_url, settings.secret_box())
        # Lazy: the API starts and answers (503 where it needs Temporal) while Temporal is down.
        client = await connect_temporal(settings, lazy=True)
        transfers = TransferClient.of(client, settings)
        app.state.transfer = AppState(settings=settings, services=build_services(transfers, db))
        try:
            yield
        finally:
            await db.dispose()

    # Swagger UI and ReDoc from the installed package's files: nothing from a CDN (SPEC, issue "Console").
    app = FastAPIOffline(
        title="Resource transfer",
        version="1.0.0",
        description="Move ECS instances and EIPs between accounts: SPEC §5.",
        lifespan=lifespan,
    )

    if services is not None:
        app.state.transfer = AppState(settings=settings, services=services)

    @app.middleware("http")
    async def authenticated_first(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        # SPEC §5: never a hang. The deadline bounds the Temporal calls, which leave time for the rest
        # (the database's waits have their own bounds: store.db; cancelling them mid-way would hand a
        # broken connection back to the pool).
        with deadline.answering_within(deadline.ANSWER_WITHIN_S):
            return await _authenticated_first(request, call_next)

    async def _authenticated_first(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        try:
            authenticated = not request.url.path.startswith("/v1/") or await authenticate(request)
        except OUTAGE_ERRORS:
            # Outside the exception handlers: the token could not be looked up.
            return _database_down()
        if not authenticated:
            code = ErrorCode.UNAUTHENTICATED
            return _envelope(code.http_status, code, default_message(code))
        # Outside the routes too: a keyed POST's refusals are answered here.
        try:
            return await idempotent(request, call_next, get_state(request).services.idempotency)
        except TransferError as error:
            return error_response(error.code.http_status, error.refusal)
        except OUTAGE_ERRORS:
            return _database_down()

    @app.exception_handler(TransferError)
    async def refused(request: Request, error: TransferError) -> Response:
        if request.url.path.startswith("/console/"):
            return console.error_page(request, error.refusal, error.code.http_status)
        return error_response(error.code.http_status, error.refusal)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in error.errors()
        ]
        code = ErrorCode.VALIDATION_ERROR
        return _envelope(422, code, default_message(code), {"errors": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        # Unknown paths and methods: still the envelope. Anything else Starlette refuses (a body that is
        # not UTF-8: FastAPI's 400) is bad input, VALIDATION_ERROR with its SPEC status.
        code = _HTTP_CODES.get(error.status_code, ErrorCode.VALIDATION_ERROR)
        return _envelope(code.http_status, code, default_message(code))

    async def database_down(_: Request, error: Exception) -> JSONResponse:
        log.warning("database unavailable", error=type(error).__name__)
        return _database_down()

    for outage in OUTAGE_ERRORS:
        app.add_exception_handler(outage, database_down)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """200 while the API runs."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": ErrorEnvelope}})
    async def readyz(request: Request) -> dict[str, str]:
        """200 when Temporal and the database answer; else 503 with `details.failing`."""
        failing = await get_state(request).services.readiness.failing()
        if failing:
            raise TransferError(
                ErrorCode.SERVICE_UNAVAILABLE,
                f"Not ready: {', '.join(failing)} cannot be reached",
                {"failing": failing, "retry_after_s": RETRY_AFTER_S},
            )
        return {"status": "ready"}

    for module in (transfers, resources, organization, security_events, admin):
        app.include_router(module.router)
    app.include_router(console.router)
    app.mount("/console/static", StaticFiles(directory=console.HERE / "static"), name="console-static")
    # The console's forms: the session cookie, and the CSRF token of every form that changes something.
    app.add_middleware(
        CSRFMiddleware,
        secret=settings.secret(),
        # Always on the console's forms (sign-in too); elsewhere only for a request that carries the
        # console's session (the API itself takes bearer tokens, which no other site can send).
        required_urls=[re.compile(r"^/console/(session|actions)(/|$)")],
        sensitive_cookies={console.SESSION_COOKIE},
        cookie_samesite="strict",
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret(),
        session_cookie=console.SESSION_COOKIE,
        max_age=int(console.SESSION_LIFETIME.total_seconds()),
        same_site="strict",
    )
    # Added last, so outermost: a large body is refused before authentication reads anything.
    app.add_middleware(BodyLimit)
    return app
