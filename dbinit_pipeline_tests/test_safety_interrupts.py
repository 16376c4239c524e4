"""Cancellation and crashes (issue 13, points 7 and 8): SIGTERM, SIGINT and a migration's
sys.exit end the run once, with cleanup and an operation-log record; a statement is bounded by
safety.statement_timeout; on MariaDB a migration whose process died is named on the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from dbinit_pipeline_tests.conftest import Project
from dbinit_pipeline_tests.support.mysql import TARGET_VAR, MySQLProject, mysql_project, mysql_server
from dbinit_pipeline_tests.support.safety import DBINIT, finished, spawn_init

__all__ = ["mysql_project", "mysql_server"]  # fixtures, used by name


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], err: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended first: {err.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


def stuck_package(project: Project, marker: Path, body: str) -> None:
    """Package `stuck`: creates a table, writes `marker`, then runs `body`."""
    lines = [
        "op.create_table('stuck_t', sa.Column('id', sa.Integer, primary_key=True))",
        f"open({str(marker)!r}, 'w').close()",
        body,
    ]
    project.write_package("stuck", migrations=[("stuck0001", None, "\n".join(lines))])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_run_once_with_cleanup_and_a_record(project: Project, signum: int) -> None:
    marker = project.root / "started"
    stuck_package(project, marker, "import time\nwhile True:\n    time.sleep(0.01)")
    name = project.database()
    proc = spawn_init(project, name)
    wait_for_file(marker, proc, project.root / "run.err")
    signalled = time.monotonic()
    os.kill(proc.pid, signum)
    response = finished(project, proc, timeout=60)
    assert time.monotonic() - signalled < 30, "one signal ends the run, without retries"
    assert proc.returncode == 1
    assert response["code"] == "cancelled" and response["stage"] == "package_schemas", response
    assert response["cleanup"]["database"] == "dropped", response
    assert not project.server.database_exists(name)
    err = (project.root / "run.err").read_text()
    assert "retrying" not in err
    records = project.operations()
    assert [r["code"] for r in records] == ["cancelled"], records


def test_sys_exit_in_a_migration_is_that_migrations_failure(project: Project) -> None:
    marker = project.root / "started"
    stuck_package(project, marker, "import sys\nsys.exit(3)")
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "error" and response["code"] == "migration_failed", response
    assert "0001_stuck0001.py" in response["error"] and "SystemExit" in response["error"]
    assert response["cleanup"]["database"] == "dropped"
    assert [r["code"] for r in project.operations()] == ["migration_failed"]


def test_a_statement_longer_than_the_timeout_is_cancelled_by_the_server(project: Project) -> None:
    project.write_config(safety={"protected_environments": ["production"], "statement_timeout": 1})
    project.write_package("slow", migrations=[("slow0001", None, "op.execute('SELECT pg_sleep(5)')")])
    name = project.database()
    started = time.monotonic()
    response = project.run(database_name=name)
    assert response["code"] == "statement_timeout", response
    assert "safety.statement_timeout" in " ".join(response["recovery"]["suggestions"])
    assert time.monotonic() - started < 5 + 10, "cancelled after one second, not retried"
    assert response["cleanup"]["database"] == "dropped"


def test_mariadb_a_migration_whose_process_died_is_named_with_its_statements(
    mysql_project: MySQLProject,
) -> None:
    project = mysql_project
    project.write_package(
        "crashy",
        migrations=[
            ("crash0001", None, "op.create_table('kept', sa.Column('id', sa.Integer, primary_key=True))"),
            (
                "crash0002",
                "crash0001",
                """
                op.create_table('half', sa.Column('id', sa.Integer, primary_key=True))
                import os, signal
                if os.environ.get("DBINIT_TEST_CRASH"):
                    os.kill(os.getpid(), signal.SIGKILL)
                op.create_table('other_half', sa.Column('id', sa.Integer, primary_key=True))
                """,
            ),
        ],
    )
    name = project.database()
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(DBINIT_CONFIG=str(project.config_path), DBINIT_TEST_CRASH="1")
    env[TARGET_VAR] = os.environ[TARGET_VAR]

    def dbinit(*argv: str, crash: bool = False) -> tuple[int, dict[str, object]]:
        run_env = env if crash else {k: v for k, v in env.items() if k != "DBINIT_TEST_CRASH"}
        done = subprocess.run(
            [str(DBINIT), *argv], env=run_env, cwd=project.root, capture_output=True, text=True, timeout=180
        )
        return done.returncode, (json.loads(done.stdout) if done.stdout.strip() else {})

    code, _ = dbinit("init", "dev", "--database-name", name, crash=True)
    assert code == -signal.SIGKILL
    assert "half" in project.server.tables(name), "the DDL before the crash was committed"
    code, response = dbinit("init", "dev", "--database-name", name)
    assert code == 1 and response["code"] == "migration_dirty", response
    assert "crash0002" in str(response["error"]) and "0002_crash0002.py" in str(response["error"])
    details = response["details"]
    assert isinstance(details, dict)
    statements = " ".join(details["statements"])
    assert "CREATE TABLE half" in statements and "CREATE TABLE other_half" in statements
    assert any("dbinit resolve" in s for s in response["recovery"]["suggestions"])  # type: ignore[index]
    # The operator undoes what was committed, says so, and the next run applies the migration again.
    project.server.query(f"DROP TABLE `{name}`.`half`")
    code, resolved = dbinit("resolve", "dev", "--database-name", name, "crashy", "crash0002", "--undone")
    assert code == 0, resolved
    code, response = dbinit("init", "dev", "--database-name", name)
    assert code == 0, response
    assert {"kept", "half", "other_half"} <= project.server.tables(name)
    assert ("crashy", "crash0002") in project.server.ledger(name)
