"""Package scripts run under Alembic's own runtime, and their failures are the scripts' errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from sqlalchemy.engine import make_url

from dbinit_pipeline_tests.conftest import Project
from dbinit_pipeline_tests.support.cli import health

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
        "import dagster._core.storage.sql\nfrom dbinit_pipeline.database.providers.plain_ddl import plain_ddl",
        "plain_ddl(dialect)",
    )
    # The overrides are real in this Dagster (else the test would prove nothing) ...
    assert dagster_raw != alembic_alone and "FLOAT(32)" in dagster_raw and "DATETIME(6)" in dagster_raw
    # ... and dbinit's dialects compile exactly what Alembic does without Dagster.
    assert dbinit == alembic_alone
    # Dagster's own compilation is left as Dagster wants it.
    dagster_after = _compiled_ddl(
        "import dagster._core.storage.sql\nfrom dbinit_pipeline.database.providers.plain_ddl import plain_ddl\n"
        "plain_ddl(mysql.dialect())",
        "",
    )
    assert dagster_after == dagster_raw


SHAPES_BODY_1 = """
op.create_table("shp_old", sa.Column("id", sa.Integer, primary_key=True))
op.create_table("shp_gone", sa.Column("id", sa.Integer, primary_key=True))
op.create_table("shp_sql", sa.Column("id", sa.Integer, primary_key=True))
if op.get_bind().dialect.name == "mysql":
    op.create_table("shp_mysql_only", sa.Column("id", sa.Integer, primary_key=True))
"""
SHAPES_BODY_2 = """
op.rename_table("shp_old", "shp_new")
op.execute("ALTER TABLE shp_sql RENAME TO shp_sql_renamed")
op.execute("DROP TABLE shp_gone")
"""


def test_renames_drops_and_dialect_conditional_tables_verify_healthy(project: Project) -> None:
    project.write_package(
        "shapes", migrations=[("shp1", None, SHAPES_BODY_1), ("shp2", "shp1", SHAPES_BODY_2)]
    )
    database = project.database()
    response = project.run("dev", database_name=database)
    assert response["status"] == "success", response
    result = response["result"]
    assert result["health_check"] == "passed", result["schema"]
    assert result["schema"]["drift"] == [] and result["schema"]["compared_with"]["shapes"] == "snapshot"
    tables = project.server.tables(database)
    assert {"shp_new", "shp_sql_renamed"} <= tables
    assert not {"shp_old", "shp_gone", "shp_sql", "shp_mysql_only"} & tables
    # The renamed tables are what verify now holds the package to: dropping one is drift.
    with project.server.connect(database) as conn:
        conn.execute("DROP TABLE shp_new")
    code, report = health(project, database)
    assert code == 1
    assert report["result"]["schema"]["drift"] == ["table shp_new: missing"], report


def test_the_default_version_table_is_read_by_plain_alembic(project: Project, tmp_path: Path) -> None:
    from alembic import command

    from dbinit_pipeline_tests.support.alembic import alembic_config, current

    folder = project.write_package(
        "plainread",
        migrations=[
            ("prd1", None, 'op.create_table("prd_items", sa.Column("id", sa.Integer, primary_key=True))'),
            ("prd2", "prd1", 'op.add_column("prd_items", sa.Column("name", sa.Text))'),
        ],
    )
    database = project.database()
    assert project.run("dev", database_name=database)["status"] == "success"
    url = make_url(project.server.url).set(drivername="postgresql+psycopg", database=database)
    config = alembic_config(
        tmp_path / "env",
        folder / "migrations",
        url.render_as_string(hide_password=False),
        "alembic_version_plainread",
    )
    assert current(config) == "prd2 (head)"
    command.upgrade(config, "head")  # nothing to do: it would fail creating prd_items again
    assert current(config) == "prd2 (head)"
    with project.server.connect(database) as conn:
        rows = conn.execute("SELECT version_num FROM alembic_version_plainread").fetchall()
    assert rows == [("prd2",)]


def _script(folder: Path, name: str, revision: str, down: object, body: str, **header: object) -> None:
    extra = "".join(f"{key} = {value!r}\n" for key, value in header.items())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(
        f'import sqlalchemy as sa\nfrom alembic import op\n\nrevision = "{revision}"\n'
        f"down_revision = {down!r}\n{extra}\n\ndef upgrade():\n    {body}\n"
    )


def _table(name: str, fk: str | None = None) -> str:
    ref = f', sa.ForeignKey("{fk}.id")' if fk else ""
    return f'op.create_table("{name}", sa.Column("id", sa.Integer{ref}, primary_key=True))'


def test_branch_labels_depends_on_and_merges_are_ordered_as_alembic_orders_them(project: Project) -> None:
    from alembic.script import ScriptDirectory

    from dbinit_pipeline.migrations.registry import PackageRegistry

    graph = project.write_package("graphy")
    versions = graph / "migrations"
    # Two roots; a2 needs the other branch (by its label) first; m1 merges both; file names sort
    # in an order that satisfies none of it.
    _script(versions, "z_a1", "gra1", None, _table("g_a1"))
    _script(versions, "y_b1", "grb1", None, _table("g_b1"), branch_labels=("other",))
    _script(versions, "x_a2", "gra2", "gra1", _table("g_a2", "g_b1"), depends_on="other")
    _script(versions, "w_m1", "grm1", ("gra2", "grb1"), _table("g_m1"))
    # Another package, alphabetically first, whose script depends on graphy's revision gra2 (and
    # whose package.yaml names no dependency): graphy is applied first.
    _script(
        project.write_package("aardvark") / "migrations",
        "a_1",
        "aar1",
        None,
        _table("aa_1", "g_a2"),
        depends_on="gra2",
    )
    registry = PackageRegistry.discover([project.root / "packages"], entry_points=False)
    ordered = [p.name for p in registry.ordered()]
    assert ordered.index("graphy") < ordered.index("aardvark")
    alembic_order = [
        r.revision
        for r in reversed(
            list(
                ScriptDirectory(
                    str(versions), version_locations=[str(versions)]
                ).revision_map.iterate_revisions("heads", "base")
            )
        )
    ]
    assert [m.revision for m in registry.by_name["graphy"].migrations] == alembic_order
    position = {rev: i for i, rev in enumerate(alembic_order)}
    assert position["grb1"] < position["gra2"] < position["grm1"] and position["gra1"] < position["gra2"]

    database = project.database()
    response = project.run("dev", database_name=database)
    assert response["status"] == "success", response
    assert response["result"]["health_check"] == "passed", response["result"]["schema"]
    with project.server.connect(database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version_graphy").fetchall() == [("grm1",)]


def test_an_unknown_depends_on_is_named_with_its_file(project: Project) -> None:
    from dbinit_pipeline.errors import PackageError
    from dbinit_pipeline.migrations.registry import PackageRegistry

    folder = project.write_package("lonely") / "migrations"
    _script(folder, "a_1", "lon1", None, _table("lon_1"), depends_on="nowhere1")
    try:
        PackageRegistry.discover([project.root / "packages"], entry_points=False)
    except PackageError as exc:
        assert "depends_on 'nowhere1'" in exc.message and str(folder / "a_1.py") in exc.message
    else:
        raise AssertionError("an unknown depends_on was accepted")


def test_a_database_with_heads_in_the_shared_table_gets_per_package_tables_with_nothing_pending(
    project: Project,
) -> None:
    project.write_package(
        "legacy",
        migrations=[
            ("leg1", None, 'op.create_table("leg_t", sa.Column("id", sa.Integer, primary_key=True))')
        ],
    )
    database = project.database()
    assert project.run(database_name=database)["status"] == "success"
    # As a database initialized before version tables were per package left it.
    with project.server.connect(database) as conn:
        heads = [
            conn.execute(f"SELECT version_num FROM {t}").fetchone()[0]  # type: ignore[index]
            for t in ("alembic_version_core", "alembic_version_legacy")
        ]
        conn.execute("DROP TABLE alembic_version_core")
        conn.execute("DROP TABLE alembic_version_legacy")
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        for head in heads:
            conn.execute("INSERT INTO alembic_version VALUES (%s)", (head,))
    again = project.run(database_name=database)
    assert again["status"] == "success" and again["result"]["migrations_applied"] == 0, again
    with project.server.connect(database) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version_legacy").fetchall() == [("leg1",)]
        assert conn.execute("SELECT count(*) FROM alembic_version").fetchone() == (0,)


SLOW_SPLIT_BODY = """
import time
op.create_table("split_first", sa.Column("id", sa.Integer, primary_key=True))
with op.get_context().autocommit_block():
    time.sleep(1.5)
