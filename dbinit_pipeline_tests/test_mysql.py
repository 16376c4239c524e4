"""MySQL and MariaDB end to end on a real server: create, apply, fail midway, resume, clean up, lock.

Needs DBINIT_TEST_MYSQL_URL (for example mysql+pymysql://root@127.0.0.1:3306/mysql); without it
the server tests are skipped with that reason. The first tests need no server.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pymysql
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from dbinit_pipeline.cli import main
from dbinit_pipeline.database.providers import provider_for
from dbinit_pipeline.database.providers.mysql import DEFAULT_COLLATION, MySQLProvider, local_disk
from dbinit_pipeline.database.server import DatabaseServer, ServerRef
from dbinit_pipeline.errors import (
    ChecksumMismatch,
    ConfigurationError,
    DatabaseExists,
    InputError,
    LockTimeout,
    UnsupportedError,
    classify,
)
from dbinit_pipeline.migrations.core import CORE_PACKAGE_DIR
from dbinit_pipeline.migrations.core.models import CORE_TABLES
from dbinit_pipeline.migrations.package import read_package
from dbinit_pipeline.safety.run_lock import lock_name as run_lock_name
from dbinit_pipeline_tests.conftest import write_migration
from dbinit_pipeline_tests.support.mysql import (
    TARGET_VAR,
    MySQLProject,
    mysql_account,
    mysql_project,
    mysql_server,
)

__all__ = ["mysql_account", "mysql_project", "mysql_server"]  # fixtures, used by name

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
CORE_REVISIONS = [m.revision for m in read_package(CORE_PACKAGE_DIR).migrations]
CORE_HEAD = CORE_REVISIONS[-1]
CORE_LEDGER = [("core", r) for r in CORE_REVISIONS]


def server_for(project: MySQLProject) -> DatabaseServer:
    display = make_url(project.server.url).render_as_string(hide_password=True)
    return DatabaseServer(ServerRef("mysql", display, f"env:{TARGET_VAR}", "information_schema"))


def test_a_missing_database_is_named_with_what_to_do(mysql_project: MySQLProject) -> None:
    with pytest.raises(Exception) as raised, server_for(mysql_project).connect("dbinit_never_created"):
        pass
    error = classify(raised.value)
    assert error.code == "database_missing" and not error.transient
    assert "The database dbinit_never_created does not exist" in error.message


# -- without a server ----------------------------------------------------------------------
def test_provider_for_mysql_is_the_non_transactional_pymysql_provider() -> None:
    provider = provider_for("mysql")
    assert isinstance(provider, MySQLProvider)
    assert provider.transactional_ddl is False
    url = provider.normalize_url(make_url("mysql://u:p@db.example:3306/app"))
    assert url.drivername == "mysql+pymysql"
    assert url.query["charset"] == "utf8mb4"
    assert provider.normalize_url(make_url("mariadb://u@h/")).drivername == "mysql+pymysql"


def test_a_postgresql_url_under_provider_mysql_is_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match="URL is for 'postgresql'"):
        MySQLProvider().normalize_url(make_url("postgresql://u:secret@h:5432/postgres"))


def test_identifiers_are_validated_quoted_and_lock_names_fit_64_characters() -> None:
    provider = MySQLProvider()
    assert provider.quote("a`b") == "`a``b`"
    for bad in ("mysql", "information_schema", "Bad-Name", "x; DROP DATABASE y", "a" * 65):
        with pytest.raises(InputError):
            provider.validate_database_name(bad)
    long_name = "d" * 64
    assert len(provider.lock_name(long_name)) <= 64
    assert provider.lock_name(long_name) != provider.lock_name("d" * 63 + "e")
    with pytest.raises(UnsupportedError, match="no transaction-scoped lock"):
        provider.lock_in_transaction(None, "x", 1.0)  # type: ignore[arg-type]


# -- create, apply, verify ---------------------------------------------------------------
def test_fresh_run_creates_a_utf8mb4_database_with_the_core_schema(mysql_project: MySQLProject) -> None:
    name = mysql_project.database()
    response = mysql_project.run(database_name=name)
    assert response["status"] == "success", response
    result = response["result"]
    assert (result["provider"], result["database"]) == ("mysql", "created")
    assert result["migrations_applied"] == len(CORE_REVISIONS)
    assert result["transaction"]["core"] == "per_migration"
    assert any("progress is recorded per migration" in n for n in result["notes"])
    # Latency may degrade on a busy machine; what MySQL itself decides must be healthy.
    assert result["health_check"] in ("passed", "degraded")
    assert result["health"]["migrations"]["status"] == result["health"]["schema"]["status"] == "healthy"
    schema = result["schema"]
    assert (schema["status"], schema["drift"]) == ("ok", [])
    assert schema["tables_found"] == schema["tables_expected"] >= len(CORE_TABLES) + 2
    server = mysql_project.server
    assert server.charset(name) == ("utf8mb4", DEFAULT_COLLATION)
    assert set(CORE_TABLES) | {"dbinit_migrations", "alembic_version_core"} <= server.tables(name)
    assert server.foreign_keys(name) >= CORE_FKS
    assert server.ledger(name) == CORE_LEDGER
    assert server.heads(name) == {CORE_HEAD}

    second = mysql_project.run(database_name=name)
    assert second["status"] == "success", second
    assert (second["result"]["database"], second["result"]["migrations_applied"]) == ("existing", 0)
    assert "nothing to apply" in second["message"]
    assert server.ledger(name) == CORE_LEDGER


def test_dry_run_shows_mysql_sql_and_creates_nothing(mysql_project: MySQLProject) -> None:
    name = mysql_project.database()
    response = mysql_project.run(database_name=name, dry_run=True, sql=True)
    assert response["status"] == "success", response
    assert response["result"]["database"] == "would_create"
    assert "CREATE TABLE users" in response["result"]["plan"]["sql"]["core"]
    assert not mysql_project.server.database_exists(name)


def test_collation_is_validated_and_used_by_create_database(mysql_project: MySQLProject) -> None:
    provider = MySQLProvider()
    name = mysql_project.database()
    with server_for(mysql_project).connect(autocommit=True) as conn:
        for bad, why in (("latin1_swedish_ci", "not a utf8mb4"), ("utf8mb4_klingon_ci", "not known")):
            with pytest.raises(InputError, match=why):
                provider.create_database(conn, name, collation=bad)
        assert not provider.database_exists(conn, name)
        provider.create_database(conn, name, collation="utf8mb4_bin")
        assert provider.database_exists(conn, name)
        assert provider.database_charset(conn, name) == ("utf8mb4", "utf8mb4_bin")
    assert mysql_project.server.charset(name) == ("utf8mb4", "utf8mb4_bin")
    # A concurrent creator got there first: transient, so the retry applies if_exists to it.
    with server_for(mysql_project).connect(autocommit=True) as conn, pytest.raises(DatabaseExists) as raced:
        provider.create_database(conn, name)
    assert raced.value.transient


def test_database_collation_from_the_configuration_reaches_create_database(
    mysql_project: MySQLProject,
) -> None:
    mysql_project.write_config(database={"provider": "mysql", "hosting": "local", "collation": "utf8mb4_bin"})
    name = mysql_project.database()
    assert mysql_project.run(database_name=name)["status"] == "success"
    assert mysql_project.server.charset(name) == ("utf8mb4", "utf8mb4_bin")


def test_if_exists_error_refuses_and_recreate_rebuilds(mysql_project: MySQLProject) -> None:
    server = mysql_project.server
    name = mysql_project.database()
    server.query(f"CREATE DATABASE `{name}` CHARACTER SET latin1")
    server.query("CREATE TABLE scratch (id int)", database=name)

    refused = mysql_project.run(database_name=name, if_exists="error")
    assert refused["status"] == "error"
    assert (refused["stage"], refused["code"]) == ("create", "database_exists")
    assert name in refused["error"]
    assert "scratch" in server.tables(name), "'error' never touches an existing database"

    rebuilt = mysql_project.run(database_name=name, if_exists="recreate")
    assert rebuilt["status"] == "success", rebuilt
    assert rebuilt["result"]["database"] == "recreated"
    assert "scratch" not in server.tables(name)
    assert server.charset(name) == ("utf8mb4", DEFAULT_COLLATION)


# -- a package fails midway, then a fix resumes it ----------------------------------------
BAD_THIRD = """\
op.create_table("payments", sa.Column("id", sa.Integer, primary_key=True))
op.execute("ALTER TABLE invoices ADD COLUMN oops NOT_A_TYPE")
"""
FIXED_THIRD = """\
op.create_table("payments", sa.Column("id", sa.Integer, primary_key=True))
op.execute("ALTER TABLE invoices ADD COLUMN oops INT")
"""


def write_failing_package_set(project: MySQLProject) -> None:
    project.write_package(
        "crm",
        migrations=[
            ("crm1", None, 'op.create_table("contacts", sa.Column("id", sa.Integer, primary_key=True))')
        ],
    )
    project.write_package(
        "billing",
        depends_on=["crm"],
        migrations=[
            (
                "bil1",
                None,
                'op.create_table("invoices", sa.Column("id", sa.Integer, primary_key=True),'
                ' sa.Column("contact_id", sa.Integer, sa.ForeignKey("contacts.id")))',
            ),
            ("bil2", "bil1", 'op.add_column("invoices", sa.Column("total", sa.Integer))'),
            ("bil3", "bil2", BAD_THIRD),
            ("bil4", "bil3", 'op.create_table("refunds", sa.Column("id", sa.Integer, primary_key=True))'),
        ],
    )


def test_failure_midway_names_the_statement_and_a_fixed_rerun_resumes(
    mysql_project: MySQLProject, capsys: pytest.CaptureFixture[str]
) -> None:
    server = mysql_project.server
    name = mysql_project.database()
    server.query(f"CREATE DATABASE `{name}`")  # existed before: cleanup must keep it
    write_failing_package_set(mysql_project)
    third = mysql_project.root / "packages" / "billing" / "migrations" / "0003_bil3.py"

    failed = mysql_project.run(database_name=name)
    assert failed["status"] == "error", failed
    assert (failed["stage"], failed["code"]) == ("package_schemas", "migration_failed")
    details = failed["details"]
    assert (details["package"], details["revision"], details["file"]) == ("billing", "bil3", str(third))
    assert details["statement"] == "ALTER TABLE invoices ADD COLUMN oops NOT_A_TYPE"
    assert "NOT_A_TYPE" in failed["error"] and "'billing'" in failed["error"]
    # MySQL committed the CREATE TABLE before the failing statement: the response says so.
    assert len(details["committed_statements"]) == 1
    assert details["committed_statements"][0].startswith("CREATE TABLE payments")
    suggestions = " ".join(failed["recovery"]["suggestions"])
    assert "half applied" in suggestions and "resumes at this one" in suggestions
    assert failed["cleanup"]["database"] == "kept"
    assert mysql_project.operations()[-1]["details"] == details
    # The ledger holds exactly what was applied before the failing migration.
    assert server.ledger(name) == [
        ("billing", "bil1"),
        ("billing", "bil2"),
        *CORE_LEDGER,
        ("crm", "crm1"),
    ]
    assert server.heads(name) == {CORE_HEAD, "crm1", "bil2"}
    assert main(["--config", str(mysql_project.config_path), "status", "dev", "--database-name", name]) == 0
    status = json.loads(capsys.readouterr().out)["result"]
    billing = next(p for p in status["packages"] if p["name"] == "billing")
    assert (billing["applied"], billing["pending"]) == (["bil1", "bil2"], ["bil3", "bil4"])

    # A later revision marked applied by hand while bil3 is not: refused, never skipped.
    server.query(
        "INSERT INTO dbinit_migrations VALUES ('billing', 'bil4', %s, '0004_bil4.py', NOW(), 'hand', 0)",
        ("0" * 64,),
        database=name,
    )
    gap = mysql_project.run(database_name=name)
    assert gap["status"] == "error"
    assert gap["code"] in ("history_gap", "checksum_mismatch"), gap
    assert "0004_bil4.py" in gap["error"]
    server.query("DELETE FROM dbinit_migrations WHERE run_id = 'hand'", database=name)

    # The fix, done as the suggestion says: undo what was committed, correct the file, rerun.
    server.query("DROP TABLE payments", database=name)
    write_migration(third, "bil3", "bil2", FIXED_THIRD)
    resumed = mysql_project.run(database_name=name)
    assert resumed["status"] == "success", resumed
    assert resumed["result"]["packages_applied"] == [
        {"name": "billing", "version": "1.0.0", "revisions": ["bil3", "bil4"]}
    ]
    assert resumed["result"]["migrations_applied"] == 2
    assert resumed["result"]["schema"]["drift"] == []
    assert [r for r in server.ledger(name) if r[0] == "billing"] == [
        ("billing", f"bil{i}") for i in range(1, 5)
    ]
    assert server.heads(name) == {CORE_HEAD, "crm1", "bil4"}
    assert {"payments", "refunds"} <= server.tables(name)
    columns = server.query(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = 'invoices'",
        (name,),
    )
    assert {"total", "oops"} <= {c[0] for c in columns}


def test_a_failed_run_drops_the_database_it_created(mysql_project: MySQLProject) -> None:
    name = mysql_project.database()
    write_failing_package_set(mysql_project)
    failed = mysql_project.run(database_name=name)
    assert failed["status"] == "error"
    assert failed["details"]["revision"] == "bil3"
    assert failed["cleanup"]["database"] == "dropped"
    assert "this run created it" in failed["cleanup"]["reason"]
    assert not mysql_project.server.database_exists(name)


# -- locks, permissions, health ----------------------------------------------------------
def test_a_concurrent_run_times_out_on_the_run_lock_naming_its_connection(
    mysql_project: MySQLProject,
) -> None:
    mysql_project.write_config(safety={"protected_environments": ["production"], "lock_timeout": 1})
    name = mysql_project.database()
    lock = MySQLProvider().lock_name(run_lock_name(name))
    with mysql_project.server.connect() as holder, holder.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, 0), CONNECTION_ID()", (lock,))
        got, holder_id = cur.fetchone()
        assert got == 1
        response = mysql_project.run(database_name=name)
    assert response["status"] == "error"
    assert (response["stage"], response["code"]) == ("create", "lock_timeout")
    assert f"server connection {holder_id}" in response["error"]
    assert lock in response["error"]
    assert not mysql_project.server.database_exists(name)


def test_the_schema_lock_times_out_naming_the_session_that_holds_it(mysql_project: MySQLProject) -> None:
    provider = MySQLProvider()
    name = mysql_project.database()
    server = server_for(mysql_project)
    with server.connect() as first, provider.session_lock(first, name, 1.0):
        holder_id = first.execute(text("SELECT CONNECTION_ID()")).scalar()
        with server.connect() as second, pytest.raises(LockTimeout) as timed_out:
            second.execute(text("SELECT 1"))
            with provider.session_lock(second, name, 1.0):
                pass
    message = timed_out.value.message
    assert f"server connection {holder_id}" in message
    assert provider.lock_name(name) in message and "waited 1 s" in message
    with server.connect() as third, provider.session_lock(third, name, 1.0):
        pass  # released on exit by the first holder


def test_an_orphaned_schema_lock_is_ended_so_the_run_goes_on(mysql_project: MySQLProject) -> None:
    mysql_project.write_config(safety={"protected_environments": ["production"], "lock_timeout": 5})
    name = mysql_project.database()
    with mysql_project.server.connect() as orphan, orphan.cursor() as cur:
        cur.execute("SELECT GET_LOCK(%s, 0)", (MySQLProvider().lock_name(name),))
        assert cur.fetchone()[0] == 1
        response = mysql_project.run(database_name=name)
        assert response["status"] == "success", response
        with pytest.raises(pymysql.err.OperationalError):
            cur.execute("SELECT 1")  # the run lock's holder ended it


def test_an_account_without_privileges_gets_permission_denied_and_no_password_shown(
    mysql_project: MySQLProject, mysql_account: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = mysql_account
    monkeypatch.setenv(TARGET_VAR, mysql_project.server.url_as(user, password))
    name = mysql_project.database()
    response = mysql_project.run(database_name=name)
    assert response["status"] == "error"
    assert (response["stage"], response["code"]) == ("create", "permission_denied"), response
    assert user in response["error"]
    assert password not in json.dumps(response)
    assert password not in (mysql_project.root / ".dbinit" / "operations.jsonl").read_text()
    assert not mysql_project.server.database_exists(name)


def test_permissions_are_read_from_the_privilege_tables_without_ddl(
    mysql_project: MySQLProject, mysql_account: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    user, password = mysql_account
    server = mysql_project.server
    name = mysql_project.database()
    server.query(f"CREATE DATABASE `{name}`")
    provider = MySQLProvider()
    with server_for(mysql_project).connect(name) as conn:
        assert provider.permission_check(conn)["status"] == "healthy"  # root: CREATE on *.*
    server.query(f"GRANT SELECT ON `{name}`.* TO %s@'%%'", (user,))
    monkeypatch.setenv(TARGET_VAR, server.url_as(user, password))
    with server_for(mysql_project).connect(name) as conn:
        denied = provider.permission_check(conn)
    assert (denied["status"], denied["can_create_tables"]) == ("unhealthy", False)
    assert user in denied["reason"]
    role = f"{user}_role"
    server.query(f"CREATE ROLE `{role}`")
    try:
        server.query(f"GRANT CREATE ON `{name}`.* TO `{role}`")
        server.query(f"GRANT `{role}` TO %s@'%%'", (user,))
        with server_for(mysql_project).connect(name) as conn:
            conn.execute(text(f"SET ROLE `{role}`"))
            through_role = provider.permission_check(conn)
        # Not read, so not claimed either way: unknown, naming the role.
        assert through_role["status"] == "unknown"
        assert role in through_role["reason"]
    finally:
        server.query(f"DROP ROLE IF EXISTS `{role}`")
    server.query(f"GRANT CREATE ON `{name}`.* TO %s@'%%'", (user,))
    with server_for(mysql_project).connect(name) as conn:
        granted = provider.permission_check(conn)
    assert (granted["status"], granted["granted_on"]) == ("healthy", name)
    assert server.tables(name) == set(), "the check creates nothing"


def test_lock_wait_timeouts_are_transient(mysql_project: MySQLProject) -> None:
    server = mysql_project.server
    name = mysql_project.database()
    server.query(f"CREATE DATABASE `{name}`")
    server.query("CREATE TABLE t (id int primary key)", database=name)
    server.query("INSERT INTO t VALUES (1)", database=name)
    with server.connect(name, autocommit=False) as holder, holder.cursor() as cur:
        cur.execute("SELECT id FROM t WHERE id = 1 FOR UPDATE")
        with server_for(mysql_project).connect(name) as conn:
            conn.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
            with pytest.raises(DBAPIError) as caught:
                conn.execute(text("UPDATE t SET id = 2 WHERE id = 1"))
        holder.rollback()
    error = classify(caught.value)
    assert (error.code, error.transient) == ("lock_wait", True)


def test_health_reports_connections_privileges_and_disk_or_why_not(
    mysql_project: MySQLProject, capsys: pytest.CaptureFixture[str]
) -> None:
    name = mysql_project.database()
    assert mysql_project.run(database_name=name)["status"] == "success"
    config = str(mysql_project.config_path)
    assert main(["--config", config, "health", "dev", "--database-name", name]) in (0, 2)
    report = json.loads(capsys.readouterr().out)
    assert report["status"] in ("healthy", "degraded"), report
    assert report["result"]["schema"]["drift"] == []
    assert report["result"]["checks"]["migrations"]["applied"] == len(CORE_REVISIONS)

    provider = MySQLProvider()
    server = mysql_project.server
    max_connections = server.query("SELECT @@max_connections")[0][0]
    datadir = server.query("SELECT @@datadir")[0][0]
    with server_for(mysql_project).connect(name) as conn:
        connections = provider.connection_check(conn)
        disk = provider.disk_check(conn)
        permissions = provider.permission_check(conn)
    assert connections["max_connections"] == max_connections
    assert 1 <= connections["active"] <= max_connections
    assert (permissions["status"], permissions["can_create_tables"]) == ("healthy", True)
    assert disk["database_bytes"] > 0
    assert disk["data_directory"] == datadir
    if os.path.isdir(os.path.join(datadir, name)):  # the server's files are on this machine
        assert disk["status"] in ("healthy", "degraded", "unhealthy")
        assert abs(disk["free_bytes"] - shutil.disk_usage(datadir).free) < 512 * 1024**2
    else:
        assert disk["status"] == "unknown"
        assert disk["reason"].startswith("unavailable on mysql: ")


def test_disk_space_is_measured_here_only_for_the_servers_own_directory(tmp_path: Path) -> None:
    (tmp_path / "appdb").mkdir()
    assert local_disk("db.example.invalid", str(tmp_path), "appdb")["reason"].startswith(
        "the server runs on db.example.invalid"
    )
    assert "not visible from this host" in local_disk("127.0.0.1", str(tmp_path), "otherdb")["reason"]
    here = local_disk("127.0.0.1", str(tmp_path), "appdb")
    assert here["free_bytes"] == pytest.approx(shutil.disk_usage(tmp_path).free, rel=0.05)


def test_a_script_that_changed_since_it_was_read_leaves_no_dirty_mark(mysql_project: MySQLProject) -> None:
    """Where DDL commits by itself, a migration is marked in progress before it runs. A file edited
    after discovery is refused before any of its statements: nothing ran, so no mark stays, and
    the next run applies it instead of stopping on a dirty migration."""
    from dbinit_pipeline.migrations.runner import MigrationRunner

    name = mysql_project.database()
    mysql_project.server.query(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    display = make_url(mysql_project.server.url).render_as_string(hide_password=True)
    server = DatabaseServer(ServerRef("mysql", display, f"env:{TARGET_VAR}", "information_schema"))
    folder = mysql_project.write_package(
        "edited",
        migrations=[
            ("ed1", None, "op.create_table('edited_items', sa.Column('id', sa.Integer, primary_key=True))")
        ],
    )
    pkg = read_package(folder)
    script = pkg.migrations[0].path
    script.write_text(script.read_text() + "\n# edited after discovery\n")
    with pytest.raises(ChecksumMismatch, match="changed while this run was applying it"):
        MigrationRunner(server, name).apply([pkg])
    assert mysql_project.server.query("SELECT COUNT(*) FROM dbinit_in_progress", database=name) == [(0,)]
    assert "edited_items" not in {r[0] for r in mysql_project.server.query("SHOW TABLES", database=name)}
    report = MigrationRunner(server, name).apply([read_package(folder)])
    assert report.migrations_applied == 1
