"""dbinit_pipeline: bring a database for one environment from nothing to verified, with Dagster.

`defs` (the code location that `dagster ... -m dbinit_pipeline` and workspace.yaml load) is built
on first access, not at import: the `dbinit` command and the Dagster instance's storage class
import this package from anywhere, with or without a dbinit.yaml in the current directory.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "defs":
        from dbinit_pipeline.orchestration.definitions import defs

        return defs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), "defs"])


__all__ = ["defs"]
