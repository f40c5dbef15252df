"""The floor and the shape twin: what Temporal alone costs on this machine.

`EmptyWorkflow` returns at once (the floor). `ShapeTwin` makes exactly the commands a completed
ResourceTransfer makes (tests/histories, current version): started with its `opened` update, a patch
marker, a local activity, the search attributes, the confirmation window's timer; a `confirm` update
with its request, answered by a regular activity; one regular and three local activities and the last
upsert. The same metadata too: the timer's and the last activity's summaries here, the start's search
attributes and static summary where bench.run starts it. And the same handlers (names, kinds, validators),
no-op where a completed order does not call them: the sandbox builds each run's handlers, so they are part
of what Temporal costs for the product's shape. Its activities do nothing, so product ÷ twin is what the
product's own work costs.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    from bench.twin_messages import NoOpInput, TwinConfirm, TwinDecision, TwinInput, TwinState
    from workflows import search_attributes
    from workflows.resource_transfer import V3

STEP = timedelta(seconds=5)


@activity.defn(name="twin_noop")
async def noop(input: NoOpInput) -> None:
    """Does nothing: the twin pays Temporal's cost of an activity, not the product's work."""


@workflow.defn(name="EmptyWorkflow")
class EmptyWorkflow:
    @workflow.run
    async def run(self, order_id: str) -> str:
        return order_id


@workflow.defn(name="ShapeTwin")
class ShapeTwin:
    @workflow.init
    def __init__(self, input: TwinInput) -> None:
        self._input = input
        self._state = TwinState(order_id=input.order_id)
        self._expires_at = workflow.now() + input.confirm_window

    async def _local(self, summary: str | None = None) -> None:
        await workflow.execute_local_activity(
            noop,
            NoOpInput(order_id=self._input.order_id, at=workflow.now()),
            start_to_close_timeout=STEP,
            summary=summary,
        )

    async def _regular(self) -> None:
        await workflow.execute_activity(
            noop, NoOpInput(order_id=self._input.order_id, at=workflow.now()), start_to_close_timeout=STEP
        )

    def _status(self, status: str) -> None:
        self._state = self._state.model_copy(update={"status": status})
        workflow.upsert_search_attributes(
            [
                search_attributes.TRANSFER_STATUS.value_set(status),
                search_attributes.SOURCE_ACCOUNT_ID.value_set(self._input.source_account_id),
                search_attributes.DESTINATION_ACCOUNT_ID.value_set(self._input.destination_account_id),
                search_attributes.RESOURCE_ID.value_set(self._input.resource_id),
                search_attributes.RESOURCE_PRODUCT.value_set("ecs"),
                search_attributes.TRANSFER_EXPIRES_AT.value_set(self._expires_at),
            ]
        )

    @workflow.run
    async def run(self, input: TwinInput) -> TwinState:
        workflow.patched(V3)
        await self._local()
        self._status("pending")
        try:
            await workflow.wait_condition(
                lambda: self._state.status != "pending",
                timeout=self._expires_at - workflow.now(),
                timeout_summary="confirmation window",
            )
        except TimeoutError:
            self._status("expired")
            return self._state
        await self._regular()  # reassign ownership
        await self._local()  # hand off billing
        await self._local()  # receiving configuration
        await self._local("record completed, release lock")
        self._status("completed")
        return self._state

    @workflow.query(name="status")
    def status(self) -> TwinState:
        return self._state

    @workflow.update(name="opened")
    async def opened(self) -> TwinState:
        await workflow.wait_condition(lambda: self._state.status is not None)
        return self._state

    @workflow.update(name="confirm")
    async def confirm(self, request: TwinConfirm) -> TwinState:
        await self._regular()
        self._status("transferring")
        return self._state

    @confirm.validator
    def validate_confirm(self, request: TwinConfirm) -> None:
        pass

    @workflow.update(name="cancel")
    async def cancel(self, request: TwinDecision) -> TwinState:
        return self._state

    @cancel.validator
    def validate_cancel(self, request: TwinDecision) -> None:
        pass

    @workflow.update(name="reject")
    async def reject(self, request: TwinDecision) -> TwinState:
        return self._state

    @reject.validator
    def validate_reject(self, request: TwinDecision) -> None:
        pass

    @workflow.signal(name="confirm")
    async def confirm_signal(self, request: TwinConfirm) -> None:
        pass

    @workflow.signal(name="cancel")
    async def cancel_signal(self, request: TwinDecision) -> None:
        pass

    @workflow.signal(name="reject")
    async def reject_signal(self, request: TwinDecision) -> None:
        pass
