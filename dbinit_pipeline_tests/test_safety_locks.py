"""One initialization per server and database at a time: real processes, a real server, SIGKILL."""

from __future__ import annotations

import os
import signal
import time

from dbinit_pipeline.migrations.core.models import CORE_TABLES
from dbinit_pipeline.safety.run_lock import holds_run_lock
from dbinit_pipeline.safety.state_store import LockHolder
from dbinit_pipeline_tests.conftest import Project
from dbinit_pipeline_tests.support.safety import (
    SLEEP_VAR,
    finished,
    ledger_rows,
    sleepy_package,
    spawn_init,
    store,
    subprocess_env,
    wait_for_sleep,
)


def _holders(project: Project) -> list[LockHolder]:
    return store(project).lock_holders()


def _revisions(project: Project) -> list[tuple[str, str]]:
    from dbinit_pipeline.migrations.loading import registry_for

    return sorted(
        (p.name, m.revision) for p in registry_for(project.config()).ordered() for m in p.migrations
    )


def test_two_concurrent_runs_in_separate_processes_apply_everything_once(project: Project) -> None:
    project.write_config(safety={"lock_timeout": 60})
    sleepy_package(project)
    name = project.database()
    env = subprocess_env(project, **{SLEEP_VAR: "2"})
    first = spawn_init(project, name, env=env, tag="first")
    second = spawn_init(project, name, env=env, tag="second")
    responses = [finished(project, first, "first"), finished(project, second, "second")]
    assert [r["status"] for r in responses] == ["success", "success"], responses
    results = sorted((r["result"] for r in responses), key=lambda r: r["migrations_applied"])
    assert [r["database"] for r in results] == ["existing", "created"]
    assert results[0]["migrations_applied"] == 0, "the second run found everything applied"
    assert results[1]["migrations_applied"] == len(_revisions(project))
    assert ledger_rows(project.server, name) == _revisions(project)
    assert store(project).operations()[-1]["status"] == "success"


def test_a_second_run_waits_for_the_lock_then_fails_naming_the_holder(project: Project) -> None:
    sleepy_package(project)
    name = project.database()
    holder = spawn_init(project, name, env=subprocess_env(project, **{SLEEP_VAR: "60"}), tag="holder")
    try:
        wait_for_sleep(project.server, name, holder, project.root / "holder.err")
        [recorded] = _holders(project)
        project.write_config(safety={"lock_timeout": 1})
        started = time.monotonic()
        refused = project.run(database_name=name)
        waited = time.monotonic() - started
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
    assert recorded.pid == holder.pid
    assert refused["status"] == "error"
    assert refused["stage"] == "create"
    assert refused["code"] == "lock_timeout"
    assert waited >= 1, "it waited for safety.lock_timeout"
    assert f"run {recorded.run_id}" in refused["error"]
    assert f"pid {holder.pid}" in refused["error"]
    assert refused["details"]["holder"]["run_id"] == recorded.run_id
    assert refused["cleanup"]["database"] == "untouched"
    assert project.server.database_exists(name), "the refused run never drops the holder's database"


def test_a_run_killed_in_the_package_stage_leaves_nothing_half_applied_and_the_rerun_completes(
    project: Project,
) -> None:
    tables = sleepy_package(project)
    name = project.database()
    victim = spawn_init(project, name, env=subprocess_env(project, **{SLEEP_VAR: "120"}), tag="victim")
    try:
        wait_for_sleep(project.server, name, victim, project.root / "victim.err")
    finally:
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL
    # The package stage's transaction never committed: none of its tables, no ledger row for it.
    assert not set(tables) & project.server.tables(name)
    assert all(package != "slow" for package, _ in ledger_rows(project.server, name))

    started = time.monotonic()
    rerun = project.run(database_name=name)
    elapsed = time.monotonic() - started
    assert rerun["status"] == "success", rerun
    assert elapsed < 60, "the dead run's server process (sleeping for 120 s) must not block the rerun"
    assert set(tables) | set(CORE_TABLES) <= project.server.tables(name)
    assert ledger_rows(project.server, name) == _revisions(project), "every revision applied exactly once"
    with project.server.connect() as conn:
        sleepers = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query LIKE 'SELECT pg_sleep(%%'",
            (name,),
        ).fetchone()
    assert sleepers == (0,)


def test_a_failed_run_releases_its_lock_and_its_holder_record(project: Project) -> None:
    project.write_package("broken", migrations=[("brk0001", None, "op.execute('SELECT * FROM nowhere')")])
    name = project.database()
    failed = project.run(database_name=name)
    assert failed["status"] == "error"
    assert failed["stage"] == "package_schemas"
    assert failed["cleanup"]["lock"] == "released"
    assert not holds_run_lock(failed["run_id"])
    assert _holders(project) == [], "the holder record is gone with the lock"
    (project.root / "packages" / "broken" / "migrations" / "0001_brk0001.py").unlink()
    project.write_config(safety={"lock_timeout": 1})
    again = project.run(database_name=name)
    assert again["status"] == "success", again


def test_a_successful_run_records_then_releases_the_holder(project: Project) -> None:
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "success", response
    assert not holds_run_lock(response["result"]["run_id"])
    ops = store(project).operations()
    assert ops[-1]["result"]["run_id"] == response["result"]["run_id"]
