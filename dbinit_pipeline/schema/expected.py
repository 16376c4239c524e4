"""What the live database should hold after the core and the packages: tables and foreign keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dbinit_pipeline.schema.core.models import metadata as core_metadata
from dbinit_pipeline.schema.ledger import LEDGER_TABLE, SNAPSHOT_TABLE, VERSION_TABLE
from dbinit_pipeline.schema.package import Package


@dataclass(frozen=True)
class ExpectedSchema:
    tables: dict[str, str]  # table -> owning package
    foreign_keys: frozenset[tuple[str, str]]


def expected_schema(packages: Sequence[Package]) -> ExpectedSchema:
    """Core tables from its SQLAlchemy models, package tables from their migrations."""
    tables: dict[str, str] = {LEDGER_TABLE: "dbinit", VERSION_TABLE: "dbinit", SNAPSHOT_TABLE: "dbinit"}
    fks: set[tuple[str, str]] = set()
    for core_table in core_metadata.tables.values():
        tables[core_table.name] = "core"
        for fk in core_table.foreign_keys:
            fks.add((core_table.name, fk.column.table.name))
    for pkg in packages:
        if pkg.name == "core":
            continue
        for m in pkg.migrations:
            for table in m.creates_tables:
                tables[table] = pkg.name
            fks.update(m.foreign_keys)
    return ExpectedSchema(tables, frozenset(fks))
