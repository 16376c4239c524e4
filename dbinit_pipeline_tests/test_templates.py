"""Templates on real PostgreSQL servers: kept after a verified build from empty, cloned by the next
build of the same plan (then verified as any database), not used when the plan changed (and
refreshed), safe under concurrent clones, skipped with a note when busy; unavailable on MySQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from dbinit_pipeline.configuration import load_config
from dbinit_pipeline.database.providers.postgresql import PostgresProvider
from dbinit_pipeline.database.server import DatabaseServer, ServerRef
from dbinit_pipeline.pipeline.templates import (
    TEMPLATE_PREFIX,
    PlanTemplate,
    TemplateRecord,
    create_from_template,
    replace_from_template,
    staging_name,
    template_name,
    template_policy,
)
from dbinit_pipeline_tests.conftest import TEST_URL_VAR, PgServer, Project
from dbinit_pipeline_tests.support.mysql import MySQLProject, mysql_project, mysql_server
from dbinit_pipeline_tests.support.templates import drop_template, templates_of

__all__ = ["mysql_project", "mysql_server"]  # fixtures, used by name


def templates_on(project: Project, **settings: Any) -> None:
    project.write_config(templates={"enabled": True, **settings})


def unique_package(project: Project, name: str = "ledger") -> str:
    """A package whose revision id is unique to this test, so its plan (and template) is too."""
    rev = f"r{uuid.uuid4().hex[:10]}"
    project.write_package(
        name,
        migrations=[
            (
                rev,
                None,
                f"op.create_table('{name}_entries', sa.Column('id', sa.Integer, primary_key=True),"
                " sa.Column('amount', sa.Numeric(12, 2), nullable=False),"
                " sa.Column('user_id', sa.String(36), sa.ForeignKey('users.id')))\n"
                f"op.create_index('ix_{name}_user', '{name}_entries', ['user_id'])",
            )
        ],
    )
    return rev


def add_migration(project: Project, package: str, down: str) -> str:
    rev = f"r{uuid.uuid4().hex[:10]}"
    folder = project.root / "packages" / package / "migrations"
    from dbinit_pipeline_tests.conftest import write_migration

    write_migration(
        folder / f"{len(list(folder.glob('*.py'))) + 1:04d}_{rev}.py",
        rev,
        down,
        f"op.add_column('{package}_entries', sa.Column('memo', sa.Text()))",
    )
    return rev


@pytest.fixture
def tracked(project: Project) -> Iterator[list[str]]:
    """Template names made by the test (by plan hash), dropped at teardown."""
    hashes: list[str] = []
    yield hashes
    for name, (_, _, comment) in templates_of(project.server).items():
        if comment.get("plan_hash") in hashes:
            drop_template(project.server, name)


def catalog_digest(pg: PgServer, database: str) -> str:
    """Every catalog row a schema is made of, with the storage it points at, and the ledger."""
    with pg.connect(database) as conn:
        row = conn.execute(
            "SELECT md5(string_agg(concat_ws(',', c.oid, c.relname, c.relfilenode, c.relkind, c.relnatts,"
            " c.relpages, c.reltuples), ';' ORDER BY c.oid)) FROM pg_class c"
        ).fetchone()
        ledger = conn.execute(
            "SELECT md5(string_agg(concat_ws(',', package, revision, checksum, run_id, applied_at), ';'"
            " ORDER BY package, revision)) FROM dbinit_migrations"
        ).fetchone()
    assert row is not None and ledger is not None
    return f"{row[0]}/{ledger[0]}"


def open_template(pg: PgServer, name: str, allow: bool) -> None:
    """Let the test itself read a template (dbinit never does)."""
    with pg.connect() as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(allow).lower()}')


def test_a_verified_build_is_kept_and_the_same_plan_is_cloned_then_verified(
    project: Project, tracked: list[str]
) -> None:
    templates_on(project)
    unique_package(project)
    first_db, second_db = project.database(), project.database()
    first = project.run(database_name=first_db)
    assert first["status"] == "success", first
    used, kept = first["result"]["template"]["used"], first["result"]["template"]["kept"]
    tracked.append(used["plan_hash"])
    assert used["status"] == "replayed" and "no template of plan" in used["note"]
    assert kept["status"] == "kept", kept
    name = kept["template_database"]
    is_template, allows, comment = templates_of(project.server)[name]
    assert is_template and not allows
    assert comment["plan_hash"] == used["plan_hash"] and comment["built_by_run"] == first["result"]["run_id"]
    with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
        project.server.connect(name)

    second = project.run(database_name=second_db)
    assert second["status"] == "success", second
    result = second["result"]
    hash_ = used["plan_hash"]
    assert result["template"]["used"]["status"] == "cloned"
    assert f"cloned from template {hash_} built by run {first['result']['run_id']}" in second["message"]
    assert result["migrations_applied"] == 0 and result["database"] == "created"
    assert result["health_check"] == "passed" and result["schema"]["status"] == "ok"
    assert "kept" not in result["template"]
    assert project.server.tables(second_db) - {"dbinit_template_clones"} == project.server.tables(first_db)
    with project.server.connect(second_db) as conn:
        rows = conn.execute(
            "SELECT template_hash, built_by_run, cloned_by_run, note FROM dbinit_template_clones"
        ).fetchall()
        runs = {r[0] for r in conn.execute("SELECT DISTINCT run_id FROM dbinit_migrations").fetchall()}
    assert rows == [(hash_, first["result"]["run_id"], result["run_id"], result["template"]["used"]["note"])]
    assert runs == {first["result"]["run_id"]}
    assert project.operations()[-1]["message"] == second["message"]

    # if_exists: recreate (a rebuild) clones too.
    third = project.run(database_name=second_db, if_exists="recreate")
    assert third["result"]["database"] == "recreated"
    assert third["result"]["template"]["used"]["status"] == "cloned"


def test_verify_after_a_clone_catches_a_template_that_was_tampered_with(
    project: Project, tracked: list[str]
) -> None:
    """The clone is verified exactly as a replayed database: a template altered behind dbinit's
    back (opened by hand, a column dropped) gives clones that fail verify and are dropped."""
    templates_on(project)
    unique_package(project)
    first = project.run(database_name=project.database())
    tracked.append(first["result"]["template"]["used"]["plan_hash"])
    name = first["result"]["template"]["kept"]["template_database"]
    open_template(project.server, name, True)
    with project.server.connect(name) as conn:
        conn.execute("ALTER TABLE ledger_entries DROP COLUMN amount")
    open_template(project.server, name, False)
    target = project.database()
    response = project.run(database_name=target)
    assert response["status"] == "error" and response["stage"] == "verify", response
    assert response["code"] == "schema_drift"
    assert "amount" in response["error"]
    assert response["cleanup"]["database"] == "dropped"
    assert not project.server.database_exists(target)


def test_a_changed_plan_replays_and_refreshes_the_template_dropping_the_oldest(
    project: Project, tracked: list[str]
) -> None:
    templates_on(project, keep=1)
    rev = unique_package(project)
    first = project.run(database_name=project.database())
    old = first["result"]["template"]["kept"]["template_database"]
    tracked.append(first["result"]["template"]["used"]["plan_hash"])
    add_migration(project, "ledger", rev)
    second = project.run(database_name=project.database())
    assert second["status"] == "success", second
    used, kept = second["result"]["template"]["used"], second["result"]["template"]["kept"]
    tracked.append(used["plan_hash"])
    assert (
        used["status"] == "replayed" and used["plan_hash"] != first["result"]["template"]["used"]["plan_hash"]
    )
    assert second["result"]["migrations_applied"] == first["result"]["migrations_applied"] + 1
    assert kept["status"] == "kept" and kept["dropped"] == [old]
    assert old not in templates_of(project.server)
    third = project.run(database_name=project.database())
    assert third["result"]["template"]["used"]["status"] == "cloned"
    assert third["result"]["template"]["used"]["plan_hash"] == used["plan_hash"]


def test_two_runs_cloning_at_once_both_succeed_and_the_template_is_never_written(
    project: Project, tracked: list[str]
) -> None:
    templates_on(project)
    unique_package(project)
    first = project.run(database_name=project.database())
    tracked.append(first["result"]["template"]["used"]["plan_hash"])
    name = first["result"]["template"]["kept"]["template_database"]
    open_template(project.server, name, True)
    before = catalog_digest(project.server, name)
    open_template(project.server, name, False)

    # Two `dbinit init` processes at once, each cloning the same template.
    env = {**os.environ, "DBINIT_CONFIG": str(project.config_path)}
    targets = [project.database(), project.database()]
    procs = [
        subprocess.Popen(
            [str(Path(sys.executable).parent / "dbinit"), "init", "dev", "--database-name", t],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for t in targets
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err[-2000:]
        response = json.loads(out)
        assert response["result"]["template"]["used"]["status"] == "cloned", response
    # Four clones released at the same instant, through the function the create stage calls.
    config = project.config()
    server = DatabaseServer(
        ServerRef(
            "postgresql", make_url(project.server.url).render_as_string(), f"env:{TEST_URL_VAR}", "postgres"
        )
    )
    policy = template_policy(config, "dev")
    hash_ = first["result"]["template"]["used"]["plan_hash"]
    barrier = threading.Barrier(4)

    def clone(target: str) -> str:
        with server.connect(autocommit=True) as conn:
            barrier.wait()
            return create_from_template(
                server, conn, target, PlanTemplate(hash_, policy, "testproj", "dev")
            ).status

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(clone, [project.database() for _ in range(4)])) == ["cloned"] * 4
    for _ in range(4):
        assert (
            project.run(database_name=project.database())["result"]["template"]["used"]["status"] == "cloned"
        )
    open_template(project.server, name, True)
    after = catalog_digest(project.server, name)
    open_template(project.server, name, False)
    assert after == before
    assert catalog_digest(project.server, targets[0]) != before  # the clone has its clone record


def test_a_busy_template_falls_back_to_replay_with_a_note(project: Project, tracked: list[str]) -> None:
    templates_on(project, clone_wait=0.3)
    unique_package(project)
    first = project.run(database_name=project.database())
    tracked.append(first["result"]["template"]["used"]["plan_hash"])
    name = first["result"]["template"]["kept"]["template_database"]
    provider = PostgresProvider()
    with project.server.connect() as holder:  # what a run refreshing or dropping it holds
        holder.execute(
            "SELECT pg_advisory_lock(%s, %s)", (provider.TEMPLATE_LOCK_CLASS, provider.lock_key(name))
        )
        response = project.run(database_name=project.database())
    assert response["status"] == "success", response
    used = response["result"]["template"]["used"]
    assert used["status"] == "replayed" and f"template {name}" in used["note"] and "is busy" in used["note"]
    assert used["note"] in response["result"]["notes"]
    assert response["result"]["migrations_applied"] == first["result"]["migrations_applied"]
    kept = response["result"]["template"]["kept"]  # still held while this run finished
    assert kept["status"] == "not_kept" and "in use by another run" in kept["note"]


def _oid(pg: PgServer, database: str) -> int:
    with pg.connect() as conn:
        row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (database,)).fetchone()
    assert row is not None, database
    return int(row[0])


def _entries(pg: PgServer, database: str) -> int:
    with pg.connect(database) as conn:
        row = conn.execute("SELECT count(*) FROM ledger_entries").fetchone()
    assert row is not None
    return int(row[0])


def test_a_rebuild_copies_first_and_touches_nothing_when_it_cannot_copy(
    project: Project, tracked: list[str]
) -> None:
    """`if_exists: recreate` from a template: the copy is made under a staging name, then the old
    database is dropped and the copy renamed into place; a staging copy a dead run left is
    replaced; a template it cannot copy leaves the existing database as it was (the stage then
    drops and replays, as without templates)."""
    templates_on(project, clone_wait=0.3)
    unique_package(project)
    target = project.database()
    first = project.run(database_name=target)
    hash_ = first["result"]["template"]["used"]["plan_hash"]
    tracked.append(hash_)
    name = first["result"]["template"]["kept"]["template_database"]
    with project.server.connect(target) as conn:
        conn.execute("INSERT INTO ledger_entries (id, amount) VALUES (1, 10)")
    before = _oid(project.server, target)
    staging = staging_name(target)
    with project.server.connect() as conn:  # what a run that died between copy and rename leaves
        conn.execute(f'CREATE DATABASE "{staging}"')

    rebuilt = project.run(database_name=target, if_exists="recreate")
    assert rebuilt["status"] == "success", rebuilt
    assert rebuilt["result"]["database"] == "recreated"
    assert rebuilt["result"]["template"]["used"]["status"] == "cloned"
    assert _oid(project.server, target) != before and _entries(project.server, target) == 0
    assert not project.server.database_exists(staging)

    # The template cannot be copied (busy): nothing is dropped, created or renamed.
    with project.server.connect(target) as conn:
        conn.execute("INSERT INTO ledger_entries (id, amount) VALUES (2, 20)")
    before = _oid(project.server, target)
    server = DatabaseServer(
        ServerRef(
            "postgresql", make_url(project.server.url).render_as_string(), f"env:{TEST_URL_VAR}", "postgres"
        )
    )
    provider = PostgresProvider()
    with project.server.connect() as holder:
        holder.execute(
            "SELECT pg_advisory_lock(%s, %s)", (provider.TEMPLATE_LOCK_CLASS, provider.lock_key(name))
        )
        with server.connect(autocommit=True) as conn:
            wanted = PlanTemplate(hash_, template_policy(project.config(), "dev"), "testproj", "dev")
            use = replace_from_template(server, conn, target, wanted)
        assert use.status == "replayed" and "is busy" in use.note
        assert _oid(project.server, target) == before and _entries(project.server, target) == 1
        assert not project.server.database_exists(staging)
        replayed = project.run(database_name=target, if_exists="recreate")
    assert replayed["status"] == "success", replayed
    assert replayed["result"]["template"]["used"]["status"] == "replayed"
    assert "is busy" in replayed["result"]["template"]["used"]["note"]
    assert _entries(project.server, target) == 0 and _oid(project.server, target) != before


def test_a_missing_template_replays_and_templates_are_off_by_default(project: Project) -> None:
    unique_package(project)
    response = project.run(database_name=project.database())
    assert "template" not in response["result"]
    templates_on(project)
    with_half_made = f"{TEMPLATE_PREFIX}{uuid.uuid4().hex}"[:43]
    with project.server.connect() as conn:  # a copy a dead run left: never cloned, pruned
        conn.execute(f'CREATE DATABASE "{with_half_made}"')
    try:
        response = project.run(database_name=project.database())
        kept = response["result"]["template"]["kept"]
        drop_template(project.server, kept["template_database"])
        assert with_half_made in kept["dropped"]
        assert response["result"]["template"]["used"]["status"] == "replayed"
    finally:
        project.server.drop(with_half_made)


def test_protected_environments_use_templates_only_when_enabled_there(tmp_path: Path) -> None:
    path = tmp_path / "dbinit.yaml"
    path.write_text(
        "project: p\nenvironments:\n  dev: {}\n  production: {}\n  staging:\n    templates: {enabled: true}\n"
        "templates: {enabled: true, keep: 3}\nsafety: {protected_environments: [production, staging]}\n"
    )
    config = load_config(path)
    assert template_policy(config, "dev").enabled and template_policy(config, "dev").keep == 3
    production = template_policy(config, "production")
    assert not production.enabled and "protected" in production.reason
    assert template_policy(config, "staging").enabled
    path.write_text("project: p\nenvironments:\n  dev: {}\n")
    assert not template_policy(load_config(path), "dev").enabled  # the documented default: off
    path.write_text("project: p\nenvironments:\n  dev: {templates: {keep: 0}}\n")
    with pytest.raises(Exception, match=r"environments\.dev\.templates\.keep"):
        load_config(path)


def test_a_half_made_template_is_not_a_template() -> None:
    from dbinit_pipeline.database.providers.base import DatabaseTemplate

    name = template_name("a" * 64, "p", "dev")
    comment = json.dumps(
        {
            "dbinit_template": 1,
            "plan_hash": "a" * 64,
            "project": "p",
            "environment": "dev",
            "built_by_run": "r",
            "built_at": "t",
            "source_database": "s",
            "revisions": 1,
        }
    )
    assert TemplateRecord.of(DatabaseTemplate(name, True, False, comment)) is not None
    assert TemplateRecord.of(DatabaseTemplate(name, False, False, comment)) is None
    assert TemplateRecord.of(DatabaseTemplate(name, True, True, comment)) is None
    assert TemplateRecord.of(DatabaseTemplate(name, True, False, None)) is None
    assert TemplateRecord.of(DatabaseTemplate(name[:-1] + "b", True, False, comment)) is None


def test_on_mysql_the_response_says_templates_are_not_available(mysql_project: MySQLProject) -> None:
    mysql_project.write_config(templates={"enabled": True})
    response = mysql_project.run(database_name=mysql_project.database())
    assert response["status"] == "success", response
    used = response["result"]["template"]["used"]
    assert used["status"] == "unavailable"
    assert used["note"].startswith("templates are not available on mysql")
    assert "kept" not in response["result"]["template"]


def test_only_the_environments_own_templates_are_cloned(project: Project, tracked: list[str]) -> None:
    """A template holds all its source held (a protected environment's mark included): another
    environment of the project builds its own rather than cloning it."""
    project.write_config(
        templates={"enabled": True},
        environments={
            "dev": {"connection_string_env": TEST_URL_VAR},
            "qa": {"connection_string_env": TEST_URL_VAR},
        },
    )
    unique_package(project)
    first = project.run("dev", database_name=project.database())
    tracked.append(first["result"]["template"]["used"]["plan_hash"])
    other = project.run("qa", database_name=project.database())
    assert other["status"] == "success", other
    assert other["result"]["template"]["used"]["status"] == "replayed"
    assert other["result"]["template"]["kept"]["status"] == "kept"
    assert (
        other["result"]["template"]["kept"]["template_database"]
        != (first["result"]["template"]["kept"]["template_database"])
    )
    assert project.run("dev", database_name=project.database())["result"]["template"]["used"]["status"] == (
        "cloned"
    )
