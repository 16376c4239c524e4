"""The provider contract (`database/providers/base.py`), checked on every server the machine offers.

Every test runs once per target: the embedded PostgreSQL (always), the PostgreSQL server in
DBINIT_TEST_POSTGRES_URL and the MySQL or MariaDB server in DBINIT_TEST_MYSQL_URL (each skipped,
saying so, when its variable is unset). A new provider passes this file before it is used:
whatever it does differently, it must answer these questions the same way, on a real server.
Connections go through `DatabaseServer`, as the pipeline's do (the provider's driver, its connect
arguments, migration DDL compiled as plain Alembic compiles it).
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from dbinit_pipeline.database.catalog import diff
from dbinit_pipeline.database.providers import Provider, provider_for
from dbinit_pipeline.database.server import DatabaseServer, ServerRef
from dbinit_pipeline.errors import DatabaseExists, InputError, LockTimeout, UnsupportedError
from dbinit_pipeline_tests.conftest import PgServer, unique_name

TARGETS = ["postgresql-embedded", "postgresql-external", "mysql"]
_STATUSES = {"healthy", "degraded", "unhealthy", "unknown"}


@dataclass(frozen=True)
class Target:
    """One server under test, reached through the pipeline's own `DatabaseServer`."""

    label: str
    server: DatabaseServer

    @property
    def provider(self) -> Provider:
        return self.server.provider


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    if request.param == "postgresql-embedded":
        url = request.getfixturevalue("embedded_pg").url
    else:
        var = (
            "DBINIT_TEST_POSTGRES_URL" if request.param == "postgresql-external" else "DBINIT_TEST_MYSQL_URL"
        )
        url = os.environ.get(var, "")
        if not url:
            pytest.skip(f"{var} is not set: no {request.param} server to check the provider contract on")
    provider = provider_for("mysql" if request.param == "mysql" else "postgresql")
    display = make_url(url).render_as_string(hide_password=True)
    # The URL (password included) stays in a variable of its own, as a configuration keeps it.
    var = f"DBINIT_TEST_CONFORMANCE_{uuid.uuid4().hex[:8].upper()}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(var, url)
        ref = ServerRef(provider.name, display, f"env:{var}", provider.maintenance_database)
        yield Target(request.param, DatabaseServer(ref))


@pytest.fixture
def database(target: Target) -> Iterator[str]:
    """A fresh database on the target, created and dropped by the provider under test."""
    name = unique_name("conf")
    with target.server.connect(autocommit=True) as conn:
        target.provider.create_database(conn, name)
    try:
        yield name
    finally:
        with target.server.connect(autocommit=True) as conn:
            target.provider.drop_database(conn, name)


def _exists(target: Target, name: str) -> bool:
    with target.server.connect(autocommit=True) as conn:
        return target.provider.database_exists(conn, name)


# -- identifiers and databases ------------------------------------------------------------
def test_database_names_are_validated_to_what_the_server_accepts(target: Target) -> None:
    provider = target.provider
    longest = "n" + uuid.uuid4().hex[:10] + "x" * (provider.max_identifier_length - 11)
    assert provider.validate_database_name("myapp_dev") == "myapp_dev"
    for bad in [
        "",
        "MyApp",
        "1app",
        "my-app",
        "my app",
        "app;drop",
        longest + "y",
        *provider.reserved_databases,
    ]:
        with pytest.raises(InputError) as refused:
            provider.validate_database_name(bad)
        assert refused.value.message and refused.value.suggestions, bad
    # The longest accepted name is one the server really takes, and quoting round-trips.
    with target.server.connect(autocommit=True) as conn:
        provider.create_database(conn, longest)
        try:
            assert provider.database_exists(conn, longest)
            quoted = provider.quote(longest)
            assert quoted != longest and longest in quoted
        finally:
            provider.drop_database(conn, longest)
        assert not provider.database_exists(conn, longest)


