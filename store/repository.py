"""TransferStore: provisioning, the read model of orders, the resource lock and the hand-off writes.

Every public method is one transaction. Every write is idempotent: repeating it with the same
arguments changes nothing and answers the same. Business refusals raise domain.codes.TransferError.

Concurrency: on SQLite every write transaction begins IMMEDIATE (store.db), so writers serialize.
On PostgreSQL (READ COMMITTED) the guards are conditional UPDATEs (`... WHERE status = 'pending'`,
`... WHERE locked_by_order_id IS NULL`), INSERT ... ON CONFLICT DO NOTHING for write-once rows, a
row lock on the source account in open_order and an advisory lock per entity for the entity limit.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from domain import rules
from domain.billing import MONTH
from domain.codes import ErrorCode, TransferError, default_message
from domain.models import (
    CENT,
    Account,
    Action,
    Billing,
    Charge,
    ChargeKind,
    Event,
    Failure,
    InstanceStatus,
    Order,
    OrderStatus,
    Outcome,
    Principal,
    PrincipalKind,
    Product,
    ReceivingConfig,
    Resource,
    StepName,
    StepStatus,
)
from domain.verification import matching_time_step
from store import convert
from store.cursor import decode_cursor, encode_cursor
from store.db import READ_ONLY
from store.queries import (
    NO_SYNC,
    add_event,
    get,
    insert_once,
    ledger_amount,
    move_owner,
    must_get,
    order_with_history,
    orders_with_history,
    prior_destinations,
    release_lock,
    rowcount,
)
from store.tables import (
    AccountRow,
    BillingHandoffRow,
    ChargeRow,
    CredentialRow,
    OrderRow,
    OrderStepRow,
    OrganizationMemberRow,
    OrganizationRow,
    ResourceRow,
    VerificationRow,
)

# The status each decision gives a pending order, and the action its event records.
DECISIONS = {
    OrderStatus.TRANSFERRING: Action.CONFIRM,
    OrderStatus.CANCELLED: Action.CANCEL,
    OrderStatus.REJECTED: Action.REJECT,
    OrderStatus.EXPIRED: Action.EXPIRE,
}
ENDINGS = {OrderStatus.COMPLETED: Action.COMPLETE, OrderStatus.FAILED: Action.FAIL}

Refusal = tuple[ErrorCode, str]


class TransferStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._postgresql = engine.dialect.name == "postgresql"

    # -- accounts, credentials, organizations -----------------------------------------------

    async def create_account(self, account: Account, *, created_at: datetime) -> Account:
        """Creates the account; the same id again answers it if the data are identical."""
        _check_identity(account)
        async with self._write() as session:
            if (row := await get(session, AccountRow, account.id)) is not None:
                return _same_account(row, account)
            await self._check_entity_limit(session, account)
            if not await insert_once(session, AccountRow, {**account.model_dump(), "created_at": created_at}):
                # a concurrent twin inserted it first
                return _same_account(await must_get(session, AccountRow, account.id), account)
        return account

    async def update_account(
        self,
        account_id: str,
        *,
        verified: bool | None = None,
        frozen: bool | None = None,
        entity_name: str | None = None,
    ) -> Account:
        """Changes the fields given; verifying an account checks the entity limit again."""
        changes = {
            name: value
            for name, value in (("verified", verified), ("frozen", frozen), ("entity_name", entity_name))
            if value is not None
        }
        async with self._write() as session:
            row = await get(session, AccountRow, account_id, lock=True)
            if row is None:
                raise TransferError(ErrorCode.VALIDATION_ERROR, "unknown account")
            current = convert.account(row)
            updated = Account.model_validate({**current.model_dump(), **changes})
            _check_identity(updated)
            if updated.verified and not current.verified:
                await self._check_entity_limit(session, updated)
            for name, value in changes.items():
                setattr(row, name, value)
        return updated

    async def get_account(self, account_id: str) -> Account | None:
        async with self._read() as session:
            row = await session.get(AccountRow, account_id)
            return convert.account(row) if row else None

    async def add_credential(
        self,
        *,
        account_id: str,
        token: str,
        kind: PrincipalKind,
        name: str | None = None,
        ram_user_id: str | None = None,
    ) -> Principal:
        """Keeps sha256(token) for the account's root or a RAM user (its id generated when None).

        The token names the credential: adding it again answers the same principal.
        """
        if kind is PrincipalKind.ROOT and ram_user_id is not None:
            raise TransferError(ErrorCode.VALIDATION_ERROR, "a root credential has no RAM user id")
        digest = token_digest(token)
        async with self._write() as session:
            if (row := await _credential(session, digest)) is not None:
                return _same_credential(row, account_id, kind, name, ram_user_id)
            if await session.get(AccountRow, account_id) is None:
                raise TransferError(ErrorCode.VALIDATION_ERROR, "unknown account")
            if kind is PrincipalKind.RAM_USER and ram_user_id is None:
                ram_user_id = f"ram-{uuid.uuid4().hex[:20]}"
            values = {
                "account_id": account_id,
                "kind": kind.value,
                "ram_user_id": ram_user_id,
                "name": name,
                "token_sha256": digest,
            }
            if not await insert_once(session, CredentialRow, values):
                if (row := await _credential(session, digest)) is None:
                    raise TransferError(ErrorCode.VALIDATION_ERROR, "RAM user id already taken")
                return _same_credential(row, account_id, kind, name, ram_user_id)
        return Principal(kind=kind, account_id=account_id, ram_user_id=ram_user_id)

    async def principal_for_token(self, token: str) -> Principal | None:
        async with self._read() as session:
            row = await _credential(session, token_digest(token))
            return _principal(row) if row else None

    async def create_organization(
        self, organization_id: str, management_account_id: str, member_account_ids: list[str]
    ) -> None:
        """Creates the organization once; the same id again must name the same MA and members."""
        members = set(member_account_ids)
        async with self._write() as session:
            if await get(session, OrganizationRow, organization_id) is None:
                await _check_organization(session, management_account_id, members)
                values = {"id": organization_id, "management_account_id": management_account_id}
                if await insert_once(session, OrganizationRow, values):
                    for account_id in sorted(members):
                        member = {"organization_id": organization_id, "account_id": account_id}
                        if not await insert_once(session, OrganizationMemberRow, member):
                            raise TransferError(
                                ErrorCode.VALIDATION_ERROR, f"account {account_id} is in another organization"
                            )
                    return
            row = await must_get(session, OrganizationRow, organization_id)
            stored = await session.scalars(
                select(OrganizationMemberRow.account_id).where(
                    OrganizationMemberRow.organization_id == organization_id
                )
            )
            if row.management_account_id != management_account_id or set(stored) != members:
                raise TransferError(
                    ErrorCode.VALIDATION_ERROR, f"organization {organization_id} exists with other data"
                )

    async def managed_account_ids(self, management_account_id: str) -> set[str]:
        """The members of the organization this account manages (empty if it manages none)."""
        async with self._read() as session:
            ids = await session.scalars(
                select(OrganizationMemberRow.account_id)
                .join(OrganizationRow, OrganizationRow.id == OrganizationMemberRow.organization_id)
                .where(OrganizationRow.management_account_id == management_account_id)
            )
            return set(ids)

    # -- resources and charges --------------------------------------------------------------

    async def create_resource(self, resource: Resource, *, at: datetime) -> Resource:
        """Provisions the resource; a subscription gets its `original` charge for its current term.

        Idempotent on the id: an existing resource is answered as it is now.
        """
        if resource.locked_by_order_id is not None:
            raise TransferError(ErrorCode.VALIDATION_ERROR, "a new resource holds no transfer lock")
        if resource.billing is Billing.SUBSCRIPTION and (
            resource.expires_at is None or resource.expires_at <= resource.created_at
        ):
            raise TransferError(ErrorCode.VALIDATION_ERROR, "a subscription expires after its creation")
        async with self._write() as session:
            if (row := await get(session, ResourceRow, resource.id)) is not None:
                return convert.resource(row)
            if await session.get(AccountRow, resource.owner_account_id) is None:
                raise TransferError(ErrorCode.VALIDATION_ERROR, "unknown owner account")
            if not await insert_once(session, ResourceRow, resource.model_dump()):
                return convert.resource(await must_get(session, ResourceRow, resource.id))
            if resource.billing is Billing.SUBSCRIPTION and resource.expires_at is not None:
                months = term_months(resource.created_at, resource.expires_at)
                session.add(
                    ChargeRow(
                        resource_id=resource.id,
                        payer_account_id=resource.owner_account_id,
                        kind=ChargeKind.ORIGINAL.value,
                        amount=ledger_amount((resource.monthly_price * months).quantize(CENT)),
                        period_start=resource.created_at,
                        period_end=resource.expires_at,
                        created_at=at,
                    )
                )
        return resource

    async def get_resource(self, resource_id: str) -> Resource | None:
        async with self._read() as session:
            row = await session.get(ResourceRow, resource_id)
            return convert.resource(row) if row else None

    async def list_resources(self, owner_account_ids: set[str]) -> list[Resource]:
        """The resources these accounts own, released ones excluded, oldest first."""
        async with self._read() as session:
            rows = await session.scalars(
                select(ResourceRow)
                .where(ResourceRow.owner_account_id.in_(owner_account_ids), ResourceRow.released.is_(False))
                .order_by(ResourceRow.created_at, ResourceRow.id)
            )
            return [convert.resource(row) for row in rows]

    async def set_instance_status(self, resource_id: str, status: InstanceStatus) -> Resource:
        """Stops or starts an ECS instance. Stopping is always allowed; starting is refused with
        RESOURCE_LOCKED_FOR_TRANSFER once the order holding the lock is confirmed (SPEC §3)."""
        async with self._write() as session:
            row = await get(session, ResourceRow, resource_id, lock=True)
            if row is None or row.released:
                raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)
            if row.product != Product.ECS.value:
                raise TransferError(ErrorCode.VALIDATION_ERROR, "only ECS instances stop and start")
            if status is InstanceStatus.RUNNING and row.locked_by_order_id is not None:
                order = await get(session, OrderRow, row.locked_by_order_id)
                if order is not None and order.status == OrderStatus.TRANSFERRING.value:
                    raise TransferError(ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER)
            row.status = status.value
            return convert.resource(row)

    async def list_charges(self, resource_id: str) -> list[Charge]:
        async with self._read() as session:
            rows = await session.scalars(
                select(ChargeRow).where(ChargeRow.resource_id == resource_id).order_by(ChargeRow.id)
            )
            return [convert.charge(row) for row in rows]

    async def add_charge(
        self,
        *,
        resource_id: str,
        payer_account_id: str,
        kind: ChargeKind,
        amount: Decimal,
        period_start: datetime,
        period_end: datetime,
        created_at: datetime,
        refunds_charge_id: int | None = None,
        idempotency_key: str | None = None,
        order_id: str | None = None,
    ) -> Charge:
        """Records a charge (a refund is negative). With an idempotency key the key names the charge
        and a repeat answers the first one; without a key every call adds a charge."""
        if Decimal(amount) != Decimal(amount).quantize(CENT):
            raise ValueError(f"money has at most two decimal places: {amount}")
        values = {
            "resource_id": resource_id,
            "payer_account_id": payer_account_id,
            "kind": kind.value,
            "amount": ledger_amount(Decimal(amount).quantize(CENT)),
            "period_start": period_start,
            "period_end": period_end,
            "created_at": created_at,
            "refunds_charge_id": refunds_charge_id,
            "order_id": order_id,
            "idempotency_key": idempotency_key,
        }
        async with self._write() as session:
            if idempotency_key is not None and (row := await _charge_by_key(session, idempotency_key)):
                return convert.charge(row)
            if await session.get(ResourceRow, resource_id) is None:
                raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)
            if await session.get(AccountRow, payer_account_id) is None:
                raise TransferError(ErrorCode.VALIDATION_ERROR, "unknown payer account")
            if refunds_charge_id is not None and await session.get(ChargeRow, refunds_charge_id) is None:
                raise TransferError(ErrorCode.VALIDATION_ERROR, "unknown refunded charge")
            if idempotency_key is None:
                new = ChargeRow(**values)
                session.add(new)
                await session.flush()
                return convert.charge(new)
            await insert_once(session, ChargeRow, values)
            # ours, or a concurrent twin's with the same key
            return convert.charge(await _must_charge_by_key(session, idempotency_key))

    # -- risk verification ------------------------------------------------------------------

    async def verify_code(
        self,
        *,
        verification_id: str,
        account_id: str,
        code: str,
        received_at: datetime,
        order_id: str | None = None,
    ) -> None:
        """Checks a TOTP code at the time it was received and uses its time step up.

        A retry with the same verification_id passes without checking the code again; another
        verification of an already used step fails, also when both race.
        """
        async with self._write() as session:
            account = await session.get(AccountRow, account_id)
            if account is None:
                raise TransferError(ErrorCode.VERIFICATION_FAILED)
            if account.frozen:
                raise TransferError(ErrorCode.ACCOUNT_FROZEN)
            if await _verified_before(session, verification_id, account_id):
                return
            step = matching_time_step(account.mfa_secret, code, received_at)
            if step is None:
                raise TransferError(ErrorCode.VERIFICATION_FAILED)
            values = {
                "verification_id": verification_id,
                "account_id": account_id,
                "time_step": step,
                "received_at": received_at,
                "order_id": order_id,
            }
            if await insert_once(session, VerificationRow, values):
                return
            # Either a concurrent retry of this verification won (fine) or the step is used up.
            if not await _verified_before(session, verification_id, account_id):
                raise TransferError(ErrorCode.VERIFICATION_FAILED)

    # -- orders -----------------------------------------------------------------------------

    async def account_failure(
        self, source_account_id: str, destination_account_id: str, *, excluding_order_id: str | None = None
    ) -> Refusal | None:
        """The request-level account rules of initiate (read-only): the first failure, or None."""
        async with self._read() as session:
            source = await session.get(AccountRow, source_account_id)
            if source is None:
                raise TransferError(ErrorCode.VALIDATION_ERROR, "unknown account")
            code = await _account_failure(session, source, destination_account_id, excluding_order_id)
            return (code, default_message(code)) if code else None

    async def open_order(
        self,
        *,
        order_id: str,
        resource_id: str,
        source_account_id: str,
        destination_account_id: str,
        agreement_version: str,
        created_at: datetime,
        expires_at: datetime,
        actor_account_id: str,
    ) -> Order:
        """Checks the account and resource rules, takes the resource lock and opens a pending order.

        An existing order_id is answered unchanged, without checking the rules again.
        """
        async with self._write() as session:
            # Locked first: opens from one source serialize, so the destination limits count every
            # order committed before this one.
            source = await get(session, AccountRow, source_account_id, lock=True)
            if (existing := await get(session, OrderRow, order_id)) is not None:
                return await order_with_history(session, existing)
            if source is None:
                raise TransferError(ErrorCode.VALIDATION_ERROR, "unknown account")
            if code := await _account_failure(session, source, destination_account_id, order_id):
                raise TransferError(code)
            resource_row = await session.get(ResourceRow, resource_id)
            resource = convert.resource(resource_row) if resource_row else None
            blockers = rules.resource_blockers(resource, source_account_id=source_account_id, now=created_at)
            if blockers:
                raise TransferError(blockers[0], rules.blocker_message(blockers[0], resource))
            assert resource is not None
            # THE LOCK: one atomic conditional UPDATE; whoever changes the row holds the resource.
            locked = await rowcount(
                session,
                update(ResourceRow)
                .where(
                    ResourceRow.id == resource_id,
                    ResourceRow.owner_account_id == source_account_id,
                    ResourceRow.locked_by_order_id.is_(None),
                    ResourceRow.released.is_(False),
                )
                .values(locked_by_order_id=order_id),
            )
            if not locked:
                raise TransferError(ErrorCode.RESOURCE_IN_TRANSFER)
            row = OrderRow(
                order_id=order_id,
                resource_id=resource_id,
                product=resource.product.value,
                source_account_id=source_account_id,
                destination_account_id=destination_account_id,
                status=OrderStatus.PENDING.value,
                created_at=created_at,
                expires_at=expires_at,
                agreement_version=agreement_version,
            )
            session.add(row)
            try:
                await session.flush()
            except IntegrityError as exc:  # the partial unique index: another open order exists
                raise TransferError(ErrorCode.RESOURCE_IN_TRANSFER) from exc
            initiated = Event(
                at=created_at,
                actor_account_id=actor_account_id,
                action=Action.INITIATE,
                outcome=Outcome.ACCEPTED,
            )
            await add_event(session, f"{order_id}:{Action.INITIATE.value}", order_id, initiated)
            return await order_with_history(session, row)

    async def get_order(self, order_id: str) -> Order | None:
        """The order with its steps (by start, then name) and events (in the order they happened)."""
        async with self._read() as session:
            row = await session.get(OrderRow, order_id)
            return await order_with_history(session, row) if row else None

    async def list_orders(
        self,
        *,
        account_ids: set[str],
        role: Literal["source", "destination"] | None,
        status: OrderStatus | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[Order], str | None]:
        """Orders whose source (or destination, or either when role is None) is one of the
        accounts, newest first, and the cursor of the next page (None on the last page).

        Each order carries its steps and events, as from get_order.
        """
        if limit < 1:
            raise TransferError(ErrorCode.VALIDATION_ERROR, "limit must be at least 1")
        if role not in (None, "source", "destination"):
            raise TransferError(ErrorCode.VALIDATION_ERROR, "role must be source or destination")
        after = decode_cursor(cursor) if cursor is not None else None
        if not account_ids:
            return [], None
        as_source = OrderRow.source_account_id.in_(account_ids)
        as_destination = OrderRow.destination_account_id.in_(account_ids)
        party = {"source": as_source, "destination": as_destination, None: or_(as_source, as_destination)}
        query = select(OrderRow).where(party[role])
        if status is not None:
            query = query.where(OrderRow.status == status.value)
        if after is not None:
            created_at, order_id = after
            query = query.where(
                or_(
                    OrderRow.created_at < created_at,
                    and_(OrderRow.created_at == created_at, OrderRow.order_id < order_id),
                )
            )
        # One row more than the page tells whether another page follows.
        query = query.order_by(OrderRow.created_at.desc(), OrderRow.order_id.desc()).limit(limit + 1)
        async with self._read() as session:
            rows = list(await session.scalars(query))
            page = await orders_with_history(session, rows[:limit])
        if len(rows) <= limit:
            return page, None
        return page, encode_cursor(page[-1].created_at, page[-1].order_id)

    async def confirmation_failure(self, order_id: str, *, at: datetime) -> Refusal | None:
        """Every rule of initiate again at `at`, then INSTANCE_NOT_STOPPED: the first failure, or None.

        Read-only. The order's own lock and the order itself (as a prior destination) do not count.
        """
        async with self._read() as session:
            order = await session.get(OrderRow, order_id)
            if order is None:
                return ErrorCode.ORDER_NOT_FOUND, default_message(ErrorCode.ORDER_NOT_FOUND)
            source = await must_get(session, AccountRow, order.source_account_id)
            if code := await _account_failure(session, source, order.destination_account_id, order_id):
                return code, default_message(code)
            resource_row = await session.get(ResourceRow, order.resource_id)
            resource = convert.resource(resource_row) if resource_row else None
            blockers = rules.resource_blockers(
                resource, source_account_id=order.source_account_id, now=at, order_id=order_id
            )
            if blockers:
                return blockers[0], rules.blocker_message(blockers[0], resource)
            assert resource is not None
            stopped = rules.stopped_state_failure(resource)
            return (stopped, default_message(stopped)) if stopped else None

    async def decide(
        self,
        order_id: str,
        *,
        status: OrderStatus,
        at: datetime,
        actor_account_id: str | None,
        receiving_config: ReceivingConfig | None = None,
    ) -> Order:
        """A pending order becomes transferring (confirm) or cancelled / rejected / expired.

        Exactly one decision wins. Asking for the status the order already has answers the order;
        any other status refuses with ORDER_NOT_PENDING (details.status). Every decision but a
        confirm releases the lock. A confirm checks INSTANCE_NOT_STOPPED once more under the
        resource's row lock, so a start racing the confirm cannot slip in after confirmation_failure.
        """
        if status not in DECISIONS:
            raise ValueError(f"an order cannot be decided to {status}")
        values: dict[str, Any] = {"status": status.value}
        if status is OrderStatus.TRANSFERRING:
            values["confirmed_at"] = at
            values["receiving_config"] = receiving_config.model_dump() if receiving_config else None
        event = Event(
            at=at, actor_account_id=actor_account_id, action=DECISIONS[status], outcome=Outcome.ACCEPTED
        )
        return await self._transition(order_id, OrderStatus.PENDING, values, event)

    async def finish(
        self, order_id: str, *, status: OrderStatus, at: datetime, failure: Failure | None = None
    ) -> Order:
        """A transferring order becomes completed or failed and releases the lock. Idempotent like decide."""
        if status not in ENDINGS:
            raise ValueError(f"an order cannot finish as {status}")
        values: dict[str, Any] = {
            "status": status.value,
            "failure_code": failure.code.value if failure else None,
            "failure_message": failure.message if failure else None,
        }
        if status is OrderStatus.COMPLETED:
            values["completed_at"] = at
        code = failure.code.value if failure else None
        event = Event(
            at=at, actor_account_id=None, action=ENDINGS[status], outcome=Outcome.ACCEPTED, code=code
        )
        return await self._transition(order_id, OrderStatus.TRANSFERRING, values, event)

    async def record_event(self, *, event_id: str, order_id: str, event: Event) -> None:
        """Appends an event (a refused attempt, say) once per event_id."""
        async with self._write() as session:
            await add_event(session, event_id, order_id, event)

    async def start_step(self, order_id: str, name: StepName, *, at: datetime, attempt: int) -> None:
        """The step is running its `attempt`; started_at stays the first start's.

        A step that already succeeded stays as it is: running its activity again changes nothing.
        """
        running = {
            "status": StepStatus.RUNNING.value,
            "attempts": attempt,
            "finished_at": None,
            "error_code": None,
            "error_message": None,
        }
        async with self._write() as session:
            values = {"order_id": order_id, "name": name.value, "started_at": at, **running}
            if not await insert_once(session, OrderStepRow, values):
                await session.execute(
                    update(OrderStepRow)
                    .where(
                        OrderStepRow.order_id == order_id,
                        OrderStepRow.name == name.value,
                        OrderStepRow.status != StepStatus.SUCCEEDED.value,
                    )
                    .values(**running),
                    execution_options=NO_SYNC,
                )

    async def finish_step(
        self, order_id: str, name: StepName, *, at: datetime, error: Failure | None = None
    ) -> None:
        """The running step succeeded, or failed with `error`; a step that is not running stays as it is."""
        ended = {
            "status": (StepStatus.FAILED if error else StepStatus.SUCCEEDED).value,
            "finished_at": at,
            "error_code": error.code.value if error else None,
            "error_message": error.message if error else None,
        }
        async with self._write() as session:
            # Never started: recorded as one attempt that took no time.
            values = {"order_id": order_id, "name": name.value, "started_at": at, "attempts": 1, **ended}
            if not await insert_once(session, OrderStepRow, values):
                await session.execute(
                    update(OrderStepRow)
                    .where(
                        OrderStepRow.order_id == order_id,
                        OrderStepRow.name == name.value,
                        OrderStepRow.status == StepStatus.RUNNING.value,
                    )
                    .values(**ended),
                    execution_options=NO_SYNC,
                )

    # -- hand-off and compensation: the order must be transferring --------------------------

    async def reassign_ownership(self, order_id: str) -> None:
        """The resource passes from the source to the destination. Its status is untouched: a VPC
        ECS instance stays stopped."""
        async with self._write() as session:
            order = await _transferring(session, order_id)
            if await move_owner(session, order, order.source_account_id, order.destination_account_id):
                return
            resource = await get(session, ResourceRow, order.resource_id)
            if resource is None or resource.owner_account_id != order.destination_account_id:
                raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)

    async def hand_off_billing(self, order_id: str, *, cut_over_at: datetime) -> None:
        """From cut_over_at on the destination pays. A frozen destination refuses it (ACCOUNT_FROZEN)."""
        async with self._write() as session:
            order = await _transferring(session, order_id)
            if await session.get(BillingHandoffRow, order_id) is not None:
                return
            destination = await get(session, AccountRow, order.destination_account_id)
            if destination is None or destination.frozen:
                raise TransferError(ErrorCode.ACCOUNT_FROZEN)
            values = {
                "order_id": order_id,
                "resource_id": order.resource_id,
                "from_account_id": order.source_account_id,
                "to_account_id": order.destination_account_id,
                "cut_over_at": cut_over_at,
            }
            await insert_once(session, BillingHandoffRow, values)

    async def apply_receiving_config(self, order_id: str) -> None:
        """Writes the confirm's receiving_config onto the resource: its resource group, and its tags
        merged over the resource's (a key it names takes the new value)."""
        async with self._write() as session:
            order = await _transferring(session, order_id)
            if order.receiving_config is None:
                return
            config = ReceivingConfig.model_validate(order.receiving_config)
            resource = await get(session, ResourceRow, order.resource_id, lock=True)
            if resource is None:
                raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)
            if config.resource_group is not None:
                resource.resource_group = config.resource_group
            if config.tags:
                resource.tags = {**resource.tags, **config.tags}

    async def restore_billing(self, order_id: str, *, at: datetime) -> None:
        """Reverts the billing hand-off, once; without a hand-off there is nothing to revert."""
        async with self._write() as session:
            await _transferring(session, order_id)
            await session.execute(
                update(BillingHandoffRow)
                .where(BillingHandoffRow.order_id == order_id, BillingHandoffRow.reverted_at.is_(None))
                .values(reverted_at=at),
                execution_options=NO_SYNC,
            )

    async def restore_ownership(self, order_id: str) -> None:
        """The resource goes back to the source if the destination holds it."""
        async with self._write() as session:
            order = await _transferring(session, order_id)
            if await move_owner(session, order, order.destination_account_id, order.source_account_id):
                return
            resource = await get(session, ResourceRow, order.resource_id)
            if resource is None or resource.owner_account_id != order.source_account_id:
                raise TransferError(ErrorCode.RESOURCE_NOT_FOUND)

    # -- transactions -----------------------------------------------------------------------

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncSession]:
        """A transaction that commits when the block ends, rolls back when it raises."""
        async with self._sessions.begin() as session:
            yield session

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncSession]:
        """A read-only transaction: on SQLite a plain BEGIN that never waits for writers."""
        async with self._sessions() as session:
            await session.connection(execution_options={READ_ONLY: True})
            yield session

    async def _transition(
        self, order_id: str, from_status: OrderStatus, values: dict[str, Any], event: Event
    ) -> Order:
        """Moves the order from `from_status` to values["status"] if no one else moved it first."""
        to_status = values["status"]
        async with self._write() as session:
            order = await get(session, OrderRow, order_id, lock=True)
            if order is None:
                raise TransferError(ErrorCode.ORDER_NOT_FOUND)
            if order.status == from_status.value and to_status == OrderStatus.TRANSFERRING.value:
                await _require_stopped(session, order.resource_id)
            won = await rowcount(
                session,
                update(OrderRow)
                .where(OrderRow.order_id == order_id, OrderRow.status == from_status.value)
                .values(**values),
            )
            row = await must_get(session, OrderRow, order_id)
            if not won:
                if row.status == to_status:
                    return await order_with_history(session, row)
                raise TransferError(ErrorCode.ORDER_NOT_PENDING, details={"status": row.status})
            if OrderStatus(to_status).is_terminal:
                await release_lock(session, order_id)
            await add_event(session, f"{order_id}:{event.action.value}", order_id, event)
            return await order_with_history(session, row)

    async def _check_entity_limit(self, session: AsyncSession, account: Account) -> None:
        # Only a verified enterprise account of an entity can reach the limit: skip the count otherwise.
        if account.entity_id is None or not rules.entity_account_limit_failure(
            account, rules.MAX_ACCOUNTS_PER_ENTITY
        ):
            return
        if self._postgresql:
            # A new account is an INSERT that no row lock covers: one advisory lock per entity
            # serializes the entity's verifications until commit.
            key = func.hashtextextended(account.entity_id, 0)
            await session.execute(select(func.pg_advisory_xact_lock(key)))
        verified = await session.scalar(
            select(func.count())
            .select_from(AccountRow)
            .where(
                AccountRow.entity_id == account.entity_id,
                AccountRow.verified.is_(True),
                AccountRow.id != account.id,
            )
        )
        if code := rules.entity_account_limit_failure(account, verified or 0):
            raise TransferError(code)

    @property
    def engine(self) -> AsyncEngine:
        """The engine this store runs on (read-only): store.resource_actions.ResourceActions shares it."""
        engine: AsyncEngine = self._sessions.kw["bind"]
        return engine