op.create_table("split_after", sa.Column("id", sa.Integer, primary_key=True))
"""


def test_two_threads_migrating_one_database_across_an_autocommit_split_both_finish(project: Project) -> None:
    """Scripts run one migration context at a time per process, and the database lock is taken
    again after an autocommit split: a second thread of the same process that arrives meanwhile
    waits for the first to finish its batch instead of holding the lock the first needs back."""
    import threading

    from dbinit_pipeline.database.server import DatabaseServer, ServerRef
    from dbinit_pipeline.migrations.package import read_package
    from dbinit_pipeline.migrations.runner import MigrationRunner
    from dbinit_pipeline_tests.conftest import TEST_URL_VAR

    pkg = read_package(project.write_package("splitting", migrations=[("sp1", None, SLOW_SPLIT_BODY)]))
    name = project.database()
    with project.server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    display = make_url(project.server.url).render_as_string(hide_password=True)
    server = DatabaseServer(ServerRef("postgresql", display, f"env:{TEST_URL_VAR}", "postgres"))
    applied: dict[str, object] = {}

    def migrate(who: str) -> None:
        try:
            report = MigrationRunner(server, name, lock_timeout=4.0).apply([pkg])
            applied[who] = report.migrations_applied
        except Exception as exc:  # recorded for the assertion below
            applied[who] = exc

    first = threading.Thread(target=migrate, args=("first",))
    second = threading.Thread(target=migrate, args=("second",))
    first.start()
    threading.Event().wait(0.5)  # the first is inside its script's autocommit block by now
    second.start()
    first.join(60)
    second.join(60)
    assert sorted(map(str, applied.values())) == ["0", "1"], applied
    assert {"split_first", "split_after"} <= project.server.tables(name)
