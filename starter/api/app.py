"""The HTTP API (SPEC §5): FastAPI over TransferService, errors in one envelope with SPEC codes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.codes import ErrorCode, default_message
from domain.models import Refusal
from domain.refusals import TransferError
from settings import Settings, connect_temporal
from starter.api.deps import AppState, Services, authenticate
from starter.api.routes import admin, organization, resources, transfers
from starter.client import TransferClient
from starter.services.provisioning import ProvisioningService
from starter.services.resources import ResourceService
from starter.services.transfers import TransferService
from store.db import Database


def build_services(transfers: TransferClient, db: Database) -> Services:
    return Services(
        transfers=TransferService(transfers, db),
        resources=ResourceService(db),
        provisioning=ProvisioningService(db),
    )


def error_response(status: int, refusal: Refusal) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": refusal.model_dump(mode="json")})


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
        db = Database.at(settings.effective_database_url)
        client = await connect_temporal(settings)
        transfers = TransferClient(
            client, task_queue=settings.task_queue, confirm_window=settings.confirm_window
        )
        app.state.transfer = AppState(settings=settings, services=build_services(transfers, db))
        try:
            yield
        finally:
            await db.dispose()

    app = FastAPI(
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
        if request.url.path.startswith("/v1/") and not await authenticate(request):
            code = ErrorCode.UNAUTHENTICATED
            return _envelope(code.http_status, code, default_message(code))
        return await call_next(request)

    @app.exception_handler(TransferError)
    async def refused(_: Request, error: TransferError) -> JSONResponse:
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
        # Unknown paths and methods: still the envelope, with the status Starlette chose.
        return _envelope(error.status_code, ErrorCode.VALIDATION_ERROR, str(error.detail))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for module in (transfers, resources, organization, admin):
        app.include_router(module.router)
    return app
