"""SPEC §3 as pure functions over facts: each returns the first failing rule in SPEC order (or all, for
the dry run). Nothing here reads a database or a clock: callers gather the facts and pass `now`.

Where each check runs, and why there:
- `principal_failure`: the service (request level, before anything else) and the workflow (an initiate,
  confirm, cancel or reject that reached Temporal without the service).
- `account_failure`, `resource_blockers` / `first_blocker`: the service before Temporal is reached
  (initiate answers request-level refusals as HTTP errors, the dry run lists every blocker), and the
  `open_order` activity again under the source account's row lock, where the answer is binding.
- `confirmation_refusal`: the `accept_confirmation` activity, under the resource's row lock, in the
  transaction that makes the order transferring (so a start racing the confirm cannot slip in).
- `order_failure`: the service from the read model (so a stranger learns nothing and a refusal is recorded
  before Temporal), and the workflow's update validators and signal handlers from the run's own state.
- `lock_refusal`, `resource_access_failure`: the resource service, under the resource's row lock.
- `entity_account_limit_failure`, `identity_failure`: provisioning, under the entity's lock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from domain.codes import ErrorCode, default_message
from domain.models import (
    Account,
    AccountKind,
    AccountPair,
    Action,
    Billing,
    InstanceStatus,
    Network,
    Order,
    OrderStatus,
    Principal,
    PrincipalKind,
    PriorDestination,
    Product,
    Refusal,
    Resource,
    ResourceAction,
)
from domain.refusals import refusal

MIN_RESOURCE_AGE = timedelta(days=5)
MIN_REMAINING_TERM = timedelta(days=3)
MAX_ACCOUNTS_PER_ENTITY = 10


def principal_failure(principal: Principal) -> ErrorCode | None:
    """RAM users may read, never initiate, confirm, cancel or reject."""
    return ErrorCode.RAM_USER_NOT_ALLOWED if principal.kind is PrincipalKind.RAM_USER else None


def views_managed_accounts(principal: Principal) -> bool:
    """Only the root of a management account sees its members' resources and orders (read-only)."""
    return principal.kind is PrincipalKind.ROOT


def account_failure(
    source: Account,
    destination: Account | None,
    prior_destinations: Iterable[PriorDestination],
) -> ErrorCode | None:
    """The request-level account rules of SPEC §3, in its order (agreement and verification aside).

    `prior_destinations` are the destinations of the source's other pending, transferring and
    completed orders.
    """
    if destination is None:
        return ErrorCode.DESTINATION_NOT_FOUND
    if not (source.verified and destination.verified):
        return ErrorCode.ACCOUNT_NOT_VERIFIED
    if source.frozen or destination.frozen:
        return ErrorCode.ACCOUNT_FROZEN
    if source.id == destination.id:
        return ErrorCode.SAME_ACCOUNT
    if source.kind is AccountKind.ENTERPRISE:
        if destination.kind is AccountKind.INDIVIDUAL:
            return ErrorCode.ACCOUNT_TYPE_NOT_ALLOWED
        # Legal names are compared as registered: a difference in case or spacing is another name.
        if source.entity_id != destination.entity_id or source.entity_name != destination.entity_name:
            return ErrorCode.ENTERPRISE_ENTITY_MISMATCH
    others = [p for p in prior_destinations if p.account_id != destination.id]
    if (
        source.kind is AccountKind.INDIVIDUAL
        and destination.kind is AccountKind.ENTERPRISE
        and any(p.kind is AccountKind.ENTERPRISE for p in others)
    ):
        return ErrorCode.ENTERPRISE_DESTINATION_LIMIT
    if destination.entity_id != source.entity_id and any(
        p.entity_id == destination.entity_id for p in others
    ):
        return ErrorCode.ENTITY_DESTINATION_LIMIT
    return None


def resource_blockers(
    resource: Resource | None,
    *,
    source_account_id: str,
    now: datetime,
    order_id: str | None = None,
) -> list[ErrorCode]:
    """Every per-resource rule that fails, in SPEC §3's order.

    `order_id` is the order being checked again at confirm: its own lock is no blocker.
    """
    if resource is None or resource.released or resource.owner_account_id != source_account_id:
        return [ErrorCode.RESOURCE_NOT_FOUND]
    blockers: list[ErrorCode] = []
    if not is_transferable_product(resource):
        blockers.append(ErrorCode.PRODUCT_NOT_SUPPORTED)
    if now - resource.created_at < MIN_RESOURCE_AGE:
        blockers.append(ErrorCode.RESOURCE_TOO_NEW)
    if (
        resource.billing is Billing.SUBSCRIPTION
        and resource.expires_at is not None
        and resource.expires_at - now <= MIN_REMAINING_TERM
    ):
        blockers.append(ErrorCode.RESOURCE_EXPIRING_SOON)
    # No attachment may span two accounts: neither an attached EIP nor an instance with one moves.
    if (resource.product is Product.EIP and resource.attached_to is not None) or resource.attached_eip_ids:
        blockers.append(ErrorCode.EIP_ATTACHED)
    if resource.locked_by_order_id is not None and resource.locked_by_order_id != order_id:
        blockers.append(ErrorCode.RESOURCE_IN_TRANSFER)
    return blockers


def is_transferable_product(resource: Resource) -> bool:
    """ECS of either billing method, and pay-as-you-go EIP."""
    if resource.product is Product.ECS:
        return True
    return resource.product is Product.EIP and resource.billing is Billing.PAY_AS_YOU_GO


def product_message(resource: Resource) -> str | None:
    """The message for PRODUCT_NOT_SUPPORTED when the resource can be made transferable."""
    if resource.product is Product.EIP and resource.billing is Billing.SUBSCRIPTION:
        return "A subscription EIP must be converted to pay-as-you-go before it can be transferred"
    return None


def blocker_message(code: ErrorCode, resource: Resource | None) -> str:
    """The message of a per-resource refusal; for a subscription EIP it says how to fix it."""
    if code is ErrorCode.PRODUCT_NOT_SUPPORTED and resource is not None:
        return product_message(resource) or default_message(code)
    if code is ErrorCode.EIP_ATTACHED and resource is not None and resource.attached_eip_ids:
        eips = ", ".join(resource.attached_eip_ids)
        return (
            f"Detach EIP {eips} from the instance before the transfer: an attachment never spans two accounts"
        )
    if code is ErrorCode.EIP_ATTACHED and resource is not None and resource.attached_to is not None:
        return f"Detach the EIP from {resource.attached_to} before the transfer"
    return default_message(code)


def blockers(
    resource: Resource | None, *, source_account_id: str, now: datetime, order_id: str | None = None
) -> list[Refusal]:
    """Every per-resource rule that fails, each with its message: the dry run's and a listing's blockers."""
    codes = resource_blockers(resource, source_account_id=source_account_id, now=now, order_id=order_id)
    return [refusal(code, blocker_message(code, resource)) for code in codes]


def warnings(resource: Resource | None) -> list[Refusal]:
    """What will refuse the confirm unless someone acts first (SPEC §5 dry run): today a running VPC
    instance, which its source must stop before the destination confirms."""
    if resource is None or (code := stopped_state_failure(resource)) is None:
        return []
    return [refusal(code, "The source must stop the VPC ECS instance before the destination confirms")]


def first_blocker(
    resource: Resource | None, *, source_account_id: str, now: datetime, order_id: str | None = None
) -> Refusal | None:
    """The per-resource rule an initiate (or a confirm, with its own `order_id`) is refused by."""
    found = blockers(resource, source_account_id=source_account_id, now=now, order_id=order_id)
    return found[0] if found else None


def pair_refusal(pair: AccountPair) -> Refusal | None:
    """`account_failure` over the gathered facts, as a Refusal."""
    code = account_failure(pair.source, pair.destination, pair.prior_destinations)
    return refusal(code) if code else None


def confirmation_refusal(
    pair: AccountPair, resource: Resource | None, *, order_id: str, now: datetime
) -> Refusal | None:
    """At confirm: every rule of initiate again, then, last, INSTANCE_NOT_STOPPED.

    `pair.prior_destinations` must leave the order itself out, and its own lock is no blocker.
    """
    found = pair_refusal(pair) or first_blocker(
        resource, source_account_id=pair.source.id, now=now, order_id=order_id
    )
    if found is not None:
        return found
    assert resource is not None  # no blocker: the resource exists
    stopped = stopped_state_failure(resource)
    return refusal(stopped) if stopped else None


def stopped_state_failure(resource: Resource) -> ErrorCode | None:
    """Checked last at confirm: the source stops a VPC ECS instance before the destination confirms."""
    if (
        resource.product is Product.ECS
        and resource.network is Network.VPC
        and resource.status is not InstanceStatus.STOPPED
    ):
        return ErrorCode.INSTANCE_NOT_STOPPED
    return None