def test_maintenance_database_is_reachable_reserved_and_holds_the_locks(target: Target) -> None:
    provider = target.provider
    assert provider.maintenance_database in provider.reserved_databases
    for name in {provider.maintenance_database, provider.lock_database or provider.maintenance_database}:
        with target.server.connect(name) as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            assert provider.database_exists(conn, name)
    with target.server.connect() as conn:
        capacity = provider.lock_capacity(conn)
    if capacity.slots is None:
        assert capacity.per_transaction is None
    else:
        assert capacity.per_transaction is not None and 0 < capacity.per_transaction <= capacity.slots


def test_exists_create_drop_and_create_again(target: Target) -> None:
    provider = target.provider
    name = unique_name("conf")
    with target.server.connect(autocommit=True) as conn:
        assert not provider.database_exists(conn, name)
        provider.create_database(conn, name)
        try:
            assert provider.database_exists(conn, name)
            # A CREATE of a name that exists (another session was first) is recognizable as such.
            with pytest.raises(Exception) as again:
                provider.create_database(conn, name)
            error = again.value
            if isinstance(error, DatabaseExists):
                assert error.transient and name in error.message
            else:
                assert provider.is_duplicate_database(error), error
            # A session left open on the database does not keep it from being dropped.
            with target.server.connect(name) as idle:
                idle.execute(text("SELECT 1"))
                idle.commit()
                provider.drop_database(conn, name)
            assert not provider.database_exists(conn, name)
        finally:
            provider.drop_database(conn, name)  # a missing database is no error


def test_duplicate_database_errors_are_told_from_others(target: Target) -> None:
    provider = target.provider
    name = unique_name("conf")
    quoted = provider.quote(name)
    with target.server.connect(autocommit=True) as conn:
        conn.execute(text(f"CREATE DATABASE {quoted}"))
        try:
            with pytest.raises(DBAPIError) as duplicate:
                conn.execute(text(f"CREATE DATABASE {quoted}"))
            assert provider.is_duplicate_database(duplicate.value)
            with pytest.raises(DBAPIError) as syntax:
                conn.execute(text(f"CREATE DATABASE {quoted} dbinit_no_such_option"))
            assert not provider.is_duplicate_database(syntax.value)
            with pytest.raises(DBAPIError) as missing:
                conn.execute(text(f"DROP DATABASE {provider.quote(unique_name('conf'))}"))
            assert not provider.is_duplicate_database(missing.value)
            assert not provider.is_duplicate_database(ValueError(name))
        finally:
            provider.drop_database(conn, name)


