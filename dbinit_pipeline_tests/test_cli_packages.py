"""The package side of the `dbinit` command: graph, plan, status, new-migration."""

from __future__ import annotations

import json
from pathlib import Path

from dbinit_pipeline.migrations.core import CORE_PACKAGE_DIR
from dbinit_pipeline.migrations.package import read_package
from dbinit_pipeline_tests.conftest import Project
from dbinit_pipeline_tests.support.cli import dbinit


def three_packages(project: Project) -> None:
    project.write_package(
        "billing",
        migrations=[
            ("bill1", None, 'op.create_table("invoices", sa.Column("id", sa.Integer, primary_key=True))')
        ],
    )
    project.write_package(
        "notifications",
        migrations=[
            ("note1", None, 'op.create_table("channels", sa.Column("id", sa.Integer, primary_key=True))')
        ],
    )
    project.write_package(
        "audit",
        depends_on=["billing", "notifications"],
        migrations=[
            (
                "aud1",
                None,
                'op.create_table("audit_log", sa.Column("id", sa.Integer, primary_key=True), sa.Column("inv", sa.Integer, sa.ForeignKey("invoices.id")))',
            )
        ],
    )


def test_graph_prints_mermaid_and_dot(project: Project) -> None:
    three_packages(project)
    mermaid = dbinit(project, "graph")
    assert mermaid.returncode == 0, mermaid.stderr
    assert mermaid.stdout.startswith("graph TD")
    assert "audit --> billing" in mermaid.stdout and "audit --> notifications" in mermaid.stdout
    assert "billing --> core" in mermaid.stdout
    dot = dbinit(project, "graph", "--dot")
    assert dot.stdout.startswith("digraph packages {")
    assert '"audit" -> "billing";' in dot.stdout


def test_plan_lists_pending_per_package_and_plan_sql_prints_sql_and_creates_nothing(project: Project) -> None:
    three_packages(project)
    name = project.database()
    result = dbinit(project, "plan", "dev", "--database-name", name)
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    plan = response["result"]["plan"]
    assert [p["name"] for p in plan["pending"]] == ["core", "billing", "notifications", "audit"]
    assert plan["scripts_run"] is False and "sql" not in plan
    assert response["result"]["database"] == "would_create"
    raw = dbinit(project, "plan", "dev", "--database-name", name, "--sql")
    assert "-- package audit" in raw.stdout and "CREATE TABLE invoices" in raw.stdout
    assert "REFERENCES invoices" in raw.stdout
    assert "offline mode" in raw.stdout, "plan --sql says that it ran the scripts"
    assert not project.server.database_exists(name)


def test_status_lists_applied_and_pending_per_package(project: Project) -> None:
    three_packages(project)
    name = project.database()
    before = json.loads(dbinit(project, "status", "dev", "--database-name", name).stdout)
    assert before["result"]["database_exists"] is False
    assert before["result"]["pending"] == 3 + len(read_package(CORE_PACKAGE_DIR).migrations)
    init = dbinit(project, "init", "dev", "--database-name", name)
    assert init.returncode == 0, init.stdout + init.stderr
    assert "package_schemas" in init.stderr, "progress per stage goes to stderr"
    assert json.loads(init.stdout)["status"] == "success"
    project.write_package(
        "billing",
        migrations=[
            ("bill1", None, 'op.create_table("invoices", sa.Column("id", sa.Integer, primary_key=True))'),
            ("bill2", "bill1", 'op.add_column("invoices", sa.Column("total", sa.Integer))'),
        ],
    )
    after = json.loads(dbinit(project, "status", "dev", "--database-name", name).stdout)
    packages = {p["name"]: p for p in after["result"]["packages"]}
    assert packages["billing"]["applied"] == ["bill1"]
    assert packages["billing"]["pending"] == ["bill2"]
    assert packages["audit"] == {
        "name": "audit",
        "version": "1.0.0",
        "applied": ["aud1"],
        "adopted": [],
        "adoption_runs": [],
        "pending": [],
    }


def test_new_migration_scaffolds_the_next_revision(project: Project) -> None:
    three_packages(project)
    result = dbinit(project, "new-migration", "billing", "-m", "Add invoice totals")
    assert result.returncode == 0, result.stdout + result.stderr
    path = Path(json.loads(result.stdout)["result"]["file"])
    assert path.parent == project.root / "packages" / "billing" / "migrations"
    assert path.name == "0002_add_invoice_totals.py"
    text = path.read_text()
    assert "down_revision = 'bill1'" in text
    from dbinit_pipeline.migrations.registry import PackageRegistry

    registry = PackageRegistry.discover([project.root / "packages"], entry_points=False)
    billing = registry.by_name["billing"]
    assert billing.migrations[0].revision == "bill1"
    assert billing.head == billing.migrations[1].revision
    unknown = dbinit(project, "new-migration", "nope", "-m", "x")
    assert unknown.returncode == 1
    assert "No package named 'nope'" in json.loads(unknown.stdout)["error"]
