"""The Idempotency-Key of every POST (SPEC §5), as middleware: it runs after authentication (keys are
scoped to the principal) and around the route, so a repeat answers exactly the first answer (status and
body) without reaching the route again."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable

import structlog
from fastapi import Request
from fastapi.responses import Response

from domain.clock import now
from domain.codes import ErrorCode
from domain.models import Principal
from domain.refusals import TransferError
from starter.services.idempotency import IdempotencyService
from store.db import OUTAGE_ERRORS

log = structlog.get_logger(__name__)

HEADER = "Idempotency-Key"
VALID_KEY = re.compile(r"[\x20-\x7e]{1,200}")


def scope_of(request: Request) -> str | None:
    """Whose keys these are: the principal of the request (the admin token is one principal)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is not None:
        return f"{principal.kind.value}:{principal.account_id}:{principal.ram_user_id or ''}"
    return "admin" if getattr(request.state, "admin", False) else None


async def idempotent(
    request: Request,
    call_next: Callable[[Request], Awaitable[Response]],
    service: IdempotencyService,
) -> Response:
    key = request.headers.get(HEADER)
    scope = scope_of(request)
    if request.method != "POST" or key is None or scope is None:
        return await call_next(request)
    if not VALID_KEY.fullmatch(key):
        raise TransferError(ErrorCode.VALIDATION_ERROR, f"{HEADER} is 1-200 printable ASCII characters")
    body = await request.body()
    request_line = f"{request.method} {request.url.path}?{request.url.query}\n".encode()
    fingerprint = hashlib.sha256(request_line + body).hexdigest()
    first = await service.begin(scope, key, fingerprint, at=now())
    if first is not None:
        return Response(first.body, status_code=first.status, media_type=first.content_type)
    try:
        response = await call_next(request)
        answer = b"".join([chunk async for chunk in response.body_iterator])  # type: ignore[attr-defined]
    except BaseException:
        # No answer to keep (an error, a disconnect): the key is free again, so a retry acts.
        await service.forget(scope, key)
        raise
    content_type = response.headers.get("content-type")
    try:
        await service.finish(scope, key, status=response.status_code, body=answer, content_type=content_type)
    except OUTAGE_ERRORS:
        log.error("the answer of a keyed request could not be kept", alert=True)
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return Response(answer, status_code=response.status_code, headers=headers)
