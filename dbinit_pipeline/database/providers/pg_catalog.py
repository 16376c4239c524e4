"""PostgreSQL table shapes from pg_catalog in three bulk queries, without SQLAlchemy's reflection.

SQLAlchemy's bulk reflection of 2,000 tables costs about a second of Python (it builds a type
object, parses a constraint definition's text, and so on, for every row); the verify after a
fresh initialization reflects every new table to snapshot it. This reader asks the catalog for
exactly what a `TableShape` holds (column names in order, type, nullability, default, primary key,
foreign keys, unique constraints, indexes that back no constraint) and builds the same shapes as
`catalog.reflect_live` does from SQLAlchemy's reflection: it follows the same rules (which
indexes are left out, column order, defaults of generated columns) and renders each distinct
type through the dialect's own `_reflect_type`, once per type text.

It answers only for tables whose every column has a base type (or an array of one) known to
SQLAlchemy's PostgreSQL dialect; a table with an enum, a domain, a composite or a range column,
or anything it cannot render, is left to reflection (`fallback`; `PostgresProvider.describe_live`
joins both). The test suite compares both readers over a table of every kind of column and
constraint it knows. `table_digests_query` is the one-query digest of every table's catalog rows
behind `PostgresProvider.table_digests`.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, TextClause, bindparam, text
from sqlalchemy import types as sqltypes
from sqlalchemy.dialects.postgresql import ARRAY

from dbinit_pipeline.database.catalog import ColumnShape, TableShape, normalize_default, type_text

_COLUMNS = text("""
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       CASE WHEN a.atthasdef THEN pg_get_expr(d.adbin, d.adrelid) END, a.attgenerated,
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN co.collname END,
       CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
             AND NOT pg_collation_is_visible(co.oid) THEN cn.nspname END,
       coalesce(et.typtype, t.typtype)
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_type et ON et.oid = t.typelem AND t.typcategory = 'A'
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  LEFT JOIN pg_collation co ON co.oid = a.attcollation
  LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname IN :names
 ORDER BY c.relname, a.attnum
""").bindparams(bindparam("names", expanding=True))

_CONSTRAINTS = text("""
SELECT c.relname, co.contype, co.conname,
       ARRAY(SELECT a.attname FROM unnest(co.conkey) WITH ORDINALITY k(num, i)
               JOIN pg_attribute a ON a.attrelid = co.conrelid AND a.attnum = k.num ORDER BY k.i),
       r.relname,
       ARRAY(SELECT a.attname FROM unnest(co.confkey) WITH ORDINALITY k(num, i)
               JOIN pg_attribute a ON a.attrelid = co.confrelid AND a.attnum = k.num ORDER BY k.i)
  FROM pg_constraint co
  JOIN pg_class c ON c.oid = co.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_class r ON r.oid = co.confrelid
 WHERE n.nspname = current_schema() AND c.relname IN :names AND co.contype IN ('p', 'u', 'f')
 ORDER BY c.relname, co.conname
""").bindparams(bindparam("names", expanding=True))

# Indexes as SQLAlchemy's get_multi_indexes sees them: not the primary key's; key columns only
# (INCLUDE columns are stored, not indexed); an expression is None; flagged when a primary key,
# unique or exclusion constraint owns the index.
_INDEXES = text("""
SELECT c.relname, ic.relname, i.indisunique,
       ARRAY(SELECT CASE WHEN k.num = 0 THEN NULL ELSE a.attname END
               FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(num, pos)
               LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num
              WHERE k.pos <= i.indnkeyatts ORDER BY k.pos),
       EXISTS (SELECT 1 FROM pg_constraint co WHERE co.conrelid = i.indrelid AND co.conindid = i.indexrelid
                 AND co.contype IN ('p', 'u', 'x'))
  FROM pg_index i
  JOIN pg_class c ON c.oid = i.indrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_class ic ON ic.oid = i.indexrelid
 WHERE n.nspname = current_schema() AND c.relname IN :names AND NOT i.indisprimary
 ORDER BY c.relname, ic.relname
