"""Verify and health: drift made by hand is named object by object; no check pretends."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from dbinit_pipeline.configuration import HealthSettings
from dbinit_pipeline.database.providers.postgresql import disk_report, is_this_host
from dbinit_pipeline.migrations.core import CORE_PACKAGE_DIR
from dbinit_pipeline.migrations.package import read_package
from dbinit_pipeline.verify.health import latency_status, worst
from dbinit_pipeline_tests.conftest import Project
from dbinit_pipeline_tests.support.cli import health

TABLE_T1 = 'op.create_table("shop_items", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.String(120), nullable=False), sa.Column("price", sa.Integer, server_default="0"))\nop.create_index("ix_shop_items_name", "shop_items", ["name"])'
TABLE_T2 = 'op.create_table("shop_orders", sa.Column("id", sa.Integer, primary_key=True), sa.Column("item_id", sa.Integer, sa.ForeignKey("shop_items.id"), nullable=False))'


@pytest.fixture
def shop(project: Project) -> str:
    project.write_package("shop", migrations=[("shop1", None, TABLE_T1), ("shop2", "shop1", TABLE_T2)])
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "success", response
    assert response["result"]["schema"]["compared_with"] == {"core": "models", "shop": "snapshot"}
    return name


def test_clean_database_is_healthy_with_every_check_reported(project: Project, shop: str) -> None:
    code, report = health(project, shop)
    assert code == 0, report
    checks = report["result"]["checks"]
    assert report["status"] == "healthy"
    for check in ("connectivity", "migrations", "schema", "permissions", "disk", "connections"):
        assert checks[check]["status"] in {"healthy", "unknown"}, (check, checks[check])
    core = len(read_package(CORE_PACKAGE_DIR).migrations)
    assert checks["migrations"]["applied"] == core + 2 and checks["migrations"]["pending"] == 0
    assert checks["permissions"]["can_create_tables"] is True
    assert checks["connections"]["max_connections"] > checks["connections"]["active"] > 0


def test_dropped_table_altered_column_and_removed_index_are_named(project: Project, shop: str) -> None:
    with project.server.connect(shop) as conn:
        conn.execute("DROP TABLE shop_orders")
        conn.execute("ALTER TABLE shop_items ALTER COLUMN name TYPE varchar(50)")
        conn.execute("ALTER TABLE shop_items ALTER COLUMN name DROP NOT NULL")
        conn.execute("DROP INDEX ix_shop_items_name")
        conn.execute("DROP INDEX ix_sessions_user_id")
        conn.execute("ALTER TABLE users ADD COLUMN nickname text")
    code, report = health(project, shop)
    assert code == 1
    drift = report["result"]["schema"]["drift"]
    assert "table shop_orders: missing" in drift
    assert "column shop_items.name: type is VARCHAR(50), expected VARCHAR(120)" in drift
    assert "column shop_items.name: is NULL, expected NOT NULL" in drift
    assert "index on shop_items(name): missing" in drift
    assert "index on sessions(user_id): missing" in drift
    assert "column users.nickname: not declared by any migration or model" in drift
    # The next run's verify stage fails with the same findings.
    response = project.run(database_name=shop)
    assert response["status"] == "error"
    assert response["stage"] == "verify"
    assert response["code"] == "schema_drift"
    assert "table shop_orders: missing" in response["error"]


def test_changed_default_and_foreign_key_are_named(project: Project, shop: str) -> None:
    with project.server.connect(shop) as conn:
        conn.execute("ALTER TABLE shop_items ALTER COLUMN price SET DEFAULT 5")
        conn.execute("ALTER TABLE shop_orders DROP CONSTRAINT shop_orders_item_id_fkey")
    code, report = health(project, shop)
    assert code == 1
    drift = report["result"]["schema"]["drift"]
    assert "column shop_items.price: default is 5, expected 0" in drift
    assert "foreign key shop_orders(item_id) -> shop_items(id): missing" in drift


def test_edited_applied_file_and_version_table_are_checked(project: Project, shop: str) -> None:
    script = project.root / "packages" / "shop" / "migrations" / "0002_shop2.py"
    script.write_text(script.read_text() + "\n# edited after it was applied\n")
    with project.server.connect(shop) as conn:
        conn.execute("DELETE FROM alembic_version_shop WHERE version_num = 'shop2'")
    code, report = health(project, shop)
    assert code == 1
    migrations = report["result"]["checks"]["migrations"]
    assert migrations["status"] == "unhealthy"
    assert migrations["missing_heads"] == ["shop2"]
    assert any(str(script) in problem for problem in migrations["history"])


def test_role_without_create_is_unhealthy_on_permissions(project: Project, shop: str) -> None:
    role = f"ro_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    with project.server.connect(shop) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        conn.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    try:
        url = make_url(project.server.url).set(username=role, password=password)
        code, report = health(project, shop, url.render_as_string(hide_password=False))
        assert code == 1, report
        permissions = report["result"]["checks"]["permissions"]
        assert permissions["status"] == "unhealthy"
        assert permissions["can_create_tables"] is False
        assert "permission denied" in permissions["reason"]
        assert password not in json.dumps(report)
    finally:
        with project.server.connect(shop) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_latency_thresholds_decide_degraded_and_unhealthy(project: Project, shop: str) -> None:
    thresholds = HealthSettings(latency_degraded_ms=100, latency_unhealthy_ms=500)
    assert latency_status(99.9, thresholds) == "healthy"
    assert latency_status(100, thresholds) == "degraded"
    assert latency_status(500, thresholds) == "unhealthy"
    assert worst(["healthy", "unknown", "degraded"]) == "degraded"
    project.write_config(health={"latency_degraded_ms": 0.0001, "latency_unhealthy_ms": 10000})
    code, report = health(project, shop)
    assert code == 2
    assert report["status"] == "degraded"
    assert report["result"]["checks"]["connectivity"]["status"] == "degraded"
    project.write_config(health={"latency_degraded_ms": 0.0001, "latency_unhealthy_ms": 0.0002})
    code, report = health(project, shop)
    assert code == 1
    assert report["result"]["checks"]["connectivity"]["status"] == "unhealthy"


def test_disk_space_known_for_a_server_on_this_host(project: Project, shop: str) -> None:
    """The embedded server, and DBINIT_TEST_POSTGRES_URL's when it runs on this machine (as in
    CI): free bytes of the data directory's filesystem. A server elsewhere: unknown, and why."""
    code, report = health(project, shop)
    disk = report["result"]["checks"]["disk"]
    if not is_this_host(make_url(project.server.url).host or "localhost"):
        assert disk["status"] == "unknown" and disk["reason"]
        return
    assert code == 0
    assert disk["status"] == "healthy"
    assert disk["free_bytes"] > 0 and disk["total_bytes"] >= disk["free_bytes"]
    assert Path(disk["data_directory"], "PG_VERSION").exists()


