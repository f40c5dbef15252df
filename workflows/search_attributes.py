"""Search attributes operators filter on in Temporal UI. No personal data: ids and states only."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

TRANSFER_STATUS = SearchAttributeKey.for_keyword("TransferStatus")
SOURCE_ACCOUNT_ID = SearchAttributeKey.for_keyword("SourceAccountId")
DESTINATION_ACCOUNT_ID = SearchAttributeKey.for_keyword("DestinationAccountId")
RESOURCE_ID = SearchAttributeKey.for_keyword("ResourceId")
RESOURCE_PRODUCT = SearchAttributeKey.for_keyword("ResourceProduct")
TRANSFER_EXPIRES_AT = SearchAttributeKey.for_datetime("TransferExpiresAt")

ALL = (
    TRANSFER_STATUS,
    SOURCE_ACCOUNT_ID,
    DESTINATION_ACCOUNT_ID,
    RESOURCE_ID,
    RESOURCE_PRODUCT,
    TRANSFER_EXPIRES_AT,
)

# TransferStatus of a run whose order was never opened because a rule refused the initiate.
REFUSED = "refused"
