"""A database server reached by URL, without ever carrying its password in data.

A `ServerRef` is what flows between stages (and is pickled by Dagster): the URL with the
password hidden, and where the password can be read again (an environment variable or a
file). `DatabaseServer` resolves it into engines at the moment of use.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from dbinit_pipeline.errors import ConfigurationError
from dbinit_pipeline.providers import Provider, provider_for
from dbinit_pipeline.redaction import register_secret

CONNECT_TIMEOUT_S = 5


def parse_url(raw: str, *, source: str) -> URL:
    """Parse a connection URL; the error names where it came from, never its text."""
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):
        raise ConfigurationError(
            f"{source} does not hold a valid database URL",
            code="invalid_connection_url",
            suggestions=[f"Set {source} to a URL like postgresql://user:password@host:5432/postgres."],
        ) from None
    register_secret(url.password if isinstance(url.password, str) else None)
    return url


def url_from_variable(var: str, provider: str, *, environment: str | None = None) -> URL:
    """The URL held by environment variable `var`; a clear error when it is unset or malformed."""
    raw = os.environ.get(var)
    if not raw:
        which = f" (environment {environment!r})" if environment else ""
        raise ConfigurationError(
            f"Environment variable {var} is not set{which}",
            code="missing_connection_variable",
            suggestions=[f"export {var}={provider_for(provider).example_url}"],
        )
    return parse_url(raw, source=var)


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
        elif kind == "aws-secret":
            # Imported here: the AWS module builds ServerRefs itself.
            from dbinit_pipeline.resources.aws import resolve_secret_source

            username, secret = resolve_secret_source(where)  # registers the password for redaction
            url = make_url(self.url_display).set(username=username, password=secret)
        elif kind in ("gcp-secret", "azure-secret"):
            from dbinit_pipeline.resources.cloud import resolve_cloud_secret

            username, secret = resolve_cloud_secret(kind, where)  # registers the password for redaction
            url = make_url(self.url_display).set(username=username, password=secret)
        elif kind == "file":
            url = make_url(self.url_display)
            secret = Path(where).read_text().strip()
            register_secret(secret)
            url = url.set(password=secret)
        else:
            url = make_url(self.url_display)
        return url.set(database=database or self.maintenance_database)


# One engine per full URL (password included, so a rotated password gets a new one) and mode, for
# the life of the process: each stage used to build its own, paying the dialect's first-connect
# queries again. NullPool keeps no connection open between uses (a DROP DATABASE never waits
# for one of ours), so reusing an engine shares nothing but its compiled configuration. The
# least recently used beyond MAX_ENGINES are disposed of: a process that initializes many
# databases (a test session, a long-lived worker) does not keep an engine for each.
MAX_ENGINES = 16
_ENGINES: OrderedDict[tuple[str, bool], Engine] = OrderedDict()
_ENGINES_LOCK = threading.Lock()


class DatabaseServer:
    """Engines for one server, through its provider's driver."""

    def __init__(self, ref: ServerRef) -> None:
        self.ref = ref
        self.provider: Provider = provider_for(ref.provider)

    def engine(self, database: str | None = None, *, autocommit: bool = False) -> Engine:
        """The process's engine for `database` (NullPool: every connect is a new connection)."""
        url = self.provider.normalize_url(self.ref.url(database))
        key = (url.render_as_string(hide_password=False), autocommit)
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
            if engine is None:
                engine = _ENGINES[key] = self._create_engine(url, autocommit=autocommit)
                while len(_ENGINES) > MAX_ENGINES:
                    _ENGINES.popitem(last=False)[1].dispose()
            else:
                _ENGINES.move_to_end(key)
        return engine

    def _create_engine(self, url: URL, *, autocommit: bool) -> Engine:
        kwargs: dict[str, object] = {"poolclass": NullPool, "hide_parameters": True}
        if autocommit:
            kwargs["isolation_level"] = "AUTOCOMMIT"
        connect_args: dict[str, object] = {"connect_timeout": CONNECT_TIMEOUT_S}
        if self.provider.name == "postgresql":
            connect_args["application_name"] = "dbinit"
        return create_engine(url, connect_args=connect_args, **kwargs)

    @contextmanager
    def connect(self, database: str | None = None, *, autocommit: bool = False) -> Iterator[Connection]:
        """A new connection, closed on exit."""
        with self.engine(database, autocommit=autocommit).connect() as conn:
            yield conn
