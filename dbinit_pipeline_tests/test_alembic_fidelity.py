"""Package scripts run under Alembic's own runtime, and their failures are the scripts' errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from dbinit_pipeline_tests.conftest import Project

RUNTIME_BODY = """
from alembic import context
assert context.get_bind() is op.get_bind()
assert context.is_offline_mode() is False
assert context.get_context() is op.get_context()
assert context.config.get_main_option("script_location").endswith("migrations")
assert context.get_x_argument() == [] and context.get_x_argument(as_dictionary=True) == {}
op.create_table("fid_items", sa.Column("id", sa.Integer, primary_key=True))
op.execute("CREATE TYPE fid_mood AS ENUM ('calm')")
with op.get_context().autocommit_block():
    # Neither may run inside a transaction block on PostgreSQL.
    op.execute("ALTER TYPE fid_mood ADD VALUE 'busy'")
    op.execute("CREATE INDEX CONCURRENTLY ix_fid_items_id ON fid_items (id)")
op.create_table("fid_after", sa.Column("id", sa.Integer, primary_key=True))
"""


def test_scripts_see_alembic_context_and_autocommit_block_splits_the_transaction(project: Project) -> None:
    project.write_package(
        "fidelity",
        migrations=[
            ("fid1", None, 'op.create_table("fid_first", sa.Column("id", sa.Integer, primary_key=True))'),
            ("fid2", "fid1", RUNTIME_BODY),
        ],
    )
    database = project.database()
    response = project.run("dev", database_name=database)
    assert response["status"] == "success", response
    result = response["result"]
    assert result["health_check"] == "passed", result["schema"]
    notes = " ".join(result.get("notes", []))
    assert "fidelity:fid2" in notes and "autocommit_block()" in notes
    assert {"fid_first", "fid_items", "fid_after"} <= project.server.tables(database)
    with project.server.connect(database) as conn:
        labels = [r[0] for r in conn.execute("SELECT unnest(enum_range(NULL::fid_mood))::text").fetchall()]
        valid = conn.execute(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_fid_items_id'::regclass"
        ).fetchone()
    assert labels == ["calm", "busy"]
    assert valid is not None and valid[0] is True
    # The offline rendering runs the same scripts with context.is_offline_mode() true.
    again = project.run("dev", database_name=database, sql=True)
    assert again["status"] == "success", again


FAILING_BODY = """
op.create_table("fid_broken", sa.Column("id", sa.Integer, primary_key=True))
values = {"a": 1}
values["missing"]
"""


def test_a_failing_script_is_migration_failed_naming_package_file_line_and_exception(
    project: Project,
) -> None:
    folder = project.write_package("broken", migrations=[("brk1", None, FAILING_BODY)])
    script = folder / "migrations" / "0001_brk1.py"
    line = next(i for i, text in enumerate(script.read_text().splitlines(), 1) if 'values["missing"]' in text)
    for sql in (False, True):
        response = project.run("dev", database_name=project.database(), sql=sql)
        assert response["status"] == "error", response
        assert response["code"] == "migration_failed", response
        error = response["error"]
        assert "'broken'" in error and str(script) in error and f"line {line}" in error, error
        assert "KeyError" in error and "'missing'" in error, error
        assert "bug in dbinit_pipeline" not in str(response)


MYSQL_DDL = textwrap.dedent(
    """
    import sqlalchemy as sa
    from sqlalchemy.dialects import mysql
    from sqlalchemy.schema import CreateTable
    {setup}
    table = sa.Table(
        "t", sa.MetaData(),
        sa.Column("f", sa.Float()), sa.Column("d", sa.DateTime()), sa.Column("s", sa.TIMESTAMP()),
    )
    dialect = mysql.dialect()
    {wrap}
    print(" ".join(str(CreateTable(table).compile(dialect=dialect)).split()))
    """
)


def _compiled_ddl(setup: str, wrap: str) -> str:
    code = MYSQL_DDL.format(setup=setup, wrap=wrap)
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=120
    ).stdout.strip()


def test_mysql_ddl_is_alembics_even_where_dagster_storage_is_imported() -> None:
    alembic_alone = _compiled_ddl("", "")
    dagster_raw = _compiled_ddl("import dagster._core.storage.sql", "")
    dbinit = _compiled_ddl(
        "import dagster._core.storage.sql\nfrom dbinit_pipeline.providers.plain_ddl import plain_ddl",
        "plain_ddl(dialect)",
    )
    # The overrides are real in this Dagster (else the test would prove nothing) ...
    assert dagster_raw != alembic_alone and "FLOAT(32)" in dagster_raw and "DATETIME(6)" in dagster_raw
    # ... and dbinit's dialects compile exactly what Alembic does without Dagster.
    assert dbinit == alembic_alone
    # Dagster's own compilation is left as Dagster wants it.
    dagster_after = _compiled_ddl(
        "import dagster._core.storage.sql\nfrom dbinit_pipeline.providers.plain_ddl import plain_ddl\n"
        "plain_ddl(mysql.dialect())",
        "",
    )
    assert dagster_after == dagster_raw