def test_concurrent_creates_one_wins_the_other_is_told_it_exists(target: Target) -> None:
    provider = target.provider
    name = unique_name("conf")
    start = threading.Barrier(2)
    outcomes: list[BaseException | None] = []

    def create() -> None:
        with target.server.connect(autocommit=True) as conn:
            assert not provider.database_exists(conn, name)
            start.wait(timeout=30)
            try:
                provider.create_database(conn, name)
                outcomes.append(None)
            except Exception as exc:
                outcomes.append(exc)

    threads = [threading.Thread(target=create) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert len(outcomes) == 2 and outcomes.count(None) == 1, outcomes
        (error,) = [e for e in outcomes if e is not None]
        assert isinstance(error, DatabaseExists) or provider.is_duplicate_database(error), error
    finally:
        with target.server.connect(autocommit=True) as conn:
            provider.drop_database(conn, name)


# -- locks ---------------------------------------------------------------------------------
def _lock_connection(target: Target) -> Any:
    return target.server.connect(target.provider.lock_database)


def test_session_lock_makes_a_second_session_wait_then_fail(target: Target, database: str) -> None:
    provider = target.provider
    with _lock_connection(target) as first, _lock_connection(target) as second:
        with provider.session_lock(first, database, 5):
            assert not first.in_transaction()
            started = time.monotonic()
            with pytest.raises(LockTimeout) as timed_out, provider.session_lock(second, database, 1):
                pass
            assert time.monotonic() - started >= 0.9
            assert database in timed_out.value.message
            # Another database's lock is another lock.
            with provider.session_lock(second, unique_name("conf"), 1):
                pass
        # Released on exit: the second session gets it at once.
        started = time.monotonic()
        with provider.session_lock(second, database, 5):
            assert time.monotonic() - started < 1


def test_session_lock_is_granted_to_a_waiting_session_when_released(target: Target, database: str) -> None:
    provider = target.provider
    waited: list[float] = []

    def wait_for_it() -> None:
        with _lock_connection(target) as second:
            started = time.monotonic()
            with provider.session_lock(second, database, 10):
                waited.append(time.monotonic() - started)

    with _lock_connection(target) as first:
        with provider.session_lock(first, database, 5):
            waiter = threading.Thread(target=wait_for_it)
            waiter.start()
            time.sleep(1.0)
            assert waited == [], "the second session got a lock the first one holds"
        waiter.join(timeout=30)
    assert len(waited) == 1 and 0.8 <= waited[0] < 10, waited


def test_transaction_lock_is_held_until_the_transaction_ends(target: Target, database: str) -> None:
    provider = target.provider
    with target.server.connect(database) as first, target.server.connect(database) as second:
        if not provider.transactional_ddl:
            # Without transactional DDL there is nothing for a transaction lock to protect.
            with pytest.raises(UnsupportedError):
                provider.lock_in_transaction(first, database, 1)
            return
        first.begin()
        provider.lock_in_transaction(first, database, 5)
        second.begin()
        started = time.monotonic()
        with pytest.raises(LockTimeout) as timed_out:
            provider.lock_in_transaction(second, database, 1)
        assert time.monotonic() - started >= 0.9 and database in timed_out.value.message
        second.rollback()
        first.commit()
        second.begin()
        provider.lock_in_transaction(second, database, 1)  # free once the holder committed
        second.rollback()


def test_orphaned_schema_lock_holder_is_ended(target: Target, database: str) -> None:
    provider = target.provider
    with target.server.connect(database) as holder, target.server.connect(database) as rescuer:
        with provider.session_lock(holder, database, 5):
            ended = provider.end_orphaned_locks(rescuer, database)
            assert len(ended) == 1
            with pytest.raises(DBAPIError):
                holder.execute(text("SELECT 1"))
            holder.invalidate()
        with provider.session_lock(rescuer, database, 1):
            assert provider.end_orphaned_locks(rescuer, database) == []


# -- the live schema -------------------------------------------------------------------------
def _schema() -> list[tuple[str, list[Any]]]:
    """Fresh column and constraint objects, so that one definition builds both the model and the
    tables created through Alembic's `op`."""
    return [
        (
            "conf_parents",
            [
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("code", sa.String(20), nullable=False, unique=True),
                sa.Column("created_at", sa.DateTime, nullable=False, server_default=sa.func.now()),
                sa.Column("note", sa.Text),
            ],
        ),
        (
            "conf_items",
            [
                sa.Column("id", sa.BigInteger, primary_key=True),
                sa.Column("parent_id", sa.Integer, sa.ForeignKey("conf_parents.id"), nullable=False),
                sa.Column("name", sa.String(120), nullable=False, index=True),
                sa.Column("price", sa.Numeric(10, 2), nullable=False, server_default="0"),
                sa.Column("ratio", sa.Float),
                sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
                sa.Column("kind", sa.Enum("small", "large", name="conf_item_kind"), server_default="small"),
                sa.Column("attributes", sa.JSON),
                sa.Column("seen_at", sa.DateTime),
                sa.Column("label", sa.String(40), server_default="none"),
                sa.UniqueConstraint("parent_id", "name", name="uq_conf_items_parent_name"),
                sa.Index("ix_conf_items_seen", "seen_at", "ratio"),
            ],
        ),
    ]


def _create_through_alembic(conn: Connection) -> None:
    op = Operations(MigrationContext.configure(conn))
    for name, items in _schema():
        op.create_table(name, *items)  # with its indexes, as a migration's create_table does
    if conn.in_transaction():
        conn.commit()


def test_live_shape_is_the_declared_shape(target: Target, database: str) -> None:
    """What would have caught MariaDB's DATETIME(6)/FLOAT(32) drift: a table made by a migration
    reads back exactly as its model declares it."""
    metadata = sa.MetaData()
    for name, items in _schema():
        sa.Table(name, metadata, *items)
    with target.server.connect(database) as conn:
        _create_through_alembic(conn)
        tables = [t.name for t in metadata.sorted_tables]
        expected = {t.name: target.provider.describe_model(t, conn.dialect) for t in metadata.sorted_tables}
        for live in (target.provider.describe_live(conn, tables), target.provider.describe_live(conn)):
            assert set(live) == set(tables)
            drift = [line for t in tables for line in diff(expected[t], live[t])]
            assert drift == []
            assert live == expected
        assert target.provider.describe_live(conn, ["conf_no_such_table"]) == {}
        # Not vacuous: a change made behind the model's back is drift.
        conn.execute(text("ALTER TABLE conf_items ADD COLUMN conf_extra INTEGER"))
        conn.commit()
        changed = target.provider.describe_live(conn, ["conf_items"])
        assert diff(expected["conf_items"], changed["conf_items"]) == [
            "column conf_items.conf_extra: not declared by any migration or model"
        ]


def _spellings(provider: Provider) -> list[Any]:
    """Columns and keys whose declared spelling differs from what servers read back: FLOAT with a
    precision, DOUBLE PRECISION and REAL, integers without a display width, NUMERIC without a scale,
    sized TEXT and BLOB, a collation alone, a unique index beside a unique constraint, a foreign key
    without an index."""
    binary = "utf8mb4_bin" if provider.name == "mysql" else "C"
    items: list[Any] = [
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("double53", sa.Float(precision=53)),
        sa.Column("single24", sa.Float(precision=24)),
        sa.Column("double", sa.Double),
        sa.Column("double_precision", sa.DOUBLE_PRECISION),
        sa.Column("real", sa.REAL),
        sa.Column("small", sa.SmallInteger, nullable=False, server_default="0"),
        sa.Column("whole", sa.Numeric(5)),
        sa.Column("small_blob", sa.LargeBinary(300)),
        sa.Column("binary_name", sa.String(30, collation=binary)),
        sa.Column("slug", sa.String(40), unique=True, index=True, nullable=False),
        sa.Column("a", sa.String(20)),
        sa.Column("b", sa.String(20)),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("conf_spellings.id")),  # no index declared
        sa.Index("ux_conf_spellings_a_b", "a", "b", unique=True),
        sa.UniqueConstraint("b", name="uq_conf_spellings_b"),
    ]
    if provider.name == "mysql":
        from sqlalchemy.dialects import mysql

        items += [
            sa.Column("short_text", sa.Text(60)),
            sa.Column("long_text", sa.Text(1000)),
            sa.Column("tiny", mysql.TINYINT),
            sa.Column("medium", mysql.MEDIUMINT),
            sa.Column("unsigned_int", mysql.INTEGER(unsigned=True)),
            sa.Column("unsigned_big", mysql.BIGINT(unsigned=True)),
            sa.Column("unsigned_small", mysql.SMALLINT(unsigned=True)),
            sa.Column("year", mysql.YEAR),
            sa.Column("flag", mysql.BIT),
            sa.Column("national", sa.NCHAR(3)),
        ]
    return items


