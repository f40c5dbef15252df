"""The console's pages (SPEC §6), server-rendered with Jinja2; htmx swaps the parts that change.

Every page calls the same services as the HTTP API (never the store or Temporal). The session is a
cookie signed with TRANSFER_SECRET_KEY (Starlette's SessionMiddleware, itsdangerous), HttpOnly,
SameSite=Strict, 8 hours; it holds the signed-in principal, never the token. Every form that changes
something posts under /console/session or /console/actions/, where the CSRF middleware
(starlette-csrf) requires its double-submit token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from domain.clock import now
from domain.codes import ErrorCode
from domain.models import ID_PATTERN, Id, Order, OrderStatus, Principal, ReceivingConfig, Refusal, Role
from domain.refusals import TransferError
from starter.api.deps import AppState, get_state
from starter.services.transfers import InitiateItem, OrderItem

HERE = FilePath(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/console", include_in_schema=False)

SESSION_KEY = "principal"
SESSION_COOKIE = "transfer_console"
SESSION_LIFETIME = timedelta(hours=8)
OrderId = Annotated[str, Path(pattern=ID_PATTERN)]
TABS = {
    "resources": "Transferable Resources",
    "requests": "My Resource Transfer Requests",
    "to-confirm": "Transfers to Confirm",
    "confirmed": "My Confirmed Resource Transfers",
}


def signed_in(request: Request) -> Principal | None:
    stored = request.session.get(SESSION_KEY)
    return Principal.model_validate(stored) if stored else None


def _page(request: Request, template: str, principal: Principal | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(
        request, template, {"principal": principal, "tabs": TABS, "now": now(), **context}
    )


def error_page(request: Request, refusal: Refusal, status: int) -> HTMLResponse:
    """A refusal in words with its SPEC code, in the console's frame."""
    return templates.TemplateResponse(
        request,
        "error.html",
        {"principal": signed_in(request), "tabs": TABS, "error": refusal},
        status_code=status,
    )


def _time_left(order: Order, at: datetime) -> str:
    if order.status is not OrderStatus.PENDING:
        return ""
    seconds = int((order.expires_at - at).total_seconds())
    if seconds <= 0:
        return "window closed"
    hours, rest = divmod(seconds, 3600)
    return f"{hours} h {rest // 60} min left" if hours else f"{rest // 60} min {rest % 60} s left"


templates.env.globals["time_left"] = _time_left


# --- sign-in and sign-out ------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> HTMLResponse:
    return _page(request, "login.html", signed_in(request))


@router.post("/session", response_class=HTMLResponse)
async def sign_in(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    token: Annotated[str, Form(max_length=512)] = "",
) -> Response:
    token = token.strip()
    principal = await state.services.provisioning.principal_for_token(token) if token else None
    if principal is None:
        error = TransferError(ErrorCode.UNAUTHENTICATED, "This API token is not valid").refusal
        return _page(request, "login.html", None, error=error, status_code=401)
    request.session.clear()
    request.session[SESSION_KEY] = principal.model_dump(mode="json")
    return Response(status_code=204, headers={"HX-Redirect": "/console/"})


@router.post("/session/end")
async def sign_out(request: Request) -> Response:
    request.session.clear()
    return Response(status_code=204, headers={"HX-Redirect": "/console/login"})


# --- the tabs ------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def home(request: Request) -> Response:
    return RedirectResponse("/console/resources", status_code=303)