def test_disk_space_unknown_with_a_reason_for_a_remote_server() -> None:
    assert is_this_host("127.0.0.1") and is_this_host("localhost")
    assert not is_this_host("db.example.invalid")
    report = disk_report("db.example.invalid", "/var/lib/postgresql/data")
    assert report["status"] == "unknown"
    assert "db.example.invalid" in report["reason"]
    unreadable = disk_report("127.0.0.1", None)
    assert unreadable["status"] == "unknown" and "pg_read_all_settings" in unreadable["reason"]


MODELS = """
import sqlalchemy as sa

metadata = sa.MetaData()
crm_contacts = sa.Table(
    "crm_contacts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("email", sa.String({length}), nullable=False, unique=True),
    sa.Column("owner_id", sa.String(64), sa.ForeignKey("users.id"), nullable=True, index=True),
)
"""
CRM_MIGRATION = (
    'op.create_table("crm_contacts", sa.Column("id", sa.Integer, primary_key=True), '
    'sa.Column("email", sa.String(200), nullable=False, unique=True), '
    'sa.Column("owner_id", sa.String(64), sa.ForeignKey("users.id"), nullable=True, index=True))'
)


def test_package_models_are_the_expected_shape(project: Project) -> None:
    folder = project.write_package("crm", migrations=[("crm1", None, CRM_MIGRATION)])
    (folder / "package.yaml").write_text("name: crm\nversion: 1.0.0\nmodels: models.py:metadata\n")
    (folder / "models.py").write_text(MODELS.format(length=200))
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "success", response
    assert response["result"]["schema"]["compared_with"]["crm"] == "models"
    with project.server.connect(name) as conn:
        conn.execute("ALTER TABLE crm_contacts DROP CONSTRAINT crm_contacts_email_key")
    code, report = health(project, name)
    assert code == 1
    assert "unique constraint crm_contacts(email): missing" in report["result"]["schema"]["drift"]


def test_models_that_disagree_with_the_migrations_fail_verify(project: Project) -> None:
    folder = project.write_package("crm", migrations=[("crm1", None, CRM_MIGRATION)])
    (folder / "package.yaml").write_text("name: crm\nversion: 1.0.0\nmodels: models.py:metadata\n")
    (folder / "models.py").write_text(MODELS.format(length=100))
    response = project.run(database_name=project.database())
    assert response["status"] == "error"
    assert response["stage"] == "verify"
    assert "column crm_contacts.email: type is VARCHAR(200), expected VARCHAR(100)" in response["error"]


def test_dbinit_tables_are_found_by_name_and_a_dropped_one_is_named(project: Project, shop: str) -> None:
    """verify reads no shape of dbinit's own tables (ledger, snapshots, version tables), yet
    counts every one of them and names one that is gone."""
    with project.server.connect(shop) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')"
        ).fetchone()
    assert row is not None
    tables = row[0]
    code, report = health(project, shop)
    assert code == 0, report
    assert report["result"]["schema"]["tables_found"] == tables
    with project.server.connect(shop) as conn:
        conn.execute("DROP TABLE alembic_version_shop")
    code, report = health(project, shop)
    assert code == 1
    schema = report["result"]["schema"]
    assert schema["tables_found"] == tables - 1
    assert "table alembic_version_shop: missing (package dbinit)" in schema["drift"], schema
    assert report["result"]["checks"]["migrations"]["missing_heads"] == ["shop2"]