# -- rules and lookups inside a transaction ----------------------------------------------


async def _account_failure(
    session: AsyncSession, source: AccountRow, destination_account_id: str, excluding_order_id: str | None
) -> ErrorCode | None:
    destination = await session.get(AccountRow, destination_account_id)
    return rules.account_failure(
        convert.account(source),
        convert.account(destination) if destination else None,
        await prior_destinations(session, source.id, excluding=excluding_order_id),
    )


async def _require_stopped(session: AsyncSession, resource_id: str) -> None:
    """INSTANCE_NOT_STOPPED, checked with the resource row locked (set_instance_status locks it too)."""
    resource = await get(session, ResourceRow, resource_id, lock=True)
    if resource is not None and (code := rules.stopped_state_failure(convert.resource(resource))):
        raise TransferError(code)


async def _transferring(session: AsyncSession, order_id: str) -> OrderRow:
    """The order, row-locked, if it is transferring: the hand-off steps run only then."""
    order = await get(session, OrderRow, order_id, lock=True)
    if order is None:
        raise TransferError(ErrorCode.ORDER_NOT_FOUND)
    if order.status != OrderStatus.TRANSFERRING.value:
        raise TransferError(ErrorCode.ORDER_NOT_PENDING, details={"status": order.status})
    return order


async def _check_organization(session: AsyncSession, management_account_id: str, members: set[str]) -> None:
    wanted = members | {management_account_id}
    known = set(await session.scalars(select(AccountRow.id).where(AccountRow.id.in_(wanted))))
    if missing := wanted - known:
        raise TransferError(ErrorCode.VALIDATION_ERROR, f"unknown accounts: {', '.join(sorted(missing))}")
    taken = await session.scalar(
        select(OrganizationMemberRow.account_id).where(OrganizationMemberRow.account_id.in_(members)).limit(1)
    )
    if taken is not None:
        raise TransferError(ErrorCode.VALIDATION_ERROR, f"account {taken} is in another organization")
    managed = await session.scalar(
        select(OrganizationRow.id).where(OrganizationRow.management_account_id == management_account_id)
    )
    if managed is not None:
        raise TransferError(ErrorCode.VALIDATION_ERROR, f"account {management_account_id} manages {managed}")


