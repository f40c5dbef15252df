"""FastAPI dependencies: the services, the calling principal (bearer token) and the admin check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from domain.codes import ErrorCode
from domain.models import OrderStatus, Principal, Role
from domain.refusals import TransferError
from settings import Settings
from starter.services.idempotency import IdempotencyService
from starter.services.provisioning import ProvisioningService
from starter.services.readiness import ReadinessService
from starter.services.resources import ResourceService
from starter.services.transfers import TransferService
from starter.services.verification import VerificationService


@dataclass(frozen=True)
class Services:
    transfers: TransferService
    resources: ResourceService
    provisioning: ProvisioningService
    verification: VerificationService
    readiness: ReadinessService
    idempotency: IdempotencyService


@dataclass(frozen=True)
class AppState:
    settings: Settings
    services: Services


_bearer = HTTPBearer(auto_error=False)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.transfer
    return state


def get_transfers(state: Annotated[AppState, Depends(get_state)]) -> TransferService:
    return state.services.transfers


def get_resources(state: Annotated[AppState, Depends(get_state)]) -> ResourceService:
    return state.services.resources


def get_verification(state: Annotated[AppState, Depends(get_state)]) -> VerificationService:
    return state.services.verification


def get_provisioning(state: Annotated[AppState, Depends(get_state)]) -> ProvisioningService:
    return state.services.provisioning


def bearer_token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(request: Request) -> bool:
    """Resolves the caller of a /v1 request before anything else, its body included (SPEC: the
    first failure is UNAUTHENTICATED). The admin token opens /v1/admin/*, account tokens the rest."""
    state = get_state(request)
    token = bearer_token(request)
    if request.url.path.startswith("/v1/admin/"):
        expected = state.settings.admin_token
        request.state.admin = (
            token is not None
            and expected is not None
            and hmac.compare_digest(token.encode(), expected.get_secret_value().encode())
        )
        return bool(request.state.admin)
    request.state.principal = await state.services.provisioning.principal_for_token(token) if token else None
    return request.state.principal is not None


# The routes depend on the bearer scheme too, so that OpenAPI documents it; the check itself ran in
# authenticate (starter.api.app's middleware), before the request body was parsed.


def get_principal(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:
        raise TransferError(ErrorCode.UNAUTHENTICATED)
    return principal


def require_admin(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    if not getattr(request.state, "admin", False):
        raise TransferError(ErrorCode.UNAUTHENTICATED)


TransfersDep = Annotated[TransferService, Depends(get_transfers)]
ResourcesDep = Annotated[ResourceService, Depends(get_resources)]
ProvisioningDep = Annotated[ProvisioningService, Depends(get_provisioning)]
VerificationDep = Annotated[VerificationService, Depends(get_verification)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x20-\x7e]{1,200}$",
        description="Optional, 1-200 printable ASCII characters: a repeat by the same principal with "
        "the same key within 24 hours answers the first answer without acting again.",
    ),
]


# --- list queries (SPEC §5 Shapes: limit 1-100, default 20; a cursor the service issued) --------------


@dataclass(frozen=True)
class PageQuery:
    limit: Annotated[int, Query(ge=1, le=100, description="Page size, 1-100")] = 20
    cursor: Annotated[str | None, Query(max_length=512, description="next_cursor of the previous page")] = (
        None
    )


@dataclass(frozen=True)
class OrderQuery(PageQuery):
    role: Annotated[Role | None, Query(description="source or destination; both when absent")] = None
    status: Annotated[OrderStatus | None, Query()] = None


@dataclass(frozen=True)
class ResourceQuery(PageQuery):
    transferable: Annotated[
        bool | None,
        Query(description="true: only resources without blockers; false: only those with blockers"),
    ] = None


PageQueryDep = Annotated[PageQuery, Depends()]
OrderQueryDep = Annotated[OrderQuery, Depends()]
ResourceQueryDep = Annotated[ResourceQuery, Depends()]
