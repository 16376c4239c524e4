"""The repository's dagster.yaml: what it configures, and `dagster job execute` with nothing set.

With DAGSTER_HOME unset, Dagster's CLI reads ./dagster.yaml; its storage then falls back to a
`dagster` database on the project's embedded PostgreSQL (started on first use), so the command
works on a fresh clone: exit 0 when the run succeeds, 1 when it fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef
from dagster._core.run_coordinator import QueuedRunCoordinator
from sqlalchemy.engine import make_url

from dbinit_pipeline.database.embedded import EmbeddedPostgres
from dbinit_pipeline.orchestration.instance import EMBEDDED_DIR, ProjectPostgresStorage, dagster_postgres_url
from dbinit_pipeline.orchestration.instance import main as instance_main
from dbinit_pipeline_tests.conftest import PgServer, unique_name
from dbinit_pipeline_tests.test_operations.conftest import (
    BIN,
    REPO,
    create_database,
    project_env,
    write_operations_project,
)


@pytest.fixture
def instance_home(tmp_path: Path, embedded_pg: PgServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A DAGSTER_HOME holding the repository's dagster.yaml, its storage in a fresh database."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    name = unique_name("dagster")
    monkeypatch.setenv("DAGSTER_PG_URL", create_database(embedded_pg, name))
    yield home
    embedded_pg.drop(name)


def test_dagster_yaml_limits_one_run_per_environment_and_monitors_runs(instance_home: Path) -> None:
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(instance_home))) as instance:
        ref = instance.get_ref()
        assert ref.storage_data is not None
        assert ref.storage_data.class_name == ProjectPostgresStorage.__name__
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None
        limits = queue.tag_concurrency_limits
        assert limits == [{"key": "dbinit/env", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}]
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_start_timeout_seconds == 180
        # dagster-postgres storage on the URL in DAGSTER_PG_URL, with the psycopg2 driver; the
        # configuration the UI shows names the variable and holds no password
        run_storage = instance.run_storage
        assert type(run_storage).__name__ == "PostgresRunStorage"
        assert run_storage.postgres_url.startswith("postgresql+psycopg2://")  # type: ignore[attr-defined]
        assert "DAGSTER_PG_URL" in ref.storage_data.config_yaml
        password = make_url(os.environ["DAGSTER_PG_URL"]).password
        assert isinstance(password, str) and password not in ref.storage_data.config_yaml


def test_bare_postgresql_urls_get_the_psycopg2_driver() -> None:
    assert dagster_postgres_url("postgresql://u:p@h:5/d") == "postgresql+psycopg2://u:p@h:5/d"
    assert dagster_postgres_url("postgres://u:p@h:5/d") == "postgresql+psycopg2://u:p@h:5/d"
    assert dagster_postgres_url("postgresql+psycopg2://u:p@h/d") == "postgresql+psycopg2://u:p@h/d"


@pytest.fixture
def fresh_checkout(tmp_path: Path, embedded_pg: PgServer) -> Iterator[tuple[Path, dict[str, str]]]:
    """A project folder like a fresh clone after `make demo`: dagster.yaml, dbinit.yaml, no .env,
    no DAGSTER_HOME, no DAGSTER_PG_URL. The embedded instance server it starts is stopped after."""
    root = tmp_path / "checkout"
    root.mkdir()
    write_operations_project(root)
    shutil.copyfile(REPO / "dagster.yaml", root / "dagster.yaml")
    env = project_env(root, embedded_pg, "http://127.0.0.1:9/unused")
    del env["OPS_WEBHOOK_URL"]
    yield root, env
    EmbeddedPostgres(root / EMBEDDED_DIR).stop()
    embedded_pg.drop("ops_dev")


def _execute(root: Path, env: dict[str, str], job: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "dbinit_pipeline", "-j", job],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def test_dagster_job_execute_with_nothing_set_exits_0_on_success_and_1_on_failure(
    fresh_checkout: tuple[Path, dict[str, str]],
) -> None:
    root, env = fresh_checkout
    assert "DAGSTER_HOME" not in env and "DAGSTER_PG_URL" not in env
    ok = _execute(root, env, "initialize_dev")
    assert ok.returncode == 0, ok.stderr[-4000:]
    failed = _execute(root, env, "initialize_broken")
    assert failed.returncode == 1, failed.stderr[-4000:]

    # Both runs are in the instance database on the embedded server, not in a temporary folder.
    server = EmbeddedPostgres(root / EMBEDDED_DIR)
    port = server.running_port()
    assert port is not None, "the embedded instance server is not running"
    password = server.password()
    run_ids = {
        job: re.findall(rf"{job} - ([0-9a-f-]{{36}}) - ", result.stderr)[0]
        for job, result in (("initialize_dev", ok), ("initialize_broken", failed))
    }
    with psycopg.connect(
        host="127.0.0.1", port=port, user="postgres", password=password, dbname="dagster"
    ) as conn:
        rows: dict[str, str] = dict(
            conn.execute(
                "SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (list(run_ids.values()),)
            ).fetchall()
        )
    assert rows == {run_ids["initialize_dev"]: "SUCCESS", run_ids["initialize_broken"]: "FAILURE"}
    for result in (ok, failed):
        assert password not in result.stdout + result.stderr

    # The CLI leaves the instance server running for the next command; --stop ends it.
    assert instance_main(["--root", str(root), "--stop"]) == 0
    assert server.running_port() is None