def test_a_table_built_by_create_all_reads_back_as_its_model_whatever_the_spelling(
    target: Target, database: str
) -> None:
    """What an application's own create_all leaves (optuna's FLOAT(53) and unique indexed name on
    MariaDB) compares equal to its models: adopting it reports no false drift."""
    metadata = sa.MetaData()
    table = sa.Table("conf_spellings", metadata, *_spellings(target.provider))
    with target.server.connect(database) as conn:
        metadata.create_all(conn)
        conn.commit()
        expected = target.provider.describe_model(table, conn.dialect)
        for read in (
            target.provider.describe_live(conn, ["conf_spellings"]),
            target.provider.describe_live(conn),
        ):
            live = read["conf_spellings"]
            assert diff(expected, live) == []
            assert live == expected
        # Not vacuous: the same column as a single-precision FLOAT is a different type.
        conn.execute(
            text(
                "ALTER TABLE conf_spellings ALTER COLUMN double53 TYPE REAL"
                if target.provider.name == "postgresql"
                else "ALTER TABLE conf_spellings MODIFY double53 FLOAT"
            )
        )
        conn.commit()
        changed = target.provider.describe_live(conn, ["conf_spellings"])["conf_spellings"]
        [line] = diff(expected, changed)
        assert line.startswith("column conf_spellings.double53: type is "), line


def test_table_digests_change_with_the_table_and_only_then(target: Target, database: str) -> None:
    provider = target.provider
    with target.server.connect(database) as conn:
        _create_through_alembic(conn)
        before = provider.table_digests(conn)
        if before is None:
            # No digests: verify reads every table's shape, which the test above checks.
            assert type(provider).table_digests is Provider.table_digests
            return
        assert set(before) == set(provider.describe_live(conn))
        conn.execute(text("INSERT INTO conf_parents (id, code) VALUES (1, 'a')"))
        conn.commit()
        assert provider.table_digests(conn) == before  # rows are no shape
        changes = [
            "ALTER TABLE conf_items ADD COLUMN conf_extra INTEGER",
            "CREATE INDEX ix_conf_parents_note ON conf_parents (code, created_at)",
            "ALTER TABLE conf_items DROP COLUMN label",
        ]
        for statement in changes:
            previous = provider.table_digests(conn)
            assert previous is not None
            conn.execute(text(statement))
            conn.commit()
            after = provider.table_digests(conn)
            assert after is not None
            table = "conf_items" if "conf_items" in statement else "conf_parents"
            other = "conf_parents" if table == "conf_items" else "conf_items"
            assert after[table] != previous[table], statement
            assert after[other] == previous[other], statement


def test_the_digest_query_of_a_server_before_15_names_no_column_it_lacks(embedded_pg: PgServer) -> None:
    """pg_index.indnullsnotdistinct came with PostgreSQL 15: the query for an older server leaves it
    out and still gives every table a digest that changes with its indexes."""
    from dbinit_pipeline.database.providers.pg_catalog import table_digests_query

    older = table_digests_query(14)
    assert "indnullsnotdistinct" not in str(older)
    assert "indnullsnotdistinct" in str(table_digests_query(15))
    name = unique_name("conf")
    with embedded_pg.connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    engine = sa.create_engine(make_url(embedded_pg.url).set(drivername="postgresql+psycopg", database=name))
    try:
        with engine.connect() as conn:
            _create_through_alembic(conn)
            before = dict(conn.execute(older).all())
            assert set(before) == set(provider_for("postgresql").describe_live(conn))
            conn.execute(text("CREATE INDEX ix_conf_parents_code ON conf_parents (code)"))
            conn.commit()
            after = dict(conn.execute(older).all())
    finally:
        engine.dispose()
        embedded_pg.drop(name)
    assert after["conf_parents"] != before["conf_parents"] and after["conf_items"] == before["conf_items"]


# -- health ----------------------------------------------------------------------------------
def _check_shape(report: dict[str, Any]) -> None:
    assert report["status"] in _STATUSES, report
    if report["status"] == "unknown":
        assert isinstance(report.get("reason"), str) and report["reason"], report


def test_health_reports_have_the_documented_shape(target: Target, database: str) -> None:
    provider = target.provider
    with target.server.connect(database) as conn:
        disk = provider.disk_check(conn)
        _check_shape(disk)
        if disk["status"] != "unknown":
            assert isinstance(disk["free_bytes"], int) and isinstance(disk["total_bytes"], int)
            assert 0 <= disk["free_bytes"] <= disk["total_bytes"]
        connections = provider.connection_check(conn)
        _check_shape(connections)
        if connections["status"] != "unknown":
            assert 1 <= connections["active"] <= connections["max_connections"]
        permission = provider.permission_check(conn)
        _check_shape(permission)
        # The tests connect as an administrator, which may create tables; the probe leaves none.
        assert permission["status"] == "healthy" and permission["can_create_tables"] is True
        conn.rollback()
        assert not [t for t in provider.describe_live(conn) if t.startswith("dbinit_probe_")]
