"""Package schemas: validation before any database is touched, order, atomicity, checksums."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from dbinit_pipeline.errors import PackageError
from dbinit_pipeline.migrations.core import CORE_PACKAGE_DIR
from dbinit_pipeline.migrations.package import read_package
from dbinit_pipeline.migrations.registry import PackageRegistry
from dbinit_pipeline_tests.conftest import Project, write_migration

CORE = read_package(CORE_PACKAGE_DIR)

USERS_FK = 'sa.Column("user_id", sa.String(64), sa.ForeignKey("users.id"))'


def table(name: str, *extra: str) -> str:
    cols = ", ".join(['sa.Column("id", sa.Integer, primary_key=True)', *extra])
    return f'op.create_table("{name}", {cols})'


def discover(project: Project) -> PackageRegistry:
    return PackageRegistry.discover([project.root / "packages"], entry_points=False)


def problems_of(project: Project) -> str:
    with pytest.raises(PackageError) as info:
        discover(project)
    return info.value.message


# -- validation (no database) ------------------------------------------------------------
def test_duplicate_package_names_name_both_manifests(project: Project) -> None:
    first = project.write_package("billing", migrations=[("r1", None, table("a"))])
    second = project.root / "packages" / "billing_copy"
    second.mkdir()
    (second / "package.yaml").write_text((first / "package.yaml").read_text())
    message = problems_of(project)
    assert "'billing' is declared twice" in message
    assert str(first / "package.yaml") in message and str(second / "package.yaml") in message


def test_missing_dependency_names_package_and_manifest(project: Project) -> None:
    folder = project.write_package("audit", depends_on=["billing"], migrations=[("r1", None, table("a"))])
    message = problems_of(project)
    assert "'audit' depends on 'billing', which is not registered" in message
    assert str(folder / "package.yaml") in message


def test_dependency_cycle_is_shown(project: Project) -> None:
    project.write_package("a", depends_on=["c"], migrations=[("ra", None, table("ta"))])
    project.write_package("b", depends_on=["a"], migrations=[("rb", None, table("tb"))])
    project.write_package("c", depends_on=["b"], migrations=[("rc", None, table("tc"))])
    message = problems_of(project)
    assert "dependency cycle: a -> c -> b -> a" in message


def test_two_heads_in_a_package(project: Project) -> None:
    project.write_package(
        "billing", migrations=[("r1", None, table("a")), ("r2", "r1", table("b")), ("r3", "r1", table("c"))]
    )
    message = problems_of(project)
    assert "'billing' has 2 heads" in message
    assert "0002_r2.py" in message and "0003_r3.py" in message


def test_dangling_down_revision_names_the_file(project: Project) -> None:
    folder = project.write_package(
        "billing", migrations=[("r1", None, table("a")), ("r2", "nope", table("b"))]
    )
    message = problems_of(project)
    assert "down_revision 'nope'" in message
    assert str(folder / "migrations" / "0002_r2.py") in message


def test_table_created_by_two_packages(project: Project) -> None:
    project.write_package("billing", migrations=[("r1", None, table("invoices"))])
    project.write_package("ledger", migrations=[("r2", None, table("invoices"))])
    message = problems_of(project)
    assert "table 'invoices' is created by two packages: 'billing'" in message and "'ledger'" in message


def test_foreign_key_into_a_package_that_is_not_a_dependency(project: Project) -> None:
    project.write_package("billing", migrations=[("r1", None, table("invoices"))])
    folder = project.write_package(
        "audit",
        migrations=[
            ("r2", None, table("audit_log", 'sa.Column("inv", sa.Integer, sa.ForeignKey("invoices.id"))'))
        ],
    )
    message = problems_of(project)
    assert "'audit' has a foreign key to table 'invoices' of package 'billing'" in message
    assert str(folder / "migrations" / "0001_r2.py") in message
    # Declaring the dependency (even transitively) makes it valid.
    project.write_package("middle", depends_on=["billing"], migrations=[("r3", None, table("mid"))])
    project.write_package(
        "audit",
        depends_on=["middle"],
        migrations=[
            ("r2", None, table("audit_log", 'sa.Column("inv", sa.Integer, sa.ForeignKey("invoices.id"))'))
        ],
    )
    assert [p.name for p in discover(project).ordered()] == ["core", "billing", "middle", "audit"]


def test_validation_error_stops_the_run_before_the_database_exists(project: Project) -> None:
    project.write_package("audit", depends_on=["billing"], migrations=[("r1", None, table("a"))])
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "error"
    assert response["stage"] == "validate"
    assert response["code"] == "package_invalid"
    assert not project.server.database_exists(name)


# -- applying ----------------------------------------------------------------------------
def test_diamond_dependency_applies_dependencies_first(project: Project) -> None:
    project.write_package(
        "d",
        depends_on=["b", "c"],
        migrations=[
            (
                "rd",
                None,
                table(
                    "td",
                    'sa.Column("b", sa.Integer, sa.ForeignKey("tb.id"))',
                    'sa.Column("c", sa.Integer, sa.ForeignKey("tc.id"))',
                ),
            )
        ],
    )
    project.write_package(
        "b",
        depends_on=["a"],
        migrations=[("rb", None, table("tb", 'sa.Column("a", sa.Integer, sa.ForeignKey("ta.id"))'))],
    )
    project.write_package(
        "c",
        depends_on=["a"],
        migrations=[("rc", None, table("tc", 'sa.Column("a", sa.Integer, sa.ForeignKey("ta.id"))'))],
    )
    project.write_package("a", migrations=[("ra", None, table("ta", USERS_FK)), ("ra2", "ra", table("ta2"))])
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "success", response
    applied = [p["name"] for p in response["result"]["packages_applied"]]
    assert applied == ["core", "a", "b", "c", "d"]
    assert response["result"]["packages_applied"][1]["revisions"] == ["ra", "ra2"]
    assert response["result"]["migrations_applied"] == 5 + len(CORE.migrations)
    fks = project.server.foreign_keys(name)
    assert {("td", "tb"), ("td", "tc"), ("tb", "ta"), ("tc", "ta"), ("ta", "users")} <= fks
    with project.server.connect(name) as conn:
        rows = conn.execute(
            "SELECT package, revision, checksum, run_id, duration_ms FROM dbinit_migrations"
        ).fetchall()
        heads = {
            package: [
                r[0] for r in conn.execute(f"SELECT version_num FROM alembic_version_{package}").fetchall()
            ]
            for package in ("core", "a", "b", "c", "d")
        }
    assert {(r[0], r[1]) for r in rows} >= {("a", "ra"), ("a", "ra2"), ("d", "rd")}
    assert all(len(r[2]) == 64 and r[3] == response["result"]["run_id"] and r[4] >= 0 for r in rows)
    # One version table per package, holding exactly its head (as Alembic's own would).
    assert heads == {"core": [CORE.head], "a": ["ra2"], "b": ["rb"], "c": ["rc"], "d": ["rd"]}


def test_failing_migration_leaves_no_table_of_any_package(project: Project) -> None:
    project.write_package("a", migrations=[("ra", None, table("ta")), ("ra2", "ra", table("ta2"))])
    failing = project.write_package(
        "b",
        depends_on=["a"],
        migrations=[
            ("rb", None, table("tb")),
            ("rb2", "rb", 'op.execute("ALTER TABLE no_such_table ADD COLUMN x int")'),
        ],
    )
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "error"
    assert response["stage"] == "package_schemas"
    assert response["code"] == "migration_failed"
    assert "'b'" in response["error"]
    assert str(failing / "migrations" / "0002_rb2.py") in response["error"]
    assert "ALTER TABLE no_such_table ADD COLUMN x int" in response["error"]
    assert response["details"]["statement"] == "ALTER TABLE no_such_table ADD COLUMN x int"
    # This run created the database, so cleanup drops it: nothing half applied remains.
    assert response["cleanup"]["database"] == "dropped"
    assert not project.server.database_exists(name)


def test_failing_package_in_an_existing_database_rolls_back_every_package(project: Project) -> None:
    name = project.database()
    assert project.run(database_name=name)["status"] == "success"
    project.write_package("a", migrations=[("ra", None, table("ta"))])
    project.write_package("b", depends_on=["a"], migrations=[("rb", None, 'op.execute("SELECT 1/0")')])
    response = project.run(database_name=name)
    assert response["status"] == "error"
    assert response["cleanup"]["database"] == "kept"
    assert project.server.database_exists(name)
    tables = project.server.tables(name)
    assert "ta" not in tables
    with project.server.connect(name) as conn:
        packages = {r[0] for r in conn.execute("SELECT package FROM dbinit_migrations").fetchall()}
    assert packages == {"core"}


def test_changed_applied_migration_is_refused_before_anything_runs(project: Project) -> None:
    folder = project.write_package("a", migrations=[("ra", None, table("ta"))])
    name = project.database()
    assert project.run(database_name=name)["status"] == "success"
    script = folder / "migrations" / "0001_ra.py"
    script.write_text(script.read_text().replace('"ta"', '"ta_renamed"'))
    project.write_package("z", migrations=[("rz", None, table("tz"))])
    response = project.run(database_name=name)
    assert response["status"] == "error"
    assert response["code"] == "checksum_mismatch"
    assert str(script) in response["error"]
    assert "tz" not in project.server.tables(name), "nothing may be applied after a checksum mismatch"


@contextmanager
def statements_sent() -> Iterator[list[str]]:
    """Every statement sent to PostgreSQL inside the block (not Dagster's own SQLite storage)."""
    statements: list[str] = []

    def count(conn: sa.Connection, cursor: object, statement: str, *args: object) -> None:
        if conn.dialect.name == "postgresql":
            statements.append(statement)

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)


