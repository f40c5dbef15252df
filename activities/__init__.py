"""Temporal activities: the side effects of a transfer, each idempotent by order id."""
