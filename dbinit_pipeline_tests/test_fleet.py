"""Fleets end to end: `fleet_<env>` through `dagster job execute`, on Dagster's multiprocess
executor and on Celery workers (dagster-celery, RabbitMQ on 127.0.0.1:5672, workers started here
as subprocesses). One tenant fails; the others are initialized, verified and kept; the summary and
the failure sensor's message name the failed tenant."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterEventType, DagsterInstance, EventRecordsFilter
from dagster._core.instance.ref import InstanceRef

from dbinit_pipeline.notification import failure_notification
from dbinit_pipeline.orchestration.sensors.run_failure import describe_failure
from dbinit_pipeline.pipeline.fleet import tenant_database
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, PgServer, Project
from dbinit_pipeline_tests.support.templates import drop_template, templates_of

BIN = Path(sys.executable).parent
BROKER = ("127.0.0.1", 5672)


@pytest.fixture
def fleet_project(
    tmp_path: Path, embedded_pg: PgServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Project]:
    (tmp_path / "packages").mkdir()
    monkeypatch.setenv(TEST_URL_VAR, embedded_pg.url)
    proj = Project(tmp_path, embedded_pg, monkeypatch)
    rev = f"f{uuid.uuid4().hex[:10]}"
    proj.write_package(
        "billing",
        migrations=[
            (
                rev,
                None,
                "op.create_table('invoices', sa.Column('id', sa.Integer, primary_key=True),"
                " sa.Column('user_id', sa.String(36), sa.ForeignKey('users.id')))",
            )
        ],
    )
    yield proj
    for name in proj.created:
        embedded_pg.drop(name)
    for name, (_, _, comment) in templates_of(embedded_pg).items():
        if comment.get("project") == proj.settings.get("project"):
            drop_template(embedded_pg, name)


def configure(project: Project, tenants: list[str], **fleet: Any) -> None:
    name = f"fleet{uuid.uuid4().hex[:8]}"
    project.settings["project"] = name
    project.write_config(
        project=name,
        environments={
            "dev": {
                "connection_string_env": TEST_URL_VAR,
                "fleet": {"tenants": tenants, "concurrency": 2, **fleet},
            }
        },
        templates={"enabled": True},
    )
    config = project.config()
    project.created.extend(tenant_database(config, "dev", t) for t in [*tenants, "added_later"])


def break_tenant(project: Project, tenant: str) -> str:
    """The tenant's database exists already, holding a table its package wants to create."""
    name = tenant_database(project.config(), "dev", tenant)
    with project.server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    with project.server.connect(name) as conn:
        conn.execute("CREATE TABLE invoices (id integer)")
    return name