def test_nothing_pending_costs_a_constant_number_of_queries(project: Project) -> None:
    from bench.package_generator import generate
    from dbinit_pipeline.orchestration.jobs import run_in_process as run_init

    generate(project.root / "packages", 12, 3)
    name = project.database()
    assert project.run(database_name=name)["status"] == "success"
    with statements_sent() as statements:
        response = run_init(project.config(), "dev", database_name=name)
    assert response["result"]["migrations_applied"] == 0
    ledger_reads = [s for s in statements if "FROM dbinit_migrations" in s]
    # One read of what is applied per schema stage (core, packages) and one count in verify:
    # independent of the 37 revisions, and no per-revision round trips.
    assert len(ledger_reads) <= 3, ledger_reads
    assert len(statements) < 30, statements


def test_generated_package_set_applies_and_verifies(project: Project) -> None:
    from bench.package_generator import generate

    names = generate(project.root / "packages", 40, 3)
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "success", response
    assert response["result"]["migrations_applied"] == 40 * 3 + len(CORE.migrations)
    assert response["result"]["schema"]["status"] == "ok"
    assert {f"{n}_t3" for n in names} <= project.server.tables(name)


def test_lock_table_estimate_switches_to_per_package_commits(project: Project) -> None:
    from bench.package_generator import generate

    with project.server.connect() as conn:
        per_tx = int(conn.execute("SHOW max_locks_per_transaction").fetchone()[0])
        conns = int(conn.execute("SHOW max_connections").fetchone()[0])
        prepared = int(conn.execute("SHOW max_prepared_transactions").fetchone()[0])
    slots = per_tx * (conns + prepared)
    migrations = 4
    packages = 6
    generate(project.root / "packages", packages, migrations)
    name = project.database()
    # A configuration that forces the decision either way proves both paths on any server.
    project.write_config(
        packages={"paths": ["packages"], "entry_points": False, "transaction": "per_package"}
    )
    response = project.run(database_name=name)
    assert response["status"] == "success", response
    assert response["result"]["transaction"]["packages"] == "per_package"
    assert any("per_package" in n for n in response["result"]["notes"])
    expected_auto = "per_package" if packages * migrations * 14 > slots * 0.8 else "single"
    project.write_config()
    generate(project.root / "packages", packages + 1, migrations)
    response = project.run(database_name=name)
    assert response["result"]["transaction"]["packages"] == expected_auto


