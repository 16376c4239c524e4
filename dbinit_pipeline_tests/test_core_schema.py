"""The core in a PostgreSQL schema of its own (`core: {schema: ...}`): a history that owns tables
named as the core's applies unchanged, verify and health hold each `users` to its own owner, and
plain Alembic reads the core's bookkeeping in that schema."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from dbinit_pipeline.configuration import load_config
from dbinit_pipeline.errors import ConfigurationError
from dbinit_pipeline.migrations.core import CORE_PACKAGE_DIR
from dbinit_pipeline.migrations.core.models import CORE_TABLES
from dbinit_pipeline.migrations.package import read_package
from dbinit_pipeline_tests.conftest import Project
from dbinit_pipeline_tests.support.cli import dbinit, health

CORE_SCHEMA = "dbinit_core"

# A history of its own that owns two of the core's table names (with its own columns).
OWN_USERS = """
op.create_table(
    "users",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("login", sa.String(80), nullable=False, unique=True),
)
op.create_table(
    "workspaces",
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("owner_id", sa.Integer, sa.ForeignKey("users.id"), nullable=False),
)
op.execute("INSERT INTO users (login) VALUES ('first')")
"""


def _tables(project: Project, database: str, schema: str) -> set[str]:
    with project.server.connect(database) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)).fetchall()
    return {r[0] for r in rows}


def test_a_history_owning_users_and_workspaces_applies_with_the_core_in_its_own_schema(
    project: Project, tmp_path: Path
) -> None:
    project.write_config(core={"schema": CORE_SCHEMA})
    project.write_package("accounts", migrations=[("acc1", None, OWN_USERS)])
    database = project.database()

    first = project.run("dev", database_name=database)
    assert first["status"] == "success", first
    core_revisions = len(read_package(CORE_PACKAGE_DIR).migrations)
    assert first["result"]["migrations_applied"] == core_revisions + 1
    assert first["result"]["health_check"] == "passed", first["result"]["health"]

    # Each `users` where it belongs: the core's in its schema, the package's beside the ledger.
    assert set(CORE_TABLES) | {"alembic_version_core"} == _tables(project, database, CORE_SCHEMA)
    public = _tables(project, database, "public")
    assert {"users", "workspaces", "alembic_version_accounts", "dbinit_migrations"} <= public
    assert not public & (set(CORE_TABLES) - {"users", "workspaces"})
    with project.server.connect(database) as conn:
        columns = conn.execute(
            "SELECT table_schema, string_agg(column_name, ',' ORDER BY ordinal_position)"
            " FROM information_schema.columns WHERE table_name = 'users' GROUP BY table_schema"
        ).fetchall()
        assert conn.execute("SELECT login FROM public.users").fetchall() == [("first",)]
    assert dict(columns)["public"] == "id,login"
    assert dict(columns)[CORE_SCHEMA].startswith("id,name,email")

    code, report = health(project, database)
    assert code == 0, report
    checks = report["result"]["checks"]
    assert checks["schema"] == {"status": "healthy", "drift": 0}, report
    assert checks["migrations"]["missing_heads"] == [] and checks["migrations"]["unknown_heads"] == []

    again = project.run("dev", database_name=database)
    assert again["status"] == "success", again
    assert again["result"]["migrations_applied"] == 0
    assert again["result"]["health_check"] == "passed", again["result"]["health"]

    # Plain Alembic, pointed at the core's scripts and its version table in that schema.
    url = make_url(project.server.url).set(drivername="postgresql+psycopg", database=database)
    env_dir = tmp_path / "core_env"
    env_dir.mkdir()
    (env_dir / "env.py").write_text(
        textwrap.dedent(
            """\
            from alembic import context
            from sqlalchemy import create_engine, pool

            config = context.config
            engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
            with engine.connect() as connection:
                connection.exec_driver_sql("SET search_path TO dbinit_core")
                context.configure(
                    connection=connection,
                    version_table="alembic_version_core",
                    version_table_schema="dbinit_core",
                )
                with context.begin_transaction():
                    context.run_migrations()
            """
        )
    )
    import io

    config = Config(stdout=io.StringIO())
    config.set_main_option("script_location", str(env_dir))
    config.set_main_option("version_locations", str(CORE_PACKAGE_DIR / "migrations"))
    config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%"))
    command.current(config)
    head = read_package(CORE_PACKAGE_DIR).migrations[-1].revision
    assert f"{head} (head)" in config.stdout.getvalue()  # type: ignore[union-attr]
    command.upgrade(config, "head")  # nothing to do: it would fail creating the core's users again
    assert _tables(project, database, CORE_SCHEMA) == set(CORE_TABLES) | {"alembic_version_core"}


def test_drift_in_the_cores_schema_is_named_with_the_schema(project: Project) -> None:
    project.write_config(core={"schema": CORE_SCHEMA})
    project.write_package("accounts", migrations=[("acc1", None, OWN_USERS)])
    database = project.database()
    assert project.run("dev", database_name=database)["status"] == "success"
    with project.server.connect(database) as conn:
        conn.execute(f"ALTER TABLE {CORE_SCHEMA}.users DROP COLUMN image")
        conn.execute(f"DROP TABLE {CORE_SCHEMA}.workspace_team_members")
        conn.commit()
    code, report = health(project, database)
    assert code != 0
    drift = report["result"]["schema"]["drift"]
    assert any(f"{CORE_SCHEMA}.users" in d and "image" in d for d in drift), drift
    assert f"table {CORE_SCHEMA}.workspace_team_members: missing" in drift, drift
    # The package's own users and workspaces are not the core's: no drift reported on them.
    assert not any(d.startswith(("table users", "table workspaces")) for d in drift), drift


def test_plan_sql_and_the_plan_hash_know_the_cores_schema(project: Project) -> None:
    project.write_package(
        "notes",
        migrations=[
            ("nts1", None, 'op.create_table("notes", sa.Column("id", sa.Integer, primary_key=True))')
        ],
    )
    database = project.database()

    def plan_hash() -> str:
        done = dbinit(project, "plan", "dev", "--database-name", database)
        assert done.returncode == 0, done.stdout + done.stderr
        return str(json.loads(done.stdout)["result"]["plan"]["hash"])

    default_hash = plan_hash()
    project.write_config(core={"schema": CORE_SCHEMA})
    assert plan_hash() != default_hash, "an approval of one placement does not cover the other"
    project.write_package("accounts", migrations=[("acc1", None, OWN_USERS)])
    raw = dbinit(project, "plan", "dev", "--database-name", database, "--sql")
    assert raw.returncode == 0, raw.stdout + raw.stderr
    core, _, accounts = raw.stdout.partition("-- package accounts")
    assert f'CREATE SCHEMA IF NOT EXISTS "{CORE_SCHEMA}";\nSET search_path TO "{CORE_SCHEMA}";' in core
    assert "CREATE TABLE users" in core and core.rstrip().endswith("RESET search_path;"), core
    assert "CREATE TABLE users" in accounts and "search_path" not in accounts, accounts


def test_without_the_schema_a_history_owning_users_is_refused_by_name(project: Project) -> None:
    project.write_package("accounts", migrations=[("acc1", None, OWN_USERS)])
    response = project.run("dev", database_name=project.database())
    assert response["status"] == "error"
    assert "table 'users' is created by two packages" in response["error"], response["error"]


@pytest.mark.parametrize(
    ("core", "provider", "named"),
    [
        ({"schema": CORE_SCHEMA}, "mysql", "core.schema ('dbinit_core') is PostgreSQL only"),
        ({"schema": "public"}, "postgresql", "leave core.schema out for the default schema"),
        ({"schema": "Core-Tables"}, "postgresql", "is not a schema name dbinit uses"),
    ],
)
def test_a_core_schema_that_cannot_be_is_refused_naming_the_key(
    tmp_path: Path, core: dict[str, str], provider: str, named: str
) -> None:
    path = tmp_path / "dbinit.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "project": "placed",
                "database": {"provider": provider, "hosting": "local"},
                "environments": {"dev": {"connection_string_env": "DBINIT_UNUSED_URL"}},
                "core": core,
            }
        )
    )
    with pytest.raises(ConfigurationError) as raised:
        load_config(path)
    assert named in raised.value.message and str(path) in raised.value.message


def test_sqlalchemy_sees_the_core_only_where_it_was_put(project: Project) -> None:
    project.write_config(core={"schema": CORE_SCHEMA})
    database = project.database()
    assert project.run("dev", database_name=database)["status"] == "success"
    url = make_url(project.server.url).set(drivername="postgresql+psycopg", database=database)
    engine = sa.create_engine(url)
    try:
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names(schema=CORE_SCHEMA)) >= set(CORE_TABLES)
        assert not set(inspector.get_table_names()) & set(CORE_TABLES)
    finally:
        engine.dispose()
