"""Persistence of the transfer service: SQLAlchemy tables, Alembic migrations and TransferStore."""