def test_per_package_commits_touch_only_the_packages_with_something_pending(project: Project) -> None:
    from bench.package_generator import generate
    from dbinit_pipeline.orchestration.jobs import run_in_process as run_init

    generate(project.root / "packages", 8, 2)
    name = project.database()
    project.write_config(
        packages={"paths": ["packages"], "entry_points": False, "transaction": "per_package"}
    )
    assert project.run(database_name=name)["status"] == "success"
    generate(project.root / "packages", 9, 2)  # one package more, two revisions pending
    with statements_sent() as statements:
        response = run_init(project.config(), "dev", database_name=name)
    assert response["status"] == "success", response
    assert response["result"]["migrations_applied"] == 2
    assert response["result"]["transaction"]["packages"] == "per_package"
    # What is applied is read once by the stage and once under the lock of the one package's
    # transaction (and once by verify), not once per package.
    ledger_reads = [s for s in statements if "FROM dbinit_migrations" in s]
    assert len(ledger_reads) <= 4, ledger_reads


# -- dry run -----------------------------------------------------------------------------
def test_dry_run_on_existing_database_shows_only_pending_sql_and_changes_nothing(project: Project) -> None:
    project.write_package("a", migrations=[("ra", None, table("ta"))])
    name = project.database()
    assert project.run(database_name=name)["status"] == "success"
    project.write_package("a", migrations=[("ra", None, table("ta")), ("ra2", "ra", table("ta2"))])
    response = project.run(database_name=name, dry_run=True, sql=True)
    assert response["status"] == "success", response
    sql = response["result"]["plan"]["sql"]
    assert list(sql) == ["a"]
    assert "CREATE TABLE ta2" in sql["a"] and "CREATE TABLE ta " not in sql["a"]
    assert response["result"]["plan"]["pending_migrations"] == 1
    assert "ta2" not in project.server.tables(name)