def order_failure(
    order: Order | None,
    principal: Principal,
    *,
    action: Action,
    now: datetime,
    manages_a_party: bool = False,
) -> ErrorCode | None:
    """The per-order rules for confirm, cancel and reject, in SPEC §5's order.

    `manages_a_party` is true when the caller is the management account of an organization that
    holds the order's source or destination: it may see the order, never act on it.
    """
    parties = {order.source_account_id, order.destination_account_id} if order else set()
    if order is None or (principal.account_id not in parties and not manages_a_party):
        return ErrorCode.ORDER_NOT_FOUND
    if principal.account_id not in parties:
        return ErrorCode.READ_ONLY_ACCESS
    if action is Action.CANCEL:
        if principal.account_id != order.source_account_id:
            return ErrorCode.NOT_SOURCE
    elif principal.account_id != order.destination_account_id:
        return ErrorCode.NOT_DESTINATION
    return order_state_failure(order.status, order.expires_at, now=now)


def order_state_failure(status: OrderStatus, expires_at: datetime, *, now: datetime) -> ErrorCode | None:
    """An order takes a confirm, cancel or reject only while pending and inside its window."""
    if status is OrderStatus.EXPIRED or (status is OrderStatus.PENDING and now >= expires_at):
        return ErrorCode.ORDER_EXPIRED
    if status is not OrderStatus.PENDING:
        return ErrorCode.ORDER_NOT_PENDING
    return None


def order_refusal(
    order: Order | None,
    principal: Principal,
    *,
    action: Action,
    now: datetime,
    manages_a_party: bool = False,
) -> Refusal | None:
    """`order_failure` as a Refusal: ORDER_NOT_PENDING and ORDER_EXPIRED carry the order's status (one
    past its window is expired even before the workflow records it)."""
    code = order_failure(order, principal, action=action, now=now, manages_a_party=manages_a_party)
    if code is None:
        return None
    if order is not None and code is ErrorCode.ORDER_NOT_PENDING:
        return refusal(code, status=order.status.value)
    if order is not None and code is ErrorCode.ORDER_EXPIRED:
        return refusal(code, status=OrderStatus.EXPIRED.value)
    return refusal(code)


def order_visible(order: Order, principal: Principal, managed_account_ids: set[str]) -> bool:
    """Its parties read an order, and the management account of a party (read-only)."""
    parties = {order.source_account_id, order.destination_account_id}
    return principal.account_id in parties or bool(parties & managed_account_ids)


# --- resources: who may see and act, and the lock during a transfer -------------------------------------

# SPEC §3 "Lock during transfer": while an order holds the resource (pending or transferring) every owner
# action is refused except these. An allow-list, so that a new action is locked until someone decides
# otherwise. (Auto-renewal is the provider's, not an owner action: it stays allowed.)
ALLOWED_WHILE_LOCKED = frozenset({ResourceAction.STOP, ResourceAction.DETACH})
# Allowed while the order is pending, refused once it is confirmed (transferring).
ALLOWED_UNTIL_CONFIRMED = frozenset({ResourceAction.START})


def lock_refusal(action: ResourceAction, locking_order: OrderStatus | None) -> ErrorCode | None:
    """RESOURCE_LOCKED_FOR_TRANSFER when `action` may not run while the order holding the resource is in
    `locking_order` status (None: no order holds it)."""
    if locking_order is None or not locking_order.is_open or action in ALLOWED_WHILE_LOCKED:
        return None
    if action in ALLOWED_UNTIL_CONFIRMED and locking_order is not OrderStatus.TRANSFERRING:
        return None
    return ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER


def resource_access_failure(
    resource: Resource | None, principal: Principal, *, manages_owner: bool, acting: bool
) -> ErrorCode | None:
    """Its owner's principals read and operate a resource; the root of the management account of the
    owner's organization reads it (READ_ONLY_ACCESS on every action); anyone else learns nothing.
    A released resource is gone."""
    if resource is None or resource.released:
        return ErrorCode.RESOURCE_NOT_FOUND
    if resource.owner_account_id == principal.account_id:
        return None
    if manages_owner and views_managed_accounts(principal):
        return ErrorCode.READ_ONLY_ACCESS if acting else None
    return ErrorCode.RESOURCE_NOT_FOUND


def identity_failure(account: Account) -> str | None:
    """SPEC §2: a verified account names its verified identity (entity_id and entity_name)."""
    if account.verified and not (account.entity_id and account.entity_name):
        return "a verified account needs entity_id and entity_name"
    return None


def entity_account_limit_failure(account: Account, verified_accounts_of_entity: int) -> ErrorCode | None:
    """One enterprise entity verifies at most 10 accounts.

    `verified_accounts_of_entity` counts the entity's other verified accounts, not `account` itself.
    """
    if (
        account.kind is AccountKind.ENTERPRISE
        and account.verified
        and verified_accounts_of_entity >= MAX_ACCOUNTS_PER_ENTITY
    ):
        return ErrorCode.ENTITY_ACCOUNT_LIMIT
    return None
