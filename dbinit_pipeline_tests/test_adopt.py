"""Adopting databases that applications built with their own Alembic (optuna's RDBStorage, MLflow's
auth store; both installed by the test extra): verified, recorded as adopted, upgraded by dbinit
with one new revision of a team package, and opened again by the application."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dbinit_pipeline import api
from dbinit_pipeline.api import Adoption, adopt
from dbinit_pipeline.cli import main
from dbinit_pipeline.database.providers.postgresql import PostgresProvider
from dbinit_pipeline.migrations.loading import registry_for
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, PgServer, Project
from dbinit_pipeline_tests.support.adoption import (
    build_in_fresh_interpreter,
    database_url,
    installed_package,
    mysql_database,
    mysql_project,
    run_adopt_response,
    run_status,
    version_dump,
    version_rows,
)
from dbinit_pipeline_tests.support.alembic import mysqldump_schema
from dbinit_pipeline_tests.support.applications import build_optuna

NOTES = """op.create_table(
    "study_notes",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("study_id", sa.Integer, sa.ForeignKey("studies.study_id"), nullable=False),
    sa.Column("note", sa.Text, nullable=False),
)"""


def optuna_project(project: Project, notes: str = NOTES, models: str | None = None, **config: Any) -> None:
    """optuna's installed history as a package (its own table alembic_version) and a team package
    with one new revision that depends on it."""
    installed_package(
        project.root,
        "optuna",
        migrations={"package": "optuna", "path": "storages/_rdb/alembic/versions"},
        version_table="alembic_version",
        **({"models": models} if models else {}),
    )
    project.write_package("notes", depends_on=["optuna"], migrations=[("n0001", None, notes)])
    project.write_config(core={"enabled": False}, **config)


def reopen_optuna(url: str) -> None:
    import optuna

    assert len(optuna.load_study(study_name="before-adoption", storage=url).trials) == 2
    study = optuna.create_study(storage=url, study_name="after-adoption")
    study.optimize(lambda trial: trial.suggest_float("y", 0, 1), n_trials=1)
    assert len(study.trials) == 1


@pytest.fixture
def optuna_db(project: Project) -> Iterator[tuple[str, str]]:
    name = project.database()
    with project.server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url(project.server, name)
    build_optuna(url)
    optuna_project(project)
    yield name, url


def _rows(server: PgServer, database: str, sql: str) -> list[tuple[Any, ...]]:
    with server.connect(database) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def test_an_optuna_database_is_adopted_upgraded_and_opened_by_optuna_again(
    project: Project, optuna_db: tuple[str, str]
) -> None:
    name, url = optuna_db
    before = version_dump(project.server, name)
    optuna_revisions = [m.revision for m in registry_for(project.config()).by_name["optuna"].migrations]

    # Not adopted yet: status shows optuna's whole history pending, nothing adopted.
    unadopted = run_status(project, name)["result"]
    assert unadopted["adopted"] == 0 and unadopted["pending"] == len(optuna_revisions) + 1, unadopted
    # Not adopted yet: init refuses instead of running optuna's history again.
    refused = project.run(database_name=name)
    assert refused["status"] == "error" and refused["code"] == "adoption_needed", refused
    assert "dbinit adopt dev" in " ".join(refused["recovery"]["suggestions"])

    dry = adopt("dev", config=project.config(), database_name=name, dry_run=True)
    assert dry["result"]["dry_run"] is True
    [position] = dry["result"]["packages"]
    assert position["package"] == "optuna" and position["revisions"] == optuna_revisions, position
    assert position["writes_version_table"] is False
    # RDBStorage builds with create_all from optuna's models, which declare trial_values.trial_id
    # NOT NULL where optuna's own history leaves it nullable: real drift, found and named.
    from optuna.storages._rdb.models import TrialValueModel

    assert TrialValueModel.__table__.c.trial_id.nullable is False
    assert dry["result"]["drift"] == {
        "trial_values": ["column trial_values.trial_id: is NOT NULL, expected NULL"]
    }, dry["result"]["drift"]
    assert "dbinit_migrations" not in project.server.tables(name), "a dry run records nothing"
    refused_drift = run_adopt_response(project, name)
    assert refused_drift["status"] == "error" and refused_drift["code"] == "adopt_drift", refused_drift
    assert "dbinit_migrations" not in project.server.tables(name)

    adopted = adopt("dev", config=project.config(), database_name=name, adoption=Adoption(accept_drift=True))
    assert adopted["status"] == "success", adopted
    assert adopted["result"]["revisions_adopted"] == len(optuna_revisions)
    run_id = adopted["result"]["run_id"]
    ledger = _rows(project.server, name, "SELECT revision, run_id, checksum FROM dbinit_migrations")
    assert {r[0] for r in ledger} == set(optuna_revisions) and {r[1] for r in ledger} == {run_id}
    how = _rows(project.server, name, "SELECT DISTINCT how, accepted_drift FROM dbinit_adoptions")
    assert how == [("adopted", True)]
    assert version_dump(project.server, name) == before, "the application's version table is untouched"

    upgraded = project.run(database_name=name)
    assert upgraded["status"] == "success", upgraded
    assert upgraded["result"]["migrations_applied"] == 1, upgraded["result"]
    assert [p["name"] for p in upgraded["result"]["packages_applied"]] == ["notes"]
    assert upgraded["result"]["health_check"] == "passed", upgraded["result"]["health"]
    assert version_dump(project.server, name) == before
    reopen_optuna(url)

    # status tells the adopted revisions (the application ran them) from those dbinit applied.
    shown = api.status("dev", config=project.config(), database_name=name)["result"]
    assert shown["adopted"] == len(optuna_revisions) and shown["pending"] == 0, shown
    by_name = {p["name"]: p for p in shown["packages"]}
    assert by_name["optuna"]["applied"] == by_name["optuna"]["adopted"] == optuna_revisions
    assert by_name["optuna"]["adoption_runs"] == [run_id]
    assert by_name["notes"]["applied"] == ["n0001"] and by_name["notes"]["adopted"] == []
    assert by_name["notes"]["adoption_runs"] == []


def test_failures_during_adoption_and_the_first_init_leave_the_version_table_byte_equal(
    project: Project, optuna_db: tuple[str, str]
) -> None:
    name, _ = optuna_db
    before = version_dump(project.server, name)
    from dbinit_pipeline.database.providers.postgresql import PostgresProvider

    # Adoption while another session holds the database's lock: it fails and records nothing.
    project.write_config(core={"enabled": False}, safety={"lock_timeout": 1})
    with project.server.connect(name) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (PostgresProvider.lock_key(name),))
        failed = run_adopt_response(project, name)
    assert failed["status"] == "error", failed
    assert version_dump(project.server, name) == before
    assert not _rows(project.server, name, "SELECT 1 FROM pg_tables WHERE tablename = 'dbinit_migrations'")

    # The first init of the adopted database fails in the new revision: rolled back, table as it was.
    assert (
        adopt("dev", config=project.config(), database_name=name, adoption=Adoption(accept_drift=True))[
            "status"
        ]
        == "success"
    )
    project.write_package(
        "notes", depends_on=["optuna"], migrations=[("n0001", None, NOTES + '\nop.execute("SELECT 1/0")')]
    )
    broken = project.run(database_name=name)
    assert broken["status"] == "error" and broken["code"] == "migration_failed", broken
    assert version_dump(project.server, name) == before
    assert "study_notes" not in project.server.tables(name)


def test_an_unknown_revision_or_two_heads_is_a_clear_error_that_changes_nothing(
    project: Project, optuna_db: tuple[str, str]
) -> None:
    name, _ = optuna_db
    before = version_dump(project.server, name)
    unknown = run_adopt_response(project, name, "--package", "optuna", "--at", "nosuchrev")
    assert unknown["status"] == "error" and unknown["code"] == "adopt_unknown_revision", unknown
    assert "'nosuchrev'" in unknown["error"] and "optuna" in unknown["error"]

    revisions = [m.revision for m in registry_for(project.config()).by_name["optuna"].migrations]
    with project.server.connect(name) as conn:
        conn.execute("INSERT INTO alembic_version VALUES (%s)", (revisions[2],))
    two = version_dump(project.server, name)
    forked = run_adopt_response(project, name, "--accept-drift")
    assert forked["status"] == "error" and forked["code"] == "adopt_multiple_heads", forked
    assert "alembic_version holds 2 heads" in forked["error"]
    assert version_dump(project.server, name) == two != before
    assert not _rows(project.server, name, "SELECT 1 FROM pg_tables WHERE tablename LIKE 'dbinit%%'")


def test_drift_is_reported_table_by_table_and_only_accept_drift_records_it(
    project: Project, optuna_db: tuple[str, str]
) -> None:
    name, _ = optuna_db
    with project.server.connect(name) as conn:
        conn.execute("ALTER TABLE study_user_attributes ADD COLUMN added_by_hand text")
    refused = run_adopt_response(project, name)
    assert refused["status"] == "error" and refused["code"] == "adopt_drift", refused
    assert "study_user_attributes" in refused["error"] and "added_by_hand" in refused["error"]
    assert "dbinit_migrations" not in project.server.tables(name)

    accepted = run_adopt_response(project, name, "--accept-drift")
    assert accepted["status"] == "success", accepted
    assert accepted["result"]["accepted_drift"] is True
    assert "study_user_attributes" in accepted["result"]["drift"]
    [(flag, drift)] = _rows(
        project.server, name, "SELECT DISTINCT accepted_drift, drift FROM dbinit_adoptions"
    )
    assert flag is True and "added_by_hand" in drift


def test_adopting_a_protected_environment_needs_an_approval_of_the_adoption(
    project: Project, optuna_db: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    name, _ = optuna_db
    project.write_config(
        core={"enabled": False},
        environments={"dev": {"connection_string_env": TEST_URL_VAR, "database_name": name}},
        safety={"protected_environments": ["dev"], "approvers": {"dev": ["alice"]}, "lock_timeout": 1},
    )
    refused = run_adopt_response(project, name, "--accept-drift")
    assert refused["status"] == "error" and refused["code"] == "approval_missing", refused
    suggestions = refused["recovery"]["suggestions"]
    assert any("dbinit approve dev --adopt --accept-drift --by NAME" in s for s in suggestions), refused
    assert any(
        "run the adoption again: " in s and "dbinit adopt dev --accept-drift" in s for s in suggestions
    )
    assert refused["error"].startswith("Adopting database"), refused
    assert "dbinit_migrations" not in project.server.tables(name)

    capsys.readouterr()
    # --if-exists means nothing to an adoption (it creates nothing): the approval still fits it.
    approve = ["approve", "dev", "--adopt", "--accept-drift", "--if-exists", "recreate", "--by", "alice"]
    assert main(["--config", str(project.config_path), *approve]) == 0
    approval = json.loads(capsys.readouterr().out)
    assert approval["result"]["plan"]["adopt_revisions"], approval
    assert any("dbinit adopt dev --accept-drift" in s for s in approval["next_steps"]), approval
    # An attempt that fails before it writes (the database's lock is held elsewhere) leaves the
    # approval for the next one: it is used up only when nothing but writing is left.
    with project.server.connect(name) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (PostgresProvider.lock_key(name),))
        busy = run_adopt_response(project, name, "--accept-drift")
    assert busy["status"] == "error" and busy["code"] == "lock_timeout", busy
    assert "dbinit_migrations" not in project.server.tables(name)
    adopted = run_adopt_response(project, name, "--accept-drift")
    assert adopted["status"] == "success", adopted
    assert adopted["result"]["approval"]["approved_by"] == "alice"


def test_an_mlflow_auth_database_is_adopted_upgraded_and_opened_by_mlflow_again(project: Project) -> None:
    from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

    name = project.database()
    with project.server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url(project.server, name)
    store = SqlAlchemyStore()
    store.init_db(url)  # mlflow runs its own migrations into alembic_version_auth
    store.create_user("before-adoption", "a-long-enough-password")
    store.engine.dispose()
    installed_package(
        project.root,
        "mlflow_auth",
        migrations={"package": "mlflow", "path": "server/auth/db/migrations/versions"},
        version_table="alembic_version_auth",
    )
    project.write_package(
        "audit",
        depends_on=["mlflow_auth"],
        migrations=[
            (
                "a0001",
                None,
                'op.create_table("user_audit", sa.Column("id", sa.Integer, primary_key=True), '
                'sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id")))',
            )
        ],
    )
    project.write_config(core={"enabled": False})
    before = version_dump(project.server, name, "alembic_version_auth")
    adopted = run_adopt_response(project, name)
    assert adopted["status"] == "success" and adopted["result"]["drift"] == {}, adopted
    upgraded = project.run(database_name=name)
    assert upgraded["status"] == "success" and upgraded["result"]["migrations_applied"] == 1, upgraded
    assert version_dump(project.server, name, "alembic_version_auth") == before

    again = SqlAlchemyStore()
    again.init_db(url)  # mlflow's own check: at head, nothing to migrate
    assert again.has_user("before-adoption")
    again.create_user("after-adoption", "a-long-enough-password")
    assert again.has_user("after-adoption")


def test_an_optuna_database_on_mariadb_is_adopted_upgraded_and_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mysql_database("ad") as (raw, name, url):
        build_in_fresh_interpreter("applications:build_optuna", url)
        project = mysql_project(tmp_path, raw, monkeypatch)
        # optuna's history does not apply on MariaDB (test_real_histories: plain Alembic fails the
        # same way), so the adoption is verified against optuna's own models instead of a replay.
        optuna_project(
            project,
            models="optuna.storages._rdb.models:BaseModel",
            database={"provider": "mysql", "hosting": "local"},
        )
        rows = version_rows(url)
        before = mysqldump_schema(raw, name) + rows
        dry = run_adopt_response(project, name, "--dry-run")
        assert dry["status"] == "success" and dry["result"]["verified_against"] == {"optuna": "models"}, dry
        # The tables optuna's create_all made are its models as MariaDB reads them back (FLOAT(53)
        # is DOUBLE, a unique index is a unique key): no drift, so none to accept.
        assert dry["result"]["drift"] == {}, dry["result"]["drift"]
        adopted = run_adopt_response(project, name)
        assert adopted["status"] == "success", adopted
        assert (
            adopted["result"]["revisions_adopted"] == len(adopted["result"]["packages"][0]["revisions"]) > 0
        )
        bookkeeping = ("dbinit_migrations", "dbinit_adoptions", "dbinit_schema_snapshots")
        assert mysqldump_schema(raw, name, bookkeeping) + version_rows(url) == before

        upgraded = project.run(database_name=name)
        assert upgraded["status"] == "success", upgraded
        assert upgraded["result"]["migrations_applied"] == 1, upgraded["result"]
        assert [p["name"] for p in upgraded["result"]["packages_applied"]] == ["notes"]
        assert upgraded["result"]["health_check"] == "passed", upgraded["result"]["health"]
        assert version_rows(url) == rows, "optuna's version table is untouched"
        reopen_optuna(url)


_ = psycopg  # the embedded server's driver, imported by the fixtures