# -- entry points ------------------------------------------------------------------------
def test_packages_from_an_installed_distribution(project: Project, tmp_path: Path) -> None:
    import subprocess
    import sys

    # A module name of its own per test: an earlier parameter's module stays in sys.modules
    # (and its entry point would point there) after its folder is gone.
    module = f"acme_packages_{uuid.uuid4().hex[:8]}"
    dist = tmp_path / "dist_src"
    pkg_dir = dist / module / "crm"
    (pkg_dir / "migrations").mkdir(parents=True)
    (dist / module / "__init__.py").write_text("")
    (pkg_dir / "package.yaml").write_text("name: crm\nversion: 0.1.0\ndepends_on: []\n")
    write_migration(
        pkg_dir / "migrations" / "0001_contacts.py", "crm00001", None, table("crm_contacts", USERS_FK)
    )
    (dist / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        f'[project]\nname = "{module.replace("_", "-")}"\nversion = "0.1.0"\n'
        f'[project.entry-points."dbinit_pipeline.packages"]\ncrm = "{module}"\n'
        f"[tool.setuptools.package-data]\n{module} = ['**/*.yaml', '**/*.py']\n"
    )
    target = tmp_path / "site"
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(dist),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stderr
    project.monkeypatch.syspath_prepend(str(target))
    import importlib

    importlib.invalidate_caches()
    project.write_config(packages={"paths": ["packages"], "entry_points": True})
    registry = PackageRegistry.discover([project.root / "packages"], entry_points=True)
    assert "crm" in registry.by_name
    name = project.database()
    response = project.run(database_name=name)
    assert response["status"] == "success", response
    assert "crm_contacts" in project.server.tables(name)
