"""The shape of tables, expected and live, and the drift between them.

Live shapes are read by the provider (`Provider.describe_live`), by default through SQLAlchemy's
bulk reflection here (`Inspector.get_multi_*`: a handful of catalog queries for any number of
tables); this module knows no dialect and imports no provider. Expected shapes come from SQLAlchemy models where a
package declares them, else from a snapshot of what the package's migrations produced, taken
under the initialization lock right after they were applied.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Connection
from sqlalchemy.engine import Dialect

# Spellings the same type gets from a model's compiler and from a server's catalog.
_TYPE_SYNONYMS = {
    "BOOL": "BOOLEAN",
    "TINYINT(1)": "BOOLEAN",
    "INT": "INTEGER",
    "INT4": "INTEGER",
    "INT8": "BIGINT",
    # MariaDB (and MySQL before 8.0.19) report the display width, which changes no value.
    "INTEGER(11)": "INTEGER",
    "INT(11)": "INTEGER",
    "BIGINT(20)": "BIGINT",
}
_NOW = re.compile(r"^(now\(\)|current_timestamp(\(\d*\))?|localtimestamp(\(\d*\))?)$")
_NUMBER = re.compile(r"^'?(-?\d+(?:\.\d+)?)'?$")
_CAST = re.compile(r"::[a-z_ ]+(\(\d+(,\s*\d+)?\))?(\[\])?", re.IGNORECASE)


def normalize_default(value: str | None) -> str | None:
    """A server default as text without casts, outer parentheses and case differences."""
    if value is None:
        return None
    text = value.strip()
    if text.lower().startswith("nextval("):
        return None  # a serial's sequence: named by the server, not by the schema author
    previous = None
    while previous != text:
        previous = text
        text = _CAST.sub("", text).strip()
        if text.startswith("(") and text.endswith(")"):
            text = text[1:-1].strip()
    lowered = text.lower()
    if _NOW.match(lowered):
        return "now()"
    number = _NUMBER.match(lowered)
    if number is not None:
        # A server keeps a number in its column's own scale (MySQL: DEFAULT '0' on DECIMAL(10, 2)
        # reads back as 0.00): one spelling per value.
        return format(Decimal(number.group(1)).normalize(), "f")
    return {"false": "0", "true": "1"}.get(lowered, lowered)


def type_text(type_: sa.types.TypeEngine[Any], dialect: Dialect) -> str:
    try:
        compiled = str(type_.compile(dialect=dialect)).upper()
    except Exception:
        compiled = type(type_).__name__.upper()
    return _TYPE_SYNONYMS.get(compiled, compiled)


@dataclass(frozen=True)
class ColumnShape:
    name: str
    type: str
    nullable: bool
    default: str | None


@dataclass(frozen=True)
class TableShape:
    """A table's columns and constraints, normalized so that two shapes compare by value."""

    name: str
    columns: tuple[ColumnShape, ...]
    primary_key: tuple[str, ...]
    foreign_keys: frozenset[tuple[tuple[str, ...], str, tuple[str, ...]]]
    unique: frozenset[tuple[str, ...]]
    indexes: frozenset[tuple[tuple[str, ...], bool]]

    def as_json(self) -> dict[str, Any]:
        return {
            "columns": [[c.name, c.type, c.nullable, c.default] for c in self.columns],
            "primary_key": list(self.primary_key),
            "foreign_keys": sorted([list(c), t, list(r)] for c, t, r in self.foreign_keys),
            "unique": sorted(list(u) for u in self.unique),
            "indexes": sorted([list(c), u] for c, u in self.indexes),
        }

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> TableShape:
        return cls(
            name=name,
            # Normalized again: a snapshot written by an older version keeps older spellings.
            columns=tuple(
                ColumnShape(c[0], _TYPE_SYNONYMS.get(c[1], c[1]), bool(c[2]), normalize_default(c[3]))
                for c in data["columns"]
            ),
            primary_key=tuple(data["primary_key"]),
            foreign_keys=frozenset((tuple(c), t, tuple(r)) for c, t, r in data["foreign_keys"]),
            unique=frozenset(tuple(u) for u in data["unique"]),
            indexes=frozenset((tuple(c), bool(u)) for c, u in data["indexes"]),
        )


def reflect_live(conn: Connection, tables: Iterable[str] | None = None) -> dict[str, TableShape]:
    """Shapes of the live tables (all of the default schema, or only `tables`) through
    SQLAlchemy's bulk reflection: every dialect, every type. Providers read through
    `Provider.describe_live`, which may read some tables faster and falls back to this."""
    inspector = sa.inspect(conn)
    names = sorted(set(tables)) if tables is not None else None
    if names is not None and not names:
        return {}
    dialect = conn.dialect
    kw: dict[str, Any] = {"filter_names": names} if names is not None else {}
    columns = inspector.get_multi_columns(**kw)
    if not columns:
        return {}
    pks = inspector.get_multi_pk_constraint(**kw)
    fks = inspector.get_multi_foreign_keys(**kw)
    uniques = inspector.get_multi_unique_constraints(**kw)
    indexes = inspector.get_multi_indexes(**kw)
    shapes: dict[str, TableShape] = {}
    for key, cols in columns.items():
        table = key[1]
        unique_sets = {tuple(u["column_names"]) for u in uniques.get(key, [])}
        index_set = set()
        for ix in indexes.get(key, []):
            if ix.get("duplicates_constraint"):
                continue
            cols_ = tuple(c for c in ix["column_names"] if c is not None)
            if ix.get("unique") and cols_ in unique_sets:
                continue  # MySQL reports unique constraints as unique indexes as well
            index_set.add((cols_, bool(ix.get("unique"))))
        shapes[table] = TableShape(
            name=table,
            columns=tuple(
                ColumnShape(
                    c["name"],
                    type_text(c["type"], dialect),
                    bool(c["nullable"]),
                    normalize_default(c.get("default")),
                )
                for c in cols
            ),
            primary_key=tuple(pk["constrained_columns"] or ()) if (pk := pks.get(key)) else (),
            foreign_keys=frozenset(
                (tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]))
                for f in fks.get(key, [])
            ),
            unique=frozenset(unique_sets),
            indexes=frozenset(index_set),
        )
    return shapes


