"""TransferService: the transfer operations a caller may ask for, in SPEC §5's terms (API, CLI, console).

Request-level rules (principal, accounts, agreement, verification) fail the whole request with a
TransferError; everything that depends on one resource or order is an item error. Writes go through
the workflows (TransferClient); reads come from the read model (store.orders).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import datetime
from typing import TypeVar
from uuid import uuid4

from pydantic import BaseModel, ConfigDict

from domain import rules
from domain.clock import now
from domain.codes import ErrorCode
from domain.models import (
    AGREEMENT_VERSION,
    Action,
    Event,
    Order,
    OrderStatus,
    Outcome,
    Principal,
    ReceivingConfig,
    Refusal,
    Role,
)
from domain.paging import decode_cursor, encode_cursor
from domain.refusals import TransferError, unavailable
from starter.client import TransferClient, keyed_id
from starter.services.verification import VerificationService, Verified
from store.db import OUTAGE_ERRORS, Database
from store.orders import OrderStore
from store.organizations import OrganizationStore
from store.resources import ResourceStore
from workflows.messages import OrderState


class Result(BaseModel):
    model_config = ConfigDict(frozen=True)


class InitiateItem(Result):
    """One resource of an initiate: its open order, or why it has none."""

    resource_id: str
    order_id: str | None = None
    status: OrderStatus | None = None
    error: Refusal | None = None


class OrderItem(Result):
    """One order of a confirm, cancel or reject batch: its status after the action, or the refusal."""

    order_id: str
    status: OrderStatus | None = None
    error: Refusal | None = None


class Blockers(Result):
    resource_id: str
    blockers: list[Refusal]
    warnings: list[Refusal]


# Told once per item of a batch as soon as that item is answered (the CLI's progress bar).
OnItemAnswered = Callable[[], None]
_Item = TypeVar("_Item")


async def _each(
    keys: Sequence[str],
    answer: Callable[[str], Awaitable[_Item]],
    refused: Callable[[str, Refusal], _Item],
    progress: OnItemAnswered | None,
) -> list[_Item]:
    """Answers every item of a batch concurrently, in request order. An item whose answer raises a
    refusal, or meets a database outage, is that item's error: the items done keep their results."""

    async def one(key: str) -> _Item:
        try:
            item = await answer(key)
        except TransferError as error:
            item = refused(key, error.refusal)
        except OUTAGE_ERRORS:
            item = refused(key, unavailable("database").refusal)
        if progress is not None:
            progress()
        return item

    return list(await asyncio.gather(*(one(key) for key in keys)))


