"""The HTTP API (SPEC §5): FastAPI over TransferService, errors in one envelope with SPEC codes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.codes import ErrorCode, TransferError, default_message
from settings import Settings, connect_temporal
from starter.client import TransferClient
from starter.deps import AppState, authenticate
from starter.routes import admin, organization, resources, transfers
from starter.service import TransferService
from store.db import create_engine
from store.repository import TransferStore


def error_response(
    status: int, code: ErrorCode, message: str, details: dict[str, Any] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code.value, "message": message, "details": details or {}}},
    )


def create_app(settings: Settings, service: TransferService | None = None) -> FastAPI:
    """The app; `service` is injected by tests and `transfer dev`, else built from `settings` at start-up."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if service is not None:
            yield
            return
        engine = create_engine(settings.effective_database_url)
        client = await connect_temporal(settings)
        transfers = TransferClient(
            client, task_queue=settings.task_queue, confirm_window=settings.confirm_window
        )
        app.state.transfer = AppState(
            settings=settings, service=TransferService(transfers, TransferStore(engine))
        )
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="Resource transfer",
        version="1.0.0",
        description="Move ECS instances and EIPs between accounts: SPEC §5.",
        lifespan=lifespan,
    )

    if service is not None:
        app.state.transfer = AppState(settings=settings, service=service)

    @app.middleware("http")
    async def authenticated_first(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path.startswith("/v1/") and not await authenticate(request):
            code = ErrorCode.UNAUTHENTICATED
            return error_response(code.http_status, code, default_message(code))
        return await call_next(request)

    @app.exception_handler(TransferError)
    async def refused(_: Request, error: TransferError) -> JSONResponse:
        return error_response(error.code.http_status, error.code, error.message, error.details)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
            for e in error.errors()
        ]
        return error_response(
            422, ErrorCode.VALIDATION_ERROR, default_message(ErrorCode.VALIDATION_ERROR), {"errors": problems}
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, error: StarletteHTTPException) -> JSONResponse:
        # Unknown paths and methods: still the envelope, with the status Starlette chose.
        return error_response(error.status_code, ErrorCode.VALIDATION_ERROR, str(error.detail))

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    for module in (transfers, resources, organization, admin):
        app.include_router(module.router)
    return app
