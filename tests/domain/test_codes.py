"""ErrorCode: the HTTP status of every SPEC §3 code, and a message for each."""

from __future__ import annotations

import pytest

from domain.codes import ErrorCode, default_message
from domain.refusals import TransferError

# Written out from SPEC §3 ("HTTP status of each code"), not derived from domain.codes.
EXPECTED_HTTP_STATUS: dict[str, int] = {
    "UNAUTHENTICATED": 401,
    "RAM_USER_NOT_ALLOWED": 403,
    "ACCOUNT_NOT_VERIFIED": 403,
    "ACCOUNT_FROZEN": 403,
    "VERIFICATION_FAILED": 403,
    "NOT_DESTINATION": 403,
    "NOT_SOURCE": 403,
    "READ_ONLY_ACCESS": 403,
    "ORDER_NOT_FOUND": 404,
    "RESOURCE_NOT_FOUND": 404,
    "DESTINATION_NOT_FOUND": 404,
    "RESOURCE_IN_TRANSFER": 409,
    "RESOURCE_LOCKED_FOR_TRANSFER": 409,
    "ORDER_NOT_PENDING": 409,
    "ORDER_EXPIRED": 409,
    "INSTANCE_NOT_STOPPED": 409,
    "ENTITY_ACCOUNT_LIMIT": 409,
    # 422: VALIDATION_ERROR, AGREEMENT_NOT_ACCEPTED and every other rule code
    "VALIDATION_ERROR": 422,
    "AGREEMENT_NOT_ACCEPTED": 422,
    "SAME_ACCOUNT": 422,
    "ACCOUNT_TYPE_NOT_ALLOWED": 422,
    "ENTERPRISE_ENTITY_MISMATCH": 422,
    "ENTERPRISE_DESTINATION_LIMIT": 422,
    "ENTITY_DESTINATION_LIMIT": 422,
    "PRODUCT_NOT_SUPPORTED": 422,
    "RESOURCE_TOO_NEW": 422,
    "RESOURCE_EXPIRING_SOON": 422,
    "EIP_ATTACHED": 422,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "PAYLOAD_TOO_LARGE": 413,
    "TOO_MANY_ATTEMPTS": 429,
    "SERVICE_UNAVAILABLE": 503,
}
# SPEC §3: a failure code of an order only, never an HTTP error.
ORDER_ONLY_CODES = {"CANCELLED_BY_OPERATOR"}


def test_every_spec_code_exists_and_no_other() -> None:
    assert {code.value for code in ErrorCode} == set(EXPECTED_HTTP_STATUS) | ORDER_ONLY_CODES


@pytest.mark.parametrize(("code", "status"), sorted(EXPECTED_HTTP_STATUS.items()))
def test_http_status_matches_spec(code: str, status: int) -> None:
    assert ErrorCode(code).http_status == status


@pytest.mark.parametrize("code", list(ErrorCode))
def test_every_code_has_a_default_message(code: ErrorCode) -> None:
    message = default_message(code)
    assert isinstance(message, str)
    assert message.strip()


def test_codes_are_their_own_names() -> None:
    for code in ErrorCode:
        assert code.value == code.name
        assert str(code) == code.name


def test_transfer_error_defaults_to_the_code_message_and_empty_details() -> None:
    error = TransferError(ErrorCode.ORDER_NOT_PENDING)
    assert error.code is ErrorCode.ORDER_NOT_PENDING
    assert error.message == default_message(ErrorCode.ORDER_NOT_PENDING)
    assert error.details == {}


def test_transfer_error_keeps_an_explicit_message_and_details() -> None:
    error = TransferError(ErrorCode.ORDER_NOT_PENDING, "already completed", {"status": "completed"})
    assert error.message == "already completed"
    assert error.details == {"status": "completed"}
    assert "ORDER_NOT_PENDING" in str(error)