""").bindparams(bindparam("names", expanding=True))

# typtype of a column's type (of the element, for an array): only base types are read here.
_BASE = "b"


class _NoNamedTypes:
    """What `_reflect_type` consults for enums and domains: none (those tables fall back)."""

    enums: dict[Any, Any] = {}
    domains: dict[Any, Any] = {}


@dataclass
class _Table:
    columns: list[ColumnShape] = field(default_factory=list)
    primary_key: tuple[str, ...] = ()
    foreign_keys: set[tuple[tuple[str, ...], str, tuple[str, ...]]] = field(default_factory=set)
    unique: set[tuple[str, ...]] = field(default_factory=set)
    indexes: set[tuple[tuple[str, ...], bool]] = field(default_factory=set)


@dataclass(frozen=True)
class CatalogShapes:
    shapes: dict[str, TableShape]
    fallback: frozenset[str]  # tables this reader leaves to SQLAlchemy's reflection


def _type_renderer(conn: Connection) -> Any:
    dialect = conn.dialect
    reflect = getattr(dialect, "_reflect_type", None)
    cache: dict[tuple[str, str | None, str | None], str | None] = {}

    def render(fmt: str, collation: str | None, collation_schema: str | None) -> str | None:
        key = (fmt, collation, collation_schema)
        if key not in cache:
            rendered: str | None = None
            if reflect is not None:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        type_ = reflect(
                            fmt,
                            _NoNamedTypes(),
                            type_description=f"type {fmt}",
                            collation=collation,
                            collation_schema=collation_schema,
                        )
                    item = type_.item_type if isinstance(type_, ARRAY) else type_
                    if not isinstance(item, sqltypes.NullType):
                        rendered = type_text(type_, dialect)
                except Exception:
                    rendered = None
            cache[key] = rendered
        return cache[key]

    return render


def read_shapes(conn: Connection, names: Iterable[str]) -> CatalogShapes:
    """Shapes of the named tables of the current schema (missing names are simply absent)."""
    wanted = sorted(set(names))
    if not wanted or conn.dialect.name != "postgresql":
        return CatalogShapes({}, frozenset(wanted))
    render = _type_renderer(conn)
    tables: dict[str, _Table] = {}
    fallback: set[str] = set()
    for rel, col, fmt, notnull, default, generated, coll, coll_schema, typtype in conn.execute(
        _COLUMNS, {"names": wanted}
    ):
        table = tables.setdefault(rel, _Table())
        if col is None:
            continue  # a table without columns
        rendered = render(fmt, coll, coll_schema) if typtype == _BASE else None
        if rendered is None:
            fallback.add(rel)
            continue
        if generated not in (None, ""):
            default = None  # SQLAlchemy reports a generated column's expression as `computed`
        table.columns.append(ColumnShape(col, rendered, not notnull, normalize_default(default)))
    for rel, kind, _name, cols, referred, referred_cols in conn.execute(_CONSTRAINTS, {"names": wanted}):
        owner = tables.get(rel)
        if owner is None:
            continue
        if kind == "p":
            owner.primary_key = tuple(cols)
        elif kind == "u":
            owner.unique.add(tuple(cols))
        else:
            owner.foreign_keys.add((tuple(cols), referred, tuple(referred_cols)))
    indexes: dict[str, list[tuple[tuple[str, ...], bool]]] = defaultdict(list)
    for rel, _name, unique, cols, owned in conn.execute(_INDEXES, {"names": wanted}):
        if not owned:
            indexes[rel].append((tuple(c for c in cols if c is not None), bool(unique)))
    shapes: dict[str, TableShape] = {}
    for rel, table in tables.items():
        if rel in fallback:
            continue
        for cols, unique in indexes.get(rel, ()):
            if unique and cols in table.unique:
                continue
            table.indexes.add((cols, unique))
        shapes[rel] = TableShape(
            name=rel,
            columns=tuple(table.columns),
            primary_key=table.primary_key,
            foreign_keys=frozenset(table.foreign_keys),
            unique=frozenset(table.unique),
            indexes=frozenset(table.indexes),
        )
    return CatalogShapes(shapes, frozenset(fallback))


# Per table, a digest of the catalog rows its shape is read from: columns (name, type, typmod,
# nullability, identity, generation, collation, default), constraints (kind, columns, referred
# table and columns, actions, expression) and indexes (kind, columns, options, expressions,
# predicate). Raw catalog values rather than their rendered text: a tenth of the time, and a
# superset of what the shape shows, so an unchanged digest means an unchanged shape.
# `indnullsnotdistinct` exists from PostgreSQL 15 on; older servers digest without it.
_TABLE_DIGESTS = """
SELECT c.relname, md5(concat_ws('|',
  (SELECT string_agg(concat_ws(',', a.attnum, a.attname, a.atttypid, a.atttypmod, a.attnotnull, a.attidentity,
                               a.attgenerated, a.attcollation, a.attndims, d.adbin), ';' ORDER BY a.attnum)
     FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
  (SELECT string_agg(concat_ws(',', co.conname, co.contype, co.conkey, r.relname, r.relnamespace, co.confkey,
                               co.confupdtype, co.confdeltype, co.confmatchtype, co.condeferrable,
                               co.condeferred, co.convalidated, co.conindid, co.conbin),
                     ';' ORDER BY co.conname, co.contype)
     FROM pg_constraint co LEFT JOIN pg_class r ON r.oid = co.confrelid WHERE co.conrelid = c.oid),
  (SELECT string_agg(concat_ws(',', ic.relname, ic.relam, i.indisprimary, i.indisunique, i.indnkeyatts,
                               i.indkey, i.indclass, i.indcollation, i.indoption, i.indexprs, i.indpred,
                               {nulls_not_distinct}), ';' ORDER BY ic.relname)
     FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = c.oid)))
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
"""


def table_digests_query(major_version: int) -> TextClause:
    """The digest query for a PostgreSQL server of `major_version`."""
    nulls = "i.indnullsnotdistinct" if major_version >= 15 else "NULL"
    return text(_TABLE_DIGESTS.replace("{nulls_not_distinct}", nulls))
