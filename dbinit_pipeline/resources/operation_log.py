"""The operation log: one JSON line per finished or failed run."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource

from dbinit_pipeline.redaction import redact


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append `record` as one line; safe against concurrent writers on one machine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = redact(json.dumps(record, sort_keys=True, default=str)) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line.encode())
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class OperationLog(ConfigurableResource):  # type: ignore[type-arg]
    """Appends operation records to a JSON-lines file."""

    path: str

    def append(self, record: dict[str, Any]) -> None:
        append_record(Path(self.path), record)