def _model_default(column: sa.Column[Any], dialect: Dialect) -> str | None:
    default = column.server_default
    if default is None:
        return None
    arg = getattr(default, "arg", None)
    if isinstance(arg, str):
        return normalize_default(f"'{arg}'")
    if arg is None:
        return None
    try:
        compiled = str(arg.compile(dialect=dialect))
    except Exception:
        compiled = str(arg)
    return normalize_default(compiled)


def describe_model(table: sa.Table, dialect: Dialect) -> TableShape:
    """The shape a SQLAlchemy model declares, as the live catalog would show it."""
    uniques: set[tuple[str, ...]] = set()
    indexes: set[tuple[tuple[str, ...], bool]] = set()
    for constraint in table.constraints:
        if isinstance(constraint, sa.UniqueConstraint):
            uniques.add(tuple(c.name for c in constraint.columns))
    for column in table.columns:
        if column.unique and not column.index:
            uniques.add((column.name,))
    for index in table.indexes:
        cols = tuple(c.name for c in index.columns)
        indexes.add((cols, bool(index.unique)))
    return TableShape(
        name=table.name,
        columns=tuple(
            ColumnShape(
                c.name,
                type_text(c.type, dialect),
                bool(c.nullable) and not c.primary_key,
                _model_default(c, dialect),
            )
            for c in table.columns
        ),
        primary_key=tuple(c.name for c in table.primary_key.columns),
        foreign_keys=frozenset(
            (
                tuple(c.name for c in fk.columns),
                fk.elements[0].target_fullname.rsplit(".", 2)[-2],
                tuple(e.target_fullname.rsplit(".", 1)[-1] for e in fk.elements),
            )
            # By name, not by object: a package's models may point into the core's tables,
            # which live in another MetaData.
            for fk in table.foreign_key_constraints
        ),
        unique=frozenset(uniques),
        indexes=frozenset(indexes),
    )


def _cols(cols: tuple[str, ...]) -> str:
    return ", ".join(cols)


def diff(expected: TableShape, live: TableShape | None) -> list[str]:
    """Drift of one table, object by object, each line naming the table (and column)."""
    t = expected.name
    if live is None:
        return [f"table {t}: missing"]
    drift: list[str] = []
    live_cols = {c.name: c for c in live.columns}
    expected_cols = {c.name: c for c in expected.columns}
    for col in expected.columns:
        found = live_cols.get(col.name)
        if found is None:
            drift.append(f"column {t}.{col.name}: missing")
            continue
        if found.type != col.type:
            drift.append(f"column {t}.{col.name}: type is {found.type}, expected {col.type}")
        if found.nullable != col.nullable:
            want = "NULL" if col.nullable else "NOT NULL"
            have = "NULL" if found.nullable else "NOT NULL"
            drift.append(f"column {t}.{col.name}: is {have}, expected {want}")
        if found.default != col.default:
            drift.append(f"column {t}.{col.name}: default is {found.default}, expected {col.default}")
    for name in live_cols:
        if name not in expected_cols:
            drift.append(f"column {t}.{name}: not declared by any migration or model")
    if tuple(live.primary_key) != tuple(expected.primary_key):
        drift.append(
            f"primary key of {t}: is ({_cols(live.primary_key)}), expected ({_cols(expected.primary_key)})"
        )
    for cols, ref, ref_cols in sorted(expected.foreign_keys - live.foreign_keys):
        drift.append(f"foreign key {t}({_cols(cols)}) -> {ref}({_cols(ref_cols)}): missing")
    for cols, ref, ref_cols in sorted(live.foreign_keys - expected.foreign_keys):
        drift.append(f"foreign key {t}({_cols(cols)}) -> {ref}({_cols(ref_cols)}): not declared")
    for cols in sorted(expected.unique - live.unique):
        drift.append(f"unique constraint {t}({_cols(cols)}): missing")
    for cols in sorted(live.unique - expected.unique):
        drift.append(f"unique constraint {t}({_cols(cols)}): not declared")
    for cols, unique in sorted(expected.indexes - live.indexes):
        drift.append(f"{'unique ' if unique else ''}index on {t}({_cols(cols)}): missing")
    for cols, unique in sorted(live.indexes - expected.indexes):
        drift.append(f"{'unique ' if unique else ''}index on {t}({_cols(cols)}): not declared")
    return drift
