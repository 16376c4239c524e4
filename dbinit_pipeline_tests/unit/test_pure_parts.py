"""The pure parts, without a server: package order, plan digests, shape diffs, error codes."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql

from dbinit_pipeline.database.catalog import ColumnShape, TableShape, describe_model, diff
from dbinit_pipeline.database.providers.plain_ddl import plain_ddl
from dbinit_pipeline.errors import (
    APPROVAL_REFUSALS,
    ConnectionFailure,
    DbinitError,
    ErrorCode,
    PackageError,
    classify,
)
from dbinit_pipeline.migrations.package import read_package
from dbinit_pipeline.migrations.registry import PackageRegistry, find_cycle
from dbinit_pipeline.pipeline.plan_hash import differences, plan_hash
from dbinit_pipeline_tests.conftest import write_migration


def _package(root: Path, name: str, depends_on: list[str], revisions: int = 1) -> Path:
    folder = root / name
    (folder / "migrations").mkdir(parents=True)
    (folder / "package.yaml").write_text(
        f"name: {name}\nversion: 1.0.0\ndepends_on: {json.dumps(depends_on)}\n"
    )
    down = None
    for i in range(revisions):
        rev = f"{name}{i:04d}"
        write_migration(folder / "migrations" / f"{i:04d}_{rev}.py", rev, down, f"op.create_table('{rev}_t')")
        down = rev
    return folder


def test_packages_come_after_what_they_need_and_otherwise_by_name(tmp_path: Path) -> None:
    folders = [
        _package(tmp_path, "zeta", []),
        _package(tmp_path, "billing", ["crm", "zeta"]),
        _package(tmp_path, "crm", []),
        _package(tmp_path, "audit", ["billing"]),
    ]
    registry = PackageRegistry([read_package(f) for f in folders])
    assert [p.name for p in registry.ordered()] == ["crm", "zeta", "billing", "audit"]
    assert registry.dependencies_of("audit") == {"billing", "crm", "zeta"}


def test_a_dependency_cycle_is_refused_naming_the_cycle_and_its_files(tmp_path: Path) -> None:
    folders = [_package(tmp_path, "a", ["b"]), _package(tmp_path, "b", ["c"]), _package(tmp_path, "c", ["a"])]
    with pytest.raises(PackageError) as caught:
        PackageRegistry([read_package(f) for f in folders])
    assert "dependency cycle: a -> b -> c -> a" in caught.value.message
    assert str(folders[0] / "package.yaml") in caught.value.message
    assert caught.value.code is ErrorCode.PACKAGE_INVALID


def test_find_cycle_ignores_unregistered_names_and_finds_none_in_a_tree() -> None:
    assert find_cycle({"a": ["b", "missing"], "b": []}) is None
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def test_a_plan_digest_ignores_key_order_and_names_what_changed() -> None:
    approved = {
        "environment": "prod",
        "database": "app",
        "pending": [["crm", "r1", "aa"], ["crm", "r2", "bb"]],
    }
    reordered = dict(reversed(list(approved.items())))
    assert plan_hash(approved) == plan_hash(reordered)
    current = {**approved, "pending": [["crm", "r1", "aa"], ["crm", "r2", "cc"], ["crm", "r3", "dd"]]}
    assert plan_hash(current) != plan_hash(approved)
    assert differences(approved, current) == [
        "new pending revision(s): crm:r3",
        "file changed since approval: crm:r2",
    ]
    assert differences(approved, {**approved, "database": "other"}) == ["database was 'app', is 'other'"]


def _shape(**changes: object) -> TableShape:
    base: dict[str, object] = {
        "name": "contacts",
        "columns": (
            ColumnShape("id", "INTEGER", False, None),
            ColumnShape("email", "VARCHAR(200)", False, None),
        ),
        "primary_key": ("id",),
        "foreign_keys": frozenset(),
        "unique": frozenset({("email",)}),
        "indexes": frozenset(),
    }
    return TableShape(**{**base, **changes})  # type: ignore[arg-type]


def test_a_shape_diff_names_each_difference_by_table_and_column() -> None:
    expected = _shape()
    assert diff(expected, expected) == []
    assert diff(expected, None) == ["table contacts: missing"]
    live = _shape(
        columns=(ColumnShape("id", "BIGINT", False, None), ColumnShape("extra", "TEXT", True, None)),
        unique=frozenset(),
    )
    assert diff(expected, live) == [
        "column contacts.id: type is BIGINT, expected INTEGER",
        "column contacts.email: missing",
        "column contacts.extra: not declared by any migration or model",
        "unique constraint contacts(email): missing",
    ]


def test_a_model_is_described_in_each_dialects_own_types() -> None:
    table = sa.Table(
        "t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("at", sa.DateTime)
    )
    # plain_ddl: as the runner compiles, whatever Dagster's import registered for MySQL in this process
    pg = describe_model(table, plain_ddl(postgresql.dialect()))
    my = describe_model(table, plain_ddl(mysql.dialect()))
    assert [c.type for c in pg.columns] == ["INTEGER", "TIMESTAMP WITHOUT TIME ZONE"]
    assert [c.type for c in my.columns] == ["INTEGER", "DATETIME"]


def test_error_codes_are_typed_and_serialize_as_their_plain_strings() -> None:
    assert set(ErrorCode) >= APPROVAL_REFUSALS
    assert json.dumps({"code": ErrorCode.PLAN_CHANGED}) == '{"code": "plan_changed"}'
    assert DbinitError("x").code is ErrorCode.DBINIT_ERROR
    assert ConnectionFailure("x").transient


def test_classify_keeps_a_dbinit_error_and_decides_transience_of_driver_errors() -> None:
    mine = PackageError("bad", code=ErrorCode.MULTIPLE_HEADS)
    assert classify(mine) is mine
    deadlock = classify(psycopg.errors.DeadlockDetected("deadlock detected"))
    assert deadlock.transient
    assert isinstance(classify(ValueError("boom")), DbinitError)
    assert classify(ValueError("boom")).code is ErrorCode.INTERNAL_ERROR