class TransferService:
    def __init__(self, transfers: TransferClient, db: Database) -> None:
        self.transfers = transfers
        self._db = db
        # Checks the code once for the whole request and uses it up; the messages the client then
        # sends carry the attestation that it was checked, never the code.
        self._verification = VerificationService(db)

    # --- initiate ---------------------------------------------------------------------------------

    async def _request_level(self, principal: Principal, destination_account_id: str) -> None:
        self._refuse_ram_user(principal)
        async with self._db.read() as session:
            pair = await OrderStore(session).account_pair(
                principal.account_id, destination_account_id, excluding=None, lock=False
            )
        if pair is None:
            raise TransferError(ErrorCode.VALIDATION_ERROR, "unknown account")
        if (refused := rules.pair_refusal(pair)) is not None:
            raise TransferError.of(refused)

    async def initiate(
        self,
        principal: Principal,
        *,
        destination_account_id: str,
        resource_ids: Sequence[str],
        agreement_accepted: bool,
        code: str,
        received_at: datetime | None = None,
        idempotency_key: str | None = None,
        progress: OnItemAnswered | None = None,
    ) -> list[InitiateItem]:
        """Opens one order per resource; answers once each is open (lock held) or refused."""
        received_at = received_at or now()
        await self._request_level(principal, destination_account_id)
        if not agreement_accepted:
            raise TransferError(ErrorCode.AGREEMENT_NOT_ACCEPTED)
        verified = await self._verification.verify(principal, code, received_at)

        async def open_one(resource_id: str) -> InitiateItem:
            # With an Idempotency-Key, a retry names the same order and update: it joins them.
            keyed = keyed_id(principal, idempotency_key, Action.INITIATE, resource_id)
            state = await self.transfers.initiate(
                initiator=principal,
                destination_account_id=destination_account_id,
                resource_id=resource_id,
                agreement_version=AGREEMENT_VERSION,
                order_id=f"to-{keyed}" if keyed else None,
                update_id=keyed,
            )
            return InitiateItem(resource_id=resource_id, order_id=state.order_id, status=state.status)

        def refused(resource_id: str, why: Refusal) -> InitiateItem:
            return InitiateItem(resource_id=resource_id, error=why)

        items = await _each(resource_ids, open_one, refused, progress)
        await self._unless_nothing_was_done(items, verified)
        return items

    async def validate(
        self,
        principal: Principal,
        *,
        destination_account_id: str,
        resource_ids: Sequence[str],
        received_at: datetime | None = None,
    ) -> list[Blockers]:
        """The dry run: request-level rules as errors, every per-resource blocker and warning listed."""
        await self._request_level(principal, destination_account_id)
        at = received_at or now()
        async with self._db.read() as session:
            resources = ResourceStore(session)
            results = []
            for resource_id in resource_ids:
                resource = await resources.get(resource_id)
                found = rules.blockers(resource, source_account_id=principal.account_id, now=at)
                # Another account's resource is not found, and says nothing more.
                hidden = any(b.code is ErrorCode.RESOURCE_NOT_FOUND for b in found)
                warned = [] if hidden else rules.warnings(resource)
                results.append(Blockers(resource_id=resource_id, blockers=found, warnings=warned))
            return results

    # --- confirm, cancel, reject --------------------------------------------------------------------

    async def confirm(
        self,
        principal: Principal,
        *,
        order_ids: Sequence[str],
        agreement_accepted: bool,
        code: str,
        receiving_config: ReceivingConfig | None = None,
        received_at: datetime | None = None,
        idempotency_key: str | None = None,
        progress: OnItemAnswered | None = None,
    ) -> list[OrderItem]:
        received_at = received_at or now()
        self._refuse_ram_user(principal)
        if not agreement_accepted:
            raise TransferError(ErrorCode.AGREEMENT_NOT_ACCEPTED)
        # A successful verification uses the code up, even when every order is then refused.
        verified = await self._verification.verify(principal, code, received_at)
        items = await self._each_order(
            principal,
            order_ids,
            Action.CONFIRM,
            lambda order_id, update_id: self.transfers.confirm(
                order_id, principal, receiving_config, update_id=update_id
            ),
            progress,
            idempotency_key,
        )
        await self._unless_nothing_was_done(items, verified)
        return items

    async def cancel(
        self,
        principal: Principal,
        *,
        order_ids: Sequence[str],
        idempotency_key: str | None = None,
        progress: OnItemAnswered | None = None,
    ) -> list[OrderItem]:
        self._refuse_ram_user(principal)
        return await self._each_order(
            principal,
            order_ids,
            Action.CANCEL,
            lambda order_id, update_id: self.transfers.cancel(order_id, principal, update_id=update_id),
            progress,
            idempotency_key,
        )

    async def reject(
        self,
        principal: Principal,
        *,
        order_ids: Sequence[str],
        reason: str | None = None,
        idempotency_key: str | None = None,
        progress: OnItemAnswered | None = None,
    ) -> list[OrderItem]:
        self._refuse_ram_user(principal)
        return await self._each_order(
            principal,
            order_ids,
            Action.REJECT,
            lambda order_id, update_id: self.transfers.reject(
                order_id, principal, reason, update_id=update_id
            ),
            progress,
            idempotency_key,
        )

    async def answer(self, principal: Principal, items: Sequence[OrderItem]) -> Order:
        """The single form's answer: a batch of one whose item error becomes the error of the request,
        otherwise the order as the read model has it after the action."""
        (item,) = items
        if item.error is not None:
            raise TransferError.of(item.error)
        return await self.get(principal, item.order_id)

    @staticmethod
    def _refuse_ram_user(principal: Principal) -> None:
        if (code := rules.principal_failure(principal)) is not None:
            raise TransferError(code)

    async def _each_order(
        self,
        principal: Principal,
        order_ids: Sequence[str],
        action: Action,
        act: Callable[[str, str | None], Awaitable[OrderState]],
        progress: OnItemAnswered | None,
        idempotency_key: str | None,
    ) -> list[OrderItem]:
        """`act(order_id, update_id)` on each order the read model lets the caller act on; with an
        Idempotency-Key, the update id is the key's, so a retry answers the first update."""
        managed = await self._managed(principal)

        async def one(order_id: str) -> OrderItem:
            async with self._db.read() as session:
                order = await OrderStore(session).get(order_id, history=False)  # the rules read no history
            manages_a_party = order is not None and bool(
                {order.source_account_id, order.destination_account_id} & managed
            )
            refused = rules.order_refusal(
                order, principal, action=action, now=now(), manages_a_party=manages_a_party
            )
            if refused is not None:
                # Refused here, from the read model: the workflow never saw it, so the event is ours to
                # record (never for a stranger, who must not learn the order exists).
                if order is not None and refused.code is not ErrorCode.ORDER_NOT_FOUND:
                    await self._record_refusal(order, principal, action, refused.code)
                return OrderItem(order_id=order_id, error=refused)
            try:
                state = await act(order_id, keyed_id(principal, idempotency_key, action, order_id))
            except TransferError as error:
                if error.code is ErrorCode.ORDER_NOT_FOUND:
                    # The database has the order, its run does not yet (it is still opening it, after
                    # a restart say): not "not found" but "not now".
                    raise unavailable("temporal") from None
                raise
            return OrderItem(order_id=order_id, status=state.status)

        def failed(order_id: str, why: Refusal) -> OrderItem:
            return OrderItem(order_id=order_id, error=why)

        return await _each(order_ids, one, failed, progress)

    async def _unless_nothing_was_done(
        self, items: Sequence[InitiateItem | OrderItem], verified: Verified
    ) -> None:
        """SPEC §5: a request that did nothing because a dependency was down uses up no code; it is
        refused as a whole with SERVICE_UNAVAILABLE."""
        errors = [item.error for item in items]
        if not all(e is not None and e.code is ErrorCode.SERVICE_UNAVAILABLE for e in errors):
            return
        await self._verification.release(verified)
        assert errors[0] is not None
        raise TransferError.of(errors[0])

    async def _record_refusal(
        self, order: Order, principal: Principal, action: Action, code: ErrorCode
    ) -> None:
        event = Event(
            at=now(), actor_account_id=principal.account_id, action=action, outcome=Outcome.REFUSED, code=code
        )
        async with self._db.write() as session:
            await OrderStore(session).add_event(uuid4().hex, order.order_id, event)

    async def _managed(self, principal: Principal) -> set[str]:
        """The member accounts whose orders the caller may read (never act on)."""
        if not rules.views_managed_accounts(principal):
            return set()
        async with self._db.read() as session:
            return await OrganizationStore(session).member_ids(principal.account_id)

    # --- reads --------------------------------------------------------------------------------------

    async def get(self, principal: Principal, order_id: str) -> Order:
        """Parties and the management account of a party may read an order; others learn nothing."""
        async with self._db.read() as session:
            order = await OrderStore(session).get(order_id)
        if order is None or not rules.order_visible(order, principal, await self._managed(principal)):
            raise TransferError(ErrorCode.ORDER_NOT_FOUND)
        return order

    async def list(
        self,
        principal: Principal,
        *,
        role: Role | None = None,
        statuses: Collection[OrderStatus] | None = None,
        limit: int = 20,
        cursor: str | None = None,
        organization: bool = False,
    ) -> tuple[list[Order], str | None]:
        """The caller's orders in one of `statuses` (None: any), or with `organization` its members'
        (management account only), newest first, each with its steps and events, and the cursor of the
        next page."""
        if limit < 1:
            raise TransferError(ErrorCode.VALIDATION_ERROR, "limit must be at least 1")
        after = decode_cursor(cursor) if cursor is not None else None
        accounts = await self._managed(principal) if organization else {principal.account_id}
        async with self._db.read() as session:
            page, more = await OrderStore(session).page(
                account_ids=accounts, role=role, statuses=statuses, limit=limit, after=after
            )
        return page, encode_cursor(page[-1].created_at, page[-1].order_id) if more else None
