"""Dialect specifics: everything that differs between PostgreSQL and MySQL lives here."""

from __future__ import annotations

from dbinit_pipeline.database.providers.base import Provider
from dbinit_pipeline.errors import UnsupportedError


def provider_for(name: str) -> Provider:
    """The provider for `database.provider` in the configuration."""
    if name == "postgresql":
        from dbinit_pipeline.database.providers.postgresql import PostgresProvider

        return PostgresProvider()
    if name == "mysql":
        from dbinit_pipeline.database.providers.mysql import MySQLProvider

        return MySQLProvider()
    raise UnsupportedError(
        f"database.provider {name!r} is not supported",
        suggestions=["Use provider postgresql or mysql."],
    )


__all__ = ["Provider", "provider_for"]
