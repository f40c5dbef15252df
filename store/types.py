"""Column types that behave the same on SQLite and PostgreSQL: aware UTC datetimes, money, enums."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import DateTime, Dialect, Enum, Numeric
from sqlalchemy.types import TypeDecorator, TypeEngine

from domain.models import CENT


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC; always returns an aware UTC datetime (SQLite keeps no offset, so we add it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        # SQLite compares datetimes as text: store one fixed format without an offset.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """NUMERIC(14, 2) read back as a Decimal quantized to the cent on every backend."""

    impl = Numeric(14, 2)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            # SQLite keeps a REAL; we do the Decimal conversion ourselves (exact for 14 digits)
            # rather than let SQLAlchemy warn about a lossy float-to-Decimal conversion.
            return dialect.type_descriptor(Numeric(14, 2, asdecimal=False))
        return dialect.type_descriptor(Numeric(14, 2))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        cents = Decimal(value).quantize(CENT)
        if cents != value:  # never round silently: the caller decides how (a refund rounds down)
            raise ValueError(f"money has at most two decimal places: {value}")
        return cents

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        # str() first: Decimal(float) would carry the binary expansion (12.1 -> 12.0999...).
        return Decimal(str(value)).quantize(CENT)


def enum_of(enum: type[StrEnum], length: int) -> Enum:
    """A VARCHAR(length) holding the enum's values (not its names), read back as the enum; no native
    ENUM type and no CHECK constraint, so adding a member needs no migration."""
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )
