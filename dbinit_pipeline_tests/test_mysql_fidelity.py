"""On MySQL/MariaDB, dbinit's DDL is what Alembic emits outside Dagster, and `dbinit health` right
after `dbinit init` agrees with the verify that init ran (the example project and a package with the
types Dagster's storage rewrites).

Needs DBINIT_TEST_MYSQL_URL; skipped, saying why, without it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy.engine import make_url

from dbinit_pipeline_tests.support.alembic import mysqldump_schema, plain_upgrade
from dbinit_pipeline_tests.support.mysql import (
    MySQLProject,
    mysql_project,
    mysql_server,
)

__all__ = ["mysql_project", "mysql_server"]  # fixtures, used by name

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "packages"
TYPES_BODY = """
op.create_table(
    "typed_things",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("ratio", sa.Float()),
    sa.Column("exact", sa.FLOAT(precision=10)),
    sa.Column("seen_at", sa.DateTime()),
    sa.Column("stamped", sa.TIMESTAMP(), nullable=True),
)
"""


def test_ddl_equals_plain_alembic_and_health_after_init_is_healthy(
    mysql_project: MySQLProject, tmp_path: Path
) -> None:
    for example in EXAMPLES.iterdir():
        shutil.copytree(example, mysql_project.root / "packages" / example.name)
    typed = mysql_project.write_package("typed", migrations=[("typ1", None, TYPES_BODY)])
    by_dbinit, by_alembic = mysql_project.database(), mysql_project.database()

    response = mysql_project.run(database_name=by_dbinit)
    assert response["status"] == "success", response
    assert response["result"]["schema"]["drift"] == []

    health = subprocess.run(
        [
            str(Path(sys.executable).parent / "dbinit"),
            "--config",
            str(mysql_project.config_path),
            "health",
            "dev",
            "--database-name",
            by_dbinit,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = json.loads(health.stdout)
    checks = report["result"]["checks"]
    assert checks["schema"] == {"status": "healthy", "drift": 0}, report["result"]["schema"]
    assert checks["migrations"]["status"] == "healthy", checks["migrations"]
    # Only the latency may degrade on a busy machine; nothing about the schema.
    assert health.returncode in (0, 2), report

    mysql_project.server.query(
        f"CREATE DATABASE `{by_alembic}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
    )
    url = make_url(mysql_project.server.url).set(database=by_alembic).render_as_string(hide_password=False)
    done = plain_upgrade(tmp_path / "plain", typed / "migrations", url, "alembic_version_typed")
    assert done.returncode == 0, done.stderr
    admin = make_url(mysql_project.server.url).render_as_string(hide_password=False)
    ours = mysqldump_schema(admin, by_dbinit)
    theirs = mysqldump_schema(admin, by_alembic)
    table = next(block for block in ours.split(";") if "CREATE TABLE `typed_things`" in block)
    assert table in theirs, (table, theirs)
    assert "float(32)" not in table.lower() and "datetime(6)" not in table.lower()


def test_a_generated_package_set_verifies_healthy_on_mysql_and_health_agrees(
    mysql_project: MySQLProject,
) -> None:
    from bench.package_generator import generate

    generate(mysql_project.root / "packages", 40, 4)  # the benchmark's workload, smaller
    name = mysql_project.database()
    response = mysql_project.run(database_name=name)
    assert response["status"] == "success", response
    assert response["result"]["migrations_applied"] == 2 + 40 * 4  # the core's two, then the set's
    assert response["result"]["schema"]["drift"] == []
    health = subprocess.run(
        [
            str(Path(sys.executable).parent / "dbinit"),
            "--config",
            str(mysql_project.config_path),
            "health",
            "dev",
            "--database-name",
            name,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(health.stdout)
    assert report["result"]["checks"]["schema"] == {"status": "healthy", "drift": 0}, report["result"][
        "schema"
    ]
    again = mysql_project.run(database_name=name)
    assert again["status"] == "success" and again["result"]["migrations_applied"] == 0