def execute(
    project: Project, home: Path, run_config: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    args = [str(BIN / "dagster"), "job", "execute", "-m", "dbinit_pipeline", "-j", "fleet_dev"]
    if run_config:
        path = project.root / "run.yaml"
        path.write_text(yaml.safe_dump(run_config))
        args += ["-c", str(path)]
    env = {**os.environ, "DAGSTER_HOME": str(home), "DBINIT_CONFIG": str(project.config_path)}
    return subprocess.run(args, cwd=project.root, env=env, capture_output=True, text=True, timeout=280)


def instance_at(home: Path) -> DagsterInstance:
    return DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def check_fleet(project: Project, home: Path, tenants: list[str], broken: str) -> None:
    records = project.operations()
    summary = records[-1]
    assert summary["operation"] == "initialize-fleet" and summary["status"] == "error"
    assert [f["tenant"] for f in summary["failed"]] == [broken]
    assert summary["failed"][0]["stage"] == "package_schemas"
    assert summary["failed"][0]["cleanup"]["database"] == "kept"  # it existed before the run
    assert sorted(summary["succeeded"]) == sorted(t for t in tenants if t != broken)
    assert broken in summary["error"]
    per_tenant = {r.get("tenant") or r["result"]["fleet"]["tenant"]: r for r in records[:-1]}
    assert set(per_tenant) == set(tenants)
    runs = {summary["run_id"]}
    for tenant in tenants:
        if tenant == broken:
            continue
        response = per_tenant[tenant]
        assert response["status"] == "success", response
        assert response["result"]["health_check"] == "passed"
        assert response["result"]["run_id"] in runs  # every tenant's ledger names the fleet's run
        name = tenant_database(project.config(), "dev", tenant)
        assert {"invoices", "users", "dbinit_migrations"} <= project.server.tables(name)
    # Tenants built after the first cloned its template.
    assert summary["cloned_from_template"] == len(tenants) - 2
    # At most `concurrency` (2) tenants worked at once.
    spans = sorted((r.get("fleet") or r["result"]["fleet"])["started"] for r in records[:-1])
    ends = [(r.get("fleet") or r["result"]["fleet"])["finished"] for r in records[:-1]]
    for start in spans:
        working = sum(
            1
            for r, end in zip(records[:-1], ends, strict=True)
            if (r.get("fleet") or r["result"]["fleet"])["started"] <= start < end
        )
        assert working <= 2

    # The failure sensor's message names the failed tenant, in one notification.
    with instance_at(home) as instance:
        run = instance.get_run_by_id(summary["run_id"])
        assert run is not None
        failures = [
            r.event_log_entry.dagster_event
            for r in instance.get_event_records(
                EventRecordsFilter(event_type=DagsterEventType.STEP_FAILURE), limit=50
            )
            if r.event_log_entry.run_id == run.run_id and r.event_log_entry.dagster_event is not None
        ]
        failed = describe_failure(run, failures, "run failed")
    assert failed is not None and failed.tenants == (broken,)
    notification = failure_notification(failed)
    assert notification.fields["Failed tenants"] == broken
    assert broken in notification.text and failed.stage == "fleet"


def test_a_fleet_on_the_multiprocess_executor_with_one_failing_tenant(
    fleet_project: Project, tmp_path: Path
) -> None:
    tenants = ["acme", "globex", "broken", "initech"]
    configure(fleet_project, tenants)
    broken = break_tenant(fleet_project, "broken")
    home = tmp_path / "dagster_home"
    home.mkdir()
    with instance_at(home) as instance:  # what an operator or a sensor does
        instance.add_dynamic_partitions("dbinit_tenants_dev", ["added_later"])
    done = execute(fleet_project, home)
    assert done.returncode == 1, done.stderr[-3000:]
    check_fleet(fleet_project, home, [*tenants, "added_later"], "broken")
    assert fleet_project.server.database_exists(broken)


def _broker_answers() -> bool:
    try:
        with socket.create_connection(BROKER, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def celery_worker(tmp_path: Path, fleet_project: Project) -> Iterator[tuple[Path, str]]:
    """Two Celery worker processes of dagster-celery on a queue of this test's own."""
    if not _broker_answers():
        pytest.skip("no RabbitMQ on 127.0.0.1:5672 to broker Celery tasks")
    if shutil.which("celery", path=str(BIN)) is None:
        pytest.fail("celery is not installed in this environment (pip install -e '.[test]')")
    home = tmp_path / "dagster_home"
    home.mkdir()
    queue = f"dbinit_test_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DBINIT_CONFIG": str(fleet_project.config_path),
        "DAGSTER_CELERY_BROKER_HOST": "127.0.0.1",
    }
    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [
            str(BIN / "celery"),
            "-A",
            "dagster_celery.app",
            "worker",
            "-Q",
            queue,
            "--concurrency",
            "2",
            "--prefetch-multiplier",
            "1",
            "-n",
            f"{queue}@%h",
            "--loglevel",
            "INFO",
        ],
        cwd=fleet_project.root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield home, queue
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        log.close()


def test_the_same_fleet_on_celery_workers_end_to_end(
    fleet_project: Project, celery_worker: tuple[Path, str], tmp_path: Path
) -> None:
    home, queue = celery_worker
    tenants = ["acme", "globex", "broken", "initech"]
    configure(fleet_project, tenants, executor="celery")
    break_tenant(fleet_project, "broken")
    with instance_at(home) as instance:
        instance.add_dynamic_partitions("dbinit_tenants_dev", ["added_later"])
    run_config = {
        "execution": {
            "config": {
                "broker": f"pyamqp://guest:guest@{BROKER[0]}:{BROKER[1]}//",
                "backend": "rpc://",
                "config_source": {"task_default_queue": queue},
            }
        }
    }
    done = execute(fleet_project, home, run_config)
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    assert "Submitting celery task" in done.stdout + done.stderr
    check_fleet(fleet_project, home, [*tenants, "added_later"], "broken")
    worker_log = (tmp_path / "worker.log").read_text()
    assert "fleet_tenants" in worker_log or "Executing steps" in worker_log, worker_log[-2000:]


def test_the_executor_comes_from_the_configuration_and_a_missing_one_is_named(tmp_path: Path) -> None:
    from dbinit_pipeline.configuration import load_config
    from dbinit_pipeline.errors import ConfigurationError
    from dbinit_pipeline.orchestration.fleet_job import build_fleet_job

    path = tmp_path / "dbinit.yaml"

    def job_for(executor: str) -> Any:
        path.write_text(
            "project: p\nenvironments:\n  saas:\n    hosting: local\n    connection_string_env: X\n"
            f"    fleet: {{tenants: [a], concurrency: 3, executor: {executor}}}\n"
        )
        return build_fleet_job(load_config(path), "saas")

    assert job_for("multiprocess").executor_def.name == "multiprocess_executor"
    assert job_for("celery").executor_def.name == "celery"
    assert job_for("ecs").executor_def.name == "ecs"
    try:
        import dagster_k8s  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigurationError, match=r"dagster-k8s is not installed"):
            job_for("k8s")
    else:
        assert job_for("k8s").executor_def.name == "k8s"
    path.write_text(
        "project: p\nenvironments:\n  saas:\n    fleet: {tenants: [a], database_name: 'p_{env}'}\n"
    )
    with pytest.raises(ConfigurationError, match=r"must contain \{tenant\}"):
        tenant_database(load_config(path), "saas", "a")


