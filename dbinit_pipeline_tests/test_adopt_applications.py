"""Adopting databases of applications beside optuna and MLflow's auth store (test_adopt.py), each
built by the application's own code, installed by the test extra:

- JupyterHub: `orm.new_session_factory` builds it (create_all from its models, then `alembic stamp
  head` into alembic_version); adopted against those models with no drift, on PostgreSQL and
  MariaDB.
- MLflow's tracking store: `SqlAlchemyStore` builds it (create_all of its initial tables, then its
  own history up to head); its models differ from what its history builds, so adoption needs
  --accept-drift, and verify afterwards counts exactly that drift as accepted.

Then a team package adds one revision whose table refers to the application's, `dbinit init`
applies only that, and the application opens the database again (its own revision check passes)
and keeps working in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow.entities import Metric

from dbinit_pipeline import api
from dbinit_pipeline_tests.conftest import Project
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
from dbinit_pipeline_tests.support.applications import build_jupyterhub, reopen_jupyterhub

SEATS = """op.create_table(
    "hub_seats",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("seat", sa.Text, nullable=False),
)"""


def hub_package(project: Project) -> None:
    """The Hub's installed history as a package (its table alembic_version), and a team package
    with one revision that depends on it."""
    installed_package(
        project.root,
        "jupyterhub",
        migrations={"package": "jupyterhub", "path": "alembic/versions"},
        version_table="alembic_version",
        # The Hub builds its tables with create_all, not with its history (whose base revision is
        # empty): its models are what the adopted head declares.
        models="jupyterhub.orm:Base",
    )
    project.write_package("seats", depends_on=["jupyterhub"], migrations=[("s0001", None, SEATS)])


def _rows(project: Project, database: str, sql: str) -> list[tuple[Any, ...]]:
    with project.server.connect(database) as conn:
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def test_a_jupyterhub_database_is_adopted_upgraded_and_opened_by_the_hub_again(project: Project) -> None:
    name = project.database()
    with project.server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url(project.server, name)
    build_jupyterhub(url)
    hub_package(project)
    project.write_config(core={"enabled": False})
    before = version_dump(project.server, name)
    [(hub_head,)] = _rows(project, name, "SELECT version_num FROM alembic_version")

    dry = run_adopt_response(project, name, "--dry-run")
    assert dry["status"] == "success", dry
    assert dry["result"]["verified_against"] == {"jupyterhub": "models"}, dry["result"]
    assert dry["result"]["drift"] == {}, dry["result"]["drift"]
    [position] = dry["result"]["packages"]
    assert position["at"] == hub_head and position["writes_version_table"] is False, position

    adopted = run_adopt_response(project, name)
    assert adopted["status"] == "success", adopted
    assert adopted["result"]["revisions_adopted"] == len(position["revisions"]) > 1

    upgraded = project.run(database_name=name)
    assert upgraded["status"] == "success", upgraded
    assert upgraded["result"]["migrations_applied"] == 1, upgraded["result"]
    assert [p["name"] for p in upgraded["result"]["packages_applied"]] == ["seats"]
    assert upgraded["result"]["health_check"] == "passed", upgraded["result"]["health"]
    assert version_dump(project.server, name) == before, "the Hub's version table is untouched"
    assert "hub_seats" in project.server.tables(name)

    reopen_jupyterhub(url)
    # The team's table is in use beside the Hub's: its foreign key reaches the Hub's users.
    with project.server.connect(name) as conn:
        conn.execute(
            "INSERT INTO hub_seats (user_id, seat) SELECT id, 'A1' FROM users WHERE name = 'after-adoption'"
        )
        conn.commit()
    assert _rows(project, name, "SELECT seat FROM hub_seats") == [("A1",)]

    status = run_status(project, name)
    by_name = {p["name"]: p for p in status["result"]["packages"]}
    assert by_name["jupyterhub"]["adopted"] == position["revisions"], by_name
    assert by_name["jupyterhub"]["adoption_runs"] == [adopted["result"]["run_id"]]
    assert by_name["seats"]["applied"] == ["s0001"] and by_name["seats"]["adopted"] == []
    assert by_name["seats"]["pending"] == [] and by_name["jupyterhub"]["pending"] == []


def test_a_jupyterhub_database_on_mariadb_is_adopted_upgraded_and_opened_by_the_hub_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with mysql_database("hub") as (raw, name, url):
        build_in_fresh_interpreter("applications:build_jupyterhub", url)
        project = mysql_project(tmp_path, raw, monkeypatch)
        hub_package(project)
        project.write_config(core={"enabled": False}, database={"provider": "mysql", "hosting": "local"})
        rows = version_rows(url)

        # The Hub's create_all on MariaDB: its models as InnoDB keeps them (an index for every
        # foreign key the models leave without one), so no drift.
        adopted = run_adopt_response(project, name)
        assert adopted["status"] == "success" and adopted["result"]["drift"] == {}, adopted
        upgraded = project.run(database_name=name)
        assert upgraded["status"] == "success", upgraded
        assert upgraded["result"]["migrations_applied"] == 1, upgraded["result"]
        assert upgraded["result"]["health_check"] == "passed", upgraded["result"]["health"]
        assert version_rows(url) == rows, "the Hub's version table is untouched"
        build_in_fresh_interpreter("applications:reopen_jupyterhub", url)


def test_an_mlflow_tracking_database_is_adopted_with_its_drift_upgraded_and_opened_by_mlflow_again(
    project: Project, tmp_path: Path
) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    name = project.database()
    with project.server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = database_url(project.server, name)
    artifacts = (tmp_path / "artifacts").as_uri()
    store = SqlAlchemyStore(url, artifacts)
    store.create_experiment("before-adoption")
    store.engine.dispose()
    installed_package(
        project.root,
        "mlflow",
        migrations={"package": "mlflow", "path": "store/db_migrations/versions"},
        version_table="alembic_version",
        models="mlflow.store.tracking.dbmodels.models:Base",
    )
    project.write_package(
        "owners",
        depends_on=["mlflow"],
        migrations=[
            (
                "o0001",
                None,
                'op.create_table("experiment_owners", sa.Column("id", sa.Integer, primary_key=True), '
                'sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.experiment_id")), '
                'sa.Column("owner", sa.Text, nullable=False))',
            )
        ],
    )
    project.write_config(core={"enabled": False})
    before = version_dump(project.server, name)

    # MLflow's models and its history disagree (e.g. runs.status is VARCHAR(20) in the model,
    # VARCHAR(9) as the history leaves it): real drift, named, and adoption stops.
    refused = run_adopt_response(project, name)
    assert refused["status"] == "error" and refused["code"] == "adopt_drift", refused
    assert f"in {len(refused['details']['drift'])} table(s)" in refused["error"], refused["error"]
    assert refused["details"]["drift"]["runs"] == [
        "column runs.status: type is VARCHAR(9), expected VARCHAR(20)"
    ]
    adopted = run_adopt_response(project, name, "--accept-drift")
    assert adopted["status"] == "success" and adopted["result"]["accepted_drift"] is True, adopted
    accepted = [line for lines in adopted["result"]["drift"].values() for line in lines]

    upgraded = project.run(database_name=name)
    assert upgraded["status"] == "success", upgraded
    assert upgraded["result"]["migrations_applied"] == 1, upgraded["result"]
    assert upgraded["result"]["health_check"] == "passed", upgraded["result"]["health"]
    assert version_dump(project.server, name) == before, "MLflow's version table is untouched"
    checked = api.health("dev", config=project.config(), database_name=name)
    assert checked["status"] == "healthy", checked["result"]
    assert sorted(checked["result"]["schema"]["accepted_drift"]) == sorted(accepted)
    assert checked["result"]["schema"]["drift"] == []

    reopened = SqlAlchemyStore(url, artifacts)  # MLflow's own check: its head in alembic_version
    assert "before-adoption" in {e.name for e in reopened.search_experiments()}
    experiment = reopened.create_experiment("after-adoption")
    run = reopened.create_run(experiment, "someone", 0, [], "run")
    reopened.log_metric(run.info.run_id, Metric("loss", 0.5, 0, 0))
    assert reopened.get_metric_history(run.info.run_id, "loss")[0].value == 0.5
    reopened.engine.dispose()

    # Drift beyond what was accepted is still drift.
    with project.server.connect(name) as conn:
        conn.execute("ALTER TABLE experiments ADD COLUMN added_by_hand text")
        conn.commit()
    changed = api.health("dev", config=project.config(), database_name=name)
    assert changed["result"]["schema"]["drift"] == [
        "column experiments.added_by_hand: not declared by any migration or model"
    ], changed["result"]["schema"]
