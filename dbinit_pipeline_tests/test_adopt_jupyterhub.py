"""Adopting a JupyterHub database (jupyterhub, installed by the test extra): the Hub's own
`orm.new_session_factory` builds it (create_all from its models, then `alembic stamp head` into
alembic_version), dbinit adopts it against those models, a team package adds one revision whose
table refers to the Hub's users, `dbinit init` applies only that, and the Hub opens the database
again (its own revision check passes) and keeps working in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

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
