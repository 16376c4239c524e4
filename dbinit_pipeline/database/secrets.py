"""Where a server's password is read from when a connection is made, never before.

A `ServerRef` carries a secret source `KIND:WHERE`; the password is read at each connect (so a
rotated one is picked up) and registered for redaction at once. `env` and `file` are read here.
Cloud kinds (`aws-secret`, `gcp-secret`, `azure-secret`) are read by the infrastructure layer,
which registers a reader per kind when it is imported (`dbinit_pipeline.infrastructure`); every
ServerRef of a cloud kind is made there, so its reader is registered before it can be used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dbinit_pipeline.errors import ConfigurationError, ErrorCode
from dbinit_pipeline.redaction import register_secret

# (username or "" to keep the URL's, password) from the part after `KIND:`
SecretReader = Callable[[str], tuple[str, str]]

_READERS: dict[str, SecretReader] = {}


def register_reader(kind: str, reader: SecretReader) -> None:
    """Read secret sources `kind:...` with `reader` in this process."""
    _READERS[kind] = reader


def _read_file(where: str) -> tuple[str, str]:
    return "", Path(where).read_text().strip()


register_reader("file", _read_file)


def read_secret(source: str) -> tuple[str, str] | None:
    """(username or "", password) of a secret source; None for `none` and `env:` (the URL in the
    variable holds its own credentials). The password is registered for redaction."""
    kind, _, where = source.partition(":")
    if kind in ("none", "env"):
        return None
    reader = _READERS.get(kind)
    if reader is None:
        raise ConfigurationError(
            f"secret source {kind!r} has no reader in this process",
            code=ErrorCode.INVALID_SECRET_SOURCE,
            suggestions=["Import dbinit_pipeline.infrastructure before connecting to a cloud server."],
        )
    username, password = reader(where)
    register_secret(password)
    return username, password
