"""A run applies exactly its approved plan, whoever re-executes it and from where (issue 13,
points 1-3 and 6): Dagster's own re-execution from failure, its run config, and two
environments that share a server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    DagsterInstance,
    DagsterInvalidConfigError,
    JobDefinition,
    JobExecutionResult,
    ReexecutionOptions,
    build_reconstructable_job,
    execute_job,
)
from dagster._core.definitions.reconstruct import ReconstructableJob

from dbinit_pipeline.configuration import load_config
from dbinit_pipeline.database.providers import provider_for
from dbinit_pipeline.orchestration.jobs import build_job
from dbinit_pipeline.safety.run_lock import lock_name
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, Project, unique_name
from dbinit_pipeline_tests.support.safety import (
    SLEEP_VAR,
    cli,
    ledger_rows,
    sleepy_package,
    spawn_init,
    subprocess_env,
    wait_for_sleep,
    with_approvers,
)


def job_of(config_path: str, environment: str) -> JobDefinition:
    """What `dagster job execute -j initialize_<env>` loads for the project at `config_path`."""
    return build_job(load_config(Path(config_path)), environment)


def production(project: Project) -> ReconstructableJob:
    # The project's path is part of the pointer: Dagster caches a reconstructed job per pointer.
    return build_reconstructable_job(
        __name__,
        "job_of",
        reconstructable_kwargs={"config_path": str(project.config_path), "environment": "production"},
    )


@pytest.fixture
def instance(project: Project, tmp_path: Path) -> Iterator[DagsterInstance]:
    """A persistent instance (SQLite and the filesystem IO manager), as under DAGSTER_HOME."""
    project.monkeypatch.setenv("DBINIT_CONFIG", str(project.config_path))
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.local_temp(str(home)) as inst:
        yield inst


def run_config(database: str) -> dict[str, Any]:
    return {"ops": {"validate": {"config": {"database_name": database}}}}


def failure(result: JobExecutionResult) -> dict[str, Any]:
    """The response attached to the run's step failure."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.user_failure_data:
            value = event.step_failure_data.user_failure_data.metadata["response"].value
            assert isinstance(value, dict)
            return value
    raise AssertionError("the run has no structured step failure")


def needs_prerequisite(project: Project) -> None:
    """Package `a`: ra creates ta; rb fails until a table `prerequisite` exists."""
    project.write_package(
        "a",
        migrations=[
            ("ra0001", None, "op.create_table('ta', sa.Column('id', sa.Integer, primary_key=True))"),
            ("rb0002", "ra0001", "op.execute('SELECT 1 FROM prerequisite')"),
        ],
    )


def approved_failing_run(project: Project, instance: DagsterInstance, name: str) -> JobExecutionResult:
    with_approvers(project, lock_timeout=2)
    needs_prerequisite(project)
    code, approval, _ = cli(project, "approve", "production", "--database-name", name, "--by", "alice")
    assert code == 0, approval
    first = execute_job(production(project), instance, run_config=run_config(name))
    assert not first.success
    response = failure(first)
    assert response["stage"] == "package_schemas" and "prerequisite" in response["error"], response
    return first


def test_reexecution_after_files_changed_fails_at_once_with_plan_changed(
    project: Project, instance: DagsterInstance
) -> None:
    name = project.database()
    first = approved_failing_run(project, instance, name)
    # Between the failure and the re-execution: one approved migration is edited, one is added.
    project.write_package(
        "a",
        migrations=[
            ("ra0001", None, "op.create_table('ta', sa.Column('id', sa.Integer, primary_key=True))"),
            ("rb0002", "ra0001", "op.create_table('tb', sa.Column('id', sa.Integer, primary_key=True))"),
            ("rc0003", "rb0002", "op.create_table('tc', sa.Column('id', sa.Integer, primary_key=True))"),
        ],
    )
    again = execute_job(
        production(project),
        instance,
        reexecution_options=ReexecutionOptions.from_failure(first.run_id, instance),
    )
    assert not again.success
    response = failure(again)
    assert response["code"] == "plan_changed", response
    assert response["stage"] == "package_schemas"
    assert "a:rb0002" in response["error"] and "a:rc0003" in response["error"]
    assert any("dbinit approve production" in s for s in response["recovery"]["suggestions"]), response
    assert not {"ta", "tb", "tc"} & project.server.tables(name), "nothing unapproved was applied"
    assert [r for r in ledger_rows(project.server, name) if r[0] == "a"] == []


def test_reexecution_with_the_same_files_takes_the_run_lock_and_applies_the_approved_plan(
    project: Project, instance: DagsterInstance
) -> None:
    name = project.database()
    first = approved_failing_run(project, instance, name)
    with project.server.connect(name) as conn:
        conn.execute("CREATE TABLE prerequisite (id int)")
    # Another run holds this database's run lock: the re-execution must wait for it, then give up.
    key = provider_for("postgresql").lock_key(lock_name(name))
    with project.server.connect("postgres") as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (key,))
        blocked = execute_job(
            production(project),
            instance,
            reexecution_options=ReexecutionOptions.from_failure(first.run_id, instance),
        )
    assert not blocked.success
    assert failure(blocked)["code"] == "lock_timeout", failure(blocked)
    resumed = execute_job(
        production(project),
        instance,
        reexecution_options=ReexecutionOptions.from_failure(blocked.run_id, instance),
    )
    assert resumed.success
    with project.server.connect(name) as conn:
        rows = conn.execute("SELECT revision, run_id FROM dbinit_migrations WHERE package = 'a'").fetchall()
    assert sorted(rows) == [("ra0001", resumed.run_id), ("rb0002", resumed.run_id)]


