"""The walking skeleton, end to end on a real PostgreSQL: create, reuse, refuse, recreate."""

from __future__ import annotations

from dbinit_pipeline.migrations.core import CORE_PACKAGE_DIR
from dbinit_pipeline.migrations.core.models import CORE_TABLES
from dbinit_pipeline.migrations.package import read_package
from dbinit_pipeline_tests.conftest import Project

CORE_FKS = {
    ("sessions", "users"),
    ("accounts", "users"),
    ("workspace_members", "workspaces"),
    ("workspace_members", "users"),
    ("workspace_invitations", "workspaces"),
    ("workspace_invitations", "users"),
    ("workspace_teams", "workspaces"),
    ("workspace_team_members", "workspace_teams"),
    ("workspace_team_members", "users"),
}
CORE_MIGRATIONS = len(read_package(CORE_PACKAGE_DIR).migrations)


def test_fresh_run_creates_database_and_core_tables(project: Project) -> None:
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "success", response
    result = response["result"]
    assert result["database"] == "created"
    assert result["database_name"] == name
    assert result["migrations_applied"] == CORE_MIGRATIONS
    assert result["packages_applied"][0]["name"] == "core"
    assert result["health_check"] == "passed"
    assert project.server.database_exists(name)
    tables = project.server.tables(name)
    assert set(CORE_TABLES) <= tables
    assert {"dbinit_migrations", "alembic_version_core"} <= tables
    assert project.server.foreign_keys(name) >= CORE_FKS
    assert project.operations()[-1]["status"] == "success"


def test_second_run_applies_nothing_and_says_so(project: Project) -> None:
    name = project.database()
    assert project.run(database_name=name)["status"] == "success"
    second = project.run(database_name=name)
    assert second["status"] == "success"
    assert second["result"]["database"] == "existing"
    assert second["result"]["migrations_applied"] == 0
    assert second["result"]["packages_applied"] == []
    assert "nothing to apply" in second["message"]


def test_if_exists_error_refuses_an_existing_database(project: Project) -> None:
    name = project.database()
    assert project.run(database_name=name)["status"] == "success"
    response = project.run(database_name=name, if_exists="error")
    assert response["status"] == "error"
    assert response["stage"] == "create"
    assert response["code"] == "database_exists"
    assert name in response["error"]
    assert response["recovery"]["suggestions"]
    assert project.server.database_exists(name), "an existing database is never dropped by 'error'"


def test_if_exists_recreate_drops_and_rebuilds(project: Project) -> None:
    name = project.database()
    assert project.run(database_name=name)["status"] == "success"
    with project.server.connect(name) as conn:
        conn.execute("CREATE TABLE scratch (id int)")
    response = project.run(database_name=name, if_exists="recreate")
    assert response["status"] == "success", response
    assert response["result"]["database"] == "recreated"
    assert response["result"]["migrations_applied"] == CORE_MIGRATIONS
    assert "scratch" not in project.server.tables(name)


def test_recreate_is_refused_for_a_protected_environment(project: Project) -> None:
    name = project.database()
    response = project.run("production", database_name=name, if_exists="recreate")
    assert response["status"] == "error"
    assert response["stage"] == "validate"
    assert response["code"] == "recreate_refused"
    assert not project.server.database_exists(name)


def test_protected_environment_requires_approval(project: Project) -> None:
    name = project.database()
    response = project.run("production", database_name=name)
    assert response["status"] == "error"
    assert response["stage"] == "approve"
    assert "dbinit approve production" in " ".join(response["recovery"]["suggestions"])
    assert not project.server.database_exists(name)


def test_generated_database_name_is_project_and_environment(project: Project) -> None:
    project.created.append("testproj_dev")
    response = project.run()
    assert response["status"] == "success", response
    assert response["result"]["database_name"] == "testproj_dev"
    assert project.server.database_exists("testproj_dev")


def test_dry_run_creates_nothing(project: Project) -> None:
    name = project.database()
    response = project.run(database_name=name, dry_run=True, sql=True)
    assert response["status"] == "success", response
    assert response["result"]["dry_run"] is True
    assert response["result"]["database"] == "would_create"
    assert "CREATE TABLE users" in response["result"]["plan"]["sql"]["core"]
    assert not project.server.database_exists(name)
