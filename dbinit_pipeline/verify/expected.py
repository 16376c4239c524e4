"""What the live database should hold: per table, the shape the core and the packages declare.

A package that points to SQLAlchemy models in package.yaml (`models: module:attribute`, or
`models.py:attribute` inside the package folder) is compared with its models; any other package
with the snapshot of what its migrations produced; a package applied before snapshots existed
with the tables and foreign keys its migrations name.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from dbinit_pipeline.database.catalog import TableShape
from dbinit_pipeline.database.providers import Provider
from dbinit_pipeline.errors import PackageError
from dbinit_pipeline.migrations.adoptions import ADOPTIONS_TABLE
from dbinit_pipeline.migrations.core_placement import qualified
from dbinit_pipeline.migrations.ledger import (
    CLONES_TABLE,
    IN_PROGRESS_TABLE,
    LEDGER_TABLE,
    SNAPSHOT_TABLE,
    VERSION_TABLE,
)
from dbinit_pipeline.migrations.package import Package

# The snapshot table is optional: databases initialized before it existed get it on their next run.
# Each applied package's version table is bookkeeping too (`Package.version_table`).
BOOKKEEPING_TABLES = (LEDGER_TABLE,)
# The in-progress table exists where DDL is not transactional, the protection table in databases
# of protected environments (safety/protection.py), the clones table in databases made from a
# template, the shared version table in databases initialized before version tables were per package.
OPTIONAL_TABLES = (
    SNAPSHOT_TABLE,
    IN_PROGRESS_TABLE,
    "dbinit_protection",
    CLONES_TABLE,
    VERSION_TABLE,
    ADOPTIONS_TABLE,  # in databases adopted from an application's own Alembic (pipeline/adopt.py)
)


@dataclass
class ExpectedSchema:
    """Expected tables with their owner, and a shape wherever one is known."""

    owners: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, TableShape] = field(default_factory=dict)
    foreign_keys: set[tuple[str, str]] = field(default_factory=set)
    sources: dict[str, str] = field(default_factory=dict)  # package -> models | snapshot | migrations


def load_models(pkg: Package) -> sa.MetaData | None:
    """The MetaData a package declares in package.yaml, or None."""
    if not pkg.models:
        return None
    target, _, attribute = pkg.models.partition(":")
    attribute = attribute or "metadata"
    try:
        if target.endswith(".py"):
            path = pkg.path / target
            spec = importlib.util.spec_from_file_location(f"_dbinit_models_{pkg.name}", path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        value = getattr(module, attribute)
    except Exception as exc:
        raise PackageError(
            f"Package {pkg.name!r}: models {pkg.models!r} in {pkg.manifest_path} cannot be loaded: "
            f"{type(exc).__name__}: {exc}",
            suggestions=[f"Point models: in {pkg.manifest_path} at module:metadata or file.py:metadata."],
        ) from None
    if isinstance(value, sa.MetaData):
        return value
    metadata = getattr(value, "metadata", None)
    if isinstance(metadata, sa.MetaData):
        return metadata
    raise PackageError(
        f"Package {pkg.name!r}: models {pkg.models!r} is not a SQLAlchemy MetaData or declarative base"
    )


def expected_schema(
    packages: Sequence[Package],
    dialect: Dialect,
    snapshots: dict[str, tuple[str, dict[str, str]]] | None = None,
    applied_heads: dict[str, str] | None = None,
    *,
    provider: Provider,
) -> ExpectedSchema:
    """Expected shapes for every table the packages own; a model's as `provider` reads it back
    (`Provider.describe_model`)."""
    model_shape = provider.describe_model
    expected = ExpectedSchema()
    for name in BOOKKEEPING_TABLES:
        expected.owners[name] = "dbinit"
    for pkg in packages:
        applied = pkg.name in applied_heads if applied_heads is not None else pkg.head is not None
        if applied:
            expected.owners[pkg.version_table] = "dbinit"
        metadata = load_models(pkg)
        if metadata is not None:
            for table in metadata.tables.values():
                name = qualified(pkg, table.name)
                expected.owners[name] = pkg.name
                expected.shapes[name] = replace(model_shape(table, dialect), name=name)
                expected.foreign_keys.update(
                    (name, fk.target_fullname.rsplit(".", 2)[-2]) for fk in table.foreign_keys
                )
            expected.sources[pkg.name] = "models"
            continue
        snapshot = (snapshots or {}).get(pkg.name)
        head = (applied_heads or {}).get(pkg.name)
        current = snapshot is not None and head is not None and snapshot[0] == head
        if not current:
            # Read from the scripts' text: a guess (renames, dialect-conditional DDL and SQL built
            # at run time escape it), used only until a snapshot of what the migrations actually
            # produced exists; verify takes that snapshot right after applying.
            for table_name in pkg.tables:
                expected.owners[table_name] = pkg.name
            for m in pkg.migrations:
                expected.foreign_keys.update(fk for fk in m.foreign_keys if fk[0] in pkg.tables)
        if snapshot is not None and current:
            # An empty shape: the caller knows the table equals its snapshot (owner, nothing to compare).
            for table_name, shape in snapshot[1].items():
                if table_name:
                    expected.owners.setdefault(table_name, pkg.name)
                if table_name and shape:
                    expected.shapes[table_name] = TableShape.from_json(table_name, json.loads(shape))
            expected.sources[pkg.name] = "snapshot"
        else:
            expected.sources[pkg.name] = "migrations"
    return expected