async def _credential(session: AsyncSession, digest: str) -> CredentialRow | None:
    row: CredentialRow | None = await session.scalar(
        select(CredentialRow).where(CredentialRow.token_sha256 == digest)
    )
    return row


async def _charge_by_key(session: AsyncSession, key: str) -> ChargeRow | None:
    row: ChargeRow | None = await session.scalar(select(ChargeRow).where(ChargeRow.idempotency_key == key))
    return row


async def _must_charge_by_key(session: AsyncSession, key: str) -> ChargeRow:
    if (row := await _charge_by_key(session, key)) is None:
        raise LookupError(f"charge {key!r} vanished inside its transaction")
    return row


async def _verified_before(session: AsyncSession, verification_id: str, account_id: str) -> bool:
    row = await get(session, VerificationRow, verification_id)
    return row is not None and row.account_id == account_id


# -- pure helpers -------------------------------------------------------------------------


def _check_identity(account: Account) -> None:
    """SPEC §2: entity_id and entity_name are required when the account is verified."""
    if account.verified and not (account.entity_id and account.entity_name):
        raise TransferError(ErrorCode.VALIDATION_ERROR, "a verified account needs entity_id and entity_name")


def _same_account(row: AccountRow, account: Account) -> Account:
    stored = convert.account(row)
    if stored != account:
        raise TransferError(ErrorCode.VALIDATION_ERROR, f"account {account.id} exists with other data")
    return stored


def _principal(row: CredentialRow) -> Principal:
    return Principal(kind=PrincipalKind(row.kind), account_id=row.account_id, ram_user_id=row.ram_user_id)


def _same_credential(
    row: CredentialRow, account_id: str, kind: PrincipalKind, name: str | None, ram_user_id: str | None
) -> Principal:
    same = (
        row.account_id == account_id
        and row.kind == kind.value
        and row.name == name
        and ram_user_id in (None, row.ram_user_id)
    )
    if not same:
        raise TransferError(ErrorCode.VALIDATION_ERROR, "this token belongs to another credential")
    return _principal(row)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def term_months(start: datetime, end: datetime) -> int:
    """The term in 30-day months, rounded half up, at least one."""
    term, month = (end - start) // timedelta(microseconds=1), MONTH // timedelta(microseconds=1)
    return max(1, (2 * term + month) // (2 * month))