def test_protection_belongs_to_the_database_whatever_environment_names_it(project: Project) -> None:
    with_approvers(project)
    project.write_package(
        "a",
        migrations=[("ra0001", None, "op.create_table('ta', sa.Column('id', sa.Integer, primary_key=True))")],
    )
    name = project.database()
    code, approval, _ = cli(project, "approve", "production", "--database-name", name, "--by", "alice")
    assert code == 0, approval
    assert project.run("production", database_name=name)["status"] == "success"
    with project.server.connect(name) as conn:
        conn.execute("INSERT INTO ta (id) VALUES (42)")
    # dev is not protected, but the database it names is.
    recreate = project.run("dev", database_name=name, if_exists="recreate")
    assert recreate["status"] == "error" and recreate["code"] == "database_protected", recreate
    assert recreate["stage"] == "create"
    assert "production" in recreate["error"]
    project.write_package(
        "a",
        migrations=[
            ("ra0001", None, "op.create_table('ta', sa.Column('id', sa.Integer, primary_key=True))"),
            ("rb0002", "ra0001", "op.create_table('tb', sa.Column('id', sa.Integer, primary_key=True))"),
        ],
    )
    reuse = project.run("dev", database_name=name)
    assert reuse["code"] == "database_protected", reuse
    planned = project.run("dev", database_name=name, dry_run=True)
    assert planned["code"] == "database_protected", "dbinit plan shows the refusal too"
    with project.server.connect(name) as conn:
        assert conn.execute("SELECT id FROM ta").fetchall() == [(42,)], "no row was lost"
    assert "tb" not in project.server.tables(name)
    # Its own environment still plans it, and needs an approval to run it.
    own = project.run("production", database_name=name, dry_run=True)
    assert own["status"] == "success" and own["result"]["plan"]["approval_required"] is True


def test_run_config_cannot_reconfigure_resources(project: Project, tmp_path: Path) -> None:
    with_approvers(project)
    job = build_job(project.config(), "production")
    other = tmp_path / "other.yaml"
    other.write_text(project.config_path.read_text().replace("production]", "staging]"))
    for key, config in (
        ("project", {"config_path": str(other), "environment": "production"}),
        ("operation_log", {"path": str(tmp_path / "elsewhere.jsonl")}),
        ("approval_gate", {"config_path": str(other)}),
    ):
        with pytest.raises(DagsterInvalidConfigError) as refused:
            job.execute_in_process(run_config={"resources": {key: {"config": config}}})
        assert key in str(refused.value)
    # The same through `dagster job execute -c`, as CI and the Launchpad would send it.
    rc = tmp_path / "rc.yaml"
    rc.write_text(yaml.safe_dump({"resources": {"project": {"config": {"config_path": str(other)}}}}))
    home = tmp_path / "dagster_home"
    home.mkdir()
    done = subprocess.run(
        [
            str(Path(sys.prefix) / "bin" / "dagster"),
            *("job", "execute", "-m", "dbinit_pipeline", "-j", "initialize_production", "-c", str(rc)),
        ],
        env=subprocess_env(project, DAGSTER_HOME=str(home)),
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode != 0
    assert "resources" in done.stderr and "project" in done.stderr, done.stderr[-2000:]
    assert not (project.root / ".dbinit" / "operations.jsonl").exists(), "no run started"


def test_the_run_lock_is_per_database_whatever_maintenance_database_the_url_names(project: Project) -> None:
    other_maintenance = unique_name("maint")
    with project.server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{other_maintenance}"')
    project.created.append(other_maintenance)
    base = project.server.url.rsplit("/", 1)[0]
    project.monkeypatch.setenv("OTHER_URL", f"{base}/{other_maintenance}")
    project.write_config(
        environments={
            "dev": {"connection_string_env": TEST_URL_VAR},
            "qa": {"connection_string_env": "OTHER_URL"},
        },
        safety={"protected_environments": [], "lock_timeout": 1},
    )
    sleepy_package(project)
    name = project.database()
    env = subprocess_env(project, **{SLEEP_VAR: "30", "OTHER_URL": os.environ["OTHER_URL"]})
    holder = spawn_init(project, name, env=env, tag="holder")
    try:
        wait_for_sleep(project.server, name, holder, project.root / "holder.err")
        second = project.run("qa", database_name=name)
        assert second["status"] == "error" and second["code"] == "lock_timeout", second
        assert second["stage"] == "create"
    finally:
        holder.terminate()
        holder.wait(timeout=60)
