"""SPEC §3 as pure functions: each takes what it needs and returns SPEC codes, first failure first."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from domain.codes import ErrorCode, default_message
from domain.models import (
    Account,
    AccountKind,
    Billing,
    InstanceStatus,
    Network,
    Order,
    OrderStatus,
    Principal,
    PrincipalKind,
    PriorDestination,
    Product,
    Resource,
)

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
    if resource.product is Product.EIP and resource.attached_to is not None:
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
    return default_message(code)


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
    action: str,
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
    if action == "cancel":
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
