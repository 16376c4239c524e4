"""dbinit_pipeline: bring a database for one environment from nothing to verified, with Dagster.

The public API (api.py): `initialize`, `plan`, `status` and `health`, which return the response
documents the `dbinit` command prints and raise `DbinitError` (its `code` an `ErrorCode`).

`defs` (the code location that `dagster ... -m dbinit_pipeline` and workspace.yaml load) and the
API are imported on first access, not with the package: every module below imports this package,
and the lower layers never load Dagster.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbinit_pipeline.api import health, initialize, plan, status
    from dbinit_pipeline.errors import DbinitError, ErrorCode
    from dbinit_pipeline.orchestration.definitions import defs

_EXPORTS = {
    "initialize": "dbinit_pipeline.api",
    "plan": "dbinit_pipeline.api",
    "status": "dbinit_pipeline.api",
    "health": "dbinit_pipeline.api",
    "DbinitError": "dbinit_pipeline.errors",
    "ErrorCode": "dbinit_pipeline.errors",
    "defs": "dbinit_pipeline.orchestration.definitions",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = ["DbinitError", "ErrorCode", "defs", "health", "initialize", "plan", "status"]
