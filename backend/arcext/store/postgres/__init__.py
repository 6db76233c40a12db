"""The PostgreSQL store (issue 12): the Store protocol on one database several server nodes share."""

from .store import PostgresStore

__all__ = ["PostgresStore"]
