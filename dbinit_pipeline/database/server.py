"""A database server reached by URL, without ever carrying its password in data.

A `ServerRef` is what flows between stages (and is pickled by Dagster): the URL with the
password hidden, and where the password can be read again (an environment variable or a
file). `DatabaseServer` resolves it into engines at the moment of use.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from dbinit_pipeline.database.engines import shared_engine
from dbinit_pipeline.database.providers import Provider, provider_for
from dbinit_pipeline.database.providers.plain_ddl import plain_ddl
from dbinit_pipeline.database.secrets import read_secret
from dbinit_pipeline.errors import ConfigurationError, ErrorCode
from dbinit_pipeline.redaction import register_secret

CONNECT_TIMEOUT_S = 5


# Query parameters that libpq and the MySQL drivers read as a password.
_SECRET_QUERY_KEYS = ("password", "passwd", "sslpassword")


def _refuse(source: str, why: str, fix: str) -> ConfigurationError:
    return ConfigurationError(
        f"{source} does not hold a usable database URL: {why}",
        code=ErrorCode.INVALID_CONNECTION_URL,
        suggestions=[fix, "The URL is never printed: check the variable's value yourself."],
    )


def parse_url(raw: str, *, source: str, provider: str | None = None) -> URL:
    """Parse a connection URL; the error names where it came from, never its text.

    Every password the URL carries (in its userinfo or as a `password=` query parameter, as
    libpq accepts) is registered for redaction, and a query password is moved into the
    userinfo, so that the URL as displayed (`display_url`) never holds it.
    """
    text = raw.strip()
    # Every spelling of the userinfo's password is a secret, whatever else is wrong with the URL.
    _, sep, rest = text.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        authority = rest.split("/", 1)[0]
        userinfo = authority.rsplit("@", 1)[0]
        if ":" in userinfo:
            register_secret(userinfo.split(":", 1)[1])
    try:
        url = make_url(text)
    except (ArgumentError, ValueError):
        raise _refuse(
            source,
            "it cannot be parsed",
            "Set it to a URL like postgresql://user:password@host:5432/postgres.",
        ) from None
    register_secret(url.password if isinstance(url.password, str) else None)
    for key in _SECRET_QUERY_KEYS:
        value = url.query.get(key)
        for item in (value,) if isinstance(value, str) else tuple(value or ()):
            register_secret(item)
    if url.host and "@" in url.host:
        raise _refuse(
            source,
            "its host part contains '@', so an '@' in the password is not percent-encoded",
            "Percent-encode the password: '@' as %40, ':' as %3A, '/' as %2F, '%' as %25.",
        )
    if provider is not None:
        backend = url.get_backend_name()
        if backend not in provider_for(provider).url_schemes:
            raise _refuse(
                source,
                f"its scheme is {backend!r}, but database.provider is {provider!r}",
                f"Use a URL like {provider_for(provider).example_url}, or set database.provider to "
                "the server's kind.",
            )
    query_password = url.query.get("password")
    if isinstance(query_password, str):
        url = url.difference_update_query(["password"]).set(password=query_password)
    return url


def url_from_variable(var: str, provider: str, *, environment: str | None = None) -> URL:
    """The URL held by environment variable `var`; a clear error when it is unset or malformed."""
    raw = os.environ.get(var)
    if not raw:
        which = f" (environment {environment!r} reads its server from it)" if environment else ""
        raise ConfigurationError(
            f"Environment variable {var} is not set{which}",
            code=ErrorCode.MISSING_CONNECTION_VARIABLE,
            suggestions=[
                f"export {var}={provider_for(provider).example_url}",
                "The URL names the server and the credentials; its database part is only the "
                "maintenance database.",
            ],
        )
    return parse_url(raw, source=var, provider=provider)


def display_url(url: URL) -> str:
    """The URL as it may be shown: password hidden."""
    return url.render_as_string(hide_password=True)


@dataclass(frozen=True)
class ServerRef:
    """A server and the maintenance database to reach it by; the password stays at its source."""

    provider: str
    url_display: str
    secret_source: str  # "env:NAME", "file:/path" or "none"
    maintenance_database: str

    @property
    def host(self) -> str:
        return make_url(self.url_display).host or "localhost"

    @property
    def port(self) -> int | None:
        return make_url(self.url_display).port

    def url(self, database: str | None = None) -> URL:
        """The full URL for `database` (the maintenance database when None), password included.

        The password is read now from its source: `env:NAME`, `file:/path`, or
        `aws-secret:ARN[|ENDPOINT_URL]` (an RDS-managed master secret in Secrets Manager).
        """
        kind, _, where = self.secret_source.partition(":")
        if kind == "env":
            url = url_from_variable(where, self.provider)
        else:
            url = make_url(self.url_display)
            found = read_secret(self.secret_source)
            if found is not None:
                username, secret = found
                url = (
                    url.set(password=secret) if not username else url.set(username=username, password=secret)
                )
        return url.set(database=database or self.maintenance_database)


class DatabaseServer:
    """Engines for one server, through its provider's driver."""

    def __init__(self, ref: ServerRef) -> None:
        self.ref = ref
        self.provider: Provider = provider_for(ref.provider)

    def engine(self, database: str | None = None, *, autocommit: bool = False) -> Engine:
        """The process's engine for `database` (NullPool: every connect is a new connection)."""
        url = self.provider.normalize_url(self.ref.url(database))
        return shared_engine(
            url.render_as_string(hide_password=False),
            autocommit,
            lambda: self._create_engine(url, autocommit=autocommit),
        )

    def _create_engine(self, url: URL, *, autocommit: bool) -> Engine:
        kwargs: dict[str, object] = {"poolclass": NullPool, "hide_parameters": True}
        if autocommit:
            kwargs["isolation_level"] = "AUTOCOMMIT"
        connect_args: dict[str, object] = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            **self.provider.connect_args(),
        }
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        plain_ddl(engine.dialect)  # migrations compile as under `alembic upgrade`, Dagster imported or not
        return engine

    @contextmanager
    def connect(self, database: str | None = None, *, autocommit: bool = False) -> Iterator[Connection]:
        """A new connection, closed on exit."""
        with self.engine(database, autocommit=autocommit).connect() as conn:
            yield conn
