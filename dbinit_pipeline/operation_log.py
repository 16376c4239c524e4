"""The operation log: one JSON line per finished or failed run, and a copy in the state store.

The file (`integration.operation_log`) is the record people read and tail; the state store
keeps a copy beside the approvals and lock holders, so that several machines sharing a
DBINIT_STATE_URL see one history. Writing is best effort on both sides: a file that cannot be
written or a state store that does not answer is logged, never a reason to fail a run whose
database work is done (the other copy still holds the record).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

from dbinit_pipeline.configuration import load_cached
from dbinit_pipeline.errors import DbinitError
from dbinit_pipeline.redaction import redact, redact_data
from dbinit_pipeline.safety.state_store import StateStore

logger = logging.getLogger(__name__)


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


def append_operation(path: Path, record: dict[str, Any], *, config_path: str = "") -> list[str]:
    """Write `record` to the file and (with `config_path`) the state store; returns what could not
    be written, each also logged as a warning."""
    clean: dict[str, Any] = redact_data(record)
    problems: list[str] = []
    try:
        append_record(path, clean)
    except OSError as exc:
        problems.append(
            f"operation log {path} not written ({exc.strerror or exc}): fix integration.operation_log in dbinit.yaml"
        )
    if config_path:
        try:
            StateStore.for_config(load_cached(config_path)).append_operation(clean)
        except DbinitError as exc:
            problems.append(f"operation log copy not written: {exc.message}")
    for problem in problems:
        logger.warning("%s", redact(problem))
    return problems