def test_tenants_of_one_step_replay_at_once_without_mixing_their_scripts(fleet_project: Project) -> None:
    """Templates off: the tenants of one step replay every revision at once, on threads of one
    process. Alembic's `op` is one per process, so the scripts must not run against each other's
    connections: every tenant ends with exactly its own complete schema and ledger."""
    from bench.package_generator import generate
    from dbinit_pipeline.pipeline.fleet import initialize_batch

    generate(fleet_project.root / "packages", 10, 3)
    tenants = [f"m{i}" for i in range(6)]
    configure(fleet_project, tenants, concurrency=3, tenants_per_step=6)
    fleet_project.write_config(
        project=fleet_project.settings["project"],
        environments={
            "dev": {
                "connection_string_env": TEST_URL_VAR,
                "fleet": {"tenants": tenants, "concurrency": 3, "tenants_per_step": 6},
            }
        },
        templates={"enabled": False},
    )
    config = fleet_project.config()
    responses = initialize_batch(config, "dev", tenants, run_id=f"threads-{uuid.uuid4().hex[:8]}")
    failures = [
        (r.get("tenant"), r.get("stage"), r.get("error")) for r in responses if r["status"] != "success"
    ]
    assert not failures, failures
    starts = [r["result"]["fleet"]["started"] for r in responses]
    ends = [r["result"]["fleet"]["finished"] for r in responses]
    assert min(ends) > max(starts[:3]), "the first three tenants worked at the same time"
    expected = fleet_project.server.tables(tenant_database(config, "dev", tenants[0]))
    assert len(expected) > 30
    applied = {r["result"]["migrations_applied"] for r in responses}
    assert len(applied) == 1 and min(applied) > 30, applied
    for tenant in tenants:
        database = tenant_database(config, "dev", tenant)
        assert fleet_project.server.tables(database) == expected, tenant
        with fleet_project.server.connect(database) as conn:
            row = conn.execute("SELECT count(*), count(DISTINCT run_id) FROM dbinit_migrations").fetchone()
        assert row == (min(applied), 1), (tenant, row)
