"""Helpers shared by the test_safety_* modules (no tests here): the CLI in this process and as
a subprocess, a protected-environment configuration, and a package that can be made to sleep."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from dbinit_pipeline.cli import main
from dbinit_pipeline.safety.state_store import StateStore
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, PgServer, Project
from dbinit_pipeline_tests.support.cli import DBINIT

APPROVERS = ["alice", "bob"]
SLEEP_VAR = "DBINIT_TEST_SLEEP"


def with_approvers(
    project: Project,
    *,
    production_if_exists: str = "error",
    integration: dict[str, Any] | None = None,
    **safety: Any,
) -> None:
    """production is protected; alice and bob approve it."""
    project.write_config(
        integration=integration or {"operation_log": ".dbinit/operations.jsonl"},
        environments={
            "dev": {"connection_string_env": TEST_URL_VAR},
            "production": {"connection_string_env": TEST_URL_VAR, "if_exists": production_if_exists},
        },
        safety={
            "protected_environments": ["production"],
            "approvers": {"production": APPROVERS},
            "lock_timeout": 10,
            **safety,
        },
    )


def cli(project: Project, *argv: str) -> tuple[int, dict[str, Any], str]:
    """Run `dbinit --config <project> ARGV...` in this process: (exit code, JSON response, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--config", str(project.config_path), *argv])
    return code, json.loads(out.getvalue()), err.getvalue()


def store(project: Project) -> StateStore:
    return StateStore.for_config(project.config())


def subprocess_env(project: Project, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env["DBINIT_CONFIG"] = str(project.config_path)
    env.update(extra)
    return env


def spawn_init(
    project: Project, database: str, *, env: dict[str, str] | None = None, tag: str = "run"
) -> subprocess.Popen[bytes]:
    """`.venv/bin/dbinit init dev --database-name DATABASE` in its own process group."""
    out = (project.root / f"{tag}.out").open("wb")
    err = (project.root / f"{tag}.err").open("wb")
    return subprocess.Popen(
        [str(DBINIT), "init", "dev", "--database-name", database],
        cwd=project.root,
        env=env or subprocess_env(project),
        stdout=out,
        stderr=err,
        start_new_session=True,
    )


def finished(
    project: Project, proc: subprocess.Popen[bytes], tag: str = "run", timeout: float = 120
) -> dict[str, Any]:
    """Wait for a spawned run and return its JSON response."""
    proc.wait(timeout=timeout)
    text = (project.root / f"{tag}.out").read_text()
    assert text.strip(), (project.root / f"{tag}.err").read_text()[-3000:]
    response: dict[str, Any] = json.loads(text)
    return response


def sleepy_package(project: Project, name: str = "slow") -> list[str]:
    """A package whose second migration sleeps (SELECT pg_sleep) when DBINIT_TEST_SLEEP is set,
    between creating two tables in the same transaction. Returns its tables."""
    first, second = f"{name}_first", f"{name}_second"
    project.write_package(
        name,
        migrations=[
            (
                f"{name}0001",
                None,
                f"op.create_table('{first}', sa.Column('id', sa.Integer, primary_key=True))",
            ),
            (
                f"{name}0002",
                f"{name}0001",
                f"""
                import os
                if os.environ.get("{SLEEP_VAR}"):
                    op.execute("SELECT pg_sleep(" + str(float(os.environ["{SLEEP_VAR}"])) + ")")
                op.create_table('{second}', sa.Column('id', sa.Integer, primary_key=True))
                """,
            ),
        ],
    )
    return [first, second]


def wait_for_sleep(
    server: PgServer, database: str, process: subprocess.Popen[bytes], err: Path, timeout: float = 90
) -> int:
    """Wait until a backend sleeps in `database` (the package stage is under way); its pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the run ended before its package stage: {err.read_text()[-3000:]}")
        with server.connect() as conn:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE %s AND state = 'active'",
                (database, "SELECT pg_sleep(%"),
            ).fetchone()
        if row:
            return int(row[0])
        time.sleep(0.1)
    raise AssertionError(f"no migration started sleeping in {database} within {timeout} s")


def ledger_rows(server: PgServer, database: str) -> list[tuple[str, str]]:
    with server.connect(database) as conn:
        rows = conn.execute("SELECT package, revision FROM dbinit_migrations ORDER BY package, revision")
        return [(r[0], r[1]) for r in rows.fetchall()]