@router.get("/resources", response_class=HTMLResponse)
async def transferable_resources(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    principal = signed_in(request)
    if principal is None:
        return RedirectResponse("/console/login", status_code=303)
    items, next_cursor = await state.services.resources.list(principal, limit=20, cursor=cursor)
    return _page(request, "resources.html", principal, tab="resources", items=items, next_cursor=next_cursor)


# --- the management account's organization view (read-only) --------------------------------------------


@router.get("/organization", response_class=HTMLResponse)
async def organization(request: Request, state: Annotated[AppState, Depends(get_state)]) -> Response:
    principal = signed_in(request)
    if principal is None:
        return RedirectResponse("/console/login", status_code=303)
    resources, _ = await state.services.resources.list(principal, organization=True, limit=100)
    orders, _ = await state.services.transfers.list(principal, organization=True, limit=100)
    return _page(request, "organization.html", principal, tab="organization", items=resources, orders=orders)


ORDER_TABS: dict[str, tuple[Role, set[OrderStatus] | None]] = {
    "requests": (Role.SOURCE, None),
    "to-confirm": (Role.DESTINATION, {OrderStatus.PENDING}),
    "confirmed": (Role.DESTINATION, set(OrderStatus) - {OrderStatus.PENDING}),
}


@router.get("/{tab}", response_class=HTMLResponse)
async def orders_tab(
    request: Request,
    tab: str,
    state: Annotated[AppState, Depends(get_state)],
    status: Annotated[OrderStatus | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    principal = signed_in(request)
    if principal is None:
        return RedirectResponse("/console/login", status_code=303)
    if tab not in ORDER_TABS:
        raise TransferError(ErrorCode.NOT_FOUND)
    role, statuses = ORDER_TABS[tab]
    # The status asked for when the tab shows it, else every status of the tab: filtered by the query,
    # so each page is full.
    asked = {status} if status is not None and (statuses is None or status in statuses) else statuses
    orders, next_cursor = await state.services.transfers.list(
        principal, role=role, statuses=asked, limit=20, cursor=cursor
    )
    return _page(
        request,
        "orders.html",
        principal,
        tab=tab,
        actions=tab in ("requests", "to-confirm"),
        orders=orders,
        next_cursor=next_cursor,
        status=status,
        statuses=sorted(statuses or set(OrderStatus)),
    )


# --- one order -----------------------------------------------------------------------------------------


@router.get("/transfers/{order_id}", response_class=HTMLResponse)
async def order_details(
    request: Request, order_id: OrderId, state: Annotated[AppState, Depends(get_state)]
) -> Response:
    return await _order(request, order_id, state, "order.html")


@router.get("/transfers/{order_id}/live", response_class=HTMLResponse)
async def order_live(
    request: Request, order_id: OrderId, state: Annotated[AppState, Depends(get_state)]
) -> Response:
    """The part of the details page that a pending or transferring order polls."""
    return await _order(request, order_id, state, "order_live.html")


async def _order(request: Request, order_id: str, state: AppState, template: str) -> Response:
    principal = signed_in(request)
    if principal is None:
        return RedirectResponse("/console/login", status_code=303)
    order = await state.services.transfers.get(principal, order_id)
    return _page(request, template, principal, order=order)


# --- actions: each answers the per-item results in place; nothing the user typed is lost ----------------


def _results(request: Request, principal: Principal | None, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, "results.html", {"principal": principal, **context})


def _tags(text: str) -> dict[str, str]:
    """`key=value` pairs separated by commas or new lines (SPEC §6)."""
    tags: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text.replace("\n", ",").split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise TransferError(ErrorCode.VALIDATION_ERROR, f"a tag is key=value, not {pair!r}")
        tags[key.strip()] = value.strip()
    return tags


OrderIds = Annotated[list[Id], Form(min_length=1, max_length=100)]


async def _act(
    request: Request, title: str, act: Callable[[Principal], Awaitable[Sequence[InitiateItem | OrderItem]]]
) -> HTMLResponse:
    """One console action: the signed-in principal acts; the per-item results, or the refusal in words."""
    principal = signed_in(request)
    try:
        if principal is None:
            raise TransferError(ErrorCode.UNAUTHENTICATED)
        items = await act(principal)
    except TransferError as error:
        return _results(request, principal, error=error.refusal, title=title)
    return _results(request, principal, items=items, title=title)


@router.post("/actions/cancel", response_class=HTMLResponse)
async def cancel(
    request: Request, state: Annotated[AppState, Depends(get_state)], order_ids: OrderIds
) -> Response:
    return await _act(
        request,
        "Cancel Transfer",
        lambda principal: state.services.transfers.cancel(principal, order_ids=order_ids),
    )


@router.post("/actions/reject", response_class=HTMLResponse)
async def reject(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    order_ids: OrderIds,
    reason: Annotated[str, Form(max_length=512)] = "",
) -> Response:
    return await _act(
        request,
        "Reject Transfer",
        lambda principal: state.services.transfers.reject(
            principal, order_ids=order_ids, reason=reason.strip() or None
        ),
    )


@router.post("/actions/confirm", response_class=HTMLResponse)
async def confirm(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    order_ids: OrderIds,
    code: Annotated[str, Form(max_length=16)] = "",
    agreement: Annotated[bool, Form()] = False,
    resource_group: Annotated[str, Form(max_length=128)] = "",
    tags: Annotated[str, Form(max_length=4096)] = "",
) -> Response:
    received_at = now()

    async def act(principal: Principal) -> Sequence[OrderItem]:
        parsed = _tags(tags)
        try:
            config = (
                ReceivingConfig(resource_group=resource_group.strip() or None, tags=parsed)
                if resource_group.strip() or parsed
                else None
            )
        except ValidationError as invalid:
            raise TransferError(ErrorCode.VALIDATION_ERROR, str(invalid.errors()[0]["msg"])) from None
        return await state.services.transfers.confirm(
            principal,
            order_ids=order_ids,
            agreement_accepted=agreement,
            code=code.strip(),
            receiving_config=config,
            received_at=received_at,
        )

    return await _act(request, "Confirm Transfer Receipt", act)


ResourceIds = Annotated[list[Id], Form(min_length=1, max_length=100)]


@router.post("/actions/validate", response_class=HTMLResponse)
async def validate(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    resource_ids: ResourceIds,
    destination_account_id: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    """The dry run, shown before Submit: every blocker and warning of each resource."""
    principal = signed_in(request)
    context: dict[str, Any] = {}
    try:
        if principal is None:
            raise TransferError(ErrorCode.UNAUTHENTICATED)
        if not destination_account_id.strip():
            raise TransferError(ErrorCode.VALIDATION_ERROR, "Enter the destination account id")
        context["results"] = await state.services.transfers.validate(
            principal, destination_account_id=destination_account_id.strip(), resource_ids=resource_ids
        )
    except TransferError as error:
        context["error"] = error.refusal
    return templates.TemplateResponse(request, "dry_run.html", context)


@router.post("/actions/initiate", response_class=HTMLResponse)
async def initiate(
    request: Request,
    state: Annotated[AppState, Depends(get_state)],
    resource_ids: ResourceIds,
    destination_account_id: Annotated[str, Form(max_length=64)] = "",
    code: Annotated[str, Form(max_length=16)] = "",
    agreement: Annotated[bool, Form()] = False,
) -> Response:
    received_at = now()
    return await _act(
        request,
        "Initiate Transfer",
        lambda principal: state.services.transfers.initiate(
            principal,
            destination_account_id=destination_account_id.strip(),
            resource_ids=resource_ids,
            agreement_accepted=agreement,
            code=code.strip(),
            received_at=received_at,
        ),
    )
