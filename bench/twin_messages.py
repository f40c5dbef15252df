"""The shape twin's messages, apart from its workflow as the product's are (workflows.messages): passed
through the sandbox, so a run does not build its pydantic classes again."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel


class TwinInput(BaseModel):
    order_id: str
    source_account_id: str
    destination_account_id: str
    resource_id: str
    confirm_window: timedelta


class TwinState(BaseModel):
    order_id: str
    status: str | None = None


class TwinConfirm(BaseModel):
    """The `confirm` update's argument, as the product's carries its ConfirmRequest."""

    agreement_accepted: bool = True


class TwinDecision(BaseModel):
    """The argument of the twin's `cancel` and `reject`, as the product's carry theirs."""

    reason: str | None = None


class NoOpInput(BaseModel):
    order_id: str
    at: datetime
