"""Shared test helpers (no tests here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dbinit_pipeline_tests.conftest import TEST_URL_VAR, Project

# The console script of the venv running the tests.
DBINIT = Path(sys.prefix) / "bin" / "dbinit"


def health(project: Project, name: str, url: str | None = None) -> tuple[int, dict[str, Any]]:
    env = {**os.environ, TEST_URL_VAR: url or project.server.url}
    result = subprocess.run(
        [str(DBINIT), "--config", str(project.config_path), "health", "dev", "--database-name", name],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    return result.returncode, json.loads(result.stdout)


def dbinit(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, TEST_URL_VAR: project.server.url}
    return subprocess.run(
        [str(DBINIT), "--config", str(project.config_path), *args],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
