"""The stable error codes of SPEC §3 and the HTTP status each one maps to."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # request-level, in the order SPEC §3 checks them at initiate
    RAM_USER_NOT_ALLOWED = "RAM_USER_NOT_ALLOWED"
    DESTINATION_NOT_FOUND = "DESTINATION_NOT_FOUND"
    ACCOUNT_NOT_VERIFIED = "ACCOUNT_NOT_VERIFIED"
    ACCOUNT_FROZEN = "ACCOUNT_FROZEN"
    SAME_ACCOUNT = "SAME_ACCOUNT"
    ACCOUNT_TYPE_NOT_ALLOWED = "ACCOUNT_TYPE_NOT_ALLOWED"
    ENTERPRISE_ENTITY_MISMATCH = "ENTERPRISE_ENTITY_MISMATCH"
    ENTERPRISE_DESTINATION_LIMIT = "ENTERPRISE_DESTINATION_LIMIT"
    ENTITY_DESTINATION_LIMIT = "ENTITY_DESTINATION_LIMIT"
    AGREEMENT_NOT_ACCEPTED = "AGREEMENT_NOT_ACCEPTED"
    VERIFICATION_FAILED = "VERIFICATION_FAILED"
    # per resource, in order
    RESOURCE_NOT_FOUND = "RESOURCE_NOT_FOUND"
    PRODUCT_NOT_SUPPORTED = "PRODUCT_NOT_SUPPORTED"
    RESOURCE_TOO_NEW = "RESOURCE_TOO_NEW"
    RESOURCE_EXPIRING_SOON = "RESOURCE_EXPIRING_SOON"
    EIP_ATTACHED = "EIP_ATTACHED"
    RESOURCE_IN_TRANSFER = "RESOURCE_IN_TRANSFER"
    # confirm only, checked last
    INSTANCE_NOT_STOPPED = "INSTANCE_NOT_STOPPED"
    # orders
    ORDER_NOT_FOUND = "ORDER_NOT_FOUND"
    NOT_DESTINATION = "NOT_DESTINATION"
    NOT_SOURCE = "NOT_SOURCE"
    READ_ONLY_ACCESS = "READ_ONLY_ACCESS"
    ORDER_EXPIRED = "ORDER_EXPIRED"
    ORDER_NOT_PENDING = "ORDER_NOT_PENDING"
    # other
    UNAUTHENTICATED = "UNAUTHENTICATED"
    VALIDATION_ERROR = "VALIDATION_ERROR"
    RESOURCE_LOCKED_FOR_TRANSFER = "RESOURCE_LOCKED_FOR_TRANSFER"
    ENTITY_ACCOUNT_LIMIT = "ENTITY_ACCOUNT_LIMIT"
    TOO_MANY_ATTEMPTS = "TOO_MANY_ATTEMPTS"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    # an order's failure only (SPEC §4), never an HTTP error
    CANCELLED_BY_OPERATOR = "CANCELLED_BY_OPERATOR"

    @property
    def http_status(self) -> int:
        return _HTTP_STATUS.get(self, 422)


_HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHENTICATED: 401,
    **dict.fromkeys(
        [
            ErrorCode.RAM_USER_NOT_ALLOWED,
            ErrorCode.ACCOUNT_NOT_VERIFIED,
            ErrorCode.ACCOUNT_FROZEN,
            ErrorCode.VERIFICATION_FAILED,
            ErrorCode.NOT_DESTINATION,
            ErrorCode.NOT_SOURCE,
            ErrorCode.READ_ONLY_ACCESS,
        ],
        403,
    ),
    **dict.fromkeys(
        [
            ErrorCode.ORDER_NOT_FOUND,
            ErrorCode.RESOURCE_NOT_FOUND,
            ErrorCode.DESTINATION_NOT_FOUND,
            ErrorCode.NOT_FOUND,
        ],
        404,
    ),
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.TOO_MANY_ATTEMPTS: 429,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    **dict.fromkeys(
        [
            ErrorCode.RESOURCE_IN_TRANSFER,
            ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER,
            ErrorCode.ORDER_NOT_PENDING,
            ErrorCode.ORDER_EXPIRED,
            ErrorCode.INSTANCE_NOT_STOPPED,
            ErrorCode.ENTITY_ACCOUNT_LIMIT,
        ],
        409,
    ),
}

_MESSAGES: dict[ErrorCode, str] = {
    ErrorCode.RAM_USER_NOT_ALLOWED: "RAM users cannot initiate, confirm, cancel or reject transfers",
    ErrorCode.DESTINATION_NOT_FOUND: "The destination account does not exist",
    ErrorCode.ACCOUNT_NOT_VERIFIED: (
        "Source and destination accounts must both complete identity verification"
    ),
    ErrorCode.ACCOUNT_FROZEN: "A frozen account cannot take part in a transfer",
    ErrorCode.SAME_ACCOUNT: "The destination account must differ from the source account",
    ErrorCode.ACCOUNT_TYPE_NOT_ALLOWED: (
        "An enterprise account cannot transfer resources to an individual account"
    ),
    ErrorCode.ENTERPRISE_ENTITY_MISMATCH: (
        "Enterprise accounts can transfer only between accounts of the same verified entity "
        "with identical entity names"
    ),
    ErrorCode.ENTERPRISE_DESTINATION_LIMIT: (
        "An individual account can transfer resources to one enterprise account only"
    ),
    ErrorCode.ENTITY_DESTINATION_LIMIT: (
        "Only one destination account is allowed per verified entity other than the source's own"
    ),
    ErrorCode.AGREEMENT_NOT_ACCEPTED: "The resource transfer agreement must be accepted",
    ErrorCode.VERIFICATION_FAILED: "The risk-control verification code is wrong, expired or already used",
    ErrorCode.RESOURCE_NOT_FOUND: "The resource does not exist",
    ErrorCode.PRODUCT_NOT_SUPPORTED: (
        "Only ECS (subscription or pay-as-you-go) and pay-as-you-go EIP instances can be transferred"
    ),
    ErrorCode.RESOURCE_TOO_NEW: "Resources created within the last 5 days cannot be transferred",
    ErrorCode.RESOURCE_EXPIRING_SOON: (
        "Subscriptions that expire within the next 3 days, or have expired, cannot be transferred"
    ),
    ErrorCode.EIP_ATTACHED: "The EIP must be detached from every resource before the transfer",
    ErrorCode.RESOURCE_IN_TRANSFER: "The resource already has an open transfer order",
    ErrorCode.INSTANCE_NOT_STOPPED: (
        "The source account must stop the VPC ECS instance before the destination confirms"
    ),
    ErrorCode.ORDER_NOT_FOUND: "The transfer order does not exist",
    ErrorCode.NOT_DESTINATION: "Only the destination account can do this",
    ErrorCode.NOT_SOURCE: "Only the source account can do this",
    ErrorCode.READ_ONLY_ACCESS: "The management account may view member resources and orders only",
    ErrorCode.ORDER_EXPIRED: "The transfer order expired",
    ErrorCode.ORDER_NOT_PENDING: "The transfer order is no longer pending",
    ErrorCode.UNAUTHENTICATED: "A valid bearer token is required",
    ErrorCode.VALIDATION_ERROR: "The request is not valid",
    ErrorCode.RESOURCE_LOCKED_FOR_TRANSFER: "The resource is locked while its transfer order is open",
    ErrorCode.ENTITY_ACCOUNT_LIMIT: "One enterprise entity may verify at most 10 accounts",
    ErrorCode.TOO_MANY_ATTEMPTS: (
        "Too many failed verifications of this account: verification is locked for a while"
    ),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: (
        "This Idempotency-Key was used for another request (method, path or body)"
    ),
    ErrorCode.PAYLOAD_TOO_LARGE: "The request body is larger than 1 MiB",
    ErrorCode.SERVICE_UNAVAILABLE: "The service cannot reach a dependency right now; try again shortly",
    ErrorCode.NOT_FOUND: "This path does not exist",
    ErrorCode.METHOD_NOT_ALLOWED: "This path does not take this method",
    ErrorCode.CANCELLED_BY_OPERATOR: "An operator cancelled the transfer before ownership moved",
}


def parse_code(value: str | None) -> ErrorCode | None:
    """The SPEC code a refusal carries as its type, or None for anything else."""
    return ErrorCode(value) if value is not None and value in ErrorCode.__members__ else None


def default_message(code: ErrorCode) -> str:
    return _MESSAGES[code]
