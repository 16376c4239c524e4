"""Fast paths: optional speed-ups that change how fast a run is, never what it does.

Each has an off switch; with a fast path off, the same statements run in the same order and
the same ledger, responses and schema come out (the test suite runs both ways):

- `write_behind`: DDL sent to PostgreSQL in libpq pipeline mode from a sender thread while
  the next script runs (`write_behind.py`); off: every statement synchronous.
- `code_cache`: compiled revision scripts kept under their checksum (`code_cache.py`); off:
  each pending script compiled from its file.
- `facts_cache`: what each package file declares kept under its checksum (`facts_cache.py`);
  off: every file parsed on every run.
- `collector`: Python's cyclic collector tuned for a long-lived heap (`heap.py`); off:
  Python's defaults.

Switch them off with DBINIT_FAST_PATHS_OFF: a comma-separated list of those names, or `all`.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import suppress
from pathlib import Path

FAST_PATHS = ("write_behind", "code_cache", "facts_cache", "collector")
OFF_VARIABLE = "DBINIT_FAST_PATHS_OFF"


def enabled(name: str) -> bool:
    """Whether the fast path `name` is on (read at each use, so a process can switch it)."""
    if name not in FAST_PATHS:
        raise ValueError(f"unknown fast path {name!r}; known: {', '.join(FAST_PATHS)}")
    off = {part.strip() for part in os.environ.get(OFF_VARIABLE, "").split(",") if part.strip()}
    return not ({name, "all"} & off)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` in one step (readers see the old or the new file, never a part);
    a cache that cannot be written is simply not kept."""
    with suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        finally:
            with suppress(OSError):
                os.unlink(tmp)
